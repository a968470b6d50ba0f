"""The two kinds of failure a user should see as one line, not a traceback."""


class PipelineError(Exception):
    """A failure caused by the outside world: a missing file, a bad checksum, a corrupt archive."""

    exit_code = 1


class ConfigError(PipelineError):
    """params.yaml (or a command-line value) is wrong; the message names the key."""

    exit_code = 2
