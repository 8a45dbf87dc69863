"""NeuronEngine's call sequence against a RECORDING STAND-IN for neuronx-distributed and torch-xla.

This checks our logic only (order of calls, data-parallel rank for sampling, step barrier, refusals); the real SDK
cannot be installed here, and the backend has never run on Trainium."""

import sys
import types

import pytest
import torch
from torch import nn

from scaledown.config import ConfigError
from scaledown.engine.base import ParamGroup
from scaledown.engine.neuron import NeuronEngine


@pytest.fixture()
def sdk(monkeypatch):
    calls = []

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    xm = module("torch_xla.core.xla_model", xla_device=lambda: torch.device("cpu"),
                mark_step=lambda: calls.append("mark_step"), rendezvous=lambda tag: calls.append(f"rendezvous {tag}"))
    module("torch_xla", core=module("torch_xla.core", xla_model=xm))
    module("torch_xla.distributed", xla_backend=module("torch_xla.distributed.xla_backend"))

    def nxd_config(**kwargs):
        calls.append(("neuronx_distributed_config", kwargs))
        return dict(kwargs)

    def init_model(config, model_fn):
        calls.append("initialize_parallel_model")
        return ("wrapped", model_fn())

    def init_optimizer(config, cls, groups, **defaults):
        calls.append(("initialize_parallel_optimizer", cls.__name__, [g["lr"] for g in groups]))
        return cls(groups)

    trainer = module("neuronx_distributed.trainer", neuronx_distributed_config=nxd_config,
                     initialize_parallel_model=init_model, initialize_parallel_optimizer=init_optimizer,
                     save_checkpoint=lambda path, tag, **kw: calls.append(("save_checkpoint", tag, sorted(kw))),
                     load_checkpoint=lambda path, tag, **kw: calls.append(("load_checkpoint", tag, sorted(kw))))
    state = module("neuronx_distributed.parallel_layers.parallel_state", get_data_parallel_rank=lambda: 3,
                   get_data_parallel_size=lambda: 4)
    module("neuronx_distributed", trainer=trainer,
           parallel_layers=module("neuronx_distributed.parallel_layers", parallel_state=state))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: calls.append(f"init {backend}"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    return calls


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 1)


def groups(model):
    return [ParamGroup("compressor", list(model.a.parameters()), 5e-5, 0.1),
            ParamGroup("generator", list(model.b.parameters()), 1e-4, 0.1)]


def test_call_sequence_with_a_recording_stand_in(sdk, tiny_generator, tmp_path):
    engine = NeuronEngine(8, 1, config={"tensor_parallel_size": 1}, generator=tiny_generator)
    engine.setup()
    model = engine.prepare(Tiny, groups, lambda step: 1.0, 1.0)
    assert model[0] == "wrapped" and isinstance(engine.model, Tiny)
    # Data sharding follows the data-parallel rank, not the global rank.
    assert (engine.dp_rank, engine.dp_size, engine.batch.accumulation) == (3, 4, 2)
    for _ in range(2):
        engine.backward(engine.model.b(engine.model.a(torch.ones(1, 2))).sum())
        updated = engine.step()
    engine.mark_step()
    assert updated and engine.lrs() == [5e-5, 1e-4]
    engine.save_checkpoint(tmp_path)
    engine.load_checkpoint(tmp_path)
    names = [c if isinstance(c, str) else c[0] for c in sdk]
    assert names == ["init xla", "neuronx_distributed_config", "initialize_parallel_model",
                     "initialize_parallel_optimizer", "mark_step", "save_checkpoint", "load_checkpoint"]
    assert sdk[1][1]["optimizer_config"] == {"max_grad_norm": 1.0, "grad_clipping": True, "zero_one_enabled": False}
    assert sdk[3][2] == [5e-5, 1e-4]
    assert sdk[5][1] == "nxd" and sdk[5][2] == ["model", "optimizer", "scheduler"]


def test_refusals_happen_before_the_model_is_built(sdk, tiny_generator, monkeypatch):
    built = []
    monkeypatch.setattr(NeuronEngine, "world_size", property(lambda self: 2))
    for cfg, needle in [({"optimizer_config": {"zero_one_enabled": True}}, "ZeRO-1"),
                        ({"tensor_parallel_size": 2}, "disagrees with engine.tensor_parallel_size=1"),
                        ({"tensor_parallel_size": 4}, "does not divide the world size 2")]:
        engine = NeuronEngine(8, 1, config=cfg, generator=tiny_generator)
        engine.setup()
        with pytest.raises(ConfigError, match=needle):
            engine.prepare(lambda: built.append(1), groups, lambda step: 1.0, 1.0)
    assert built == []
