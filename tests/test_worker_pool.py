"""The worker pool over Redis streams (docs/protocol.md), end to end: a real
redis-server (AOF on), real `lorq-worker` processes on the bundled model and
the committed test adapters, jobs written the way any client would (msgpack
through lua/enqueue.lua, or XADD by hand for the malformed ones).

Greedy results are compared token for token with the same request run alone
through `lorq generate`. Faults: a worker killed with SIGKILL mid-generation,
Redis shut down and started again from its AOF mid-run, SIGTERM; bad stream
entries; cancel; deadlines; dead letters; `lorq submit`."""
import collections
import concurrent.futures
import json
import os
import secrets
import signal
import subprocess
import threading
import time

import msgpack
import pytest
import redis

from conftest import ROOT

PREFIX = "lorq:"
ADAPTER_DIRS = ROOT / "tests" / "reference" / "adapters"
# Six adapter names over the four committed test adapters (two folders serve twice), plus the base model ("").
ADAPTERS = {
    "team/a1": ADAPTER_DIRS / "r8-qv",
    "team/a2": ADAPTER_DIRS / "r16-attn-rslora",
    "team/a3": ADAPTER_DIRS / "r64-qv-layers",
    "team/a4": ADAPTER_DIRS / "r8-all-pattern",
    "team/a5": ADAPTER_DIRS / "r8-qv",
    "team/a6": ADAPTER_DIRS / "r16-attn-rslora",
}
ALL_ADAPTERS = [""] + list(ADAPTERS)
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "Translate to German: good morning",
    "List three colors:",
]
OVER = {"done", "failed", "cancelled"}


def unpack(data):
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")


# ---------- reference runs ----------


class Reference:
    """Token ids of `lorq generate` runs (greedy, --ignore-eos), cached per request."""

    def __init__(self, lorq_bin, model_dir):
        self.lorq, self.model = lorq_bin, str(model_dir)
        self.cache = {}
        self.prompt_ids = {}

    def tokenize(self, text):
        if text not in self.prompt_ids:
            out = subprocess.run([self.lorq, "tokenize", "--model", self.model, text], capture_output=True, text=True,
                                 check=True).stdout
            self.prompt_ids[text] = [int(t) for t in out.split()]
        return self.prompt_ids[text]

    def _run(self, key):
        prompt, adapter, n = key
        args = [self.lorq, "generate", "--model", self.model, "--prompt-ids", ",".join(map(str, prompt)),
                "--max-new-tokens", str(n), "--ignore-eos", "--json", "--threads", "1"]
        if adapter:
            args += ["--adapter", str(ADAPTERS[adapter])]
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["ids"]

    def prepare(self, keys):
        todo = [k for k in set(keys) if k not in self.cache]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
            for k, ids in zip(todo, ex.map(self._run, todo)):
                self.cache[k] = ids

    def ids(self, prompt, adapter, n):
        key = (tuple(prompt), adapter, n)
        if key not in self.cache:
            self.prepare([key])
        return self.cache[key]


@pytest.fixture(scope="module")
def reference(lorq_bin, model_dir):
    return Reference(lorq_bin, model_dir)


# ---------- the queue, as a client sees it ----------


class Queue:
    """Submits jobs through lua/enqueue.lua and reads what the workers wrote."""

    def __init__(self, server):
        self.server = server
        self.r = server.client()
        self.enqueue_script = self.r.register_script((ROOT / "lua" / "enqueue.lua").read_text())
        self.cancel_script = self.r.register_script((ROOT / "lua" / "cancel.lua").read_text())

    @staticmethod
    def stream(adapter):
        return f"{PREFIX}q:{adapter or '@base'}"

    def job(self, prompt, adapter="", max_new_tokens=8, params=None, deadline_ms=0, job_id=None):
        now = int(time.time() * 1000)
        jid = job_id or f"{now:x}-{secrets.token_hex(8)}"
        return {"v": 1, "id": jid, "tenant": "tests", "adapter": adapter, "prompt": list(prompt),
                "max_new_tokens": max_new_tokens, "params": {"ignore_eos": True} if params is None else params,
                "deadline_ms": deadline_ms, "created_ms": now, "attempt": 0}

    def submit(self, prompt, adapter="", **kw):
        job = self.job(prompt, adapter, **kw)
        jid = job["id"]
        life = (job["deadline_ms"] - job["created_ms"]) if job["deadline_ms"] else 24 * 3600 * 1000
        reply = self.enqueue_script(
            keys=[f"{PREFIX}job:{jid}", self.stream(adapter), f"{PREFIX}queues", f"{PREFIX}queues:new"],
            args=[jid, adapter, "tests", msgpack.packb(job), 0, job["created_ms"], max(life, 1) + 3600 * 1000,
                  "workers"])
        assert reply[0] == b"ok", reply
        return jid

    def cancel(self, jid, adapter=""):
        now = int(time.time() * 1000)
        return self.cancel_script(keys=[f"{PREFIX}job:{jid}", self.stream(adapter), f"{PREFIX}log:{jid}"],
                                  args=[jid, f"{PREFIX}ch:{jid}", "workers", 3600 * 1000, now])

    def record(self, jid):
        return {k.decode(): v for k, v in self.r.hgetall(f"{PREFIX}job:{jid}").items()}

    def status(self, jid):
        s = self.r.hget(f"{PREFIX}job:{jid}", "status")
        return s.decode() if s else None

    def result(self, jid):
        raw = self.r.hget(f"{PREFIX}job:{jid}", "result")
        return unpack(raw) if raw else None

    def log(self, jid):
        return [unpack(e) for e in self.r.lrange(f"{PREFIX}log:{jid}", 0, -1)]

    def log_tokens(self, jid):
        return [e["token"] for e in self.log(jid) if e["type"] == "token"]

    def dead_letters(self):
        return {f[b"id"].decode(): {k.decode(): v for k, v in f.items()} for _, f in self.r.xrange(f"{PREFIX}dead")}

    def wait(self, jids, timeout, want=OVER):
        """Waits until every job's status is in `want`; rides out a Redis restart."""
        jids = list(jids)
        deadline = time.time() + timeout
        left = jids
        while time.time() < deadline:
            try:
                pipe = self.r.pipeline(transaction=False)
                for j in left:
                    pipe.hget(f"{PREFIX}job:{j}", "status")
                left = [j for j, s in zip(left, pipe.execute()) if not s or s.decode() not in want]
            except redis.exceptions.ConnectionError:
                time.sleep(0.2)
                continue
            if not left:
                return
            time.sleep(0.1)
        raise AssertionError(f"{len(left)} of {len(jids)} jobs not over after {timeout} s, e.g. "
                             f"{left[0]}: {self.record(left[0])}")

    def wait_logged(self, predicate, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError("timed out waiting")


class Follower(threading.Thread):
    """Listens to every job channel (PSUBSCRIBE P ch:*) and keeps each event it sees, duplicates included."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.pubsub = server.client().pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{PREFIX}ch:*")
        self.events = collections.defaultdict(list)
        self.stop_flag = False

    def run(self):
        while not self.stop_flag:
            m = self.pubsub.get_message(timeout=0.2)
            if m and m["type"] == "pmessage":
                jid = m["channel"].decode()[len(PREFIX) + 3:]
                self.events[jid].append(unpack(m["data"]))

    def stop(self):
        self.stop_flag = True
        self.join(timeout=5)
        self.pubsub.close()

    def followed_tokens(self, queue, jid):
        """What a client following this job prints: channel events plus the log, kept by the next index only."""
        seen, out = set(), []
        for e in sorted(self.events[jid] + queue.log(jid), key=lambda e: (e["type"] != "token", e["index"])):
            if e["type"] == "token" and e["index"] == len(out) and e["index"] not in seen:
                seen.add(e["index"])
                out.append(e["token"])
        return out


# ---------- workers ----------


class Workers:
    """lorq-worker processes with their logs in the test's temp dir."""

    def __init__(self, worker_bin, model_dir, server, tmp_path):
        self.bin, self.model, self.server, self.dir = worker_bin, str(model_dir), server, tmp_path
        self.procs = {}

    def env(self, **extra):
        env = dict(os.environ)
        env.update({
            "REDIS_URL": self.server.url,
            "MODEL_ID": self.model,
            "LORA_ADAPTERS": ",".join(f"{name}={path}" for name, path in ADAPTERS.items()),
            "LORQ_THREADS": "1",
            # Long enough that a slow step on a shared 2-core machine never looks like a dead worker;
            # the kill test sets it short.
            "CLAIM_MIN_IDLE_MS": "5000",
        })
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, name, **extra):
        log = open(self.dir / f"{name}.log", "ab")
        p = subprocess.Popen([self.bin], env=self.env(WORKER_ID=name, **extra), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = p
        return p

    def log(self, name):
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def logs(self):
        return "\n".join(f"--- {n} ---\n{self.log(n)[-6000:]}" for n in self.procs)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def pool(redis_server, worker_bin, model_dir, tmp_path):
    w = Workers(worker_bin, model_dir, redis_server, tmp_path)
    yield w
    w.stop_all()
    print(w.logs())  # shown when the test fails


@pytest.fixture
def queue(redis_server):
    return Queue(redis_server)


def check_log_once(queue, jid, n_tokens):
    """The job's log holds token events 0..n-1, each once, only the last marked last, then one end event."""
    log = queue.log(jid)
    tokens = [e for e in log if e["type"] == "token"]
    ends = [e for e in log if e["type"] == "end"]
    assert [e["index"] for e in tokens] == list(range(n_tokens)), jid
    assert [e["last"] for e in tokens] == [False] * (n_tokens - 1) + [True], jid
    assert len(ends) == 1 and log[-1]["type"] == "end", jid


# ---------- tests ----------


def test_300_jobs_6_adapters_2_workers_match_solo_runs(pool, queue, reference):
    n_new = 8
    prompts = [reference.tokenize(p) for p in PROMPTS]
    requests = [(prompts[i % len(prompts)], ALL_ADAPTERS[(i // len(prompts)) % len(ALL_ADAPTERS)]) for i in range(300)]
    reference.prepare([(tuple(p), a, n_new) for p, a in requests])
    follower = Follower(queue.server)
    follower.start()
    pool.start("w1")
    pool.start("w2")
    t0 = time.time()
    jids = [queue.submit(p, a, max_new_tokens=n_new) for p, a in requests]
    queue.wait(jids, timeout=240)
    elapsed = time.time() - t0
    time.sleep(0.3)
    follower.stop()
    by_worker = collections.Counter()
    for jid, (prompt, adapter) in zip(jids, requests):
        assert queue.status(jid) == "done", (jid, queue.record(jid))
        result = queue.result(jid)
        assert result["finish_reason"] == "length" and result["generated_tokens"] == n_new
        assert queue.log_tokens(jid) == reference.ids(prompt, adapter, n_new), (jid, adapter)
        check_log_once(queue, jid, n_new)
        published = follower.events[jid]
        assert [e["index"] for e in published if e["type"] == "token"] == list(range(n_new))
        assert sum(e["type"] == "end" for e in published) == 1  # completed exactly once
        assert queue.record(jid)["attempts"] == b"1"
        by_worker[result["worker"]] += 1
    assert set(by_worker) == {"w1", "w2"}, by_worker
    assert queue.r.xlen(f"{PREFIX}dead") == 0
    for a in ALL_ADAPTERS:
        assert queue.r.xlen(Queue.stream(a)) == 0  # every entry acknowledged and deleted
        assert queue.r.xpending(Queue.stream(a), "workers")["pending"] == 0
    print(f"300 jobs x {n_new} tokens over {len(ALL_ADAPTERS)} queues: {elapsed:.1f} s, per worker {dict(by_worker)}")


def finished_ms(queue, jid):
    return int(queue.record(jid)["finished_ms"])


def started_ms(queue, jid):
    return int(queue.record(jid)["started_ms"])


def test_fair_across_adapters(pool, queue, reference):
    """A flood on one adapter does not starve a quiet one: COUNT is shared among the streams."""
    prompt = reference.tokenize(PROMPTS[0])
    flood = [queue.submit(prompt, "team/a1", max_new_tokens=12) for _ in range(12)]
    quiet = queue.submit(prompt, "team/a2", max_new_tokens=12)
    pool.start("w1", MAX_RUNNING=2)
    queue.wait(flood + [quiet], timeout=120)
    done_before = sum(finished_ms(queue, j) < finished_ms(queue, quiet) for j in flood)
    assert done_before <= 2, f"{done_before} flood jobs finished before the quiet adapter's one"


def test_resident_adapters_first_when_capacity_is_short(pool, queue, reference):
    """With one free slot and several queues, the adapter already loaded is read first."""
    prompt = reference.tokenize(PROMPTS[0])
    pool.start("w1", MAX_RUNNING=1)
    warm = queue.submit(prompt, "team/a1", max_new_tokens=40)  # loads team/a1, keeps the only slot busy
    queue.wait_logged(lambda: queue.r.llen(f"{PREFIX}log:{warm}") >= 2, timeout=60)
    cold = queue.submit(prompt, "team/a3", max_new_tokens=4)  # first in, but its adapter is not loaded
    hot = queue.submit(prompt, "team/a1", max_new_tokens=4)
    queue.wait([warm, cold, hot], timeout=60)
    assert started_ms(queue, hot) < started_ms(queue, cold)
    assert started_ms(queue, cold) >= finished_ms(queue, hot) - 5  # one at a time


def running_jobs_of(queue, jids, worker, min_tokens):
    return [j for j in jids if queue.record(j).get("worker") == worker.encode() and queue.status(j) == "running"
            and queue.r.llen(f"{PREFIX}log:{j}") >= min_tokens]


def test_kill_9_mid_generation_every_job_completes_once(pool, queue, reference):
    n_new = 30
    prompts = [reference.tokenize(p) for p in PROMPTS[:2]]
    requests = [(prompts[i % 2], ["", "team/a1", "team/a2"][i % 3]) for i in range(24)]
    reference.prepare([(tuple(p), a, n_new) for p, a in requests])
    follower = Follower(queue.server)
    follower.start()
    victim = pool.start("victim", MAX_RUNNING=8, CLAIM_MIN_IDLE_MS=1000)
    pool.start("survivor", MAX_RUNNING=8, CLAIM_MIN_IDLE_MS=1000)
    jids = [queue.submit(p, a, max_new_tokens=n_new) for p, a in requests]
    queue.wait_logged(lambda: len(running_jobs_of(queue, jids, "victim", 4)) >= 2, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    orphans = [j for j in jids if queue.record(j).get("worker") == b"victim" and queue.status(j) == "running"]
    assert orphans, "the victim held no running job when killed"
    queue.wait(jids, timeout=120)
    time.sleep(0.3)
    follower.stop()
    for jid, (prompt, adapter) in zip(jids, requests):
        assert queue.status(jid) == "done", (jid, queue.record(jid))
        want = reference.ids(prompt, adapter, n_new)
        assert queue.log_tokens(jid) == want, jid
        check_log_once(queue, jid, n_new)
        published = follower.events[jid]
        indices = [e["index"] for e in published if e["type"] == "token"]
        assert len(indices) == len(set(indices)), f"{jid}: duplicated token events {indices}"
        assert sum(e["type"] == "end" for e in published) == 1
        assert follower.followed_tokens(queue, jid) == want
    for jid in orphans:
        rec = queue.record(jid)
        assert rec["attempts"] == b"2" and queue.result(jid)["worker"] == "survivor", rec
    assert "claimed" in pool.log("survivor")


def test_redis_restart_mid_run_loses_nothing(pool, queue, redis_server, reference):
    n_new = 30
    prompts = [reference.tokenize(p) for p in PROMPTS[:2]]
    requests = [(prompts[i % 2], ["", "team/a1", "team/a2"][i % 3]) for i in range(16)]
    reference.prepare([(tuple(p), a, n_new) for p, a in requests])
    pool.start("w1", MAX_RUNNING=6)
    pool.start("w2", MAX_RUNNING=6)
    jids = [queue.submit(p, a, max_new_tokens=n_new) for p, a in requests]
    queue.wait_logged(lambda: sum(queue.r.llen(f"{PREFIX}log:{j}") >= 5 for j in jids) >= 4, timeout=60)
    redis_server.stop()
    time.sleep(1.5)
    redis_server.start()
    queue.wait(jids, timeout=120)
    for jid, (prompt, adapter) in zip(jids, requests):
        assert queue.status(jid) == "done", (jid, queue.record(jid))
        assert queue.log_tokens(jid) == reference.ids(prompt, adapter, n_new), jid
        check_log_once(queue, jid, n_new)
    for name in ("w1", "w2"):
        assert pool.procs[name].poll() is None, f"{name} died"
        assert "reconnected" in pool.log(name)
    assert queue.r.xlen(f"{PREFIX}dead") == 0


def test_sigterm_drains_running_jobs_and_exits_0(pool, queue, reference):
    prompt = reference.tokenize(PROMPTS[0])
    w = pool.start("w1", MAX_RUNNING=3)
    jids = [queue.submit(prompt, "team/a1", max_new_tokens=30) for _ in range(5)]
    queue.wait_logged(lambda: sum(queue.r.llen(f"{PREFIX}log:{j}") >= 2 for j in jids) >= 3, timeout=60)
    running = [j for j in jids if queue.status(j) == "running"]
    assert len(running) == 3
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0
    for j in running:
        assert queue.status(j) == "done", queue.record(j)
        check_log_once(queue, j, 30)
    waiting = [j for j in jids if j not in running]
    assert all(queue.status(j) == "queued" for j in waiting)  # not taken while draining
    assert "draining" in pool.log("w1")
    assert not queue.r.exists(f"{PREFIX}worker:w1")  # heartbeat removed on exit
    pool.start("w2")
    queue.wait(waiting, timeout=60)
    assert all(queue.status(j) == "done" for j in waiting)


def xadd_raw(queue, stream, fields):
    """An entry written by hand, without enqueue.lua (and so without a status record)."""
    if not queue.r.exists(stream):
        queue.r.xgroup_create(stream, "workers", id="0", mkstream=True)
        queue.r.sadd(f"{PREFIX}queues", stream)
    return queue.r.xadd(stream, fields).decode()


def test_malformed_entries_fail_clearly_and_the_worker_keeps_serving(pool, queue, reference):
    prompt = reference.tokenize(PROMPTS[0])
    pool.start("w1", MAX_BATCH_TOTAL_TOKENS=4096)
    base = Queue.stream("")
    first = queue.submit(prompt, "", max_new_tokens=4)  # the base stream and its group exist from here on
    queue.wait([first], timeout=60)
    good = queue.job(prompt)
    missing = {k: v for k, v in queue.job(prompt, job_id="bad-missing").items() if k != "max_new_tokens"}
    cases = {
        "bad-garbage": (base, {"id": "bad-garbage", "job": b"\xc1\x00\xff"}, "validation", "not valid msgpack"),
        "bad-missing": (base, {"id": "bad-missing", "job": msgpack.packb(missing)}, "validation", "'max_new_tokens'"),
        "bad-type": (base, {"id": "bad-type", "job": msgpack.packb(dict(queue.job(prompt, job_id="bad-type"),
                                                                         prompt="hello"))},
                     "validation", "'prompt'"),
        "bad-params": (base, {"id": "bad-params", "job": msgpack.packb(dict(queue.job(prompt, job_id="bad-params"),
                                                                           params={"temperature": "hot"}))},
                       "validation", "params.temperature"),
        "bad-mismatch": (base, {"id": "bad-mismatch", "job": msgpack.packb(dict(good, id="someone-else"))},
                         "validation", "differs"),
        "bad-nojob": (base, {"id": "bad-nojob"}, "validation", "no 'job' field"),
        "bad-adapter": (Queue.stream("nosuch"), {"id": "bad-adapter", "job": msgpack.packb(
            queue.job(prompt, "nosuch", job_id="bad-adapter"))}, "adapter", "unknown adapter 'nosuch'"),
        "bad-toolong": (base, {"id": "bad-toolong", "job": msgpack.packb(queue.job(prompt, job_id="bad-toolong",
                                                                                   max_new_tokens=5000))},
                        "validation", "exceeds"),
        "bad-record": (base, {"id": "bad-record", "job": msgpack.packb(queue.job(prompt, job_id="bad-record"))},
                       "validation", "no status record"),
    }
    for jid, (stream, fields, _, _) in cases.items():
        xadd_raw(queue, stream, fields)
    # a job for an unknown adapter, through enqueue like any client, and a good one after all the bad ones
    unknown = queue.submit(prompt, "also/unknown", max_new_tokens=4)
    after = queue.submit(prompt, "team/a2", max_new_tokens=4)
    queue.wait(list(cases) + [unknown, after], timeout=60)
    dead = queue.dead_letters()
    for jid, (stream, _, error_type, needle) in cases.items():
        assert queue.status(jid) == "failed", (jid, queue.record(jid))
        result = queue.result(jid)
        assert result["finish_reason"] == "error" and result["error_type"] == error_type, (jid, result)
        assert needle in result["error"], (jid, result["error"])
        assert jid in dead and needle in dead[jid]["error"].decode(), jid
        assert queue.r.xpending(stream, "workers")["pending"] == 0
    assert queue.result(unknown)["error_type"] == "adapter"
    assert queue.status(after) == "done"
    assert queue.log_tokens(after) == reference.ids(prompt, "team/a2", 4)
    assert pool.procs["w1"].poll() is None


def test_cancel_stops_a_running_job_within_a_step(pool, queue, reference):
    prompt = reference.tokenize(PROMPTS[1])
    pool.start("w1")
    jid = queue.submit(prompt, "team/a3", max_new_tokens=500)
    queue.wait_logged(lambda: queue.r.llen(f"{PREFIX}log:{jid}") >= 3, timeout=60)
    assert queue.cancel(jid, "team/a3")[0] == b"ok"
    logged = queue.r.llen(f"{PREFIX}log:{jid}")
    queue.wait_logged(lambda: "cancelled after" in pool.log("w1"), timeout=10)
    time.sleep(0.5)
    assert queue.r.llen(f"{PREFIX}log:{jid}") == logged  # nothing after the cancel
    assert queue.status(jid) == "cancelled"
    assert queue.result(jid)["finish_reason"] == "cancelled"
    queue.wait_logged(lambda: queue.r.hget(f"{PREFIX}worker:w1", "running") == b"0", timeout=5)
    after = queue.submit(prompt, "", max_new_tokens=4)
    queue.wait([after], timeout=30)
    assert queue.status(after) == "done"


def test_deadline_ends_a_job_with_a_clear_error(pool, queue, reference):
    prompt = reference.tokenize(PROMPTS[2])
    now = int(time.time() * 1000)
    expired = queue.submit(prompt, "", max_new_tokens=4, deadline_ms=now - 1)
    pool.start("w1")
    running = queue.submit(prompt, "team/a4", max_new_tokens=2000, deadline_ms=int(time.time() * 1000) + 1500)
    queue.wait([expired, running], timeout=60)
    for jid in (expired, running):
        assert queue.status(jid) == "failed"
        result = queue.result(jid)
        assert result["error_type"] == "deadline", result
        assert "deadline" in result["error"]
    assert queue.record(expired)["attempts"] == b"0"  # never started
    assert 0 < len(queue.log_tokens(running)) < 2000


def test_dead_letter_after_max_attempts(pool, queue, reference):
    prompt = reference.tokenize(PROMPTS[0])
    jid = queue.submit(prompt, "", max_new_tokens=4)
    # as if two workers had started it and died
    queue.r.hset(f"{PREFIX}job:{jid}", mapping={"attempts": 2, "worker": "gone-1", "status": "running"})
    pool.start("w1", MAX_ATTEMPTS=2)
    queue.wait([jid], timeout=30)
    assert queue.status(jid) == "failed"
    result = queue.result(jid)
    assert result["error_type"] == "dead_letter" and "2 attempts" in result["error"], result
    dead = queue.dead_letters()
    assert dead[jid]["error_type"] == b"dead_letter" and dead[jid]["job"]
    assert queue.r.xpending(Queue.stream(""), "workers")["pending"] == 0
    ok = queue.submit(prompt, "", max_new_tokens=4)
    queue.wait([ok], timeout=30)
    assert queue.status(ok) == "done"


def test_a_new_queue_wakes_an_idle_worker(pool, queue, reference):
    """enqueue.lua announces a queue's first job on P queues:new, which an idle worker blocks on
    with its queues: with the periodic look at the queues set made rare (DISCOVER_MS, 60 s), the
    first jobs of the base model and of an adapter, both on queues the worker has never read,
    are still served at once."""
    prompt = reference.tokenize(PROMPTS[0])
    pool.start("w1", DISCOVER_MS=60000)
    queue.wait_logged(lambda: queue.r.exists(f"{PREFIX}worker:w1"), timeout=60)
    for adapter in ["", "team/a1"]:
        t0 = time.time()
        jid = queue.submit(prompt, adapter, max_new_tokens=4)
        queue.wait([jid], timeout=20)
        print(f"first job on {Queue.stream(adapter)}: done in {time.time() - t0:.2f} s")
        assert queue.status(jid) == "done", queue.record(jid)
        assert queue.log_tokens(jid) == reference.ids(prompt, adapter, 4)
    assert queue.r.xlen(f"{PREFIX}queues:new") == 2
    assert queue.r.xpending(f"{PREFIX}queues:new", "workers")["pending"] == 0  # wake-ups are acknowledged
    # A second job on a known queue is not announced again.
    queue.wait([queue.submit(prompt, "team/a1", max_new_tokens=4)], timeout=20)
    assert queue.r.xlen(f"{PREFIX}queues:new") == 2


def test_heartbeat(pool, queue):
    pool.start("w1")
    queue.wait_logged(lambda: queue.r.exists(f"{PREFIX}worker:w1"), timeout=30)
    hb = {k.decode(): v.decode() for k, v in queue.r.hgetall(f"{PREFIX}worker:w1").items()}
    assert hb["id"] == "w1" and hb["state"] == "serving" and hb["device"] == "cpu" and hb["capacity"] == "32"
    assert 0 < queue.r.pttl(f"{PREFIX}worker:w1") <= 5000
    assert queue.r.zscore(f"{PREFIX}workers", "w1") == pytest.approx(int(hb["seen_ms"]), abs=1)


def submit_cli(lorq_bin, model_dir, server, *args, timeout=120):
    return subprocess.run([lorq_bin, "submit", "--model", str(model_dir), "--redis", server.url, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_lorq_submit_end_to_end(pool, queue, lorq_bin, model_dir, redis_server, reference):
    pool.start("w1")
    prompt = reference.tokenize(PROMPTS[3])
    want = reference.ids(prompt, "team/a2", 12)
    r = submit_cli(lorq_bin, model_dir, redis_server, "--adapter", "team/a2", "--prompt", PROMPTS[3],
                   "--max-new-tokens", "12", "--ignore-eos", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ids"] == want and out["finish_reason"] == "length" and out["worker"] == "w1"
    streamed = submit_cli(lorq_bin, model_dir, redis_server, "--adapter", "team/a2", "--prompt", PROMPTS[3],
                          "--max-new-tokens", "12", "--ignore-eos", "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == out["text"] + "\n"
    bad = submit_cli(lorq_bin, model_dir, redis_server, "--adapter", "no/such", "--prompt", "hi")
    assert bad.returncode == 1 and "unknown adapter 'no/such'" in bad.stderr, bad.stderr
    usage = submit_cli(lorq_bin, model_dir, redis_server, "--prompt", "hi", "--top-p", "2")
    assert usage.returncode == 2 and "top_p" in usage.stderr


def test_worker_refuses_bad_configuration(worker_bin, model_dir):
    base = dict(os.environ, MODEL_ID=str(model_dir), REDIS_URL="redis://127.0.0.1:1")
    cases = [
        ({"MAX_RUNNING": "many"}, "MAX_RUNNING"),
        ({"MAX_BATCH_TOTAL_TOKENS": "0"}, "MAX_BATCH_TOTAL_TOKENS"),
        ({"CLAIM_MIN_IDLE_MS": "-5"}, "CLAIM_MIN_IDLE_MS"),
        ({"RESULT_TTL": "1e3"}, "RESULT_TTL"),
        ({"ADAPTER_MEMORY_BUDGET": "2 lots"}, "ADAPTER_MEMORY_BUDGET"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"LORA_ADAPTERS": "some/local/dir/"}, "LORA_ADAPTERS"),
        ({"LORA_ADAPTERS": "a=x,a=y"}, "twice"),
        ({"LORA_ADAPTERS": ".bad=x"}, "adapter name"),
        ({"WORKER_ID": "has space"}, "WORKER_ID"),
        ({"MODEL_ID": ""}, "MODEL_ID"),
    ]
    for extra, needle in cases:
        r = subprocess.run([worker_bin], env=dict(base, **extra), capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and needle in r.stderr, (extra, r.returncode, r.stderr)
    r = subprocess.run([worker_bin, "--max-running"], env=base, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "needs a value" in r.stderr
    r = subprocess.run([worker_bin, "--bogus", "1"], env=base, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown argument" in r.stderr
