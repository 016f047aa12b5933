#!/usr/bin/env bash
# The whole test suite: the same command on a developer machine and in CI.
# Optimised build with debug assertions (profile `ci`): golden tests run real models.
set -euo pipefail
cd "$(dirname "$0")/.."

# The GPU kernel tests run on Mesa's software Vulkan driver when no GPU driver is installed.
if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing mesa-vulkan-drivers (software Vulkan for the GPU tests)..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# Software Vulkan (lavapipe) counts as a GPU for the GPU-vs-CPU kernel tests.
export MTMD_GPU_ALLOW_CPU_ADAPTER="${MTMD_GPU_ALLOW_CPU_ADAPTER:-1}"
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  export XDG_RUNTIME_DIR
fi

# The two real text models live outside the work tree (see scripts/fetch-test-models.sh).
if [ "${MTMD_SKIP_FETCH:-0}" != 1 ]; then
  bash scripts/fetch-test-models.sh
fi

# Property tests draw from a fixed seed so every run (and CI) checks the same cases;
# set PROPTEST_RNG_SEED to explore others.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-1}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --profile ci -- -D warnings
cargo test --workspace --profile ci -- "$@"
# The encoder golden tests again with bf16 encoder matmuls (`--encoder-precision bf16`; a
# no-op on CPUs without AVX512-BF16, where it falls back to f32).
MTMD_ENCODER_PRECISION=bf16 cargo test -p clip --profile ci --test encoders -- "$@"

# `mtmd serve` end to end (openai client, web page in Chromium); MTMD_SKIP_E2E=1 skips them.
if [ "${MTMD_SKIP_E2E:-0}" != 1 ]; then
  # The binary `cargo test` just built (a plain `cargo build` would rebuild it: dev-dependencies
  # change the feature set of shared crates).
  MTMD_PROFILE=ci MTMD_BIN="$PWD/target/ci/mtmd" bash scripts/test-server.sh
fi

# Every fuzz target for a short while from its seed corpus (docs/fuzzing.md); needs cargo-fuzz
# (installed from crates.io when missing). MTMD_SKIP_FUZZ=1 skips it.
if [ "${MTMD_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SMOKE_SECONDS="${FUZZ_SMOKE_SECONDS:-15}" bash scripts/fuzz-smoke.sh
fi
