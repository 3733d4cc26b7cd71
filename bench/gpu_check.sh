#!/usr/bin/env bash
# GPU check: grokscope trainer tokens/s + MFU (GPT-2-small, ~35M paper shape) and bf16 scoring
# pairs/s against lm-evaluation-harness, in <= 8 minutes on one GPU. Logic: bench/gpu_check.py.
#   bench/gpu_check.sh                      # cuda, full plan; results in $OUT or bench/out/gpu_check
#   bench/gpu_check.sh --device cpu --tiny  # the CPU test of this script
#   bench/gpu_check.sh --peak-tflops 989 --data /path/to/shared/data --out DIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-}"
if [ -z "$py" ]; then py="$(command -v python3 || command -v python || true)"; fi
if [ -z "$py" ]; then echo "gpu_check: no python3 on PATH (set PYTHON=...)" >&2; exit 1; fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# hard stop 60 s after the script's own budget (results are written after every part)
exec timeout --kill-after=10 540 "$py" "$here/gpu_check.py" "$@"
