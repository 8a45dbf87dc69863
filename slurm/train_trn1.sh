#!/usr/bin/env bash
# Multi-node training on AWS Trn1 with neuronx-distributed. NOT YET RUN ON TRAINIUM.
#   sbatch --nodes 4 slurm/train_trn1.sh --config my.yaml
# One Slurm task per node runs torchrun with one process per NeuronCore (32 on a trn1.32xlarge).
# PRECOMPILE=1 first runs the same command under neuron_parallel_compile to fill the compile cache (use the same
# node count as the real run). Counts are environment variables: NNODES, CORES_PER_NODE, MASTER_ADDR, MASTER_PORT.
# LAUNCHER=srun: one Slurm task per NeuronCore, no torchrun (ranks from Slurm's variables).
#SBATCH --job-name=scaledown-trn1
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --output=%x-%j.out
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(pwd)}"
source slurm/requeue.sh  # USR1 before the time limit: checkpoint, then requeue

NNODES=${NNODES:-${SLURM_JOB_NUM_NODES:-1}}
CORES_PER_NODE=${CORES_PER_NODE:-32}
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
PYTHON=${PYTHON:-python}
PRECOMPILE=${PRECOMPILE:-0}
export NEURON_CC_FLAGS=${NEURON_CC_FLAGS:-"--auto-cast=none --cache_dir=${NEURON_CACHE:-$HOME/neuron_cache}"}
export NEURON_RT_NUM_CORES=${NEURON_RT_NUM_CORES:-$CORES_PER_NODE}
export FI_PROVIDER=${FI_PROVIDER:-efa}            # EFA between nodes
export FI_EFA_USE_DEVICE_RDMA=${FI_EFA_USE_DEVICE_RDMA:-1}
export FI_EFA_FORK_SAFE=${FI_EFA_FORK_SAFE:-1}
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-64}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

LAUNCHER=${LAUNCHER:-torchrun}
TASKS_PER_NODE=1
# \$SLURM_NODEID is escaped: each task expands it on its own node.
RUN="torchrun --nnodes $NNODES --node_rank \$SLURM_NODEID --nproc_per_node $CORES_PER_NODE \
  --master_addr $MASTER_ADDR --master_port $MASTER_PORT launchers/train_trn1.py"
if [ "$LAUNCHER" = srun ]; then
  export MASTER_ADDR MASTER_PORT
  TASKS_PER_NODE=$CORES_PER_NODE
  RUN="$PYTHON launchers/train_trn1.py"
elif [ "$LAUNCHER" != torchrun ]; then
  echo "LAUNCHER=$LAUNCHER: expected torchrun or srun" >&2; exit 2
fi
echo "nodes=$NNODES cores/node=$CORES_PER_NODE head=$MASTER_ADDR:$MASTER_PORT precompile=$PRECOMPILE"
# The precompile pass fills the compile cache only: its own run folder, no resume; skipped after a requeue.
if [ "$PRECOMPILE" = 1 ] && [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
  srun --nodes="$NNODES" --ntasks-per-node="$TASKS_PER_NODE" --kill-on-bad-exit=1 \
    bash -c "neuron_parallel_compile $RUN $(printf '%q ' "$@") \
      --train.output_dir=${PRECOMPILE_DIR:-.cache/precompile-${SLURM_JOB_ID:-0}} --train.resume=none \
      --train.max_steps=10"
fi
run_requeueable srun --nodes="$NNODES" --ntasks-per-node="$TASKS_PER_NODE" --kill-on-bad-exit=1 bash -c "$RUN $(printf '%q ' "$@")"
