#!/usr/bin/env bash
# End-to-end tests of `mtmd serve`: pytest with the official `openai` client against servers
# spawned on 127.0.0.1 (tests/server), then the web chat page (scripts/test-web.sh).
#
# Environment: MTMD_PROFILE (cargo profile of the binary, default ci), MTMD_BIN (test this
# binary instead of building one), MTMD_VENV (the Python venv, default ~/.cache/mtmd-rs/venv),
# MTMD_ARTIFACTS_DIR (server logs and junit xml, default target/artifacts),
# MTMD_REQUIRE_MODELS=1 (the real-model tests fail instead of skipping when a model is absent),
# MTMD_SKIP_WEB=1 (leave out the web page test).
# Extra arguments go to pytest (e.g. `-k streaming`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

PYTHON="${PYTHON:-python3}"
venv="${MTMD_VENV:-$HOME/.cache/mtmd-rs/venv}"
requirements="tests/server/requirements.txt"
export MTMD_ARTIFACTS_DIR="${MTMD_ARTIFACTS_DIR:-$repo/target/artifacts}"
export MTMD_E2E_LOG_DIR="${MTMD_E2E_LOG_DIR:-$MTMD_ARTIFACTS_DIR/server-logs}"
mkdir -p "$MTMD_ARTIFACTS_DIR" "$MTMD_E2E_LOG_DIR"
# Bytecode caches under target/, not beside the tests.
export PYTHONPYCACHEPREFIX="$repo/target/pycache"

# The venv is reused while the pinned requirements stay the same.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setting up the Python venv for the server tests in $venv..."
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$requirements"
  echo "$want" >"$stamp"
fi

if [ -z "${MTMD_BIN:-}" ]; then
  profile="${MTMD_PROFILE:-ci}"
  cargo build -p cli --profile "$profile"
  case "$profile" in
    dev) MTMD_BIN="$repo/target/debug/mtmd" ;;
    *) MTMD_BIN="$repo/target/$profile/mtmd" ;;
  esac
fi
export MTMD_BIN

# The server is tested on the CPU: with Mesa's software Vulkan allowed (scripts/test.sh allows
# it for the kernel tests), `--device auto` would run every model here on it, far slower.
unset MTMD_GPU_ALLOW_CPU_ADAPTER

status=0
echo "== server end-to-end tests (openai client, $MTMD_BIN)"
"$venv/bin/python" -m pytest tests/server --junitxml="$MTMD_ARTIFACTS_DIR/server-junit.xml" "$@" \
  || status=$?

if [ -f scripts/test-web.sh ] && [ "${MTMD_SKIP_WEB:-0}" != 1 ]; then
  echo "== web chat page"
  bash scripts/test-web.sh || status=$?
fi
exit "$status"
