#!/usr/bin/env bash
# Everything that needs a GPU, in one command: about 6 minutes on one H100/H200 (step 3 not yet timed), no network.
#   1. training throughput and MFU at the Mistral-7B shape (random weights, bf16, ZeRO-2, 5 documents of 128
#      tokens), 8- and 5-layer compressors, micro-batches 1-8 (benchmarks/train_throughput.py);
#   2. inference ms/query, compressed vs documents as text, batch 1/16/64, 10 documents (benchmarks/inference.py;
#      the paper's Table 5);
#   3. the same at batch 1 with the decoding step compiled (static KV cache, CUDA graphs; 8-layer compressor):
#      the eager batch-1 decoding is launch-bound;
#   4. the GPU tests (pytest -m gpu).
# Each step has its own time limit and the next runs whatever the last did; every output lands in OUT_DIR
# (default runs/gpu; $OUT when set): one log per step and results.md, the figures for benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu.sh --fetch      # on a machine with PyPI: the wheels the GPU machine lacks -> benchmarks/wheels/
#   bash benchmarks/gpu.sh [OUT_DIR]    # on the GPU machine (installs benchmarks/wheels/*.whl into /tmp/site)
#   bash benchmarks/gpu.sh --dry-run    # on a CPU: the same steps at tiny sizes (tests/test_gpu_script.py)
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=benchmarks
WHEELS=$HERE/wheels

if [ "${1:-}" = "--fetch" ]; then
    # The borrowed GPU machine has torch, transformers, peft, accelerate, pyarrow, tensorboard and mpi4py but no
    # DeepSpeed, jsonargparse or rouge-score, and no network. DeepSpeed ships as an sdist: built here, pure Python.
    set -e
    PY=${PYTHON:-python3}
    mkdir -p "$WHEELS"
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" deepspeed==0.19.8 jsonargparse==4.53.0 rouge-score==0.1.2
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d "$WHEELS" hjson pydantic==2.14.4 pydantic-core==2.50.5 annotated-types \
        typing-inspection "typing-extensions>=4.16" nltk defusedxml docstring-parser typeshed-client
    du -sh "$WHEELS"
    exit 0
fi

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT_DIR=${1:-${OUT:-runs/gpu}}
mkdir -p "$OUT_DIR"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$DRY" = 0 ]; then
    if ! "$PY" -c "import deepspeed, jsonargparse, rouge_score" 2>/dev/null; then
        ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: run 'bash benchmarks/gpu.sh --fetch' first"; exit 2; }
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$WHEELS"/*.whl || exit 2
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    ARCH=mistral-7b DTYPE=bfloat16 MICRO="1 2 4 8" LAYERS="8 5" BATCHES="1 16 64" DOCS=10 STEPS=5
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT_DIR/device.txt" 2>&1
else
    export DS_ACCELERATOR=cpu
    ARCH=tiny DTYPE=float32 MICRO="1 2" LAYERS="2" BATCHES="1 2" DOCS=2 STEPS=2
    echo "cpu (dry run)" > "$OUT_DIR/device.txt"
fi
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

status=0
step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log, note the exit code, go on
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT_DIR/$name.log"
    echo "== $name: rc $rc"
    echo "$name $rc" >> "$OUT_DIR/rc.txt"
    [ $rc = 0 ] || status=1
}
: > "$OUT_DIR/rc.txt"
# shellcheck disable=SC2086
step train 240 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
    $HERE/train_throughput.py --arch $ARCH --dtype $DTYPE --micro-batches $MICRO --zero-stages 2 \
    --compressor-layers $LAYERS --steps $STEPS --warmup 2 --json "$OUT_DIR/train.json"
# shellcheck disable=SC2086
step inference 150 "$PY" $HERE/inference.py --arch $ARCH --device "$([ $DRY = 1 ] && echo cpu || echo cuda)" \
    --dtype $DTYPE --docs $DOCS --compressor-layers $LAYERS --batch-sizes $BATCHES --repeats 3
# shellcheck disable=SC2086
step inference_compiled 240 "$PY" $HERE/inference.py --arch $ARCH \
    --device "$([ $DRY = 1 ] && echo cpu || echo cuda)" --dtype $DTYPE --docs $DOCS --compressor-layers ${LAYERS%% *} \
    --batch-sizes 1 --repeats 3 --decoder compiled --phases
step gpu_tests 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_paper_protocol.py tests/test_gpu.py

{
    echo "# benchmarks/gpu.sh, $(date -u +%Y-%m-%d) on $(cat "$OUT_DIR/device.txt")"
    echo
    echo "exit codes: $(tr '\n' ' ' < "$OUT_DIR/rc.txt")"
    for name in train inference inference_compiled gpu_tests; do
        echo
        echo "## $name"
        echo '```'
        grep -v -i "warn\|^\[" "$OUT_DIR/$name.log" | tail -n 30
        echo '```'
    done
} > "$OUT_DIR/results.md"
echo "results: $OUT_DIR/results.md"
exit $status
