#!/usr/bin/env bash
# One prepared GPU session for issue 16 (run on a lent H100/H200 through the device tool, from the repo root):
#   bash benchmarks/gpu_session.sh [OUT]
# 1. the detector contract suite on the GPU (scores within tolerance of the CPU's),
# 2. every detector's benchmark on bottle with --device cuda: images/s at batch 1, 16, 64, latency p50/p99 at
#    batch 1, peak memory, and a profiler table of one batch-16 predict (where the time goes).
# Results land in OUT (default $OUT, else benchmarks/results/cuda). Each step is time-boxed so one slow method
# cannot use the whole device budget.
set -uo pipefail
out="${1:-${OUT:-benchmarks/results/cuda}}"
mkdir -p "$out"
py="${PYTHON:-python}"
data="${CELL_DATA:-../shared/data/bottle}"
CELL_TEST_DEVICE=cuda timeout 240 "$py" -m pytest -q tests/detectors/test_contract.py > "$out/contract_cuda.txt" 2>&1
echo "contract on cuda: exit $?" | tee -a "$out/summary.txt"
for method in simplenet cfa slsg tsdn glance patchcore efficientad; do
  [ -f "configs/detectors/$method.yaml" ] || continue
  timeout 300 "$py" -m benchmarks.bench_detectors --method "$method" --dataset "$data" --device cuda \
    --batches 1,16,64 --repeats 50 --profile 16 --out "$out" > "$out/$method.log" 2>&1
  echo "$method: exit $?" | tee -a "$out/summary.txt"
done
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
