"""The two kinds of failure a user should see as one line, not a traceback."""
import errno
import os

# Refusals of the disk, not bugs of the program: full, over quota, read-only, a file too big.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class PipelineError(Exception):
    """A failure caused by the outside world: a missing file, a bad checksum, a corrupt archive."""

    exit_code = 1


class ConfigError(PipelineError):
    """params.yaml (or a command-line value) is wrong; the message names the key."""

    exit_code = 2


def cannot_write(path, error: OSError) -> PipelineError:
    """One line for a write that failed: the path and the system's reason for it, not the
    library's own text (h5py's runs over several lines and repeats the path)."""
    reason = os.strerror(error.errno).lower() if error.errno else str(error)
    return PipelineError(f"{path}: cannot write ({reason})")
