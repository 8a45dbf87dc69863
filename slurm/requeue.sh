# Sourced by slurm/train_*.sh: run a job step so that Slurm's warning before the time limit or a preemption
# (#SBATCH --signal=B:USR1@120) ends it with a checkpoint and requeues the job, which resumes from it.
#   run_requeueable srun ... launchers/train_gpu.py ...
# On USR1 this script creates $SCALEDOWN_STOP_FILE; the trainer polls it at every step (all ranks agree by one
# small all-reduce on logging steps), saves a checkpoint at that step boundary, writes $SCALEDOWN_STOP_FILE.done
# and exits 0; only then is the job requeued (#SBATCH --requeue; a run that finished anyway is not), and the next
# run's train.resume=auto continues from that checkpoint.
run_requeueable() {
  export SCALEDOWN_STOP_FILE=${SCALEDOWN_STOP_FILE:-$PWD/.scaledown-stop-${SLURM_JOB_ID:-0}}
  rm -f "$SCALEDOWN_STOP_FILE" "$SCALEDOWN_STOP_FILE.done"
  trap 'echo "USR1 from Slurm: asking the trainer to checkpoint and stop"; touch "$SCALEDOWN_STOP_FILE"' USR1
  # In the background: bash runs a trap only between commands, and `wait` returns as soon as one arrives.
  "$@" &
  local pid=$! status=0
  while true; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  # The step may have ended while the trap interrupted `wait`: bash keeps its status for one more `wait`.
  if [ "$status" -gt 128 ]; then wait "$pid" && status=0 || status=$?; fi
  trap - USR1
  if [ -e "$SCALEDOWN_STOP_FILE.done" ]; then
    rm -f "$SCALEDOWN_STOP_FILE" "$SCALEDOWN_STOP_FILE.done"
    if [ "$status" -eq 0 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
      echo "checkpoint written; requeueing job $SLURM_JOB_ID"
      scontrol requeue "$SLURM_JOB_ID"
    fi
  fi
  rm -f "$SCALEDOWN_STOP_FILE"
  return "$status"
}
