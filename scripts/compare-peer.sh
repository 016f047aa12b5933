#!/usr/bin/env bash
# Side-by-side speed against llama.cpp on the same files, same machine, same run
# (docs/performance.md). Needs a llama.cpp build (see docs/performance.md for how):
#   PEER_BIN=/path/to/llama.cpp/build/bin  bash scripts/compare-peer.sh [encoders|encoders-more|text|all]
# (`encoders-more`: Pixtral 12B, SmolVLM-256M and Qwen2-Audio-7B's encoders; not in `all`.)
# COMPARE_BF16=1 adds a column for ours with `--encoder-precision bf16`; REPS=N runs every
# encode N times on each side, interleaved, and compares the medians (single runs swing ±10%
# on a shared VM).
# and the shape-true synthetic models from `mtmd synth` in $SYNTH (default /tmp/synth).
# Runs are interleaved (peer, ours) so drift on a shared machine hits both.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
peer="${PEER_BIN:?set PEER_BIN to the build/bin directory of llama.cpp}"
synth="${SYNTH:-/tmp/synth}"
models="${MTMD_MODELS_DIR:-$HOME/.cache/mtmd-rs/models}"
mtmd="${MTMD_BIN:-target/release/mtmd}"
export LD_LIBRARY_PATH="$peer${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
threads=2

ensure_synth() { # preset dir
  [ -f "$synth/$2/mmproj-$1.gguf" ] || "$mtmd" synth --preset "$1" --out "$synth/$2" >/dev/null
}
image() { # w h -> path (the gemma3 fixture photo resized)
  local out="$synth/img_$1x$2.png"
  [ -f "$out" ] || python3 -c "from PIL import Image; Image.open('tests/fixtures/gemma3/photo.png').convert('RGB').resize(($1,$2)).save('$out')"
  echo "$out"
}
audio_clip() { # seconds -> path (a 16 kHz mono WAV: a chirp with noise)
  local out="$synth/clip_$1s.wav"
  [ -f "$out" ] || python3 -c "
import math, random, struct, wave
sr, n = 16000, int($1 * 16000); random.seed(0)
w = wave.open('$out', 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(sr)
w.writeframes(b''.join(struct.pack('<h', int(8000 * math.sin(2 * math.pi * (200 + 40 * i / sr) * i / sr) + random.gauss(0, 500))) for i in range(n)))"
  echo "$out"
}
media_flag() { case "$1" in *.wav) echo --audio ;; *) echo --image ;; esac; }
peer_encode_ms() { # text mmproj media (the sum over a media's slices / windows)
  "$peer/llama-mtmd-cli" -m "$1" --mmproj "$2" "$(media_flag "$3")" "$3" -p x -n 1 --temp 0 -t $threads --no-warmup 2>&1 \
    | sed -n 's/.*encoding done in \([0-9]*\) ms.*/\1/p' | awk '{ s += $1 } END { print s }'
}
our_encode_ms() {
  "$mtmd" bench -m "$1" --mmproj "$2" "$(media_flag "$3")" "$3" -p 0 -n 0 -r 1 -t $threads 2>/dev/null \
    | sed -n 's/^\(image\|audio\)[^:]*: encode \([0-9.]*\) .*/\2/p'
}
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
reps="${REPS:-1}" # REPS=3: each side runs 3 times, interleaved, and the medians are compared
row_encode() { # label text mmproj image
  local p="" o="" b="" i
  for ((i = 0; i < reps; i++)); do
    p="$p $(peer_encode_ms "$2" "$3" "$4")"; o="$o $(our_encode_ms "$2" "$3" "$4")"
    if [ "${COMPARE_BF16:-0}" = 1 ]; then # and ours with --encoder-precision bf16
      b="$b $(MTMD_ENCODER_PRECISION=bf16 our_encode_ms "$2" "$3" "$4")"
    fi
  done
  p=$(echo "$p" | median); o=$(echo "$o" | median)
  if [ "${COMPARE_BF16:-0}" = 1 ]; then
    b=$(echo "$b" | median)
    awk -v l="$1" -v p="$p" -v o="$o" -v b="$b" 'BEGIN { printf "| %s | %.2f s | %.2f s | %.2f× | %.2f s | %.2f× |\n", l, p/1000, o/1000, p/o, b/1000, p/b }'
  else
    awk -v l="$1" -v p="$p" -v o="$o" 'BEGIN { printf "| %s | %.2f s | %.2f s | %.2f× |\n", l, p/1000, o/1000, p/o }'
  fi
}
header() {
  if [ "${COMPARE_BF16:-0}" = 1 ]; then
    echo "| encoder, input | llama.cpp | mtmd-rs | speed-up | mtmd-rs bf16 | speed-up |"
    echo "|---|---|---|---|---|---|"
  else
    echo "| encoder, input | llama.cpp | mtmd-rs | speed-up |"
    echo "|---|---|---|---|"
  fi
}
if [ "$what" = encoders ] || [ "$what" = all ]; then
  ensure_synth qwen2.5-vl-3b qwen25vl
  ensure_synth gemma3-4b gemma3
  header
  q="$synth/qwen25vl"; g="$synth/gemma3"
  row_encode "Qwen2.5-VL-3B vision, 448²" "$q/qwen2.5-vl-3b.gguf" "$q/mmproj-qwen2.5-vl-3b.gguf" "$(image 448 448)"
  row_encode "Qwen2.5-VL-3B vision, 896×672" "$q/qwen2.5-vl-3b.gguf" "$q/mmproj-qwen2.5-vl-3b.gguf" "$(image 896 672)"
  row_encode "Gemma 3 4B vision, 896²" "$g/gemma3-4b.gguf" "$g/mmproj-gemma3-4b.gguf" "$(image 896 896)"
fi
if [ "$what" = encoders-more ]; then
  ensure_synth pixtral-12b pixtral
  ensure_synth smolvlm-256m smolvlm
  ensure_synth qwen2-audio-7b qwen2audio
  header
  p="$synth/pixtral"; s="$synth/smolvlm"; a="$synth/qwen2audio"
  row_encode "Pixtral 12B vision, 1024×768" "$p/pixtral-12b.gguf" "$p/mmproj-pixtral-12b.gguf" "$(image 1024 768)"
  row_encode "SmolVLM-256M vision, 1024×768 (tiles)" "$s/smolvlm-256m.gguf" "$s/mmproj-smolvlm-256m.gguf" "$(image 1024 768)"
  row_encode "Qwen2-Audio-7B encoder, 29.5 s clip" "$a/qwen2-audio-7b.gguf" "$a/mmproj-qwen2-audio-7b.gguf" "$(audio_clip 29.5)"
fi
if [ "$what" = text ] || [ "$what" = all ]; then
  for m in gemma-3-270m-q4_k_m.gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; do
    echo "== $m"
    "$peer/llama-bench" -m "$models/$m" -p 512 -n 64 -r 3 -t $threads 2>/dev/null | grep -E "pp512|tg64"
    "$mtmd" bench -m "$models/$m" -p 512 -n 64 -r 3 -t $threads 2>/dev/null | grep -E "pp512|tg64|bound"
  done
fi
