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
