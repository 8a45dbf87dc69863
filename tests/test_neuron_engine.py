"""NeuronEngine's call sequence against a RECORDING STAND-IN for neuronx-distributed and torch-xla.

This checks our logic only (order of calls, data-parallel rank for sampling, step barrier, refusals); the real SDK
cannot be installed here, and the backend has never run on Trainium."""

import sys
import types

import pytest
import torch
from torch import nn

import nxd_standin
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

    closures = []

    def mark_step():  # torch-xla runs the step closures once the step's graph has executed
        calls.append("mark_step")
        while closures:
            fn, args = closures.pop(0)
            fn(*args)

    xm = module("torch_xla.core.xla_model", xla_device=lambda: torch.device("cpu"), mark_step=mark_step,
                add_step_closure=lambda fn, args=(): closures.append((fn, args)),
                rendezvous=lambda tag: calls.append(f"rendezvous {tag}"))
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
    # The parallel layers and tensor-parallel state come from the layer stand-in; data-parallel rank 3 of 4.
    layers = {}
    nxd_standin.install(layers)
    for name, mod in layers.items():
        monkeypatch.setitem(sys.modules, name, mod)
    state = layers["neuronx_distributed.parallel_layers.parallel_state"]
    state.get_data_parallel_rank, state.get_data_parallel_size = (lambda: 3), (lambda: 4)
    layers["neuronx_distributed"].trainer = trainer
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


def test_logging_waits_for_the_step_barrier(sdk, tiny_generator):
    engine = NeuronEngine(8, 1, config={"tensor_parallel_size": 1}, generator=tiny_generator)
    engine.setup()
    seen = []
    engine.after_step(seen.append, "logged")
    assert seen == []  # a step closure: nothing read from the device before the graph runs
    engine.mark_step()
    assert seen == ["logged"]


def test_tensor_parallel_build_splits_generator_and_compressor(sdk, tiny_generator, model_config, monkeypatch):
    from scaledown.models.model import ScaleDownModel

    monkeypatch.setattr(NeuronEngine, "world_size", property(lambda self: 8))
    monkeypatch.setattr(nxd_standin, "tp_size", lambda: 2)  # this process plays tensor-parallel rank 0 of 2
    # Local rank 3 of 4, two processes of a node build at a time: this one builds in the second turn.
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    engine = NeuronEngine(8, 1, config={"tensor_parallel_size": 2}, tensor_parallel_size=2,
                          generator=tiny_generator, build_concurrency=2)
    engine.setup()

    def build():
        sdk.append("build")
        return ScaleDownModel.build(model_config(lora_target_modules="q_proj,o_proj"))

    engine.prepare(build, lambda m: [ParamGroup("all", [p for p in m.parameters() if p.requires_grad], 1e-4, 0.0)],
                   lambda step: 1.0, 1.0)
    assert [c for c in sdk if c == "build" or str(c).startswith("rendezvous")] == [
        "rendezvous scaledown build 0", "build", "rendezvous scaledown build 1"]
    gen_attn = engine.model.generator.get_base_model().model.layers[0].self_attn
    comp_attn = engine.model.compressor.backbone.layers[0].self_attn
    assert type(gen_attn.q_proj.base_layer).__name__ == "ColumnParallelLinear"  # LoRA wraps the split layer
    assert type(gen_attn.q_proj.lora_B["default"]).__name__ == "ColumnParallelLinear"
    assert type(gen_attn.o_proj.lora_A["default"]).__name__ == "RowParallelLinear"
    assert type(gen_attn.k_proj).__name__ == "ColumnParallelLinear"  # no LoRA here: split all the same
    assert comp_attn.q_proj.weight.shape == (32, 64) and comp_attn.o_proj.weight.shape == (64, 32)
    assert engine.model.compressor.backbone.embed_tokens.weight.requires_grad
