"""Latency and throughput of `mlflow models serve` for a photo classifier, with corrupt photos mixed in.

Usage, from the repository root:

    python benchmarks/serving.py [--model MODEL_URI_OR_DIR] [--network models/cifar10_naive-42.keras]
        [--clients 16] [--requests 600] [--corrupt 0.1] [--workers 1] [--floor]

The server is started on 127.0.0.1 with `--env-manager local`. Without `--model` the
classifier of `--network` (a trained .keras file; default `models/cifar10_naive-42.keras`) is
saved to a temporary folder as training logs it, and served from there. `--floor` serves a
pyfunc model that returns a constant instead: MLflow's own cost per request.

1. One client, one photo per request, `--single` requests in a row: p50 and p99 latency.
2. `--clients` clients at once, `--requests` requests in all, one photo each, a `--corrupt`
   share of them not an image: photos/s, p50/p99 latency and the status codes. Every good
   photo must get HTTP 200 and every corrupt one HTTP 400; the server must answer /ping after.

Photos are real CIFAR-10 JPEGs from ../shared/data when there, else generated ones.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "cifar10" / "jpg"

CONSTANT_MODEL = '''
import mlflow
import pandas as pd


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"label": ["cat"] * len(model_input)})


mlflow.models.set_model(Constant())
'''


def photos(count: int) -> list[bytes]:
    found = sorted(SHARED_PHOTOS.glob("test/*/*.jpg"))[:count] if SHARED_PHOTOS.is_dir() else []
    if found:
        return [path.read_bytes() for path in found]
    from tests.fixtures import jpeg_bytes

    return [jpeg_bytes(seed, (32, 32)) for seed in range(count)]


def saved_classifier(network_file: Path, folder: Path) -> Path:
    """The photo classifier of `network_file`, saved as training logs it."""
    import keras

    from pipeline import serving
    from pipeline.data.loaders import CATS_DOGS_CLASSES, CIFAR10_CLASSES

    network = keras.saving.load_model(network_file)
    classes = CATS_DOGS_CLASSES if network.output_shape[-1] == 1 else CIFAR10_CLASSES
    path = folder / "classifier"
    serving.save_classifier(network, network_file, classes, path)
    return path


def constant_model(folder: Path) -> Path:
    import mlflow

    code = folder / "constant_model.py"
    code.write_text(CONSTANT_MODEL)
    path = folder / "constant"
    mlflow.pyfunc.save_model(path, python_model=str(code))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, workers: int, log: Path) -> subprocess.Popen:
    command = ["mlflow", "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                return server
        except requests.ConnectionError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {log.read_text()[-2000:]}")
        time.sleep(1)
    raise SystemExit("the server did not answer /ping in 300 s")


def body(photo: bytes) -> str:
    return json.dumps({"dataframe_records": [{"image": base64.b64encode(photo).decode()}]})


def ask(session: requests.Session, url: str, payload: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = session.post(url, data=payload, headers={"Content-Type": "application/json"}, timeout=120)
    return response.status_code, time.perf_counter() - started


def percentile(seconds: list[float], share: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, share))


def single_client(url: str, good: list[bytes], count: int) -> dict:
    session = requests.Session()
    ask(session, url, body(good[0]))  # the first request builds what later ones reuse
    latencies = [ask(session, url, body(good[i % len(good)]))[1] for i in range(count)]
    return {"requests": count, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def many_clients(url: str, good: list[bytes], clients: int, total: int, corrupt: float, seed: int = 0) -> dict:
    rng = random.Random(seed)
    bad = {i for i in range(total) if rng.random() < corrupt}
    payloads = [(i in bad, body(b"not a photo %d" % i if i in bad else good[i % len(good)])) for i in range(total)]
    sessions = [requests.Session() for _ in range(clients)]

    def send(index: int) -> tuple[bool, int, float]:
        is_bad, payload = payloads[index]
        return (is_bad, *ask(sessions[index % clients], url, payload))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, range(total)))
    seconds = time.perf_counter() - started
    latencies = [latency for _, _, latency in answers]
    return {"clients": clients, "requests": total, "corrupt": len(bad), "seconds": seconds,
            "photos_per_s": total / seconds, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "status": dict(Counter(str(code) for _, code, _ in answers)),
            "good_answered": all(code == 200 for is_bad, code, _ in answers if not is_bad),
            "corrupt_refused": all(code == 400 for is_bad, code, _ in answers if is_bad)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model URI (models:/cifar10_naive@champion) or a saved model folder")
    parser.add_argument("--network", type=Path, default=ROOT / "models" / "cifar10_naive-42.keras")
    parser.add_argument("--floor", action="store_true", help="serve a constant pyfunc model instead")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--corrupt", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serving-") as scratch:
        scratch = Path(scratch)
        model = str(constant_model(scratch) if args.floor else args.model or saved_classifier(args.network, scratch))
        port = free_port()
        server = start_server(model, port, args.workers, scratch / "server.log")
        try:
            url = f"http://127.0.0.1:{port}/invocations"
            good = photos(200)
            single = single_client(url, good, args.single)
            crowd = many_clients(url, good, args.clients, args.requests, args.corrupt)
            alive = requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).ok
        finally:
            server.terminate()
            server.wait(30)

    from pipeline.hardware import machine

    result = {"model": "constant (floor)" if args.floor else model if args.model else str(args.network),
              "workers": args.workers, "single_client": single, "many_clients": crowd, "server_up_after": alive,
              "machine": machine()}
    print(f"{result['model']}, {args.workers} worker(s), {result['machine']['cpu']}")
    print(f"one client: p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms over {single['requests']} requests")
    print(f"{crowd['clients']} clients: {crowd['photos_per_s']:.0f} photos/s, p50 {crowd['p50_ms']:.0f} ms, "
          f"p99 {crowd['p99_ms']:.0f} ms; status {crowd['status']} ({crowd['corrupt']} corrupt); "
          f"good all answered: {crowd['good_answered']}, corrupt all refused: {crowd['corrupt_refused']}; "
          f"server up after: {alive}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
