"""The FLOPs claim of the paper, counted on a Mistral-7B-shaped model on the meta device (deterministic).

Paper (10 documents of 128 tokens, 16x compression): 20.33 -> 8.36 TFLOPs with 8 compressor layers (2.43x),
6.53 with 5 layers (3.11x)."""

import sys

import pytest

from launch import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import inference  # noqa: E402


@pytest.mark.parametrize("answer_tokens", [1, 3, 4, 9])
def test_decoding_flops_from_three_counts_equal_counting_every_step(answer_tokens):
    args = inference.answering(inference.parser().parse_args([]), answer_tokens)
    config = inference.ARCHS["tiny"]()
    generator, compressor = inference.build(config, 2, "meta", inference.torch.bfloat16)
    for system in (lambda a: inference.uncompressed(generator, config, 1, 3, a),
                   lambda a: inference.compressed(generator, compressor, config, 1, 3, a)):
        assert inference.count_query_flops(system, args) == inference.count_flops(lambda: system(args))


@pytest.mark.slow
def test_mistral_7b_flops_ratio_matches_the_paper():
    args = inference.parser().parse_args([])
    full, (comp8, comp5) = inference.flops_per_query("mistral-7b", 10, [8, 5], args)
    assert full / 1e12 == pytest.approx(20.33, rel=0.05)
    assert full / comp8 == pytest.approx(20.33 / 8.36, rel=0.15)
    assert full / comp5 == pytest.approx(20.33 / 6.53, rel=0.15)
    assert full / comp5 > full / comp8 > 2.0
