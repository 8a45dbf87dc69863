"""On a Trn1 with the Neuron SDK only (`pytest -m neuron`): the tensor-parallel builder with NxD's REAL layers on
two NeuronCores, against the dense model (tests/helpers/tp_check.py --nxd). Written for the first session with a
Trainium machine: it has NEVER RUN (the SDK cannot be installed where this project is developed)."""

import importlib.util
import subprocess
import sys

import pytest

from launch import ROOT, cpu_env, free_port

pytestmark = [pytest.mark.neuron,
              pytest.mark.skipif(importlib.util.find_spec("neuronx_distributed") is None,
                                 reason="needs the Neuron SDK and NeuronCores (a Trn1 instance)")]


def test_tp2_split_model_matches_dense_with_nxd_layers(tiny_generator, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"127.0.0.1:{free_port()}", str(ROOT / "tests" / "helpers" / "tp_check.py"),
           tiny_generator, str(tmp_path), "--nxd"]
    run = subprocess.run(cmd, env=cpu_env(NEURON_RT_NUM_CORES="2"), cwd=ROOT, capture_output=True, text=True,
                         timeout=3600)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert (tmp_path / "ok-0").exists() and (tmp_path / "ok-1").exists()
