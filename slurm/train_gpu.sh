#!/usr/bin/env bash
# Multi-node training with DeepSpeed: one Slurm task per node runs torchrun, which starts one process per GPU.
#   sbatch --nodes 4 slurm/train_gpu.sh --train.micro_batch_size=4
#   LAUNCHER=srun sbatch --nodes 4 slurm/train_gpu.sh   # no torchrun: one Slurm task per GPU (srun --mpi=pmix
#                                                       # with SRUN_MPI=pmix); ranks from Slurm's variables
# Every count can be overridden by environment variables (NNODES, GPUS_PER_NODE, MASTER_PORT, CONFIG, ...);
# extra arguments are passed to the trainer as --section.field=value overrides.
#SBATCH --job-name=scaledown-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --output=%x-%j.out
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(pwd)}"
source slurm/requeue.sh  # USR1 before the time limit: checkpoint, then requeue

NNODES=${NNODES:-${SLURM_JOB_NUM_NODES:-1}}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
# A port derived from the job id: two jobs sharing a head node do not collide.
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
CONFIG=${CONFIG:-configs/tiny.yaml}
DS_CONFIG=${DS_CONFIG:-ds_configs/zero2.json}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}

LAUNCHER=${LAUNCHER:-torchrun}
echo "nodes=$NNODES gpus/node=$GPUS_PER_NODE head=$MASTER_ADDR:$MASTER_PORT config=$CONFIG ds=$DS_CONFIG launcher=$LAUNCHER"
TRAIN=(launchers/train_gpu.py --config "$CONFIG" --deepspeed_config "$DS_CONFIG" "$@")
# srun's exit status is the job's: any rank failing fails the job (--kill-on-bad-exit stops the others).
if [ "$LAUNCHER" = srun ]; then
    export MASTER_ADDR MASTER_PORT  # scaledown/distributed.py takes RANK, WORLD_SIZE, LOCAL_RANK from Slurm
    # The job's CPUs split over the per-GPU tasks (the allocation has one task per node).
    CPUS=$(( ${SLURM_CPUS_PER_TASK:-$GPUS_PER_NODE} / GPUS_PER_NODE )); CPUS=$(( CPUS > 0 ? CPUS : 1 ))
    run_requeueable srun --nodes="$NNODES" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS" \
        --kill-on-bad-exit=1 ${SRUN_MPI:+--mpi="$SRUN_MPI"} "$PYTHON" "${TRAIN[@]}"
elif [ "$LAUNCHER" = torchrun ]; then
    run_requeueable srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
        "$PYTHON" -m torch.distributed.run \
            --nnodes "$NNODES" --nproc_per_node "$GPUS_PER_NODE" \
            --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "${SLURM_JOB_ID:-0}" \
            "${TRAIN[@]}"
else
    echo "LAUNCHER=$LAUNCHER: expected torchrun or srun" >&2; exit 2
fi
