"""DeepSpeed ZeRO (stages 0-3, optional CPU offload) behind the Engine interface.

The JSON in ds_configs/ leaves batch sizes, accumulation and clipping as "auto"; they are filled from the trainer
config, and an explicit value that disagrees is an error. The optimizer (AdamW with one group per part of the
model) and the LR schedule come from the trainer, so the JSON must not define its own: a scalar
`warmup_max_lr` there would overwrite every group's LR.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from scaledown.config import ConfigError
from scaledown.distributed import discover, single_process
from scaledown.engine.base import BatchPlan, Engine
from scaledown.log import get_logger

log = get_logger(__name__)


def resolve_ds_config(source: str | Path | dict, batch: BatchPlan, max_grad_norm: float, dtype: str) -> dict:
    """Fill the "auto" fields of a DeepSpeed config; raise ConfigError on values that disagree."""
    where = str(source) if not isinstance(source, dict) else "<deepspeed config>"
    if isinstance(source, dict):
        cfg = copy.deepcopy(source)
    else:
        try:
            cfg = json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{where}: cannot read DeepSpeed config: {err}") from None
    for section in ("optimizer", "scheduler"):
        if section in cfg:
            raise ConfigError(f"{where}: remove the {section!r} block: the trainer builds AdamW with per-group LRs "
                              f"and the warmup + linear-decay schedule from the [optim] config")
    wanted = {"train_batch_size": batch.global_batch_size,
              "train_micro_batch_size_per_gpu": batch.micro_batch_size,
              "gradient_accumulation_steps": batch.accumulation,
              "gradient_clipping": max_grad_norm}
    for key, value in wanted.items():
        current = cfg.get(key, "auto")
        if current == "auto":
            cfg[key] = value
        elif current != value:
            raise ConfigError(
                f"{where}: {key}={current} disagrees with the trainer config ({key}={value}; global batch "
                f"{batch.global_batch_size} = micro {batch.micro_batch_size} x accumulation {batch.accumulation} "
                f"x data-parallel {batch.dp_size}, clipping {max_grad_norm}): set it to \"auto\"")
    for key, on in (("bf16", dtype == "bfloat16"), ("fp16", dtype == "float16")):
        block = cfg.setdefault(key, {"enabled": "auto"})
        if block.get("enabled", "auto") == "auto":
            block["enabled"] = on
        elif block["enabled"] != on:
            raise ConfigError(f"{where}: {key}.enabled={block['enabled']} disagrees with model.dtype={dtype}")
    return cfg


class ZeroEngine(Engine):
    """The project's DeepSpeed backend (not to be confused with `deepspeed.DeepSpeedEngine`, which it wraps)."""

    name = "deepspeed"

    def __init__(self, global_batch_size: int, micro_batch_size: int, config: str | Path | dict = "",
                 dtype: str = "bfloat16"):
        super().__init__(global_batch_size, micro_batch_size)
        self.config_source = config
        self.dtype = dtype

    @classmethod
    def from_config(cls, cfg) -> ZeroEngine:
        return cls(cfg.train.global_batch_size, cfg.train.micro_batch_size, config=cfg.engine.deepspeed_config,
                   dtype=cfg.model.dtype)

    def setup(self) -> None:
        import deepspeed

        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache/torch_extensions").absolute()))
        # srun without torchrun; under mpirun, DeepSpeed's own MPI discovery (mpi4py) runs; a plain `python`
        # process is a world of one (`scaledown train --device gpu` on one GPU, no launcher).
        if discover(mpi=False) == "single":
            single_process()
        built = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "deepspeed_shm_comm" / "deepspeed_shm_comm.so"
        if not torch.cuda.is_available() and not built.exists():
            log.info("building DeepSpeed's CPU communication op into %s (once per machine: a few minutes)",
                     built.parent)
        deepspeed.init_distributed()
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
        self.batch = BatchPlan(self.global_batch_size, self.micro_batch_size, self.dp_size)

    @property
    def device(self) -> torch.device:
        from deepspeed.accelerator import get_accelerator

        accel = get_accelerator()
        return torch.device("cpu") if accel.device_name() == "cpu" else torch.device(accel.device_name(self.local_rank))

    def prepare(self, model_fn, param_groups_fn, lr_lambda, max_grad_norm):
        import deepspeed

        self.ds_config = resolve_ds_config(self.config_source, self.batch, max_grad_norm, self.dtype)
        model = model_fn()
        groups = param_groups_fn(model)
        optimizer = torch.optim.AdamW(
            [g.as_dict() for g in groups])
        # A callable scheduler is built on DeepSpeed's wrapped optimizer, so LR changes reach ZeRO's groups.
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, config=self.ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda))
        self.model = self.ds.module
        self.zero_stage = self.ds.zero_optimization_stage()
        self.collective_forward = self.zero_stage == 3  # parameters are gathered inside every forward
        return self.ds

    def backward(self, loss):
        self.ds.backward(loss)

    def step(self) -> bool:
        boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.step()
        return boundary

    def grad_norm(self):
        norm = self.ds.get_global_grad_norm()
        return None if norm is None else float(norm)  # syncs

    def lrs(self):
        return list(self.ds.get_lr())

    def save_checkpoint(self, folder: Path) -> None:
        # The frozen generator is rebuilt from its source on resume: 14.5 GB of Mistral-7B per step folder saved.
        self.ds.save_checkpoint(str(folder), tag="deepspeed", exclude_frozen_parameters=True)

    def load_checkpoint(self, folder: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(folder), tag="deepspeed", load_optimizer_states=True,
                                          load_lr_scheduler_states=True, load_module_strict=False)
        if path is None:
            raise RuntimeError(f"{folder}: DeepSpeed found no checkpoint to load")

    def export(self, folder: Path) -> None:
        import deepspeed

        if self.zero_stage == 3:
            # ZeRO-3 holds a shard of every parameter per rank: gather what the export writes (the model says
            # which: trainable weights, added embedding rows), not the frozen generator.
            with deepspeed.zero.GatheredParameters(self.model.export_parameters(), modifier_rank=None):
                if self.is_main:
                    self.model.save_pretrained(folder)
        elif self.is_main:
            self.model.save_pretrained(folder)
        self.barrier()
