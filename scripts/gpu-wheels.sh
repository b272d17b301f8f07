#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with the wheels the GPU machine lacks, for its Python (3.12, manylinux x86_64), at
# the versions this checkout's .venv runs, so the device runs what the CPU tests ran. Run it here (it reaches the
# package index), then carry .whl with the device call that runs scripts/gpu-check.sh.
#
# The GPU image already has torch, torchvision, lightning, torchmetrics, timm, scipy, scikit-image, scikit-learn,
# matplotlib, pandas, pillow, pyyaml, safetensors, typer, rich, httpx, anyio, click, h11 and typing-extensions
# (/work/.library/device/KINDS.md); ownmark needs these on top (and what they need that the image lacks).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: no .venv here; run 'make test' (or make .venv/.installed) first" >&2; exit 1; }
NEEDED=(kornia kornia_rs lightly hydra-core omegaconf antlr4-python3-runtime mlxtend fastapi starlette pydantic
        pydantic_core annotated-types typing-inspection opentelemetry-api uvicorn typing_extensions)
pins=()
for name in "${NEEDED[@]}"; do
    pins+=("$name==$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
rm -rf .whl && mkdir -p .whl
# antlr4-python3-runtime (hydra-core and omegaconf need it) is published as a source archive only: build its
# pure-Python wheel here, since the device has no index to fetch a build backend from
binary=() source=()
for pin in "${pins[@]}"; do
    case "$pin" in antlr4-python3-runtime==*) source+=("$pin") ;; *) binary+=("$pin") ;; esac
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${binary[@]}"
python3 -m pip wheel --quiet --no-deps -w .whl "${source[@]}"
ls .whl
du -sh .whl
