"""On a CUDA GPU (pytest -m gpu; benchmarks/gpu.sh runs these): the training loop with the torch engine in mixed
precision (frozen weights bf16, trained ones fp32, bf16 autocast) and the export reloaded on the GPU."""

import math

import pytest
import torch

from launch import make_run_inputs
from scaledown.config import load_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_mixed_precision_training_on_the_gpu(tmp_path):
    from scaledown.models.model import ScaleDownModel
    from scaledown.train import train

    args = make_run_inputs(tmp_path, n_train=32) + [
        "--engine.backend=torch", "--model.compressor_layers=1", "--model.dtype=bfloat16",
        "--model.trainable_dtype=float32", "--engine.autocast=bfloat16", "--model.rerank=false",
        "--train.global_batch_size=4", "--train.micro_batch_size=4", "--train.max_steps=4", "--train.log_every=1",
        f"--train.output_dir={tmp_path / 'run'}"]
    result = train(load_config(None, args))
    losses = [h["train/loss"] for h in result["history"]]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    model = ScaleDownModel.from_pretrained(result["export"]).to("cuda")
    assert model.answer("Who wrote it?", ["a document"], max_new_tokens=2) is not None
