"""The backend table: engine name -> "module:Class", imported only when that backend is asked for.

Each backend builds itself from the run config (`Class.from_config(cfg)`); the loop sees only the `Engine`
interface of scaledown/engine/base.py. A new backend is one file and one line here.
"""

from __future__ import annotations

import importlib

BACKENDS = {
    "deepspeed": "scaledown.engine.deepspeed:ZeroEngine",  # DeepSpeed ZeRO 0-3 (GPU clusters; CPU with gloo)
    "torch": "scaledown.engine.plain:TorchEngine",  # one process, plain PyTorch: the reference
    "neuron": "scaledown.engine.neuron:NeuronEngine",  # neuronx-distributed on Trainium (tensor + data parallel)
}


def engine_class(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown engine backend {name!r}: expected one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_engine(cfg):
    """The engine named by `cfg.engine.backend`, built from the run config."""
    return engine_class(cfg.engine.backend).from_config(cfg)
