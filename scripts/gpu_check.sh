#!/usr/bin/env bash
# One prepared run on a borrowed CUDA machine (no package registry there): proves the GPU path and records numbers.
#   - tests/gpu: the transformers engine in bf16 on CUDA (whole == streamed, decode tokens/s)
#   - training/gpu_bench: the `small` preset trained in bf16, tokens/s and MFU (eager and torch.compile)
# Wheels the machine lacks (pydantic for the config models) travel in .whl/ (see the device README).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -s tests/gpu 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -15
timeout 240 python3 -m training.gpu_bench --preset small --steps 60 --warmup 10 2>&1 | tail -3 | tee "$OUT/train_eager.json"
timeout 240 python3 -m training.gpu_bench --preset small --steps 60 --warmup 15 --compile 2>&1 | tail -3 | tee "$OUT/train_compile.json"
