"""bin/lorq-gateway against the real stack: a redis-server (AOF on), a CPU
lorq-worker with the bundled model and the test adapters, and the gateway,
driven by real clients (huggingface_hub's InferenceClient, the openai
package, raw HTTP).

What is checked: greedy answers through every API equal `bin/lorq generate`
with the same adapter (token ids and text); TGI's and OpenAI's response and
stream shapes; the README's examples, run as written; 200 concurrent
streaming clients over several adapters; bad requests of every kind answered
with TGI's 4xx bodies while the gateway stays up; a client leaving cancels its
job; the jobs API; /metrics as Prometheus text; /health; 429s; two gateways
on one port; bad configuration; Redis restarting under open streams.
"""
import concurrent.futures
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, Gateway, LorqProcess, RedisServer, free_port

sys.path.insert(0, str(ROOT / "tests" / "reference"))
import demo_tasks  # noqa: E402  (the chat template rendered as transformers does)

ADAPTER_DIR = ROOT / "tests" / "reference" / "adapters"
# The README's examples name demo/sentiment (what `make run` serves); any real adapter stands in for it.
DEMO = ROOT / "adapters" / "demo" / "sentiment"
ADAPTERS = {
    "demo/sentiment": DEMO if (DEMO / "adapter_config.json").exists() else ADAPTER_DIR / "r8-qv",
    "r16": ADAPTER_DIR / "r16-attn-rslora",
    "r64": ADAPTER_DIR / "r64-qv-layers",
    "r8-all": ADAPTER_DIR / "r8-all-pattern",
}
LORA_ADAPTERS = ",".join(f"{k}={v}" for k, v in ADAPTERS.items())
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Hello who are you?"]


# ---------- the stack ----------


class Stack:
    def __init__(self, redis, worker, gateway, model_dir, directory):
        self.redis, self.worker, self.gateway = redis, worker, gateway
        self.model_dir, self.dir = model_dir, directory
        self.url, self.port = gateway.url, gateway.port

    def env(self):
        return {"REDIS_URL": self.redis.url, "MODEL_ID": str(self.model_dir), "LORA_ADAPTERS": LORA_ADAPTERS}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gateway_bin, worker_bin, model_dir):
    d = tmp_path_factory.mktemp("gateway")
    redis = RedisServer(d).start()
    env = {"REDIS_URL": redis.url, "MODEL_ID": str(model_dir), "LORA_ADAPTERS": LORA_ADAPTERS}
    worker = LorqProcess([worker_bin], dict(env, MAX_RUNNING=64, LORQ_THREADS=2), d / "worker.log")
    gateway = Gateway(gateway_bin, dict(env, MAX_CONCURRENT_REQUESTS=1000), d / "gateway.log")
    try:
        gateway.wait_healthy(timeout=90)
    except Exception:
        worker.kill()
        gateway.kill()
        redis.kill()
        raise
    s = Stack(redis, worker, gateway, model_dir, d)
    yield s
    gateway.stop()
    worker.stop(timeout=30)
    redis.kill()
    assert_clean(gateway)


def assert_clean(gateway):
    """No sanitizer report in a gateway's log (when it runs an ASan/UBSan build)."""
    log = gateway.log()
    assert "Sanitizer" not in log and "runtime error:" not in log, log[-20000:]


# ---------- HTTP ----------


def request(url, method, path, body=None, timeout=180, headers=None):
    """(status, headers, parsed JSON body or text)."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return r.status, dict(r.getheaders()), parsed


def sse(url, path, body=None, method="POST", timeout=180):
    """(status, headers, [each `data:` payload, parsed when JSON])."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    events = []
    if r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream"):
        for line in r:
            line = line.decode().rstrip("\r\n")
            if line.startswith("data:"):
                payload = line[5:].strip()
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    else:
        events = json.loads(r.read())
    conn.close()
    return r.status, dict(r.getheaders()), events


# ---------- the reference: bin/lorq generate ----------


class Reference:
    """Greedy continuations from `lorq generate --json`, cached (stops at EOS, as the gateway's jobs do)."""

    def __init__(self, lorq_bin, model_dir):
        self.lorq, self.model = lorq_bin, str(model_dir)
        self.cache = {}
        self.lock = threading.Lock()

    def _run(self, key):
        prompt, adapter, n = key
        args = [self.lorq, "generate", "--model", self.model, "--max-new-tokens", str(n), "--json", "--threads", "1"]
        args += ["--prompt-ids", ",".join(map(str, prompt))] if isinstance(prompt, tuple) else ["--prompt", prompt]
        if adapter:
            args += ["--adapter", str(ADAPTERS[adapter])]
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def prepare(self, keys):
        todo = [k for k in dict.fromkeys(keys) if k not in self.cache]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
            for k, out in zip(todo, ex.map(self._run, todo)):
                self.cache[k] = out

    def get(self, prompt, adapter, n):
        key = (tuple(prompt) if isinstance(prompt, list) else prompt, adapter, n)
        if key not in self.cache:
            self.prepare([key])
        return self.cache[key]


@pytest.fixture(scope="module")
def ref(lorq_bin, model_dir):
    return Reference(lorq_bin, model_dir)


# ---------- status routes ----------


def test_health_info_models(stack, model_dir):
    status, _, body = request(stack.url, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["workers"] >= 1
    status, _, info = request(stack.url, "GET", "/info")
    assert status == 200
    assert info["model_id"] == str(model_dir)
    assert info["adapters"] == list(ADAPTERS)
    assert info["max_total_tokens"] == 4096 and info["max_input_tokens"] == 4095
    assert info["max_stop_sequences"] == 4 and info["max_concurrent_requests"] == 1000
    assert info["version"]
    status, _, models = request(stack.url, "GET", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [str(model_dir)] + list(ADAPTERS)


# ---------- TGI ----------


@pytest.mark.parametrize("adapter", ["", "demo/sentiment", "r16"])
def test_inference_client_matches_lorq_generate(stack, ref, adapter):
    from huggingface_hub import InferenceClient

    client = InferenceClient(stack.url)
    prompt, n = PROMPTS[0], 8
    want = ref.get(prompt, adapter, n)
    out = client.text_generation(prompt, max_new_tokens=n, adapter_id=adapter or None, details=True)
    assert [t.id for t in out.details.tokens] == want["ids"]
    assert out.generated_text == want["text"]
    assert out.details.generated_tokens == len(want["ids"])
    assert out.details.finish_reason in ("length", "eos_token")
    # Streaming: the same tokens, one event each, the text and details on the last.
    events = list(client.text_generation(prompt, max_new_tokens=n, adapter_id=adapter or None, details=True,
                                         stream=True))
    assert [e.token.id for e in events] == want["ids"]
    assert all(e.generated_text is None for e in events[:-1])
    assert events[-1].generated_text == want["text"]
    assert events[-1].details.finish_reason == out.details.finish_reason
    assert events[-1].details.input_length == want["prompt_tokens"]
    # Without details, a stream of strings.
    texts = list(client.text_generation(prompt, max_new_tokens=n, adapter_id=adapter or None, stream=True))
    assert "".join(texts).startswith(want["text"][:3])


def test_generate_details_and_routes(stack, ref):
    prompt = PROMPTS[1]
    want = ref.get(prompt, "r64", 6)
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 6, "adapter_id": "r64", "details": True,
                                             "decoder_input_details": True, "top_n_tokens": 3,
                                             "return_full_text": True}}
    status, headers, out = request(stack.url, "POST", "/generate", body)
    assert status == 200, out
    d = out["details"]
    assert out["generated_text"] == prompt + want["text"]
    assert [t["id"] for t in d["tokens"]] == want["ids"]
    for t, w in zip(d["tokens"], want["tokens"]):
        assert abs(t["logprob"] - w["logprob"]) < 1e-3
    assert len(d["top_tokens"]) == len(d["tokens"]) and all(len(x) == 3 for x in d["top_tokens"])
    assert d["top_tokens"][0][0]["id"] == d["tokens"][0]["id"]  # greedy: the top alternative is the token
    assert len(d["prefill"]) == want["prompt_tokens"] and d["prefill"][0]["logprob"] is None
    assert d["seed"] is None
    assert headers["x-prompt-tokens"] == str(want["prompt_tokens"])
    assert headers["x-generated-tokens"] == str(len(want["ids"]))
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]{16}", headers["X-Job-Id"])
    # POST / answers a list unless it streams.
    status, _, out = request(stack.url, "POST", "/", {"inputs": prompt, "parameters": {"max_new_tokens": 6,
                                                                                       "adapter_id": "r64"}})
    assert status == 200 and out == [{"generated_text": want["text"]}]
    status, _, events = sse(stack.url, "/", {"inputs": prompt, "stream": True,
                                            "parameters": {"max_new_tokens": 6, "adapter_id": "r64"}})
    assert status == 200 and [e["token"]["id"] for e in events] == want["ids"]
    assert [e["index"] for e in events] == list(range(1, len(want["ids"]) + 1))
    assert events[-1]["generated_text"] == want["text"] and events[-1]["details"] is None


def test_seeded_sampling_is_reproducible(stack):
    body = {"inputs": PROMPTS[2], "parameters": {"max_new_tokens": 8, "do_sample": True, "temperature": 0.9,
                                                 "top_k": 20, "seed": 1234, "details": True}}
    outs = [request(stack.url, "POST", "/generate", body)[2] for _ in range(2)]
    assert outs[0] == outs[1]
    assert outs[0]["details"]["seed"] == 1234


def test_stop_sequence(stack, ref):
    want = ref.get(PROMPTS[0], "", 8)
    stop = want["text"][:4]  # the text's start: generation stops there
    status, _, out = request(stack.url, "POST", "/generate", {"inputs": PROMPTS[0], "parameters": {
        "max_new_tokens": 8, "stop": [stop], "details": True}})
    assert status == 200, out
    assert out["details"]["finish_reason"] == "stop_sequence"
    # As in TGI, the text keeps the whole token the stop sequence ended in.
    assert stop in out["generated_text"] and len(out["details"]["tokens"]) < 8


# ---------- OpenAI ----------


def test_openai_completions(stack, ref):
    from openai import OpenAI

    client = OpenAI(base_url=stack.url + "/v1", api_key="-")
    want = ref.get(PROMPTS[0], "r16", 8)
    c = client.completions.create(model="r16", prompt=PROMPTS[0], max_tokens=8, temperature=0, logprobs=2)
    assert c.choices[0].text == want["text"]
    assert c.model == "r16" and c.object == "text_completion"
    assert c.usage.prompt_tokens == want["prompt_tokens"] and c.usage.completion_tokens == len(want["ids"])
    assert len(c.choices[0].logprobs.tokens) == len(want["ids"])
    assert all(len(x) <= 2 for x in c.choices[0].logprobs.top_logprobs)
    chunks = list(client.completions.create(model="r16", prompt=PROMPTS[0], max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == want["text"]
    assert chunks[-1].usage.completion_tokens == len(want["ids"])
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("length", "stop")
    # The base model by its folder name.
    c = client.completions.create(model=stack.model_dir.name, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert c.choices[0].text == ref.get(PROMPTS[0], "", 8)["text"]


@pytest.mark.parametrize("adapter", ["r8-all", ""])
def test_openai_chat(stack, ref, adapter):
    from openai import OpenAI

    client = OpenAI(base_url=stack.url + "/v1", api_key="-")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = demo_tasks.prompt_ids(messages, str(stack.model_dir))
    want = ref.get(ids, adapter, 12)
    model = adapter or "tgi"
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, logprobs=True,
                                          top_logprobs=2)
    assert chat.choices[0].message.content == want["text"]
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.prompt_tokens == len(ids) and chat.usage.completion_tokens == len(want["ids"])
    assert chat.choices[0].finish_reason == ("length" if len(want["ids"]) == 12 else "stop")
    assert 0 < len(chat.choices[0].logprobs.content) <= len(want["ids"])
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want["text"]
    assert chunks[-1].choices[0].finish_reason == chat.choices[0].finish_reason
    assert chunks[-1].object == "chat.completion.chunk"


# ---------- the README ----------


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.S)


def test_readme_examples_run_as_written(stack):
    blocks = readme_blocks()
    assert sum(1 for k, _ in blocks if k == "sh") >= 2 and sum(1 for k, _ in blocks if k == "python") >= 2
    for kind, code in blocks:
        # The one change: the examples' port (3000, `make run`'s) is this test's gateway.
        code = code.replace("127.0.0.1:3000", f"127.0.0.1:{stack.port}")
        argv = ["bash", "-e", "-o", "pipefail", "-c", code] if kind == "sh" else [sys.executable, "-c", code]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, f"{kind} example failed:\n{code}\n{r.stdout}\n{r.stderr}"
        # (The jobs example ends with a DELETE of a job that is over by then: its 409 is expected.)
        errors = [line for line in r.stdout.splitlines() if '"error"' in line and '"conflict"' not in line]
        assert not errors, f"{kind} example got an error:\n{code}\n{r.stdout}"
    first = json.loads(subprocess.run(["bash", "-c", blocks[0][1].replace("127.0.0.1:3000",
                                                                         f"127.0.0.1:{stack.port}")],
                                      capture_output=True, text=True, timeout=300).stdout)
    assert isinstance(first["generated_text"], str)


# ---------- bad requests ----------

BAD = [
    (b"", 400, "empty"),
    (b"{\"inputs\": ", 400, "invalid JSON"),
    (b"{\"inputs\": \"\xc3\x28\"}", 400, "invalid JSON"),
    (b"{\"inputs\": \"\xff\xfe\"}", 400, "invalid JSON"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"temperature\": NaN}}", 400, "invalid JSON"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"temperature\": 1e999}}", 400, "invalid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b"{\"parameters\": {}}", 422, "missing field `inputs`"),
    (b"{\"inputs\": 5}", 422, "`inputs`"),
    (b"{\"inputs\": \"\"}", 422, "`inputs` cannot be empty"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"temperature\": 0}}", 422, "`temperature` must be strictly positive"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"temperature\": \"hot\"}}", 422, "parameters.temperature"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"top_p\": 1.5}}", 422, "`top_p` must be > 0.0 and < 1.0"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"top_k\": -2}}", 422, "`top_k` must be strictly positive"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"max_new_tokens\": 0}}", 422, "`max_new_tokens` must be strictly positive"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"max_new_tokens\": 1.5}}", 422, "parameters.max_new_tokens"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"max_new_tokens\": 99999999999}}", 422, "max_new_tokens"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}}", 422,
     "`stop` supports up to 4 stop sequences. Given: 5"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"stop\": \"a\"}}", 422, "parameters.stop"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"adapter_id\": \"nope\"}}", 422,
     "adapter_id 'nope' is not served here; known adapters: demo/sentiment, r16, r64, r8-all"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"truncate\": 0}}", 422, "`truncate` must be strictly positive"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"top_n_tokens\": 6}}", 422, "`top_n_tokens` must be >= 0 and <= 5"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"best_of\": 2}}", 422, "best_of"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"seed\": -1}}", 422, "parameters.seed"),
    (b"{\"inputs\": \"a\", \"parameters\": {\"watermark\": true}}", 422, "watermark"),
]


def test_bad_requests_get_tgi_errors(stack):
    for body, status, text in BAD:
        got, _, out = request(stack.url, "POST", "/generate", body)
        assert got == status, (body, out)
        assert text in out["error"], (body, out)
        assert out["error_type"] == "validation"
    # Too long a prompt, and truncate rescuing it.
    long = "hello " * 5000
    got, _, out = request(stack.url, "POST", "/generate", {"inputs": long, "parameters": {"max_new_tokens": 2}})
    assert got == 422 and "`inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5001 `inputs`" in out["error"]
    got, _, out = request(stack.url, "POST", "/generate", {"inputs": long, "parameters": {
        "max_new_tokens": 2, "truncate": 8, "details": True}})
    assert got == 200 and out["details"]["generated_tokens"] == 2
    got, _, out = request(stack.url, "POST", "/generate", {"inputs": "a", "parameters": {"max_new_tokens": 4096}})
    assert got == 422 and "`inputs` tokens + `max_new_tokens` must be <= 4096" in out["error"]
    # Long prompts are tokenized off the event loop: /health answers while two of them are.
    big = json.dumps({"inputs": "a" * 1_900_000, "parameters": {"max_new_tokens": 1}}).encode()
    done = {}

    def send_big(i):
        done[i] = (request(stack.url, "POST", "/generate", big), time.time())

    threads = [threading.Thread(target=send_big, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert request(stack.url, "GET", "/health")[0] == 200
    health_done = time.time()
    for t in threads:
        t.join(120)
    for (status, _, out), finished in done.values():
        assert status == 422 and "`inputs` tokens + `max_new_tokens` must be <= 4096" in out["error"]
    assert health_done < max(finished for _, finished in done.values())
    # Streams refuse what they cannot do, before streaming.
    got, _, out = sse(stack.url, "/generate_stream", {"inputs": "a", "parameters": {"decoder_input_details": True}})
    assert got == 422 and "not supported when streaming" in out["error"]
    # OpenAI routes.
    for path, body, text in [
        ("/v1/completions", {"model": "gpt-4", "prompt": "a"}, "model 'gpt-4' is not served here"),
        ("/v1/completions", {"prompt": "a", "n": 3}, "`n` must be 1"),
        ("/v1/chat/completions", {"model": "r16", "messages": []}, "non-empty"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "tools": [{}]}, "tools"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "temperature": 3}, "temperature"),
    ]:
        got, _, out = request(stack.url, "POST", path, body)
        assert got == 422 and text in out["error"], (path, body, out)
    # Bodies over PAYLOAD_LIMIT (2 MB).
    got, _, out = request(stack.url, "POST", "/generate", b"{\"inputs\": \"" + b"a" * 2_100_000 + b"\"}")
    assert got == 413 and out["error_type"] == "validation"
    got, _, _ = request(stack.url, "POST", "/generate", b"{\"inputs\": \"" + b"a" * 9_000_000 + b"\"}")
    assert got == 413
    # Routes and methods.
    got, _, out = request(stack.url, "GET", "/nope")
    assert got == 404 and out["error_type"] == "not_found"
    got, headers, out = request(stack.url, "GET", "/generate")
    assert got == 405 and headers["Allow"] == "POST"
    got, _, out = request(stack.url, "GET", "/v1/jobs/bad$id")
    assert got == 404
    # Garbage on the socket, then a request: the gateway is still there.
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        s.sendall(b"\x00\xffGARBAGE / HTTP/9\r\n\r\n")
        s.recv(1000)
    assert request(stack.url, "GET", "/health")[0] == 200
    assert stack.gateway.alive()


# ---------- clients that leave ----------


def job_status(stack, job_id):
    return stack.redis.client().hget(f"lorq:job:{job_id}", "status")


def wait_status(stack, job_id, want, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = job_status(stack, job_id)
        if s == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {job_status(stack, job_id)!r}, not {want!r}")


def test_disconnect_cancels_job(stack):
    body = json.dumps({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 400}}).encode()
    # A stream: read the first event, then hang up.
    with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as s:
        s.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while b"data:" not in got:
            got += s.recv(4096)
    job_id = re.search(rb"X-Job-Id: (\S+)", got).group(1).decode()
    wait_status(stack, job_id, b"cancelled")
    # A plain /generate whose client leaves while it runs.
    with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as s:
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(1.0)
    r = stack.redis.client()
    deadline = time.time() + 30
    while time.time() < deadline:
        running = [k for k in r.scan_iter("lorq:job:*") if r.hget(k, "status") in (b"queued", b"running")]
        if not running:
            break
        time.sleep(0.1)
    assert not running, "a job kept running after its client left"
    logged = r.llen(f"lorq:log:{job_id}")
    assert logged < 400


# ---------- jobs ----------


def test_jobs_api(stack, ref):
    want = ref.get(PROMPTS[0], "r16", 8)
    body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 8, "adapter_id": "r16", "details": True}}
    status, headers, created = request(stack.url, "POST", "/v1/jobs", body)
    assert status == 202 and created["status"] == "queued" and created["adapter_id"] == "r16"
    job_id = created["id"]
    assert headers["Location"] == f"/v1/jobs/{job_id}"
    deadline = time.time() + 60
    while True:
        status, _, job = request(stack.url, "GET", f"/v1/jobs/{job_id}")
        assert status == 200 and job["id"] == job_id
        if job["status"] not in ("queued", "running"):
            break
        assert time.time() < deadline
        time.sleep(0.1)
    assert job["status"] == "done" and job["adapter_id"] == "r16" and job["attempts"] == 1
    assert job["result"]["generated_text"] == want["text"]
    assert [t["id"] for t in job["result"]["details"]["tokens"]] == want["ids"]
    # The same body as /generate gives.
    _, _, direct = request(stack.url, "POST", "/generate", body)
    assert job["result"] == direct
    # Replay as a stream.
    status, _, events = sse(stack.url, f"/v1/jobs/{job_id}/stream", method="GET")
    assert status == 200 and [e["token"]["id"] for e in events] == want["ids"]
    assert events[-1]["generated_text"] == want["text"] and events[-1]["details"]["finish_reason"]
    # Over: cannot be cancelled.
    status, _, out = request(stack.url, "DELETE", f"/v1/jobs/{job_id}")
    assert status == 409 and out["error_type"] == "conflict"
    # A long job: follow it live, cancel it, the stream ends with the cancellation.
    status, _, created = request(stack.url, "POST", "/v1/jobs", {"inputs": "Once upon a time",
                                                                 "parameters": {"max_new_tokens": 400}})
    long_id = created["id"]
    result = {}

    def follow():
        result["events"] = sse(stack.url, f"/v1/jobs/{long_id}/stream", method="GET")[2]

    t = threading.Thread(target=follow)
    t.start()
    deadline = time.time() + 60
    while stack.redis.client().llen(f"lorq:log:{long_id}") < 2:
        assert time.time() < deadline
        time.sleep(0.05)
    status, _, out = request(stack.url, "DELETE", f"/v1/jobs/{long_id}")
    assert status == 200 and out == {"id": long_id, "status": "cancelled"}
    t.join(60)
    events = result["events"]
    assert events[-1]["error_type"] == "generation" and "cancelled" in events[-1]["error"]
    assert [e["index"] for e in events[:-1]] == list(range(1, len(events)))
    status, _, job = request(stack.url, "GET", f"/v1/jobs/{long_id}")
    assert job["status"] == "cancelled" and job["error"]["error_type"] == "cancelled"
    # Unknown ids.
    assert request(stack.url, "GET", "/v1/jobs/0-0000000000000000")[0] == 404
    assert request(stack.url, "DELETE", "/v1/jobs/0-0000000000000000")[0] == 404
    assert sse(stack.url, "/v1/jobs/0-0000000000000000/stream", method="GET")[0] == 404


# ---------- many clients ----------


def test_200_concurrent_streams(stack, ref):
    adapters = ["", "demo/sentiment", "r16", "r64", "r8-all"]
    cases = [(PROMPTS[i % 2], adapters[i % len(adapters)]) for i in range(200)]
    ref.prepare([(p, a, 6) for p, a in set(cases)])
    results = [None] * len(cases)
    barrier = threading.Barrier(len(cases))

    def client(i):
        prompt, adapter = cases[i]
        params = {"max_new_tokens": 6, "details": True}
        if adapter:
            params["adapter_id"] = adapter
        barrier.wait()
        results[i] = sse(stack.url, "/generate_stream", {"inputs": prompt, "parameters": params}, timeout=300)

    cpu0 = {p: cpu_seconds(p) for p in (stack.gateway, stack.worker)}
    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.time() - t0
    for (prompt, adapter), res in zip(cases, results):
        assert res is not None, "a client did not finish"
        status, _, events = res
        want = ref.get(prompt, adapter, 6)
        assert status == 200, events
        assert [e["token"]["id"] for e in events] == want["ids"], (prompt, adapter)
        assert events[-1]["generated_text"] == want["text"]
        assert events[-1]["details"]["generated_tokens"] == len(want["ids"])
    gw_cpu, worker_cpu = (cpu_seconds(p) - cpu0[p] for p in (stack.gateway, stack.worker))
    print(f"200 streams over {len(adapters)} adapters in {elapsed:.1f} s; CPU: gateway {gw_cpu:.2f} s, "
          f"worker {worker_cpu:.2f} s ({100 * gw_cpu / max(worker_cpu, 1e-9):.1f}%)")


def cpu_seconds(proc):
    """User + system CPU time of a LorqProcess so far (Linux /proc)."""
    fields = open(f"/proc/{proc.proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------- metrics ----------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|NaN)$')


def parse_prometheus(text):
    """{name: {labels string: value}}, checking every line's syntax and that each sample has a TYPE."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"{name} has no TYPE"
        samples.setdefault(name, {})[m.group(2) or ""] = float(m.group(5))
    return samples, types


def test_metrics(stack):
    status, headers, text = request(stack.url, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples, types = parse_prometheus(text)
    assert types["lorq_requests_total"] == "counter"
    assert types["lorq_request_duration_seconds"] == "histogram"
    req = samples["lorq_requests_total"]
    assert req['{route="generate_stream",adapter="r16",status="200"}'] >= 40
    assert any('status="422"' in k for k in req)
    for fam in ("lorq_time_to_first_token_seconds", "lorq_inter_token_latency_seconds",
                "lorq_request_duration_seconds"):
        assert samples[fam + "_count"]['{adapter="r64"}' if "token" in fam else
                                       '{route="generate_stream",adapter="r64"}'] > 0
        buckets = samples[fam + "_bucket"]
        assert all(v >= 0 for v in buckets.values())
    assert samples["lorq_output_tokens_total"]['{adapter="r8-all"}'] >= 40
    assert samples["lorq_input_tokens_total"]['{adapter="@base"}'] > 0
    depth = samples["lorq_queue_depth"]
    assert '{adapter="r16"}' in depth and '{adapter="@base"}' in depth
    assert all(v == 0 for v in samples["lorq_queue_pending"].values())
    assert samples["lorq_workers_live"][""] == 1
    assert samples["lorq_redis_up"][""] == 1
    assert samples["lorq_requests_in_flight"][""] == 0


# ---------- more gateways ----------


def test_overload_and_shared_port(stack, gateway_bin):
    # MAX_CONCURRENT_REQUESTS=1: a second request while one streams gets TGI's 429.
    g = Gateway(gateway_bin, dict(stack.env(), MAX_CONCURRENT_REQUESTS=1), stack.dir / "gateway-429.log")
    try:
        g.wait_listening()
        host, port = "127.0.0.1", g.port
        body = json.dumps({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 30}}).encode()
        with socket.create_connection((host, port), timeout=60) as s:
            s.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            got = b""
            while b"data:" not in got:
                got += s.recv(4096)
            status, _, out = request(g.url, "POST", "/generate", {"inputs": "a", "parameters": {"max_new_tokens": 1}})
            assert status == 429 and out == {"error": "Model is overloaded", "error_type": "overloaded"}
    finally:
        g.stop()
        assert_clean(g)
    # A second gateway on the main one's port (SO_REUSEPORT): both serve, either can go.
    g2 = Gateway(gateway_bin, stack.env(), stack.dir / "gateway-shared.log", port=stack.port)
    try:
        deadline = time.time() + 30
        while "listening on" not in g2.log():
            assert g2.alive(), g2.log()
            assert time.time() < deadline
            time.sleep(0.05)
        for _ in range(6):
            status, _, out = request(stack.url, "POST", "/generate", {"inputs": PROMPTS[0],
                                                                      "parameters": {"max_new_tokens": 2}})
            assert status == 200
    finally:
        assert g2.stop() == 0
        assert_clean(g2)
    assert request(stack.url, "GET", "/health")[0] == 200


def test_bad_configuration_exits_2(stack, gateway_bin):
    cases = [
        ({"PORT": "80x"}, "PORT: '80x' is not an integer"),
        ({"MAX_INPUT_TOKENS": "5000", "MAX_TOTAL_TOKENS": "5000"}, "must be < MAX_TOTAL_TOKENS"),
        ({"MAX_TOTAL_TOKENS": "100000"}, "max_position_embeddings"),
        ({"LORA_ADAPTERS": "a=x,a=y"}, "listed twice"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"MODEL_ID": str(stack.dir / "no-such-model")}, "MODEL_ID"),
        ({"MAX_CONCURRENT_REQUESTS": "0"}, "MAX_CONCURRENT_REQUESTS"),
    ]
    for env, text in cases:
        full = dict(os.environ, **stack.env(), HOSTNAME="127.0.0.1", PORT=str(free_port()))
        full.update(env)
        r = subprocess.run([gateway_bin], env=full, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 2, (env, r.stderr)
        assert text in r.stderr, (env, r.stderr)
    r = subprocess.run([gateway_bin, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--max-total-tokens" in r.stdout and "MAX_INPUT_LENGTH" in r.stdout


def test_request_timeout(stack, gateway_bin):
    """REQUEST_TIMEOUT is the job's deadline: past it the worker stops and the client gets a 504."""
    g = Gateway(gateway_bin, dict(stack.env(), REQUEST_TIMEOUT=1), stack.dir / "gateway-timeout.log")
    try:
        g.wait_listening()
        t0 = time.time()
        status, _, out = request(g.url, "POST", "/generate", {"inputs": "Once upon a time",
                                                              "parameters": {"max_new_tokens": 1000}})
        assert status == 504 and out["error_type"] == "timeout", out
        assert time.time() - t0 < 15
    finally:
        g.stop()
        assert_clean(g)


def model_copy(stack, name, config_changes):
    """A model folder of symlinks to the bundled one, with tokenizer_config.json changed."""
    d = stack.dir / name
    d.mkdir()
    for f in stack.model_dir.iterdir():
        if f.name != "tokenizer_config.json":
            (d / f.name).symlink_to(f)
    cfg = json.loads((stack.model_dir / "tokenizer_config.json").read_text())
    cfg.update(config_changes)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def test_chat_templates_checked(stack, gateway_bin):
    # A template the interpreter cannot compile stops the gateway at start-up.
    broken = model_copy(stack, "broken-template", {"chat_template": "{% for m in messages %}{{ m.content }"})
    env = dict(os.environ, **dict(stack.env(), MODEL_ID=str(broken)), HOSTNAME="127.0.0.1", PORT=str(free_port()))
    r = subprocess.run([gateway_bin], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "chat template" in r.stderr, r.stderr
    # No template at all: the gateway serves, chat requests get a 422 saying so.
    bare = model_copy(stack, "no-template", {"chat_template": None})
    g = Gateway(gateway_bin, dict(stack.env(), MODEL_ID=str(bare)), stack.dir / "gateway-bare.log")
    try:
        g.wait_listening()
        status, _, out = request(g.url, "POST", "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert status == 422 and out["error_type"] == "template_error" and "chat_template" in out["error"], out
        # A message of the wrong shape: a 422 as well.
        status, _, out = request(stack.url, "POST", "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": 5}],
                                  "max_tokens": 2})
        assert status == 422, out
    finally:
        g.stop()
        assert_clean(g)


# ---------- Redis going away (last: it restarts the module's Redis) ----------


def test_redis_restart_under_open_streams(stack, ref):
    n = 40
    cases = [(PROMPTS[0], "r16"), (PROMPTS[1], ""), (PROMPTS[2], "demo/sentiment")]
    ref.prepare([(p, a, n) for p, a in cases])
    results = {}
    started = threading.Event()

    def client(i):
        prompt, adapter = cases[i]
        params = {"max_new_tokens": n, "details": True}
        if adapter:
            params["adapter_id"] = adapter
        host, port = "127.0.0.1", stack.port
        conn = http.client.HTTPConnection(host, port, timeout=300)
        conn.request("POST", "/generate_stream", json.dumps({"inputs": prompt, "parameters": params}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        events = []
        for line in r:
            line = line.decode().strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if len(events) == 3:
                    started.set()
        results[i] = (r.status, events)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    assert started.wait(120)
    stack.redis.stop()
    time.sleep(0.5)
    stack.redis.start()
    for t in threads:
        t.join(300)
    for i, (prompt, adapter) in enumerate(cases):
        status, events = results[i]
        want = ref.get(prompt, adapter, n)
        assert status == 200
        assert "error" not in events[-1], events[-1]
        assert [e["token"]["id"] for e in events] == want["ids"], (prompt, adapter)
        assert [e["index"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["generated_text"] == want["text"]
    assert "connection to" in stack.gateway.log() and "is back" in stack.gateway.log()
    assert request(stack.url, "GET", "/health")[0] == 200
    # While Redis is down: 503s that say so, and the gateway comes back with it.
    stack.redis.stop()
    time.sleep(0.5)
    status, _, out = request(stack.url, "POST", "/generate", {"inputs": "a", "parameters": {"max_new_tokens": 1}})
    assert status == 503 and out["error_type"] == "unavailable", out
    status, _, out = request(stack.url, "GET", "/health")
    assert status == 503 and out["error_type"] == "unhealthy"
    status, _, text = request(stack.url, "GET", "/metrics")
    assert status == 200 and "lorq_redis_up 0" in text
    stack.redis.start()
    stack.gateway.wait_healthy(timeout=60)
    status, _, out = request(stack.url, "POST", "/generate", {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 2}})
    assert status == 200, out
