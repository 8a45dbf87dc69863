"""The FLOPs claim of the paper, counted on a Mistral-7B-shaped model on the meta device (deterministic).

Paper (10 documents of 128 tokens, 16x compression): 20.33 -> 8.36 TFLOPs with 8 compressor layers (2.43x),
6.53 with 5 layers (3.11x)."""

import sys

import pytest

from launch import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import inference  # noqa: E402

pytestmark = pytest.mark.slow


def test_mistral_7b_flops_ratio_matches_the_paper():
    args = inference.parser().parse_args([])
    full, (comp8, comp5) = inference.flops_per_query("mistral-7b", 10, [8, 5], args)
    assert full / 1e12 == pytest.approx(20.33, rel=0.05)
    assert full / comp8 == pytest.approx(20.33 / 8.36, rel=0.15)
    assert full / comp5 == pytest.approx(20.33 / 6.53, rel=0.15)
    assert full / comp5 > full / comp8 > 2.0
