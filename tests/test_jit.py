"""Just-in-time adapters through the real stack: redis-server, lorq-gateway,
lorq-worker on the bundled model, and a local hub (tests/hubserver.py)
serving adapter repositories the way huggingface.co does.

Adapters are made here, without torch: PEFT's file layout (adapter_config.json
and adapter_model.safetensors, bf16, B non-zero) written with json, struct and
numpy. None is preloaded: the gateway accepts ids matching LORQ_ALLOW_ADAPTERS,
and the worker fetches and loads each one the first time a job names it, on
its loader thread, while the batch keeps stepping.

Run with -s to see the cold-load delay printed."""
import concurrent.futures
import http.client
import json
import os
import re
import struct
import shutil
import subprocess
import time

import numpy as np
import pytest
import redis as redislib

from conftest import Gateway, LorqProcess, RedisServer
from hubserver import Hub

N_ADAPTERS = 50
PROMPT = "The capital of France is"
NEW_TOKENS = 4
HIDDEN, KV = 576, 192  # SmolLM2-135M: q_proj 576->576, v_proj 576->192
LAYERS = 30


# ---------- adapters without torch ----------


def bf16_bytes(a):
    """float32 -> bf16 (round to nearest even), little-endian bytes."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


def safetensors_bytes(tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (shape, data) in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def make_adapter(seed, rank=4, out_dims=None):
    """PEFT files of a rank-`rank` adapter on q_proj and v_proj of every layer, B non-zero."""
    rng = np.random.default_rng(seed)
    dims = out_dims or {"q_proj": HIDDEN, "v_proj": KV}
    tensors = {}
    for layer in range(LAYERS):
        for proj, out in dims.items():
            base = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            a = rng.uniform(-0.2, 0.2, (rank, HIDDEN)).astype(np.float32)
            b = rng.uniform(-0.5, 0.5, (out, rank)).astype(np.float32)
            tensors[f"{base}.lora_A.weight"] = ((rank, HIDDEN), bf16_bytes(a))
            tensors[f"{base}.lora_B.weight"] = ((out, rank), bf16_bytes(b))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(dims),
              "lora_dropout": 0.0, "bias": "none", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
              "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    return {"adapter_config.json": json.dumps(config).encode(), "adapter_model.safetensors": safetensors_bytes(tensors)}


def write_folder(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


# ---------- the stack ----------


class Stack:
    def __init__(self, d, redis, worker, gateway, hub):
        self.dir, self.redis, self.worker, self.gateway, self.hub = d, redis, worker, gateway, hub
        self.url = gateway.url

    def stop(self):
        self.gateway.stop()
        self.worker.stop(timeout=30)
        self.redis.kill()
        log = self.gateway.log() + self.worker.log()
        assert "Sanitizer" not in log and "runtime error:" not in log, log[-20000:]


def start_stack(d, gateway_bin, worker_bin, model_dir, hub, worker_env=None, gateway_env=None):
    redis = RedisServer(d).start()
    env = {"REDIS_URL": redis.url, "MODEL_ID": str(model_dir), "LORQ_ALLOW_ADAPTERS": "jit/*"}
    wenv = dict(env, HF_ENDPOINT=hub.url, HF_HUB_CACHE=d / "hub-cache", LORQ_HUB_RETRY_MS=20, LORQ_HUB_RETRIES=1,
                MAX_RUNNING=64, LORQ_THREADS=2, ADAPTER_MAX_SIZE="1MiB", LORQ_ADAPTER_FAILURE_TTL=30)
    wenv.pop("HF_TOKEN", None)
    wenv.update(worker_env or {})
    worker = LorqProcess([worker_bin], wenv, d / "worker.log")
    gateway = Gateway(gateway_bin, dict(env, MAX_CONCURRENT_REQUESTS=1000, **(gateway_env or {})), d / "gateway.log")
    try:
        gateway.wait_healthy(timeout=90)
    except Exception:
        worker.kill(), gateway.kill(), redis.kill()
        raise
    return Stack(d, redis, worker, gateway, hub)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """The hub with N_ADAPTERS good repositories and the bad ones; the same files as local folders."""
    d = tmp_path_factory.mktemp("adapters")
    hub = Hub()
    folders = {}
    for i in range(N_ADAPTERS):
        files = make_adapter(1000 + i)
        hub.add(f"jit/a{i:02d}", files)
        folders[f"jit/a{i:02d}"] = write_folder(d / f"a{i:02d}", files)
    hub.add("jit/private", make_adapter(7), private=True, token="hf_secret")
    good = make_adapter(8)
    hub.add("jit/corrupt", dict(good, **{"adapter_model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"}))
    hub.add("jit/incompatible", make_adapter(9, out_dims={"q_proj": HIDDEN + 64}))
    hub.add("jit/huge", make_adapter(10, rank=16))  # ~1.8 MB, over ADAPTER_MAX_SIZE=1MiB
    write_folder(d / "local" / "jit" / "only-here", make_adapter(11))  # LORQ_ADAPTERS_DIR/<id>, not on the hub
    hub.start()
    hub.local_dir = d / "local"
    yield hub, folders
    hub.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, adapters, gateway_bin, worker_bin, model_dir):
    hub, _ = adapters
    s = start_stack(tmp_path_factory.mktemp("jit"), gateway_bin, worker_bin, model_dir, hub,
                    worker_env={"LORQ_ADAPTERS_DIR": hub.local_dir}, gateway_env={"LORQ_ADMIN_TOKEN": "admin-secret"})
    yield s
    s.stop()


# ---------- HTTP ----------


def request(url, method, path, body=None, headers=None, timeout=120):
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=h)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")


def generate(url, adapter, n=NEW_TOKENS, prompt=PROMPT):
    body = {"inputs": prompt, "parameters": {"max_new_tokens": n, "details": True}}
    if adapter:
        body["parameters"]["adapter_id"] = adapter
    return request(url, "POST", "/generate", body)


def first_token_delay(url, adapter):
    """Seconds from sending a /generate_stream request to its first token event."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "adapter_id": adapter}}
    t0 = time.monotonic()
    conn.request("POST", "/generate_stream", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    delay = None
    for line in r:
        if line.startswith(b"data:") and delay is None:
            delay = time.monotonic() - t0
    conn.close()
    return delay


def reference_ids(lorq_bin, model_dir, folder, n=NEW_TOKENS):
    args = [lorq_bin, "generate", "--model", str(model_dir), "--prompt", PROMPT, "--max-new-tokens", str(n), "--json",
            "--threads", "1", "--adapter", str(folder)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["ids"]


def token_ids(body):
    return [t["id"] for t in body["details"]["tokens"]]


def resident(stack):
    r = redislib.Redis(port=stack.redis.port)
    out = set()
    for wid in r.zrange("lorq:workers", 0, -1):
        a = r.hget(b"lorq:worker:" + wid, "adapters")
        out |= {x for x in (a or b"").decode().split(",") if x}
    return out


def wait_for(cond, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---------- tests ----------


def test_cold_adapter_first_token_delay(stack):
    warm_base = first_token_delay(stack.url, "")
    cold = first_token_delay(stack.url, "jit/a49")
    warm = first_token_delay(stack.url, "jit/a49")
    loaded = re.search(r"adapter 'jit/a49' loaded in (\d+) ms", stack.worker.log())
    print(f"\nfirst-token delay: cold adapter {cold * 1000:.0f} ms (of which hub fetch + parse on the loader thread "
          f"{loaded.group(1) if loaded else '?'} ms; the new stream wakes the idle worker through P queues:new), "
          f"same adapter warm {warm * 1000:.0f} ms, first base-model request "
          f"{warm_base * 1000:.0f} ms (also a new stream)")
    assert loaded, "the worker did not log the adapter's load"
    assert cold < 30
    wait_for(lambda: "jit/a49" in resident(stack), "jit/a49 in the worker's heartbeat")


def test_fifty_adapters_none_preloaded(stack, adapters, lorq_bin, model_dir):
    hub, folders = adapters
    names = [f"jit/a{i:02d}" for i in range(N_ADAPTERS)]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=N_ADAPTERS) as ex:
        results = dict(zip(names, ex.map(lambda a: generate(stack.url, a), names)))
    took = time.monotonic() - t0
    for name, (status, body) in results.items():
        assert status == 200, (name, body)
        assert body["details"]["generated_tokens"] == NEW_TOKENS or body["details"]["finish_reason"] == "eos_token"
    print(f"\n{N_ADAPTERS} adapters, none preloaded: every request answered in {took:.1f} s")
    # The right outputs: a sample against `lorq generate --adapter DIR`, and the adapters do differ.
    sample = ["jit/a00", "jit/a17", "jit/a33"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        want = dict(zip(sample, ex.map(lambda a: reference_ids(lorq_bin, model_dir, folders[a]), sample)))
    for name in sample:
        assert token_ids(results[name][1]) == want[name], name
    assert len({tuple(token_ids(b)) for _, b in results.values()}) > 1
    # Every one of the 50: run alone now (resident, no batch-mates), the same tokens as in the crowd.
    for name in names:
        status, body = generate(stack.url, name)
        assert status == 200 and token_ids(body) == token_ids(results[name][1]), name
    # Each repository was fetched once: the revision listing was asked once per adapter.
    for name in sample:
        assert hub.count(f"/api/models/{name}/revision/") == 1


@pytest.mark.parametrize("adapter,status,words", [
    ("jit/missing", 404, ["404"]),
    ("jit/private", 422, ["401", "HF_TOKEN"]),
    ("jit/corrupt", 422, ["adapter_model.safetensors"]),
    ("jit/incompatible", 422, ["q_proj"]),
    ("jit/huge", 422, ["ADAPTER_MAX_SIZE"]),
])
def test_failures_are_4xx_while_traffic_continues(stack, adapters, adapter, status, words):
    hub, _ = adapters
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        other = ex.submit(generate, stack.url, "jit/a01", 16)
        got, body = generate(stack.url, adapter)
        assert other.result()[0] == 200, other.result()
    assert got == status, body
    assert adapter in body["error"], body
    assert "hub-cache" not in body["error"] and "snapshots" not in body["error"], body  # no server paths
    for w in words:
        assert w in body["error"], body
    # Remembered: a second request fails at once without asking the hub again.
    asked = hub.count(f"/api/models/{adapter}/")
    t0 = time.monotonic()
    got2, body2 = generate(stack.url, adapter)
    assert got2 == status and body2["error"] == body["error"]
    assert hub.count(f"/api/models/{adapter}/") == asked
    assert time.monotonic() - t0 < 5


def test_gateway_refuses_ids_outside_the_allow_list(stack):
    for bad in ["other/x", "jit/../etc", "jit/a/../../b", "/etc/passwd", "jit//a", "jit/a b"]:
        got, body = generate(stack.url, bad)
        assert got == 422, (bad, body)
        assert "LORQ_ALLOW_ADAPTERS" in body["error"] or "not served" in body["error"], body


def test_models_info_and_admin_preload_unload(stack):
    url, path = stack.url, "/admin/adapters/jit/a40"
    assert request(url, "POST", path + "/load")[0] == 401
    assert request(url, "POST", path + "/load", headers={"Authorization": "Bearer nope"})[0] == 403
    auth = {"Authorization": "Bearer admin-secret"}
    assert request(url, "POST", "/admin/adapters/other/x/load", headers=auth)[0] == 422
    assert request(url, "POST", "/admin/adapters/jit/../x/load", headers=auth)[0] == 422
    status, body = request(url, "POST", path + "/load", headers=auth)
    assert status == 202 and body["op"] == "load" and body["adapter"] == "jit/a40", body
    wait_for(lambda: "jit/a40" in resident(stack), "jit/a40 preloaded")

    def listed():
        models = [m["id"] for m in request(url, "GET", "/v1/models")[1]["data"]]
        info = request(url, "GET", "/info")[1]["adapters"]
        return "jit/a40" in models and "jit/a40" in info

    wait_for(listed, "jit/a40 in /v1/models and /info")
    status, body = request(url, "DELETE", path, headers=auth)
    assert status == 202 and body["op"] == "unload", body
    wait_for(lambda: "jit/a40" not in resident(stack), "jit/a40 unloaded")
    wait_for(lambda: not listed(), "jit/a40 gone from /v1/models")
    # A request after the unload loads it again and still answers.
    assert generate(url, "jit/a40")[0] == 200


def generate_while_watching(url, order, pool_size, watch):
    """One request per adapter id of order, from a pool of pool_size threads (one of them calls watch()
    every 0.1 s until the requests are done). Every request must succeed and every adapter give the same
    tokens each time (reloads included); returns {adapter: {token ids}}."""
    stop = [False]

    def watcher():
        while not stop[0]:
            watch()
            time.sleep(0.1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=pool_size) as ex:
        watching = ex.submit(watcher)
        try:
            results = list(ex.map(lambda a: (a, generate(url, a)), order))
        finally:
            stop[0] = True  # also when a request raised, or the pool would wait on the watcher forever
        watching.result()
    by_adapter = {}
    for name, (status, body) in results:
        assert status == 200, (name, body)
        by_adapter.setdefault(name, set()).add(tuple(token_ids(body)))
    assert all(len(v) == 1 for v in by_adapter.values()), by_adapter  # reloads give the same tokens
    return by_adapter


def test_host_budget_of_five_adapters_over_twenty(tmp_path, adapters, gateway_bin, worker_bin, model_dir, lorq_bin):
    """Memory: at most 5 adapters resident; disk: about 6 adapters' downloads (3 MB) kept in the hub cache."""
    hub, folders = adapters
    s = start_stack(tmp_path, gateway_bin, worker_bin, model_dir, hub,
                    worker_env={"MAX_HOST_ADAPTERS": 5, "ADAPTER_DISK_BUDGET": "3MB"})
    try:
        names = [f"jit/a{i:02d}" for i in range(20)]
        order = names + names[::-1] + names[::3]
        fetched_before = {n: hub.count(f"/api/models/{n}/revision/") for n in names}
        seen_max = [0]

        def watch():
            seen_max[0] = max(seen_max[0], len(resident(s)))

        by_adapter = generate_while_watching(s.url, order, 24, watch)
        sample = ["jit/a03", "jit/a19"]
        for name in sample:
            assert list(by_adapter[name].pop()) == reference_ids(lorq_bin, model_dir, folders[name]), name
        assert 0 < seen_max[0] <= 5, seen_max[0]
        evictions = s.worker.log().count("loaded in")
        print(f"\nMAX_HOST_ADAPTERS=5, {len(order)} requests over 20 adapters: all correct; {evictions} loads, "
              f"at most {seen_max[0]} resident")
        assert evictions > 20  # some adapters were evicted and loaded again
        # The disk tier: downloads deleted to keep 3 MB (each is ~0.46 MB), and fetched again when needed.
        cached = [p for p in (tmp_path / "hub-cache").iterdir() if p.name.startswith("models--jit--")]
        on_disk = sum(f.stat().st_size for p in cached for f in (p / "blobs").iterdir())
        deleted = s.worker.log().count("to keep ADAPTER_DISK_BUDGET")
        print(f"ADAPTER_DISK_BUDGET=3MB: {len(cached)} adapters ({on_disk / 1e6:.1f} MB) left in the cache, "
              f"{deleted} downloads deleted")
        assert deleted > 0 and on_disk <= 3_000_000 + 500_000, (len(cached), on_disk)
        assert max(hub.count(f"/api/models/{n}/revision/") - fetched_before[n] for n in names) >= 2  # fetched again
        # The admin API is off without LORQ_ADMIN_TOKEN.
        assert request(s.url, "POST", "/admin/adapters/jit/a00/load", headers={"Authorization": "Bearer x"})[0] == 403
    finally:
        s.stop()


def test_cache_copy_deleted_by_another_worker_is_fetched_again(tmp_path, adapters, gateway_bin, worker_bin, model_dir,
                                                               lorq_bin):
    """Workers sharing one hub cache, one with ADAPTER_DISK_BUDGET: the other may find the copy it remembered
    deleted when it loads that adapter again; it fetches it again instead of failing the request."""
    hub, folders = adapters
    s = start_stack(tmp_path, gateway_bin, worker_bin, model_dir, hub, worker_env={"MAX_HOST_ADAPTERS": 1})
    try:
        fetches = lambda: hub.count("/api/models/jit/a10/revision/")
        before = fetches()
        assert generate(s.url, "jit/a10")[0] == 200
        assert generate(s.url, "jit/a11")[0] == 200  # one adapter resident: a10 is evicted
        wait_for(lambda: resident(s) == {"jit/a11"}, "jit/a10 evicted")
        shutil.rmtree(tmp_path / "hub-cache" / "models--jit--a10")  # as another worker's disk budget would
        status, body = generate(s.url, "jit/a10")
        assert status == 200, body
        assert token_ids(body) == reference_ids(lorq_bin, model_dir, folders["jit/a10"])
        assert fetches() - before == 2, "fetched once, then again after its copy was deleted"
    finally:
        s.stop()


def heartbeat(stack):
    """The (only) worker's heartbeat hash, as str -> str."""
    r = redislib.Redis(port=stack.redis.port)
    wids = r.zrange("lorq:workers", 0, -1)
    assert len(wids) == 1, wids
    return {k.decode(): v.decode() for k, v in r.hgetall(b"lorq:worker:" + wids[0]).items()}


def test_host_tier_off_by_default_on_the_cpu(stack):
    """On the CPU backend resident adapters are host memory already: no second copy unless configured."""
    assert generate(stack.url, "jit/a02")[0] == 200
    wait_for(lambda: "jit/a02" in resident(stack), "jit/a02 in the heartbeat")
    hb = heartbeat(stack)
    assert hb["host_adapters"] == "" and hb["adapter_loads_host"] == "0", hb
    assert int(hb["adapter_loads_disk"]) > 0, hb
    assert "adapter host tier" not in stack.worker.log()


def test_host_tier_serves_reloads_without_the_disk(tmp_path, adapters, gateway_bin, worker_bin, model_dir, lorq_bin):
    """Device tier 2 adapters (MAX_HOST_ADAPTERS), host tier 6 (ADAPTER_HOST_COUNT), traffic over 10: adapters
    evicted from the device come back from host memory (an upload, no disk read or parse) while the host tier
    holds them, and from the disk once it has dropped them; every answer equals the adapter's solo run."""
    hub, folders = adapters
    s = start_stack(tmp_path, gateway_bin, worker_bin, model_dir, hub,
                    worker_env={"MAX_HOST_ADAPTERS": 2, "ADAPTER_HOST_BUDGET": "1GiB", "ADAPTER_HOST_COUNT": 6})
    try:
        names = [f"jit/a{i:02d}" for i in range(20, 30)]
        hot, cold = names[:6], names[6:]
        order = hot * 3 + cold + hot  # the last round: some of the hot six were pushed out of the host tier
        fetched_before = {n: hub.count(f"/api/models/{n}/revision/") for n in names}
        seen = {"device": 0, "host": 0}

        def watch():
            hb = heartbeat(s)
            seen["device"] = max(seen["device"], len([x for x in hb.get("adapters", "").split(",") if x]))
            seen["host"] = max(seen["host"], len([x for x in hb.get("host_adapters", "").split(",") if x]))

        by_adapter = generate_while_watching(s.url, order, 5, watch)
        # Each equal to the same request run alone, and a sample to `lorq generate --adapter DIR`.
        for name in names:
            status, body = generate(s.url, name)
            assert status == 200 and (tuple(token_ids(body)),) == tuple(by_adapter[name]), name
        for name in ["jit/a21", "jit/a28"]:
            assert list(next(iter(by_adapter[name]))) == reference_ids(lorq_bin, model_dir, folders[name]), name
        log = s.worker.log()
        loads = len(re.findall(r"adapter '[^']+' loaded in", log))
        from_host = len(re.findall(r"adapter '[^']+' loaded in \d+ ms from the host tier", log))
        wait_for(lambda: int(heartbeat(s)["adapter_loads_host"]) + int(heartbeat(s)["adapter_loads_disk"]) == loads,
                 "the heartbeat's load counters to catch up with the log")
        hb = heartbeat(s)
        hits, disk = int(hb["adapter_loads_host"]), int(hb["adapter_loads_disk"])
        print(f"\ndevice tier 2, host tier 6, {len(order) + len(names)} requests over 10 adapters: all correct; "
              f"{loads} loads: {hits} from the host tier (upload only), {disk} from the disk; at most "
              f"{seen['device']} resident on the device, {seen['host']} in the host tier")
        assert hits == from_host and hits > 0, (hits, from_host)
        assert disk >= len(names)  # each adapter's first load reads the disk
        assert hits >= 3  # rounds 2 and 3 over the hot six: the device holds 2, the host tier all six
        assert 0 < seen["device"] <= 2 and 0 < seen["host"] <= 6, seen
        # Each repository was fetched from the hub once (reloads read the host tier or the remembered folder).
        assert all(hub.count(f"/api/models/{n}/revision/") - fetched_before[n] == 1 for n in names)
    finally:
        s.stop()


def test_adapters_dir_before_the_hub(stack, adapters, lorq_bin, model_dir):
    hub, _ = adapters
    status, body = generate(stack.url, "jit/only-here")
    assert status == 200, body
    assert token_ids(body) == reference_ids(lorq_bin, model_dir, hub.local_dir / "jit" / "only-here")
    assert hub.count("/api/models/jit/only-here") == 0


def test_slow_download_does_not_stall_the_batch_nor_a_quitting_worker(tmp_path, adapters, gateway_bin, worker_bin,
                                                                        model_dir):
    hub, _ = adapters
    s = start_stack(tmp_path, gateway_bin, worker_bin, model_dir, hub,
                    worker_env={"LORQ_HUB_STALL_TIMEOUT": 8, "LORQ_HUB_RETRIES": 0})
    try:
        assert generate(s.url, "jit/a01")[0] == 200
        hub.faults.add("stall")  # each blob transfer stops after its first chunk
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
            t0 = time.monotonic()
            stalled = ex.submit(generate, s.url, "jit/a02")
            wait_for(lambda: "waits for adapter 'jit/a02'" in s.worker.log(), "the job parked")
            # While the loader thread is stuck in the transfer, the batch keeps stepping.
            for adapter in ["", "jit/a01", "", "jit/a01"]:
                t = time.monotonic()
                status, body = generate(s.url, adapter, n=8)
                assert status == 200 and time.monotonic() - t < 5, (adapter, body)
            status, body = stalled.result()
            took = time.monotonic() - t0
        assert status == 422 and "jit/a02" in body["error"], body
        print(f"\na stalled download failed after {took:.1f} s (LORQ_HUB_STALL_TIMEOUT=8) while 4 other requests "
              f"ran")
        # A quitting worker (two SIGTERMs) does not wait for a stalled download.
        threading_request = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        threading_request.submit(generate, s.url, "jit/a03")
        wait_for(lambda: "waits for adapter 'jit/a03'" in s.worker.log(), "the job parked")
        time.sleep(0.5)
        t = time.monotonic()
        s.worker.proc.terminate()
        time.sleep(0.2)
        s.worker.proc.terminate()
        s.worker.proc.wait(timeout=20)
        print(f"worker quit in {time.monotonic() - t:.1f} s during a stalled download")
        assert time.monotonic() - t < 6
        threading_request.shutdown(wait=False, cancel_futures=True)
    finally:
        hub.faults.discard("stall")
        s.stop()
