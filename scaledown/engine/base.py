"""The Engine interface: everything the training loop needs from a distributed backend, and nothing more.

The loop calls, in order: `setup()`, `prepare(model_fn, param_groups_fn, lr_lambda)`, then per micro-batch a
forward under `autocast()`, `backward(loss)` and `step()` (which updates the weights only at the end of an
accumulation window, as DeepSpeed does), `mark_step()` at the end of every optimizer step (the XLA step barrier
on Trainium), and, registered with `after_step` just before it, logging (`all_reduce(metrics)`) and
`save_checkpoint`; `load_checkpoint` on resume, `export` at the end.
The data is sharded by *data-parallel* rank (`dp_rank`, `dp_size`): with tensor parallelism several ranks
share one shard.
"""

from __future__ import annotations

import contextlib
import os
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from scaledown.hardware import autocast_dtype


class BatchSizeError(ValueError):
    """global batch != micro batch x gradient accumulation x data-parallel size."""


@dataclass
class BatchPlan:
    """How the global batch splits over ranks and accumulation steps."""

    global_batch_size: int
    micro_batch_size: int
    dp_size: int

    def __post_init__(self):
        per_step = self.micro_batch_size * self.dp_size
        if self.global_batch_size % per_step:
            raise BatchSizeError(
                f"global batch {self.global_batch_size} is not micro batch {self.micro_batch_size} x "
                f"gradient accumulation x data-parallel size {self.dp_size}: {self.global_batch_size} is not a "
                f"multiple of {self.micro_batch_size} x {self.dp_size} = {per_step}")

    @property
    def accumulation(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.dp_size)


@dataclass
class ParamGroup:
    name: str
    params: list[nn.Parameter]
    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def as_dict(self) -> dict:
        """The group as torch optimizers take it (AdamW: lr, weight decay, betas, eps)."""
        return {"params": self.params, "lr": self.lr, "weight_decay": self.weight_decay, "betas": self.betas,
                "eps": self.eps, "name": self.name}


class Engine(ABC):
    """One backend: DeepSpeed, plain torch, or neuronx-distributed."""

    name: str = "base"
    tensor_parallel_size: int = 1  # ranks that share one data shard and split the model
    # What the loop must know of a backend, declared rather than probed:
    collective_forward: bool = False  # every forward is a collective (ZeRO-3): ranks run equal batches, in step
    eager: bool = True  # device work has run when a call returns (XLA: traced lazily, a wall clock means nothing)

    def __init__(self, global_batch_size: int, micro_batch_size: int, autocast: str = ""):
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.autocast_setting = autocast  # engine.autocast: a dtype name, `auto` or empty
        self.batch: BatchPlan | None = None  # set by setup(), once the data-parallel size is known
        self.model: nn.Module | None = None
        self._micro = 0

    @classmethod
    def from_config(cls, cfg) -> Engine:
        """Build this backend from a run config (scaledown.config.Config)."""
        return cls(cfg.train.global_batch_size, cfg.train.micro_batch_size, autocast=cfg.engine.autocast)

    # ---- distributed set-up -------------------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Join the process group (if any) and pick the device."""

    @property
    def rank(self) -> int:
        if torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return int(os.environ.get("RANK", 0))

    @property
    def world_size(self) -> int:
        if torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return int(os.environ.get("WORLD_SIZE", 1))

    @property
    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    @property
    def dp_rank(self) -> int:
        return self.rank

    @property
    def dp_size(self) -> int:
        return self.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    # ---- training -----------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, model_fn: Callable[[], nn.Module],
                param_groups_fn: Callable[[nn.Module], list[ParamGroup]],
                lr_lambda: Callable[[int], float] | list[Callable[[int], float]], max_grad_norm: float) -> nn.Module:
        """Build the model with `model_fn`, wrap it, build the optimizer and LR schedule; return the module to
        call for forward passes."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's loss (scaled for accumulation by the engine)."""

    @abstractmethod
    def step(self) -> bool:
        """Call after every backward; updates weights at the end of an accumulation window (returns True)."""

    @abstractmethod
    def grad_norm(self) -> float | None:
        """Global gradient norm before clipping at the last update (a host sync: logging steps only)."""

    @abstractmethod
    def lrs(self) -> list[float]:
        """Current learning rate of each parameter group."""

    def set_group_settings(self, lrs: list[float], weight_decay: float, betas: tuple[float, float]) -> None:
        """A resume that changes the optimizer settings on purpose: loading the optimizer and scheduler state
        brought back the old ones. The schedule continues from the new base LRs (one per group). Every backend
        keeps a LambdaLR in `self.scheduler`."""
        scheduler = self.scheduler
        scheduler.base_lrs = list(lrs)
        for group, lr, fn in zip(scheduler.optimizer.param_groups, lrs, scheduler.lr_lambdas):
            group.update(initial_lr=lr, lr=lr * fn(scheduler.last_epoch), weight_decay=weight_decay,
                         betas=tuple(betas))

    def _window_done(self) -> bool:
        """Count a micro-step; True at the end of an accumulation window (for engines that accumulate themselves)."""
        self._micro += 1
        return self._micro % self.batch.accumulation == 0

    def mark_step(self) -> None:
        """End of an optimizer step: a no-op except on XLA devices."""

    def after_step(self, fn: Callable, *args) -> None:
        """Run `fn(*args)` once this step's values can be read: now, or as an XLA step closure after mark_step."""
        fn(*args)

    def autocast(self):
        """Context for forward passes: `torch.autocast` on this device when `engine.autocast` names a dtype
        (`auto` resolved for this device: scaledown.hardware.autocast_dtype)."""
        dtype = autocast_dtype(self.autocast_setting, self.device)
        if not dtype:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, dtype))

    def all_reduce(self, metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """Mean of each metric over all ranks (one collective; a host sync)."""
        names = sorted(metrics)
        values = torch.tensor([float(metrics[n]) for n in names], dtype=torch.float64)
        if torch.distributed.is_initialized() and self.world_size > 1:
            values = values.to(self.comm_device)
            torch.distributed.all_reduce(values)
            values = values.cpu() / self.world_size
        return dict(zip(names, values.tolist()))

    @property
    def comm_device(self) -> torch.device:
        return self.device

    def barrier(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    # ---- checkpoints --------------------------------------------------------------------------------------
    @abstractmethod
    def save_checkpoint(self, folder: Path) -> None:
        """Write model, optimizer and scheduler state into `folder` (every rank calls this)."""

    @abstractmethod
    def load_checkpoint(self, folder: Path) -> None:
        """Restore what `save_checkpoint` wrote."""

    @abstractmethod
    def export(self, folder: Path) -> None:
        """Write the trainable weights with the model's `save_pretrained` (main rank), loadable without this
        backend."""

    def shutdown(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def rng_state() -> dict:
    """This rank's random state: LoRA dropout must replay exactly after a resume."""
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
