"""neuronx-distributed (NxD) on AWS Trainium behind the Engine interface. NOT YET RUN ON TRAINIUM.

The Neuron SDK (torch-neuronx, torch-xla, neuronx-distributed; last training stack: SDK 2.28/2.29 with torch 2.9)
is imported lazily, inside the methods that need it. Tensor parallelism splits the generator and the n-layers
compressor with NxD's parallel layers (`scaledown/engine/tensor_parallel.py`); data parallelism spans the rest of
the NeuronCores. Mixed precision is `torch.autocast("xla", bfloat16)` over fp32 weights (engine.autocast), with
`--auto-cast=none` in NEURON_CC_FLAGS so the compiler does not cast again. Logging and checkpointing run as XLA
step closures (`after_step`), once the step's graph has executed.
What runs here, on CPU: reading `neuron_configs/*.yaml` (one key per argument of `neuronx_distributed_config`),
the parallel-size arithmetic and the refusals, the model builder against a stand-in for NxD's layers, the call
sequence against a recording stand-in for the SDK, and the whole loop at TP 2 against a stand-in SDK.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import yaml

from scaledown.config import ConfigError
from scaledown.distributed import discover
from scaledown.engine.base import BatchPlan, Engine

# The arguments of neuronx_distributed.trainer.neuronx_distributed_config that a config file may set.
NXD_KEYS = {"tensor_parallel_size", "pipeline_parallel_size", "sequence_parallel", "pad_model", "optimizer_config",
            "mixed_precision_config", "activation_checkpoint_config", "model_init_config"}
OPTIMIZER_KEYS = {"zero_one_enabled", "grad_clipping", "max_grad_norm"}


def resolve_nxd_config(source: str | Path | dict, world_size: int, max_grad_norm: float, num_heads: int,
                       num_kv_heads: int, lora: bool = True) -> dict:
    """Keyword arguments for `neuronx_distributed_config`, checked against the run; ConfigError names every number."""
    where = "<neuron config>" if isinstance(source, dict) else str(source)
    cfg = dict(source) if isinstance(source, dict) else (yaml.safe_load(Path(source).read_text()) or {})
    unknown = set(cfg) - NXD_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected arguments of "
                          f"neuronx_distributed_config: {sorted(NXD_KEYS)}")
    tp = int(cfg.get("tensor_parallel_size", 1))
    pp = int(cfg.get("pipeline_parallel_size", 1))
    if pp != 1:
        raise ConfigError(f"{where}: pipeline_parallel_size={pp}: ScaleDown uses tensor and data parallelism only")
    if tp < 1 or world_size % tp:
        raise ConfigError(f"{where}: tensor_parallel_size={tp} does not divide the world size {world_size} "
                          f"(data-parallel size = world / tensor-parallel must be whole)")
    if num_heads % tp:
        raise ConfigError(f"{where}: tensor_parallel_size={tp} does not divide the {num_heads} attention heads")
    if num_kv_heads % tp:
        raise ConfigError(f"{where}: tensor_parallel_size={tp} does not divide the {num_kv_heads} key/value heads "
                          f"(replicating key/value heads over tensor-parallel ranks is not supported)")
    if cfg.get("sequence_parallel"):
        raise ConfigError(f"{where}: sequence_parallel=true: the tensor-parallel model builder does not implement "
                          f"sequence parallelism; set sequence_parallel: false")
    optimizer = dict(cfg.get("optimizer_config") or {})
    unknown = set(optimizer) - OPTIMIZER_KEYS
    if unknown:
        raise ConfigError(f"{where}: optimizer_config: unknown key(s) {sorted(unknown)}")
    if optimizer.get("zero_one_enabled") and lora:
        raise ConfigError(f"{where}: optimizer_config.zero_one_enabled=true with LoRA: neuronx-distributed does not "
                          f"support LoRA together with ZeRO-1; set zero_one_enabled: false")
    if optimizer.setdefault("max_grad_norm", max_grad_norm) != max_grad_norm:
        raise ConfigError(f"{where}: optimizer_config.max_grad_norm={optimizer['max_grad_norm']} disagrees with "
                          f"optim.max_grad_norm={max_grad_norm}")
    optimizer.setdefault("grad_clipping", max_grad_norm > 0)
    optimizer.setdefault("zero_one_enabled", False)
    cfg["optimizer_config"] = optimizer
    cfg["tensor_parallel_size"], cfg["pipeline_parallel_size"] = tp, pp
    return cfg


def _require_sdk():
    try:
        import neuronx_distributed  # noqa: F401
        import torch_xla.core.xla_model as xm
    except ImportError as err:
        raise RuntimeError("engine.backend=neuron needs the Neuron SDK (torch-neuronx, torch-xla, "
                           "neuronx-distributed) from the AWS Neuron repository; it is not on PyPI") from err
    return xm


class NeuronEngine(Engine):
    name = "neuron"
    eager = False  # XLA traces lazily: work runs at mark_step

    def __init__(self, global_batch_size: int, micro_batch_size: int, config: str | Path | dict = "",
                 tensor_parallel_size: int = 1, dtype: str = "float32", generator: str = "", autocast: str = "",
                 build_concurrency: int = 8):
        super().__init__(global_batch_size, micro_batch_size, autocast)
        self.build_concurrency = build_concurrency
        self.config_source, self.dtype, self.generator = config, dtype, generator
        self.tensor_parallel_size = tensor_parallel_size

    @classmethod
    def from_config(cls, cfg) -> NeuronEngine:
        e = cfg.engine
        return cls(cfg.train.global_batch_size, cfg.train.micro_batch_size, config=e.neuron_config,
                   tensor_parallel_size=e.tensor_parallel_size, dtype=cfg.model.dtype, generator=cfg.model.generator,
                   autocast=e.autocast, build_concurrency=e.build_concurrency)

    def setup(self) -> None:
        self.xm = _require_sdk()
        import torch_xla.distributed.xla_backend  # noqa: F401  registers the "xla" process-group backend

        discover()  # srun (LAUNCHER=srun) or mpirun without torchrun
        torch.distributed.init_process_group("xla")

    @property
    def dp_rank(self) -> int:
        from neuronx_distributed.parallel_layers import parallel_state

        return parallel_state.get_data_parallel_rank()

    @property
    def dp_size(self) -> int:
        from neuronx_distributed.parallel_layers import parallel_state

        return parallel_state.get_data_parallel_size()

    @property
    def device(self) -> torch.device:
        return self.xm.xla_device()

    def prepare(self, model_fn, param_groups_fn, lr_lambda, max_grad_norm):
        from neuronx_distributed.trainer import (initialize_parallel_model, initialize_parallel_optimizer,
                                                 neuronx_distributed_config)
        from transformers import AutoConfig

        from scaledown.engine.tensor_parallel import parallelize

        model = None

        def build():  # NxD calls this itself, after setting up its tensor- and data-parallel groups
            nonlocal model
            if self.tensor_parallel_size == 1:
                model = model_fn()
                return model
            # Until it is split, a process holds the dense model on the host (fp32 Mistral-7B: 29 GB; a
            # trn1.32xlarge has 512 GiB for its 32 processes): `build_concurrency` processes of a node at a time.
            turns = math.ceil(int(os.environ.get("LOCAL_WORLD_SIZE", 1)) / self.build_concurrency)
            for turn in range(turns):
                if self.local_rank // self.build_concurrency == turn:
                    model = parallelize(model_fn())
                self.xm.rendezvous(f"scaledown build {turn}")
            return model

        # Parallel sizes are checked before any weights load: head counts come from the generator's config.
        gcfg = AutoConfig.from_pretrained(self.generator)
        kv = getattr(gcfg, "num_key_value_heads", None) or gcfg.num_attention_heads
        kwargs = resolve_nxd_config(self.config_source, self.world_size, max_grad_norm, gcfg.num_attention_heads, kv)
        if kwargs["tensor_parallel_size"] != self.tensor_parallel_size:
            raise ConfigError(f"{self.config_source}: tensor_parallel_size={kwargs['tensor_parallel_size']} "
                              f"disagrees with engine.tensor_parallel_size={self.tensor_parallel_size}")
        nxd_config = neuronx_distributed_config(**kwargs)
        self.batch = BatchPlan(self.global_batch_size, self.micro_batch_size, self.dp_size)
        self.nxd_model = initialize_parallel_model(nxd_config, build)
        self.model = model
        groups = param_groups_fn(model)
        self.optimizer = initialize_parallel_optimizer(
            nxd_config, torch.optim.AdamW,
            [g.as_dict() for g in groups])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        return self.nxd_model

    def backward(self, loss):
        (loss / self.batch.accumulation).backward()

    def step(self) -> bool:
        if not self._window_done():
            return False
        self.optimizer.step()  # NxDOptimizer: gradient all-reduce over data-parallel ranks and clipping
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def mark_step(self) -> None:
        self.xm.mark_step()

    def after_step(self, fn, *args) -> None:
        # Runs after the next mark_step has executed the step's graph: reading tensors then costs no extra graph.
        self.xm.add_step_closure(fn, args)

    def grad_norm(self):
        norm = getattr(self.optimizer, "grad_norm", None)
        return None if norm is None else float(norm)

    def lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def save_checkpoint(self, folder: Path) -> None:
        from neuronx_distributed.trainer import save_checkpoint

        save_checkpoint(str(folder), tag="nxd", model=self.nxd_model, optimizer=self.optimizer,
                        scheduler=self.scheduler)

    def load_checkpoint(self, folder: Path) -> None:
        from neuronx_distributed.trainer import load_checkpoint

        load_checkpoint(str(folder), tag="nxd", model=self.nxd_model, optimizer=self.optimizer,
                        scheduler=self.scheduler)

    def export(self, folder: Path) -> None:
        from scaledown.engine.tensor_parallel import unsharded

        self.xm.mark_step()
        if self.tensor_parallel_size == 1:  # every rank holds the whole model
            if self.is_main:
                self.model.save_pretrained(folder)
        else:
            with unsharded(self.model):  # collectives: every rank gathers
                self.xm.mark_step()
                if self.is_main:
                    self.model.save_pretrained(folder)
        self.xm.rendezvous("scaledown export")
