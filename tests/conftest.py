"""Shared pytest fixtures: where the built binaries, the bundled model and its GGUF are.

LORQ_BIN overrides the CLI path (parallel builds use bin-*/lorq)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "SmolLM2-135M-Instruct"
MODEL_GGUF = ROOT / "models" / ".cache" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def lorq_bin():
    path = pathlib.Path(os.environ.get("LORQ_BIN", ROOT / "bin" / "lorq"))
    assert path.exists(), f"{path} is missing: run make first"
    return str(path)


@pytest.fixture(scope="session")
def model_dir():
    assert (MODEL_DIR / "model.safetensors").exists(), f"{MODEL_DIR} is missing: run make setup"
    return MODEL_DIR


@pytest.fixture(scope="session")
def model_gguf():
    assert MODEL_GGUF.exists(), f"{MODEL_GGUF} is missing: run make setup"
    return MODEL_GGUF


@pytest.fixture(scope="session")
def worker_bin(lorq_bin):
    """bin/lorq-worker, next to the CLI unless LORQ_WORKER_BIN says otherwise."""
    path = pathlib.Path(os.environ.get("LORQ_WORKER_BIN", pathlib.Path(lorq_bin).parent / "lorq-worker"))
    assert path.exists(), f"{path} is missing: run make first"
    return str(path)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, its data (AOF on) in a temp dir.

    stop() shuts it down the polite way (SHUTDOWN writes the AOF out) and
    start() brings it back on the same port from the same directory, which is
    what "Redis restarted" means for a worker."""

    def __init__(self, directory):
        import shutil

        self.exe = shutil.which("redis-server")
        assert self.exe, "redis-server is not installed: run make setup"
        self.dir = pathlib.Path(directory)
        self.port = free_port()
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self, timeout=10.0):
        import subprocess
        import time

        import redis

        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
             "--save", "", "--protected-mode", "no"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return self
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir / 'redis.log'}")

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=30)

    def stop(self):
        import redis

        if not self.proc or self.proc.poll() is not None:
            return
        try:
            redis.Redis(port=self.port, socket_timeout=5).shutdown()
        except redis.exceptions.RedisError:
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server for one test (see RedisServer)."""
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(d).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def bin_dir(lorq_bin):
    """The folder of the built binaries (bin/, or bin-*/ through LORQ_BIN)."""
    return pathlib.Path(lorq_bin).resolve().parent
