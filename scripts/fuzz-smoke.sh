#!/usr/bin/env bash
# Fuzz smoke: builds every cargo-fuzz target in fuzz/ and runs each for a short while
# (FUZZ_SMOKE_SECONDS, default 30) from its committed seed corpus. New inputs go to a scratch
# directory, so the corpus in git is left alone. A crash, a timeout (> 10 s for one input) or
# an out-of-memory (> 4 GiB) fails the script and leaves the input under $FUZZ_SMOKE_OUT.
# Long campaigns and how to replay a crash: docs/fuzzing.md.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SMOKE_SECONDS:-30}"
out="${FUZZ_SMOKE_OUT:-$(mktemp -d /tmp/fuzz-smoke.XXXXXX)}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz wants a nightly compiler; without one, the stable toolchain accepts the unstable
# flags under RUSTC_BOOTSTRAP.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
# No sanitizer: the targets run safe Rust; debug assertions (and with them overflow checks) on.
flags=(-a -s none)

start=$(date +%s)
"${fuzz[@]}" build "${flags[@]}"
echo "fuzz-smoke: build took $(($(date +%s) - start)) s"

failed=()
for target in $("${fuzz[@]}" list); do
    mkdir -p "$out/$target/new" "$out/$target/artifacts"
    echo "fuzz-smoke: $target for ${seconds} s"
    if ! "${fuzz[@]}" run "${flags[@]}" "$target" "$out/$target/new" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
        -artifact_prefix="$out/$target/artifacts/" -print_final_stats=1 \
        >"$out/$target/log" 2>&1; then
        failed+=("$target")
        tail -n 40 "$out/$target/log"
    fi
    grep -E '^#[0-9]+.*(DONE|pulse)' "$out/$target/log" | tail -n 1 || true
done
echo "fuzz-smoke: total $(($(date +%s) - start)) s, logs in $out"
if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in $out/<target>/artifacts)" >&2
    exit 1
fi
echo "fuzz-smoke: all targets ran clean"
