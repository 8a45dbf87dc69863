"""Trainium backend logic that runs without the Neuron SDK: config reading, parallel sizes, refusals.
The backend itself has not run on Trainium (see the README's table)."""

import pytest

from launch import ROOT
from scaledown.config import ConfigError
from scaledown.engine.neuron import NeuronEngine, resolve_nxd_config


@pytest.mark.parametrize("name", ["tp1_lora.yaml", "tp8_lora.yaml"])
def test_shipped_configs_resolve_for_mistral_7b_on_two_trn1_nodes(name):
    cfg = resolve_nxd_config(ROOT / "neuron_configs" / name, world_size=64, max_grad_norm=1.0, num_heads=32,
                             num_kv_heads=8)
    assert cfg["optimizer_config"] == {"zero_one_enabled": False, "grad_clipping": True, "max_grad_norm": 1.0}
    assert 64 // cfg["tensor_parallel_size"] in (64, 8)


@pytest.mark.parametrize("cfg, world, heads, kv, needle", [
    ({"tensor_parallel_size": 3}, 32, 32, 8, "does not divide the world size 32"),
    ({"tensor_parallel_size": 16}, 32, 24, 8, "does not divide the 24 attention heads"),
    ({"tensor_parallel_size": 8}, 32, 32, 12, "12 key/value heads"),
    ({"pipeline_parallel_size": 2}, 32, 32, 8, "pipeline_parallel_size=2"),
    ({"optimizer_config": {"zero_one_enabled": True}}, 32, 32, 8, "does not support LoRA together with ZeRO-1"),
    ({"optimizer_config": {"max_grad_norm": 0.5}}, 32, 32, 8, "max_grad_norm=0.5 disagrees"),
    ({"tensor_parallel_size": 8, "bogus": 1}, 32, 32, 8, "unknown key"),
])
def test_bad_parallel_settings_are_refused(cfg, world, heads, kv, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        resolve_nxd_config(cfg, world, 1.0, heads, kv)


def test_kv_head_replication_and_sequence_parallelism_are_refused():
    with pytest.raises(ConfigError, match="does not divide the 8 key/value heads"):
        resolve_nxd_config({"tensor_parallel_size": 16}, 32, 1.0, 32, 8)
    with pytest.raises(ConfigError, match="sequence_parallel=true"):
        resolve_nxd_config({"tensor_parallel_size": 8, "sequence_parallel": True}, 32, 1.0, 32, 8)


def test_engine_without_the_sdk_says_what_to_install():
    engine = NeuronEngine(128, 4, config={"tensor_parallel_size": 1})
    with pytest.raises(RuntimeError, match="needs the Neuron SDK"):
        engine.setup()


def test_trn1_recipe_resolves_on_four_nodes():
    from scaledown.config import load_config
    from scaledown.engine.base import BatchPlan

    cfg = load_config(ROOT / "configs" / "trn1_mistral7b_tp8.yaml")
    assert (cfg.engine.backend, cfg.engine.autocast, cfg.model.dtype) == ("neuron", "bfloat16", "float32")
    world = 4 * 32
    nxd = resolve_nxd_config(ROOT / cfg.engine.neuron_config, world, cfg.optim.max_grad_norm, 32, 8)
    assert nxd["tensor_parallel_size"] == cfg.engine.tensor_parallel_size == 8
    plan = BatchPlan(cfg.train.global_batch_size, cfg.train.micro_batch_size, world // 8)
    assert (plan.dp_size, plan.accumulation) == (16, 8)


@pytest.mark.parametrize("overrides, needle", [
    (["--engine.autocast=bfloat16"], "DeepSpeed takes its precision"),
    (["--engine.backend=torch", "--engine.tensor_parallel_size=2"], "neuron backend only"),
    (["--engine.backend=torch", "--engine.autocast=fp8"], "expected auto, bfloat16"),
])
def test_engine_settings_refused(overrides, needle):
    from scaledown.config import load_config

    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)
