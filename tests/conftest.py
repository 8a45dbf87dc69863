"""Shared fixtures: small models built from configs (random init), written once per test session."""

import os
import sys
from pathlib import Path

import pytest

# The harnesses (process launch, the NxD stand-in, the TP check, local Slurm) live in tests/helpers/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory):
    from scaledown.models.tiny import make_tiny_generator

    return str(make_tiny_generator(tmp_path_factory.mktemp("tiny") / "generator"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    from scaledown.models.tiny import make_tiny_encoder

    return str(make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder"))


@pytest.fixture()
def model_config(tiny_generator):
    from scaledown.config import ModelConfig

    def make(**kw):
        fields = dict(generator=tiny_generator, compressor_layers=2, dtype="float32", max_doc_tokens=32,
                      max_answer_tokens=16, projection_hidden=64)
        fields.update(kw)
        return ModelConfig(**fields)

    return make
