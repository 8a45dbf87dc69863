"""QLoRA's frozen generator (model.quantization=nf4 / int8, bitsandbytes): it loads quantized, trains its LoRA and
the encoder compressor, exports and reloads quantized; what cannot hold it is refused by name. bitsandbytes runs
on CPUs from 0.48, so this runs here as on a GPU."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("bitsandbytes", reason="model.quantization needs bitsandbytes (pip install -e '.[quant]')")

from launch import make_run_inputs  # noqa: E402
from scaledown.config import ConfigError, load_config  # noqa: E402
from scaledown.models.model import ScaleDownModel  # noqa: E402


def quantized_layers(model) -> set[str]:
    import bitsandbytes as bnb

    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return {type(m).__name__ for m in model.generator.modules() if isinstance(m, kinds)}


def run_settings(tiny_encoder, quantization: str, out: Path) -> list[str]:
    return [f"--model.quantization={quantization}", "--model.compressor=encoder", f"--model.encoder={tiny_encoder}",
            "--model.projection_hidden=64", "--model.dtype=float32", "--engine.backend=torch",
            "--train.global_batch_size=4", "--train.micro_batch_size=4", "--train.max_steps=24",
            "--train.log_every=1", "--train.save_every=0", "--optim.lr_generator=1e-2", f"--train.output_dir={out}"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_generator, tiny_encoder):
    from scaledown.train import train

    tmp = tmp_path_factory.mktemp("nf4")
    # bitsandbytes' CPU kernels quantize blocks of 64 inputs: a generator 64 wide (the run inputs' is 32).
    inputs = make_run_inputs(tmp, n_train=32) + [f"--model.generator={tiny_generator}"]
    result = train(load_config("configs/tiny.yaml", inputs + run_settings(tiny_encoder, "nf4", tmp / "run")))
    return tmp, inputs, result


def test_an_nf4_generator_trains_its_lora_and_the_encoder_compressor(run):
    tmp, _, result = run
    curve = [h["train/loss"] for h in result["history"]]
    assert sum(curve[-6:]) / 6 < 0.75 * sum(curve[:3]) / 3, curve  # full precision, same settings: ~0.5
    assert "eval/accuracy" in result["eval"]  # the held-out evaluation ran on the quantized model
    # The export reloads with the generator quantized again, and answers.
    model = ScaleDownModel.from_pretrained(tmp / "run" / "export").eval()
    assert model.config.quantization == "nf4" and quantized_layers(model) == {"Linear4bit"}
    assert any(".lora_A." in n for n, _ in model.generator.named_parameters())
    answers = model.generate(["Who wrote the letter?"], [["The letter was written by Ada.", "Rain fell."]],
                             max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_quantized_weights_take_a_fraction_of_the_bytes(run, model_config, tiny_encoder):
    def frozen_bytes(quantization):
        torch.manual_seed(0)
        model = ScaleDownModel.build(model_config(compressor="encoder", encoder=tiny_encoder,
                                                  quantization=quantization))
        layers = model.generator.get_base_model().model.layers
        return sum(p.numel() * p.element_size() for p in layers.parameters() if not p.requires_grad), model

    full, _ = frozen_bytes("none")
    nf4, model = frozen_bytes("nf4")
    int8, model8 = frozen_bytes("int8")
    assert quantized_layers(model) == {"Linear4bit"} and quantized_layers(model8) == {"Linear8bitLt"}
    assert nf4 < 0.2 * full and int8 < 0.3 * full  # fp32 -> 4 bits (+ norms) and 8 bits


def test_what_cannot_hold_a_quantized_generator_is_refused_by_name(run, tmp_path):
    from scaledown.train import train

    _, inputs, _ = run
    with pytest.raises(ConfigError, match="model.quantization=nf4: the n_layers compressor is a trainable copy"):
        train(load_config("configs/tiny.yaml", inputs + ["--model.quantization=nf4", "--engine.backend=torch",
                                                         f"--train.output_dir={tmp_path / 'a'}"]))
    with pytest.raises(ConfigError, match="model.quantization=nf4: ZeRO-3 .* cannot partition quantized weights"):
        load_config("configs/tiny.yaml", inputs + ["--model.quantization=nf4",
                                                   "--engine.deepspeed_config=ds_configs/zero3.json"])
    with pytest.raises(ConfigError, match="model.quantization=nf4: bitsandbytes does not run on Trainium"):
        load_config("configs/tiny.yaml", inputs + ["--model.quantization=nf4", "--engine.backend=neuron"])
    with pytest.raises(ConfigError, match="model.quantization='int4': expected one of none, nf4, int8"):
        load_config("configs/tiny.yaml", inputs + ["--model.quantization=int4"])


def test_the_estimate_counts_the_bytes_a_quantized_generator_takes(run, tiny_generator):
    """`scaledown estimate`'s frozen bytes for nf4 / int8 against the tensors bitsandbytes actually holds
    (packed weights, block scales, the unquantized embeddings, norms and head)."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from scaledown.estimate import count
    from scaledown.models.generator import load_causal_lm

    _, inputs, _ = run
    for quantization in ("nf4", "int8"):
        cfg = load_config("configs/tiny.yaml", inputs + [f"--model.quantization={quantization}",
                                                         "--model.dtype=float32"])
        lm = load_causal_lm(tiny_generator, "float32", quantization=quantization)
        held = 0
        for module in lm.modules():
            for name, p in module.named_parameters(recurse=False):
                held += p.numel() * p.element_size()
                state = getattr(p, "quant_state", None)
                if isinstance(module, bnb.nn.Linear4bit) and name == "weight" and state is not None:
                    held += state.absmax.numel() * state.absmax.element_size()
                    if state.nested:
                        held += state.state2.absmax.numel() * state.state2.absmax.element_size()
        assert count(cfg).frozen_bytes == pytest.approx(held, rel=0.03), quantization
        full = AutoModelForCausalLM.from_pretrained(tiny_generator).parameters()
        assert held < sum(p.numel() * p.element_size() for p in full)
