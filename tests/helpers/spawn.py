"""Run a function in N CPU processes joined by a gloo group, from inside a test (no launcher, no files): each rank's
return value comes back in rank order, and an exception on any rank fails the caller with that rank's traceback.
The function must be importable (defined at module level), as torch.multiprocessing pickles it by name."""

from __future__ import annotations

import os
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp

from launch import free_port


def _rank(rank: int, world: int, port: int, fn, args, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        results.put((rank, fn(rank, world, *args), None))
        dist.barrier()  # leave together: a group closed under a peer still working can abort it
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test with it
        results.put((rank, None, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn, world: int, *args, timeout: float = 300):
    """[fn(0, world, *args), ..., fn(world - 1, world, *args)], each in its own process."""
    ctx = mp.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, fn, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    out = {}
    try:
        for _ in range(world):
            rank, value, error = results.get(timeout=timeout)
            if error:
                raise AssertionError(f"rank {rank} failed:\n{error}")
            out[rank] = value
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return [out[r] for r in range(world)]
