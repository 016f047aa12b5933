#!/usr/bin/env bash
# The chat page served by `mtmd serve`, in headless Chromium (Playwright-core):
#  1. tests/web/page_features.test.mjs against tests/web/mock_server.py (page logic, no engine);
#  2. tests/web/chat_page.test.mjs against a real `mtmd serve` on the tiny Gemma 3 fixture
#     (random weights: the answer is gibberish, the test only checks that text streams in).
# Screenshots go to ${MTMD_ARTIFACTS_DIR:-target/artifacts} (web-chat.png, and *-failure.png).
#
# Environment: MTMD_PROFILE (cargo profile, default ci), MTMD_REQUIRE_WEB=1 (fail instead of
# SKIPPED when Chromium is missing and cannot be installed), MTMD_WEB_MOCK=1 (run the chat test
# against the mock too, without building the server), MTMD_SERVER_URL (use a running server).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

export MTMD_ARTIFACTS_DIR="${MTMD_ARTIFACTS_DIR:-$repo/target/artifacts}"
mkdir -p "$MTMD_ARTIFACTS_DIR"
profile="${MTMD_PROFILE:-ci}"

skip_or_fail() {
  if [ "${MTMD_REQUIRE_WEB:-0}" = 1 ]; then
    echo "error: $1" >&2
    exit 1
  fi
  echo "SKIPPED web page tests: $1"
  exit 0
}

# Debian's Chromium (Playwright's own browser download does not work on a closed network).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (headless browser for the page test)..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  [ -x /usr/bin/chromium ] || skip_or_fail "/usr/bin/chromium is missing (apt-get install chromium)"
fi
command -v node >/dev/null && command -v npm >/dev/null || skip_or_fail "node and npm are needed"

(cd tests/web && npm ci --cache "$repo/target/npm-cache" --no-audit --no-fund --loglevel=error) ||
  skip_or_fail "npm ci in tests/web failed (is the npm registry reachable?)"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_healthy() { # url pid log
  local deadline=$((SECONDS + 60))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health" || true)" = 200 ]; do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "error: the server exited before it was ready; its log:" >&2
      cat "$3" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: the server did not answer /health with 200 within 60 s; its log:" >&2
      cat "$3" >&2
      exit 1
    fi
    sleep 0.5
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "== page features (mock server)"
node tests/web/page_features.test.mjs

if [ -n "${MTMD_SERVER_URL:-}" ]; then
  echo "== chat page against $MTMD_SERVER_URL"
  node tests/web/chat_page.test.mjs
  exit 0
fi

if [ "${MTMD_WEB_MOCK:-0}" = 1 ]; then
  port="$(free_port)"
  log="$MTMD_ARTIFACTS_DIR/web-mock-server.log"
  python3 tests/web/mock_server.py --port "$port" >"$log" 2>&1 &
  pids+=("$!")
  wait_healthy "http://127.0.0.1:$port" "$!" "$log"
  echo "== chat page against the mock server"
  MTMD_SERVER_URL="http://127.0.0.1:$port" node tests/web/chat_page.test.mjs
  exit 0
fi

# MTMD_BIN: a binary built already (scripts/test.sh passes the one `cargo test` made).
if [ -n "${MTMD_BIN:-}" ]; then
  bin="$MTMD_BIN"
else
  cargo build -p cli --profile "$profile"
  case "$profile" in
    dev) bin="target/debug/mtmd" ;;
    *) bin="target/$profile/mtmd" ;;
  esac
fi

port="$(free_port)"
log="$MTMD_ARTIFACTS_DIR/web-server.log"
fixture=tests/fixtures/gemma3
"$bin" serve -m "$fixture/model.gguf" --mmproj "$fixture/mmproj.gguf" \
  --host 127.0.0.1 --port "$port" -c 2048 >"$log" 2>&1 &
pids+=("$!")
wait_healthy "http://127.0.0.1:$port" "$!" "$log"
echo "== chat page against mtmd serve (port $port, log $log)"
MTMD_SERVER_URL="http://127.0.0.1:$port" node tests/web/chat_page.test.mjs
