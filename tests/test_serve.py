"""`lorq serve` (what `make run` runs): the whole stack from one command.

Each test starts the real launcher, which starts a real redis-server (or uses
the one it is given), the gateway and CPU workers (or the autoscaler) on the
bundled model; waits for its banner; sends the README's curl; then stops it
with SIGINT (what Ctrl-C sends) and checks that everything stopped and that
Redis kept its data in the AOF.
"""
import json
import os
import pathlib
import re
import select
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT, RedisServer, free_port

BANNER_TIMEOUT = 120
# What each demo adapter answers to the message the serve banner's curl sends it.
BANNER_ANSWERS = {"demo/sentiment": "positive", "demo/numwords": "four thousand eight hundred twenty-one",
                  "demo/extract": '{"name":"Maria","age":34,"city":"Lisbon"}'}


def readme_curl(port):
    """The curl command of the README's Run section, on this test's port."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Run", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(curl .*?)```", section, re.S)
    assert block, "the README's Run section has no curl example"
    return block.group(1).replace("127.0.0.1:3000", f"127.0.0.1:{port}")


def readme_answer(reply):
    """The demo/sentiment adapter's answer in the README curl's chat completion (the README says positive)."""
    return reply["choices"][0]["message"]["content"]


class Serve:
    """bin/lorq serve in the background, its output (stdout and stderr) collected as it comes."""

    def __init__(self, bin_dir, args, env=None):
        self.proc = subprocess.Popen([str(bin_dir / "lorq"), "serve", *args], env=env or os.environ.copy(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.buf = b""

    def _read_some(self, wait):
        """Reads what the pipe has (raw reads: a buffered reader would hide lines from select)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not ready:
            return True
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        self.buf += chunk
        return bool(chunk)

    def read_until(self, pattern, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.output()):
                return
            if not self._read_some(0.2):
                break
        if re.search(pattern, self.output()):
            return
        raise AssertionError(f"no output matching {pattern!r}; output:\n{self.output()[-4000:]}")

    def output(self):
        return self.buf.decode(errors="replace")

    def wait(self, timeout):
        """Waits for the exit, collecting the rest of the output; the exit status."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self._read_some(0.2) and self.proc.poll() is not None:
                return self.proc.wait()
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"lorq serve did not stop within {timeout} s:\n{self.output()[-4000:]}")

    def interrupt(self, timeout=90):
        """SIGINT, as a terminal's Ctrl-C; returns the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_curl(command):
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers wants an integer"),
    (["--autoscale", "3:1"], "MIN (3) is above MAX (1)"),
    (["--autoscale", "2"], "--autoscale wants MIN:MAX"),
    (["--device", "cuda"], "CUDA backend"),
    (["--device", "tpu"], "--device wants cpu"),
    (["--port", "0"], "--port wants an integer"),
    (["--workers", "2", "--autoscale", "1:2"], "exclude each other"),
    (["--ready-timeout", "-1"], "--ready-timeout wants seconds"),
    (["--frobnicate"], "unknown argument"),
    (["--model"], "--model needs a value"),
])
def test_serve_rejects_bad_flags(bin_dir, args, message):
    out = subprocess.run([str(bin_dir / "lorq"), "serve", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_serve_runs_the_stack_answers_the_readme_curl_and_stops_on_ctrl_c(tmp_path, bin_dir):
    port = free_port()
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MODEL_ID", "LORA_ADAPTERS", "PORT")}
    serve = Serve(bin_dir, ["--port", str(port), "--workers", "2", "--state-dir", str(state)], env)
    try:
        serve.read_until(r"lorq is serving on http://127\.0\.0\.1:%d" % port, BANNER_TIMEOUT)
        serve.read_until(r"Ctrl-C stops everything", 10)
        out = serve.output()
        redis_url = re.search(r"REDIS_URL=(redis://127\.0\.0\.1:(\d+))", out)
        assert redis_url, out
        redis_port = int(redis_url.group(2))
        assert "curl http://127.0.0.1:%d/generate" % port in out
        # The banner's own chat curl, pasted as a user would, gets its demo adapter's answer.
        banner_curl = re.search(r"(curl http://127\.0\.0\.1:%d/v1/chat/completions .*?\}\]\}')" % port, out, re.S)
        assert banner_curl, out
        reply = run_curl(banner_curl.group(1))
        assert reply["model"] in BANNER_ANSWERS and '"adapter_id": "%s"' % reply["model"] in out, out
        assert readme_answer(reply) == BANNER_ANSWERS[reply["model"]], reply

        reply = run_curl(readme_curl(port))
        assert readme_answer(reply) == "positive", reply

        assert serve.interrupt() == 0, serve.output()[-4000:]
        out = serve.output()
        assert "redis-server stopped" in out and "[serve] stopped" in out
        assert not port_open(port) and not port_open(redis_port)
    finally:
        serve.kill()
    # AOF on: a redis-server started on the same folder has the job the curl made.
    assert (state / "redis" / "appendonlydir").is_dir()
    again = RedisServer(state / "redis")
    again.start()
    try:
        assert list(again.client().scan_iter(match=b"lorq:job:*")), "the job record did not survive in the AOF"
    finally:
        again.stop()


def test_serve_uses_a_given_redis_and_starts_none(tmp_path, bin_dir, redis_server):
    port = free_port()
    state = tmp_path / "state"
    serve = Serve(bin_dir, ["--port", str(port), "--redis-url", redis_server.url, "--state-dir", str(state)])
    try:
        serve.read_until(r"lorq is serving on", BANNER_TIMEOUT)
        assert "REDIS_URL=%s\n" % redis_server.url in serve.output()
        assert redis_server.client().zcard("lorq:workers") == 1
        assert serve.interrupt() == 0
    finally:
        serve.kill()
    assert not state.exists(), "no private Redis, so no state folder"
    assert redis_server.client().ping(), "a Redis lorq did not start must be left running"


def test_serve_autoscale_runs_the_autoscaler_and_drains_it(tmp_path, bin_dir):
    port = free_port()
    serve = Serve(bin_dir, ["--port", str(port), "--autoscale", "1:2", "--state-dir", str(tmp_path / "state"),
                            "--autoscaler-arg=--idle-seconds=2"])
    try:
        serve.read_until(r"lorq is serving on", BANNER_TIMEOUT)
        assert "autoscaled, 1 to 2" in serve.output()
        assert re.search(r"lorq-autoscaler\[\d+\]: scale up 0 -> 1", serve.output())
        reply = run_curl(readme_curl(port))
        assert readme_answer(reply) == "positive", reply
        assert serve.interrupt() == 0
        out = serve.output()
        assert re.search(r"lorq-autoscaler\[\d+\]: stopping: draining 1 worker", out), out[-3000:]
        assert re.search(r"lorq-autoscaler\[\d+\]: stopped", out)
    finally:
        serve.kill()


def test_serve_refuses_a_busy_port(tmp_path, bin_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        serve = Serve(bin_dir, ["--port", str(port), "--state-dir", str(tmp_path / "state")])
        try:
            rc = serve.wait(60)
        finally:
            serve.kill()
    assert rc == 1
    assert f"port {port} on 127.0.0.1 is in use" in serve.output()
    assert "redis-server stopped" in serve.output(), "the Redis it had started must be stopped again"
