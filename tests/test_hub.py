"""lorq's hub client (common/hub.c, `lorq download`) against a local hub server.

The server (tests/hubserver.py) answers the way huggingface.co does: revision
listings, /resolve/ with ETags and LFS redirects, 401 for private repositories
without a token, 404, and faults on demand (truncated and corrupt transfers,
slow responses, ignored Range). The cache layout is checked against
huggingface_hub itself, which must find lorq's downloads offline.
"""
import concurrent.futures
import os
import pathlib
import subprocess
import time

import pytest

from hubserver import Hub

ADAPTERS = pathlib.Path(__file__).resolve().parent / "reference" / "adapters"


def adapter_files(name):
    d = ADAPTERS / name
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


@pytest.fixture()
def hub():
    server = Hub().start()
    server.add("acme/r8-qv", adapter_files("r8-qv"))
    server.add("acme/secret", adapter_files("r16-attn-rslora"), private=True, token="hf_test_token")
    server.add("acme/not-an-adapter", {"config.json": b"{}", "README.md": b"# x"})
    server.add("acme/pickled", {"adapter_config.json": (ADAPTERS / "r8-qv" / "adapter_config.json").read_bytes(),
                                "adapter_model.bin": b"\x80\x02pickle"})
    yield server
    server.stop()


def download(lorq_bin, hub_url, cache, repo, *extra, token=None, env_extra=None, timeout=60):
    env = dict(os.environ, HF_ENDPOINT=hub_url, HF_HUB_CACHE=str(cache), LORQ_HUB_RETRY_MS="20")
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    env.update(env_extra or {})
    kind = [] if "--model" in extra else ["--adapter"]
    return subprocess.run([lorq_bin, "download", repo, *kind, *extra], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_download_matches_source_and_huggingface_hub_layout(lorq_bin, hub, tmp_path):
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert r.returncode == 0, r.stderr
    snap = pathlib.Path(r.stdout.strip())
    repo = hub.repos["acme/r8-qv"]
    assert snap == tmp_path / "models--acme--r8-qv" / "snapshots" / repo.sha
    for name, data in repo.files.items():
        assert (snap / name).read_bytes() == data
        assert (snap / name).is_symlink()
    assert (tmp_path / "models--acme--r8-qv" / "refs" / "main").read_text() == repo.sha

    # huggingface_hub, offline, finds the same snapshot in the same cache.
    from huggingface_hub import snapshot_download
    found = snapshot_download("acme/r8-qv", cache_dir=str(tmp_path), local_files_only=True)
    assert pathlib.Path(found) == snap

    # A second request is served from the cache: no blob is fetched again.
    blobs = hub.count("/cdn/")
    r2 = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert r2.returncode == 0 and r2.stdout == r.stdout
    assert hub.count("/cdn/") == blobs


def test_downloaded_adapter_serves(lorq_bin, hub, tmp_path, model_dir):
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert r.returncode == 0, r.stderr
    snap = r.stdout.strip()
    args = ["--model", str(model_dir), "--prompt", "Hello", "--max-new-tokens", "8", "--json"]
    a = subprocess.run([lorq_bin, "generate", *args, "--adapter", snap], capture_output=True, text=True, timeout=120)
    b = subprocess.run([lorq_bin, "generate", *args, "--adapter", str(ADAPTERS / "r8-qv")], capture_output=True,
                       text=True, timeout=120)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout


def test_revision_pinning(lorq_bin, hub, tmp_path):
    sha = hub.repos["acme/r8-qv"].sha
    r = download(lorq_bin, hub.url, tmp_path, f"acme/r8-qv@{sha}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(sha)
    bad = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv@no-such-branch")
    assert bad.returncode != 0 and "not found" in bad.stderr


def test_truncated_transfer_resumes(lorq_bin, hub, tmp_path):
    hub.faults.add("truncate")
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert r.returncode == 0, r.stderr
    snap = pathlib.Path(r.stdout.strip())
    data = hub.repos["acme/r8-qv"].files["adapter_model.safetensors"]
    assert (snap / "adapter_model.safetensors").read_bytes() == data
    assert hub.count("/cdn/", "GET") == 2  # the cut one, then the rest with a Range request


def test_server_ignoring_range_still_gives_the_right_bytes(lorq_bin, hub, tmp_path):
    hub.faults.update({"truncate", "ignore_range"})
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert r.returncode == 0, r.stderr
    data = hub.repos["acme/r8-qv"].files["adapter_model.safetensors"]
    assert (pathlib.Path(r.stdout.strip()) / "adapter_model.safetensors").read_bytes() == data


def test_corrupt_blob_is_refused(lorq_bin, hub, tmp_path):
    hub.faults.add("corrupt")
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert r.returncode == 1
    assert "sha256" in r.stderr and "corrupt" in r.stderr
    assert not list((tmp_path / "models--acme--r8-qv" / "blobs").glob("*.incomplete"))


def test_private_repository_needs_token(lorq_bin, hub, tmp_path):
    r = download(lorq_bin, hub.url, tmp_path, "acme/secret")
    assert r.returncode == 1 and "401" in r.stderr and "HF_TOKEN" in r.stderr
    wrong = download(lorq_bin, hub.url, tmp_path, "acme/secret", token="hf_wrong")
    assert wrong.returncode == 1 and "gives no access" in wrong.stderr
    ok = download(lorq_bin, hub.url, tmp_path, "acme/secret", token="hf_test_token")
    assert ok.returncode == 0, ok.stderr


def test_missing_and_unusable_repositories(lorq_bin, hub, tmp_path):
    r = download(lorq_bin, hub.url, tmp_path, "acme/nothing-here")
    assert r.returncode == 1 and "404" in r.stderr and "not found" in r.stderr
    r = download(lorq_bin, hub.url, tmp_path, "acme/not-an-adapter")
    assert r.returncode == 1 and "adapter_config.json" in r.stderr
    r = download(lorq_bin, hub.url, tmp_path, "acme/pickled")
    assert r.returncode == 1 and "pickled" in r.stderr
    for bad in ["no-slash", "a/b/c", "../x", "a/b@", "a b/c"]:
        r = download(lorq_bin, hub.url, tmp_path, bad)
        assert r.returncode == 1 and "repository id" in r.stderr or "revision" in r.stderr, (bad, r.stderr)


def test_size_limit(lorq_bin, hub, tmp_path):
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv", env_extra={"LORQ_HUB_MAX_MB": "0"})
    assert r.returncode == 0
    big = adapter_files("r64-qv-layers")
    hub.add("acme/big", big)
    r = download(lorq_bin, hub.url, tmp_path, "acme/big", env_extra={"LORQ_HUB_MAX_MB": "1"})
    size_mb = len(big["adapter_model.safetensors"]) >> 20
    if size_mb >= 1:
        assert r.returncode == 1 and "over the limit" in r.stderr
    assert hub.count("/cdn/") == 1  # only the small repository's blob was fetched


def test_stalled_server_times_out(lorq_bin, hub, tmp_path):
    hub.faults.add("stall")
    t0 = time.monotonic()
    r = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv",
                 env_extra={"LORQ_HUB_STALL_TIMEOUT": "1", "LORQ_HUB_RETRIES": "1"})
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert "timeout" in r.stderr.lower() or "timed out" in r.stderr.lower(), r.stderr
    assert took < 15


def test_unreachable_hub_uses_the_cache(lorq_bin, hub, tmp_path):
    first = download(lorq_bin, hub.url, tmp_path, "acme/r8-qv")
    assert first.returncode == 0
    url = hub.url
    hub.stop()
    again = download(lorq_bin, url, tmp_path, "acme/r8-qv", env_extra={"LORQ_HUB_RETRIES": "0"})
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    offline = download(lorq_bin, url, tmp_path, "acme/other", env_extra={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr


def test_concurrent_downloads_share_one_transfer(lorq_bin, hub, tmp_path):
    hub.slow_seconds = 0.05  # long enough that the processes overlap
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: download(lorq_bin, hub.url, tmp_path, "acme/r8-qv"), range(4)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len({r.stdout for r in results}) == 1
    assert hub.count("/cdn/", "GET") == 1


def test_model_repository(lorq_bin, hub, tmp_path, model_dir):
    tiny = pathlib.Path(__file__).resolve().parent / "reference" / "tiny" / "llama3-bf16"
    files = {p.name: p.read_bytes() for p in tiny.iterdir()}
    files["tokenizer.json"] = (model_dir / "tokenizer.json").read_bytes()
    files["model.bin"] = b"pickled weights we never fetch"
    hub.add("acme/tiny-llama", files)
    r = download(lorq_bin, hub.url, tmp_path, "acme/tiny-llama", "--model")
    assert r.returncode == 0, r.stderr
    snap = pathlib.Path(r.stdout.strip())
    got = sorted(p.name for p in snap.iterdir())
    assert got == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    ins = subprocess.run([lorq_bin, "inspect", str(snap / "model.safetensors")], capture_output=True, text=True)
    assert ins.returncode == 0, ins.stderr
    hub.add("acme/no-weights", {"config.json": b"{}", "tokenizer.json": b"{}", "pytorch_model.bin": b"x"})
    r = download(lorq_bin, hub.url, tmp_path, "acme/no-weights", "--model")
    assert r.returncode == 1 and "pickled" in r.stderr
