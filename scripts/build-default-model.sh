#!/usr/bin/env bash
# Rebuild fireside/assets/fireside-tiny, the small model `make serve` serves when no --model is given,
# from the text and code this machine carries: the whole Fireside loop, end to end.
#
#   scripts/build-default-model.sh            # CPU defaults: depth 4, a few minutes of training
#   DEPTH=12 STEPS=5000 scripts/build-default-model.sh   # on a GPU, a model worth talking to
#
# Every stage is resumable: re-run the script after an interruption and it carries on.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/tmp/fireside-default-model}
DEPTH=${DEPTH:-4}
STEPS=${STEPS:-60}
SFT_STEPS=${SFT_STEPS:-150}
VOCAB=${VOCAB:-8192}
OUT=${OUT:-fireside/assets/fireside-tiny}
fireside=".venv/bin/fireside"

[ -x "$fireside" ] || make install
mkdir -p "$WORK"

[ -f "$WORK/corpus/sources.json" ] ||
  $fireside data sources --output "$WORK/corpus" --recipe python-stdlib debian-docs man-pages
[ -f "$WORK/tokenizer/tokenizer.json" ] ||
  $fireside train tokenizer --input "$WORK"/corpus/*.jsonl --vocab-size "$VOCAB" \
    --output "$WORK/tokenizer" --max-chars 60000000
[ -f "$WORK/data/manifest.json" ] ||
  $fireside data prepare --input "$WORK"/corpus/*.jsonl --tokenizer "$WORK/tokenizer" \
    --output "$WORK/data"
$fireside train pretrain --data "$WORK/data" --tokenizer "$WORK/tokenizer" --depth "$DEPTH" \
  --output "$WORK/pretrain" --steps "$STEPS" --seq-len 512 --batch-tokens 16384 \
  --eval-every 30 --eval-tokens 131072 --sample-every 0 --save-every 10 --keep-last 2 --no-progress
[ -f "$WORK/chat.jsonl" ] || $fireside data synth-chat --output "$WORK/chat.jsonl"
$fireside train sft --model "$WORK/pretrain" --data "$WORK/chat.jsonl" --output "$WORK/sft" \
  --steps "$SFT_STEPS" --batch-size 16 --max-len 512 --save-every 10 --no-progress

# Ship it in bf16: half the bytes in git; Fireside loads it as fp32 on CPU, bf16 on CUDA.
rm -rf "$OUT"
.venv/bin/python - "$WORK/sft" "$OUT" <<'PY'
import sys
import torch
from fireside.model import load_pretrained, save_pretrained
src, dst = sys.argv[1], sys.argv[2]
bundle = load_pretrained(src, dtype=torch.bfloat16)
save_pretrained(bundle.model, bundle.tokenizer, dst, bundle.generation_config)
PY
cp "$WORK/pretrain/loss.png" "$OUT/pretrain-loss.png" 2>/dev/null || true
echo "bundled model written to $OUT"
