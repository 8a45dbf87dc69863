"""The tensor-parallel model builder (scaledown/engine/tensor_parallel.py) checked against the dense model.

NxD's parallel layers are replaced by a TEST STAND-IN with their shapes and semantics (tests/nxd_standin.py):
this checks how we split the model, not neuronx-distributed, which cannot be installed here."""

import subprocess
import sys

import pytest
import torch

from launch import ROOT, cpu_env, free_port
from nxd_standin import install
from tp_check import check


@pytest.fixture()
def standin(monkeypatch):
    modules = {}
    install(modules)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_tp1_split_model_matches_dense(standin, tiny_generator, tmp_path):
    check(tiny_generator, tmp_path)
    assert (tmp_path / "ok-0").exists()


def test_heads_that_do_not_split_are_refused(standin, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from scaledown.engine import tensor_parallel

    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2))
    monkeypatch.setattr(sys.modules["neuronx_distributed.parallel_layers.parallel_state"],
                        "get_tensor_model_parallel_size", lambda: 4)
    with pytest.raises(ValueError, match="must divide both the 4 attention heads and the 2 key/value heads"):
        tensor_parallel.parallelize(lm)
    assert isinstance(lm.model.layers[0].self_attn.q_proj, torch.nn.Linear)  # refused before any change


@pytest.mark.slow
def test_tp2_split_model_matches_dense_in_two_processes(tiny_generator, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}",
           str(ROOT / "tests" / "tp_check.py"), tiny_generator, str(tmp_path)]
    run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert (tmp_path / "ok-0").exists() and (tmp_path / "ok-1").exists()
