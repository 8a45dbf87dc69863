#!/usr/bin/env bash
# Multi-node dataset build: one Slurm task per node runs torchrun with one process per GPU (or CPU worker).
#   sbatch --nodes 4 slurm/build_dataset.sh --corpus kilt.jsonl --queries queries.tsv --out /shared/data-build
# Restarting the same command resumes: finished index blocks and query chunks are kept.
# Counts are environment variables: NNODES, PROCS_PER_NODE, MASTER_ADDR, MASTER_PORT, PYTHON; LAUNCHER=srun starts
# one Slurm task per process instead of torchrun (ranks from Slurm's variables; SRUN_MPI=pmix for srun --mpi).
#SBATCH --job-name=scaledown-build
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(pwd)}"

NNODES=${NNODES:-${SLURM_JOB_NUM_NODES:-1}}
PROCS_PER_NODE=${PROCS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

LAUNCHER=${LAUNCHER:-torchrun}
echo "nodes=$NNODES procs/node=$PROCS_PER_NODE head=$MASTER_ADDR:$MASTER_PORT launcher=$LAUNCHER"
if [ "$LAUNCHER" = srun ]; then
    export MASTER_ADDR MASTER_PORT
    CPUS=$(( ${SLURM_CPUS_PER_TASK:-$PROCS_PER_NODE} / PROCS_PER_NODE )); CPUS=$(( CPUS > 0 ? CPUS : 1 ))
    srun --nodes="$NNODES" --ntasks-per-node="$PROCS_PER_NODE" --cpus-per-task="$CPUS" --kill-on-bad-exit=1 \
        ${SRUN_MPI:+--mpi="$SRUN_MPI"} "$PYTHON" launchers/build_dataset.py "$@"
elif [ "$LAUNCHER" = torchrun ]; then
    srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
        "$PYTHON" -m torch.distributed.run \
            --nnodes "$NNODES" --nproc_per_node "$PROCS_PER_NODE" \
            --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "${SLURM_JOB_ID:-0}" \
            launchers/build_dataset.py "$@"
else
    echo "LAUNCHER=$LAUNCHER: expected torchrun or srun" >&2; exit 2
fi
