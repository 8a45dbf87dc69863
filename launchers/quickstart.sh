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

echo "== 1/4 small models from configs (random init) -> $RUN/base-model"
$PY -m scaledown.models.tiny --out "$RUN/base-model"
echo "== 2/4 dataset -> $RUN/data"
$PY -m scaledown.data.synthetic --out "$RUN/data" --train 512 --eval 64
echo "== 3/4 train: DeepSpeed ZeRO-2, $NPROC CPU processes"
.venv/bin/deepspeed --num_gpus "$NPROC" launchers/train_gpu.py --config configs/tiny.yaml \
    --deepspeed_config ds_configs/zero2.json --train.output_dir="$RUN/train" "$@"
echo "== 4/4 evaluate the export (no DeepSpeed)"
$PY -m scaledown.eval --model "$RUN/train/export" --data "$RUN/data/eval.jsonl" --uncompressed --out "$RUN/eval.json"
echo
echo "TensorBoard logs: $RUN/train/tensorboard   (tensorboard --logdir $RUN/train/tensorboard)"
echo "Exported model:   $RUN/train/export        (ScaleDownModel.from_pretrained)"
echo "Evaluation:       $RUN/eval.json"
