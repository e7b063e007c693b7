"""Our safetensors reader against files written by the `safetensors` library itself:
single files and a sharded folder with model.safetensors.index.json, checked through
`lorq inspect --json` (names, dtypes, shapes, and a hash of each tensor's bytes)."""
import json
import subprocess

import numpy as np
from safetensors.numpy import save_file


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def inspect(lorq_bin, path):
    out = subprocess.run([lorq_bin, "inspect", "--json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def expected(tensors):
    names = {"float32": "F32", "float16": "F16"}
    return {
        k: {"dtype": names[str(v.dtype)], "shape": list(v.shape), "fnv1a64": fnv1a64(np.ascontiguousarray(v).tobytes())}
        for k, v in tensors.items()
    }


def random_tensors(rng, prefix, n):
    out = {}
    for i in range(n):
        shape = tuple(int(d) for d in rng.integers(0, 7, size=rng.integers(0, 4)))
        dtype = np.float32 if i % 2 == 0 else np.float16
        out[f"{prefix}.{i}.weight"] = rng.standard_normal(shape).astype(dtype)
    return out


def test_single_file_written_by_safetensors(lorq_bin, tmp_path):
    rng = np.random.default_rng(1)
    tensors = random_tensors(rng, "model.layers", 12)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert inspect(lorq_bin, tmp_path / "model.safetensors") == expected(tensors)
    assert inspect(lorq_bin, tmp_path) == expected(tensors)  # a folder with model.safetensors


def test_sharded_folder_written_by_safetensors(lorq_bin, tmp_path):
    rng = np.random.default_rng(2)
    shards = [random_tensors(rng, f"shard{i}", 5) for i in range(3)]
    weight_map = {}
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file(tensors, tmp_path / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    want = {}
    for tensors in shards:
        want.update(expected(tensors))
    assert inspect(lorq_bin, tmp_path) == want


def test_truncated_file_is_a_clean_error(lorq_bin, tmp_path):
    rng = np.random.default_rng(3)
    save_file(random_tensors(rng, "t", 4), tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    for cut in sorted({0, 7, 8, 9, len(data) // 3, len(data) // 2, len(data) - 1}):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        r = subprocess.run([lorq_bin, "inspect", str(p)], capture_output=True, text=True)
        assert r.returncode == 1, (cut, r.stderr)
        assert str(p) in r.stderr and r.stderr.startswith("lorq inspect: ")
