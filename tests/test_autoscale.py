"""Autoscaling on queue lag, through the real stack, and the load generator's report.

A real redis-server, lorq-gateway and lorq-autoscaler (which starts real
lorq-worker processes on the bundled model) take a burst of a few hundred
requests from `lorq loadgen` over several adapters, mixing blocking,
streaming and async requests. The pool must grow from 1 worker to at least 3
while the queue is long and shrink back to 1 once idle; every request must be
answered, exactly once (checked on the client and in each job's event log in
Redis); and the loadgen report and plots must agree with what was sent.

Kept short for 2 cores: few new tokens, workers of 8 jobs and 1 thread each,
second-scale cooldowns.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import time
import urllib.request

import msgpack
import pytest

from conftest import ROOT, free_port

BURST = 240
MAX_WORKERS = 4


def adapters_for_test():
    """name=path entries: the demo adapters when trained, else the reference test adapters."""
    demo = sorted(p for p in (ROOT / "adapters" / "demo").glob("*") if (p / "adapter_config.json").exists())
    if demo:
        return [(f"demo/{p.name}", p) for p in demo]
    ref = sorted(p for p in (ROOT / "tests" / "reference" / "adapters").glob("*") if (p / "adapter_config.json").exists())
    return [(f"test/{p.name}", p) for p in ref[:3]]


class Stack:
    """Processes started for one test, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs = []

    def start(self, name, argv, env):
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def log(self, name):
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, proc, timeout):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return None
        return proc.returncode

    def close(self):
        for name, proc, log in reversed(self.procs):
            self.stop(proc, 30)
            log.close()


def wait_healthy(stack, port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name, proc, _ in stack.procs:
            assert proc.poll() is None, f"{name} exited early:\n{stack.log(name)[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the stack did not become healthy")


def job_events(client, job_key):
    """The decoded events of a job's log."""
    log_key = job_key.replace(b":job:", b":log:")
    return [msgpack.unpackb(raw, raw=False) for raw in client.lrange(log_key, 0, -1)]


def check_exactly_once(client, n_expected, async_ids):
    """Every job the gateway enqueued is done with one end event, last, and no token twice."""
    job_keys = sorted(client.scan_iter(match=b"lorq:job:*", count=1000))
    assert len(job_keys) == n_expected, f"{len(job_keys)} job records for {n_expected} requests"
    ids = {k.split(b":job:", 1)[1].decode() for k in job_keys}
    assert set(async_ids) <= ids
    for key in job_keys:
        assert client.hget(key, "status") == b"done", key
        events = job_events(client, key)
        ends = [e for e in events if e["type"] == "end"]
        assert len(ends) == 1 and events[-1]["type"] == "end", key
        indexes = [e["index"] for e in events if e["type"] == "token"]
        assert indexes == list(range(len(indexes))), f"{key}: token indexes {indexes}"
        assert ends[0]["generated_tokens"] == len(indexes)


def scale_events(autoscaler_log):
    """(kind, from, to) of each decision line."""
    return [(m.group(1), int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"scale (up|down) (\d+) -> (\d+)", autoscaler_log)]


def read_dat(path):
    lines = path.read_text().splitlines()
    return lines[0], [[float(x) for x in line.split()] for line in lines[1:]]


def check_report(out, records):
    report = json.loads((out / "report.json").read_text())
    overall = report["overall"]
    assert overall["requests"] == BURST and overall["ok"] == BURST and overall["errors_total"] == 0, overall["errors"]
    assert sum(overall["by_kind"].values()) == BURST and all(v > 0 for v in overall["by_kind"].values())
    assert sum(a["requests"] for a in report["adapters"].values()) == BURST
    assert sum(k["requests"] for k in report["kinds"].values()) == BURST
    assert overall["tokens"] == sum(r["tokens"] for r in records)
    for stat in ("latency_ms", "ttft_ms", "itl_ms"):
        d = overall[stat]
        assert d["n"] > 0 and 0 < d["p50"] <= d["p95"] <= d["p99"] <= d["max"], (stat, d)
    assert overall["latency_ms"]["n"] == BURST
    assert overall["ttft_ms"]["n"] == overall["by_kind"]["stream"]
    for name, a in report["adapters"].items():
        assert a["requests"] == sum(1 for r in records if r["adapter"] == name)
    # The rate plot's data: arrivals per bin, per adapter and in total, add up to what was sent.
    header, rows = read_dat(out / "rate.dat")
    bin_s = rows[1][0] - rows[0][0]
    assert round(sum(row[1] for row in rows[:-1]) * bin_s) == BURST
    columns = re.findall(r'"([^"]*)"', header)
    assert columns[0] == "total" and set(columns[1:]) == set(report["adapters"])
    for i, name in enumerate(columns[1:], start=2):
        assert round(sum(row[i] for row in rows[:-1]) * bin_s) == report["adapters"][name]["requests"]
    for png in ("rate.png", "queue.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    return report


def test_burst_scales_workers_up_then_back_to_one(tmp_path, redis_server, bin_dir, model_dir):
    adapters = adapters_for_test()
    gw_port = free_port()
    env = dict(os.environ, REDIS_URL=redis_server.url, MODEL_ID=str(model_dir),
               LORA_ADAPTERS=",".join(f"{n}={p}" for n, p in adapters), PORT=str(gw_port), HOSTNAME="127.0.0.1",
               MAX_RUNNING="8", LORQ_THREADS="1", MAX_CONCURRENT_REQUESTS="1000")
    stack = Stack(tmp_path)
    try:
        stack.start("gateway", [str(bin_dir / "lorq-gateway")], env)
        autoscaler = stack.start("autoscaler", [
            str(bin_dir / "lorq-autoscaler"), "--min", "1", "--max", str(MAX_WORKERS), "--jobs-per-worker", "8",
            "--up-cooldown", "1", "--idle-seconds", "4", "--down-cooldown", "1", "--poll-ms", "200",
            "--status-every", "2", "--drain-timeout", "60"], env)
        wait_healthy(stack, gw_port, 60)

        # The burst: arrivals far faster than one worker serves, over the base model and the adapters,
        # steady, bursty and rare, blocking, streaming and async.
        names = [n for n, _ in adapters]
        traffic = ["--adapter", "@base=steady:200"]
        if names:
            traffic += ["--adapter", f"{names[0]}=bursty:400:0.3:0.2"]
        traffic += [x for n in names[1:2] for x in ("--adapter", f"{n}=steady:100")]
        traffic += [x for n in names[2:3] for x in ("--adapter", f"{n}=rare:10")]
        out = tmp_path / "loadgen"
        t0 = time.time()
        run = subprocess.run([
            str(bin_dir / "lorq"), "loadgen", "--url", f"http://127.0.0.1:{gw_port}", *traffic,
            "--requests", str(BURST), "--mix", "generate=1,stream=1,async=1", "--prompt-words", "uniform:3:10",
            "--max-new-tokens", "uniform:2:6", "--redis-url", redis_server.url, "--sample-ms", "200",
            "--sample-tail", "90", "--tail-until-workers", "1", "--timeout", "240", "--poll-ms", "100",
            "--seed", "7", "--out", str(out)], capture_output=True, text=True, timeout=420)
        elapsed = time.time() - t0
        assert run.returncode == 0, run.stderr + run.stdout

        records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
        assert len(records) == BURST
        bad = [r for r in records if r["error"] is not None or r["t_end"] is None or r["tokens"] < 1]
        assert not bad, bad[:5]
        report = check_report(out, records)

        # Up from 1 to at least 3 while the burst queued, back to 1 once idle.
        log = stack.log("autoscaler")
        events = scale_events(log)
        ups = [e for e in events if e[0] == "up"]
        assert ups and ups[0][1:] == (0, 1), events
        assert max(to for _, _, to in events) >= 3, log[-4000:]
        assert events[-1] == ("down", 2, 1), log[-4000:]
        workers = [s["workers"] + s["workers_draining"] for s in report["samples"]]
        assert max(workers) >= 3 and workers[-1] == 1, workers
        peak = workers.index(max(workers))
        assert report["samples"][peak]["t"] < report["samples"][-1]["t"]

        check_exactly_once(redis_server.client(), BURST, [r["job_id"] for r in records if r["kind"] == "async"])

        assert stack.stop(autoscaler, 60) == 0, "the autoscaler must drain its workers and exit 0 on SIGTERM"
        assert "stopped" in stack.log("autoscaler").splitlines()[-1]
        print(f"burst of {BURST} requests: scale events {events}; loadgen {elapsed:.1f} s "
              f"(wall {report['wall_s']} s, p50 latency {report['overall']['latency_ms']['p50']} ms)")
    finally:
        stack.close()
