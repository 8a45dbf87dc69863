"""Rank discovery for processes started without torchrun: `mpirun -np N` (OpenMPI, MPICH, `srun --mpi=pmix`) or
plain `srun`. torch.distributed's `env://` rendezvous reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; torchrun and the deepspeed launcher set them, and `discover()` sets them otherwise:

- inside an srun step of several tasks, from Slurm's variables, the head node from `scontrol show hostnames`;
- under MPI, through mpi4py: rank and size of COMM_WORLD, the local rank from the shared-memory split of it, and
  rank 0's host name and a free port broadcast to all.

DeepSpeed does the MPI case itself (`deepspeed.init_distributed(auto_mpi_discovery=True)`), so the training
engine asks only for the Slurm case; the dataset build asks for both.
"""

from __future__ import annotations

import os
import socket
import subprocess

DEFAULT_PORT = 29500

_MPI_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


def launched_by_torch() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def discover(mpi: bool = True) -> str:
    """Set the env:// variables when no launcher did; returns how ranks were found: torchrun, slurm, mpi or
    single (one process, nothing to do)."""
    if launched_by_torch():
        return "torchrun"
    env = os.environ
    # SLURM_STEP_NUM_TASKS exists inside an srun step only: the batch script itself also has SLURM_PROCID=0 and
    # SLURM_NTASKS, and a plain `python ...` there is one process, not rank 0 of N.
    if "SLURM_STEP_NUM_TASKS" in env and int(env["SLURM_STEP_NUM_TASKS"]) > 1:
        env.update(RANK=env["SLURM_PROCID"], WORLD_SIZE=env["SLURM_STEP_NUM_TASKS"],
                   LOCAL_RANK=env.get("SLURM_LOCALID", "0"))
        env.setdefault("MASTER_ADDR", _slurm_head_node())
        env.setdefault("MASTER_PORT", str(DEFAULT_PORT))
        return "slurm"
    if mpi and any(k in env for k in _MPI_MARKERS):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() == 1:
            return "single"
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        head = comm.bcast((socket.gethostname(), _free_port()) if comm.Get_rank() == 0 else None, root=0)
        env.update(RANK=str(comm.Get_rank()), WORLD_SIZE=str(comm.Get_size()), LOCAL_RANK=str(local))
        env.setdefault("MASTER_ADDR", head[0])
        env.setdefault("MASTER_PORT", str(head[1]))
        return "mpi"
    return "single"


def single_process() -> None:
    """The env:// variables of a world of one, for a plain `python` process that no launcher started (left as is
    under MPI, whose own discovery runs): DeepSpeed would otherwise try MPI discovery and need mpi4py."""
    if launched_by_torch() or any(k in os.environ for k in _MPI_MARKERS):
        return
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def _slurm_head_node() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "localhost"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodes.split(",")[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
