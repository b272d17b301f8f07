#!/usr/bin/env bash
# The prepared GPU check of issue 16: one call on a lent GPU machine, from the repository root.
#
# The GPU image has torch, lightning, timm, scipy and scikit-image but not kornia, lightly, mlxtend or
# fastapi. Before the call, on the development machine (it reaches the package index):
#   pip download --dest .wheels --no-deps kornia kornia-rs lightly lightly-utils mlxtend hydra-core \
#       omegaconf antlr4-python3-runtime aenum safetensors typer rich
# and carry .wheels (ignored by git) with the call. $OUT comes back with every figure this writes.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
pip install --quiet --no-index --find-links .wheels --no-deps .wheels/*.whl 2>&1 | tail -3
pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt"
# 1. every gpu test: each family's train/embed/attack/verify round trip, resume on the device, the loop's
#    resident / host / streamed batches, trigger hooks on the device
timeout 300 python -m pytest -q -m gpu -p no:cacheprovider tests/test_devices.py tests/train/test_gpu.py \
    > "$OUT/gpu-tests.txt" 2>&1
tail -5 "$OUT/gpu-tests.txt"
# 2. the loop against a bare loop with device-resident data: CIFAR-shaped ResNet-18, fp32 and bf16
timeout 240 ownmark bench perf --accelerator cuda --repeats 2 --out "$OUT/perf.md" > "$OUT/perf.txt" 2>&1
tail -15 "$OUT/perf.txt"
