#!/usr/bin/env bash
# bench/gpu.sh -- run on a machine with a CUDA GPU (the device tool lends one to some tasks), from the repo root:
#   bash bench/gpu.sh            # ~4 min: CUDA tests, then the search throughput on the GPU (and CPU for scale)
# It writes everything it prints to ${OUT:-bench-gpu-out}/ too. Issue 15's GPU goal: the fused coarse stage of the
# benchmark's MLP trials at >= 12x the trials/min of the hand-written Optuna + PyTorch loop on the same GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-gpu-out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY' | tee "$out/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: bench/gpu.sh is for a GPU machine"
print(torch.__version__, torch.cuda.get_device_name(0), f"{torch.cuda.mem_get_info()[1] / 2**30:.0f} GiB")
PY
# the CUDA code paths: a fused population on the GPU against training alone on CPU (skipped without CUDA elsewhere)
python -m pytest -q -rs tests/test_population.py tests/test_vmapped.py -k cuda 2>&1 | tee "$out/tests.txt"
# whole-search throughput on the GPU: coarse stage and whole command, fused against one at a time and the hand loop
# (--no-jobs2: one GPU is one device; --jobs is the CPU's question)
python bench/search_throughput.py --device cuda --repeats 3 --skip small,cnn --no-jobs2 2>&1 | tee "$out/search_cuda.txt"
python bench/search_throughput.py --device cuda --repeats 3 --skip small,mlp --no-jobs2 2>&1 | tee "$out/search_cuda_cnn.txt"
python bench/search_throughput.py --device cuda --repeats 1 --skip mlp,cnn --no-jobs2 --trials 64 2>&1 \
    | tee "$out/search_cuda_small.txt"
