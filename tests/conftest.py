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


@pytest.fixture(scope="session")
def gateway_bin(lorq_bin):
    """bin/lorq-gateway, next to the CLI unless LORQ_GATEWAY_BIN says otherwise."""
    path = pathlib.Path(os.environ.get("LORQ_GATEWAY_BIN", pathlib.Path(lorq_bin).parent / "lorq-gateway"))
    assert path.exists(), f"{path} is missing: run make first"
    return str(path)


class LorqProcess:
    """A lorq program (gateway or worker) in the background, its output in a log file.

    env is added to this process's environment; stop() sends SIGTERM and waits,
    kill() is kill -9."""

    def __init__(self, argv, env, log_path):
        import subprocess

        self.log_path = pathlib.Path(log_path)
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in env.items()})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except Exception:
            self.proc.kill()
            return self.proc.wait()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Gateway(LorqProcess):
    """bin/lorq-gateway on a free loopback port; url is its base URL."""

    def __init__(self, exe, env, log_path, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env)
        env.setdefault("HOSTNAME", "127.0.0.1")
        env["PORT"] = self.port
        super().__init__([exe], env, log_path)

    def wait_listening(self, timeout=30.0):
        """Until the port accepts connections (the gateway need not be healthy)."""
        import socket
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"lorq-gateway exited ({self.proc.returncode}):\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"lorq-gateway did not listen on {self.port}:\n{self.log()}")

    def wait_healthy(self, timeout=60.0):
        """Until GET /health answers 200 (Redis up and a worker's heartbeat seen)."""
        import time
        import urllib.error
        import urllib.request

        self.wait_listening(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"lorq-gateway at {self.url} never became healthy:\n{self.log()}")
