#!/usr/bin/env bash
# The main job on the embedded default, on a CPU machine: set up, build a small dataset, train with the
# DeepSpeed engine in 2 processes (gloo), evaluate the exported model without DeepSpeed, print where things are.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/quickstart}
NPROC=${NPROC:-2}
bash launchers/setup.sh
PY=.venv/bin/python
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

echo "== 1/5 small random-init models from configs -> $RUN/base-model, $RUN/retrieval"
$PY -m scaledown.models.tiny --out "$RUN/base-model" --retrieval-out "$RUN/retrieval"
echo "== 2/5 corpus and questions shipped in PyPI packages (gensim's Wikipedia sample, FanOutQA dev) -> $RUN/source"
$PY -m scaledown.build.embedded --out "$RUN/source" --eval 32
echo "== 3/5 dataset build, $NPROC ranks: SPLADE index + retrieval, cross-encoder rerank 50 -> 5 (eval set: 10, gold answers only) -> $RUN/data"
BUILD=(--corpus "$RUN/source/corpus.jsonl" --splade "$RUN/retrieval/splade/encoder" --cross-encoder "$RUN/retrieval/ce"
       --teacher gold --tokenizer "$RUN/base-model" --chunk-size 128 --block-bytes 1048576 --quiet)
.venv/bin/torchrun --nproc_per_node "$NPROC" launchers/build_dataset.py "${BUILD[@]}" \
    --queries "$RUN/source/queries.jsonl" --out "$RUN/data"
.venv/bin/torchrun --nproc_per_node "$NPROC" launchers/build_dataset.py "${BUILD[@]}" \
    --queries "$RUN/source/eval_queries.jsonl" --index "$RUN/data/index" --out "$RUN/eval-data" --teacher none --k 10
echo "== 4/5 train: DeepSpeed ZeRO-2, $NPROC CPU processes"
.venv/bin/deepspeed --num_gpus "$NPROC" launchers/train_gpu.py --config configs/tiny.yaml \
    --deepspeed_config ds_configs/zero2.json --train.output_dir="$RUN/train" "$@"
echo "== 5/5 evaluate the export (no DeepSpeed), next to the uncompressed generator"
$PY -m scaledown.eval --model "$RUN/train/export" --data "$RUN/eval-data/dataset.jsonl" --uncompressed --out "$RUN/eval.json"
echo
echo "TensorBoard logs: $RUN/train/tensorboard   (tensorboard --logdir $RUN/train/tensorboard)"
echo "Exported model:   $RUN/train/export        (ScaleDownModel.from_pretrained)"
echo "Dataset:          $RUN/data/dataset.jsonl   (statistics: $RUN/data/stats.json)"
echo "Evaluation:       $RUN/eval.json"
echo "Report:           $RUN/train/report.md     (before/after table, loss.png, speed)"
