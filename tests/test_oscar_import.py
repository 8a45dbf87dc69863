"""NAVER's released OSCAR layout imported, and the reference input format, against the outputs of NAVER's own code
on the same tiny random checkpoint (tests/fixtures/oscar_reference: its README says how it was made)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from scaledown.data.schema import Record
from scaledown.models.model import ScaleDownModel
from scaledown.models.oscar_import import ReleaseError, import_oscar

FIXTURE = Path(__file__).parent / "fixtures" / "oscar_reference"
IO = json.loads((FIXTURE / "io.json").read_text())


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("oscar") / "export"
    import_oscar(FIXTURE / "released", out, dtype="float32")  # config.json's "../base" resolves against released/
    return out


@pytest.fixture(scope="module")
def model(export):
    return ScaleDownModel.from_pretrained(export).eval()


def records(with_answers=True):
    return [Record(query=x["query"], documents=x["documents"], answer=x["answer"] if with_answers else None)
            for x in IO["inputs"]]


def test_import_writes_an_export_with_the_reference_tokens_and_format(export, model):
    meta = json.loads((export / "scaledown_config.json").read_text())["model"]
    assert (meta["input_format"], meta["compressor_layers"], meta["num_memory_tokens"], meta["doc_separator"]) == \
        ("reference", 2, 8, "<SEP>")
    ids = IO["tokenizers"]["decoder_special_ids"]
    assert {t: model.tokenizer.convert_tokens_to_ids(t) for t in ids} == ids
    assert len(model.tokenizer) == IO["tokenizers"]["decoder_vocab_size"]
    assert model.tokenizer.pad_token_id == IO["tokenizers"]["decoder_pad_token_id"]


def test_reference_rows_equal_the_reference_and_so_do_memory_loss_and_greedy_tokens(model):
    batch = model.collator(num_documents=3)(records())
    b, k, width = IO["compressor"]["shape"]
    assert batch["comp_input_ids"].view(b, k, width).tolist() == IO["compressor"]["input_ids"]
    assert batch["comp_attention_mask"].view(b, k, width).tolist() == \
        [[[int(v) for v in row] for row in rows] for rows in IO["compressor"]["attention_mask"]]
    with torch.no_grad():
        memory, _ = model.compress(batch["comp_input_ids"], batch["comp_attention_mask"], b)
        expected = torch.tensor(IO["memory_embeddings"]["values"])
        assert (memory - expected).abs().max() <= 1e-4
        # The training loss on the reference's own decoder rows and labels (bergen's collate_fn).
        t = IO["train"]
        out = model(gen_input_ids=torch.tensor(t["dec_input_ids"]),
                    gen_attention_mask=torch.tensor(t["dec_attention_mask"]), labels=torch.tensor(t["labels"]),
                    comp_input_ids=batch["comp_input_ids"], comp_attention_mask=batch["comp_attention_mask"],
                    doc_mask=batch["doc_mask"])
        assert out["loss"].item() == pytest.approx(t["loss"], abs=1e-5)
    # Evaluation prompts: bergen's (the default user template) and the hub's (no space after "Question:").
    for key, template in (("generation_bergen_eval", None), ("generation_hub_prompt", "Background:\n{docs}\n\n"
                                                                                       "Question:{question}")):
        if template:
            model.config.user_template = template
        try:
            prompt = model.collator(num_documents=3, with_answers=False)(records(with_answers=False))
            assert prompt["gen_input_ids"].tolist() == IO[key]["dec_input_ids"], key
            assert prompt["gen_attention_mask"].tolist() == IO[key]["dec_attention_mask"], key
            answers = model.generate([r.query for r in records()], [r.documents for r in records()],
                                     max_new_tokens=12)
        finally:
            model.config.user_template = "Background:\n{docs}\n\nQuestion: {question}"
        expected = [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in IO[key]["new_tokens"]]
        assert answers == expected, key


def test_one_training_step_from_the_import(export, tmp_path):
    from launch import make_run_inputs
    from scaledown.config import load_config
    from scaledown.train import train

    inputs = [a for a in make_run_inputs(tmp_path, n_train=8) if not a.startswith(("--model.generator",
                                                                                    "--model.max_doc_tokens"))]
    result = train(load_config(None, inputs + [
        f"--train.init_from={export}", f"--model.generator={FIXTURE / 'base'}", "--engine.backend=torch",
        "--model.dtype=float32", "--model.input_format=reference", "--model.compressor_layers=2",
        "--model.lora_alpha=32", "--model.doc_separator=<SEP>", "--model.lora_dropout=0.1",
        "--train.max_steps=1", "--train.global_batch_size=2", "--train.micro_batch_size=2", "--data.eval_path=",
        f"--train.output_dir={tmp_path / 'run'}"]))
    assert result["steps"] == 1 and result["history"][0]["train/loss"] > 0
    with pytest.raises(Exception, match="input_format"):  # the export's format is part of its architecture
        train(load_config(None, inputs + [f"--train.init_from={export}", f"--model.generator={FIXTURE / 'base'}",
                                          "--engine.backend=torch", "--model.compressor_layers=2",
                                          "--model.lora_alpha=32", "--train.max_steps=1",
                                          "--train.global_batch_size=2", "--train.micro_batch_size=2",
                                          f"--train.output_dir={tmp_path / 'bad'}"]))


def test_unsupported_release_options_are_refused_by_name(tmp_path):
    for field, value, needle in (("compr_rms_norm", True, "compr_rms_norm=True"),
                                 ("compr_model_name", "bert", "compr_model_name='bert'"),
                                 ("lora_compressor", True, "lora_compressor=True"),
                                 ("kbtc_training", True, "kbtc_training=True")):
        src = tmp_path / field
        shutil.copytree(FIXTURE / "released", src)
        cfg = json.loads((src / "config.json").read_text())
        cfg[field] = value
        (src / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ReleaseError, match=needle):
            import_oscar(src, tmp_path / "out", generator=str(FIXTURE / "base"))
