#!/usr/bin/env bash
# The prepared GPU check of issue 16: one call on a lent GPU machine, from the repository root.
#
# On a GPU machine with ownmark's dependencies installed: bash scripts/gpu-check.sh. For a machine that cannot reach
# a package index (this project's lent GPU machine), first run `bash scripts/gpu-wheels.sh` where the index is
# reachable: it fills .whl/ with the wheels that machine's image lacks; carry .whl with the call (timeout_s 600).
# Everything it measures lands in $OUT (summary.txt first); steps that run out of time are skipped and said so.
#
# 1. imports: ownmark, the serve app and the carried packages import; the GPU's name
# 2. perf:    `ownmark bench perf --accelerator cuda` (the loop vs a bare loop with device-resident data on a
#             CIFAR-shaped ResNet-18, fp32 and bf16): the section foundation-cuda of $OUT/BENCHMARKS.md
# 3. gpu tests: each family's embed / attack / verify on the device, resume on the device, the loop's resident,
#             host and streamed batches, FCW's trigger hooks
# 4. the same cells on CPU and GPU: the presets smoke (classifier, FCW), image2image-smoke (deepwm) and
#    awencoder-smoke (AWEncoder), each run with --accelerator cpu (in the background, on the machine's cores) and
#    --accelerator cuda; scripts/compare_runs.py prints both verdicts of every row ($OUT/compare-*.txt)
# 5. the paper preset rehearsed on the GPU, with the time left (below)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
RUNS=/tmp/gpu-check-runs
BUDGET=${GPU_CHECK_SECONDS:-560}  # the whole script, under the device call's 600 s
mkdir -p "$OUT" "$RUNS"
left() { echo $((BUDGET - SECONDS)); }
step() {  # step NAME LIMIT COMMAND...: run with the smaller of LIMIT and the time left; output in $OUT/NAME.txt
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    ((limit > $(left))) && limit=$(left)
    if ((limit < 15)); then
        echo "$name: skipped, out of time" | tee -a "$OUT/summary.txt"
        return
    fi
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "$name: rc $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

if [ -d .whl ]; then  # a machine with no package index: the wheels scripts/gpu-wheels.sh prepared
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >"$OUT/pip.txt" 2>&1 || { echo "wheels did not install: see pip.txt" | tee "$OUT/summary.txt"; exit 1; }
fi
export PYTHONPATH=$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
step imports 90 python3 -c "import torch, kornia, lightly, mlxtend, fastapi, ownmark.cli, ownmark.serve.app
print('torch', torch.__version__, 'python', __import__('sys').version.split()[0], torch.cuda.get_device_name())"
cat "$OUT/imports.txt"
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
step perf 150 python3 -m ownmark bench perf --accelerator cuda --repeats 3 --out "$OUT/BENCHMARKS.md"
tail -12 "$OUT/perf.txt"

PRESETS=(smoke image2image-smoke awencoder-smoke)
(  # the CPU side of the comparison, on the machine's cores while the GPU runs its own
    for p in "${PRESETS[@]}"; do
        limit=$(($(left) - 20))  # leaves time for the comparison
        if ((limit < 15)); then
            echo "cpu-$p: skipped, out of time" >>"$OUT/summary.txt"
            continue
        fi
        timeout "$limit" python3 -m ownmark bench run --preset "$p" --workdir "$RUNS/cpu-$p" \
            --accelerator cpu --executor serial >"$OUT/cpu-$p.txt" 2>&1
        echo "cpu-$p: rc $? at $SECONDS s" >>"$OUT/summary.txt"
    done
) &
step gpu-tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_devices.py tests/train/test_gpu.py
tail -3 "$OUT/gpu-tests.txt"
for p in "${PRESETS[@]}"; do
    step "cuda-$p" 150 python3 -m ownmark bench run --preset "$p" --workdir "$RUNS/cuda-$p" --accelerator cuda \
        --executor serial
done
wait
for p in "${PRESETS[@]}"; do
    python3 scripts/compare_runs.py "$RUNS/cpu-$p" "$RUNS/cuda-$p" >"$OUT/compare-$p.txt" 2>&1
    echo "compare-$p: rc $?" | tee -a "$OUT/summary.txt"
    cat "$OUT/compare-$p.txt"
done
# 5. with the time left: the paper preset rehearsed on the GPU (every scheme, attack and architecture of the paper
#    run at one epoch on CIFAR-shaped stand-in data): its paths on the device; its figures mean nothing
step paper-rehearsal $(($(left) - 5)) python3 -m ownmark bench run --preset paper --rehearse --accelerator cuda \
    --executor serial --workdir "$RUNS/paper-rehearsal"
tail -3 "$OUT/paper-rehearsal.txt"
echo "done in $SECONDS s" | tee -a "$OUT/summary.txt"
