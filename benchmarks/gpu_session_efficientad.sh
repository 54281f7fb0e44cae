#!/usr/bin/env bash
# One prepared GPU session for EfficientAD (issue 15's GPU points), run on a lent H100/H200 from the repo root:
#   bash benchmarks/gpu_session_efficientad.sh [OUT]
# bottle on CUDA (bench_detectors: image / pixel AUROC, training time, latency at batch 1 = the issue's
# <= 5 ms point, 16 and 64; bf16 autocast as the CUDA path trains), three runs, each time-boxed:
#   distilled  the config file's recipe with teacher: distilled (1,000 x 8 distillation steps, 600 student steps)
#   backbone   the config file's recipe as it is (the frozen-backbone teacher, 600 steps)
#   long       a longer GPU schedule: 5,000 x 16 distillation steps on 128-px windows, 10,000 student steps
# CELL_DATA = an MVTec-layout bottle folder (default ../shared/data/bottle). Everything lands in OUT:
# session.log (all output) and per run <run>/efficientad_bottle.json + <run>/detectors.md.
set -uo pipefail
out="${1:-${OUT:-benchmarks/results/cuda}}"
mkdir -p "$out"
py="${PYTHON:-python}"
data="${CELL_DATA:-../shared/data/bottle}"
log="$out/session.log"
distilled=(--set teacher=distilled --set distill_steps=1000 --set distill_batch=8 --set distill_crop=96 --set distill_lr=0.001)
run() {  # run NAME SECONDS BATCHES ARGS...
  local name=$1 seconds=$2 batches=$3; shift 3
  echo "== $name ($(date -u +%T))" >> "$log"
  timeout "$seconds" "$py" -m benchmarks.bench_detectors --method efficientad --dataset "$data" --device cuda \
    --batches "$batches" --repeats 200 --out "$out/$name" "$@" >> "$log" 2>&1
  echo "== $name: exit $? ($(date -u +%T))" >> "$log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$log" 2>&1 || true
run distilled 150 1,16,64 "${distilled[@]}"
run backbone 100 1,16 --set teacher=backbone
run long 230 1 --set teacher=distilled --set distill_steps=5000 --set distill_batch=16 --set distill_crop=128 \
  --set distill_lr=0.001 --set iterations=10000
