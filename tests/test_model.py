"""The OSCAR model on small configs: compressor, splicing, labels, gradients, overfitting, save/load."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scaledown.data.collate import IGNORE_INDEX
from scaledown.data.schema import Record
from scaledown.models.compressor import decoder_backbone
from scaledown.models.model import ScaleDownModel

RECORDS = [
    Record(query="What is the capital of Zorvia?", documents=["Zorvia's capital is Mellan.", "Bread is made"],
           answer="Mellan", reranking_scores=[3.0, -2.0]),
    Record(query="Who wrote Tide?", documents=["Tide was written by Oda Ren."], answer="Oda Ren",
           reranking_scores=[1.5]),
]


@pytest.fixture(params=["n_layers", "encoder"])
def model(request, model_config, tiny_encoder):
    torch.manual_seed(0)
    cfg = model_config(compressor=request.param, encoder=tiny_encoder, rerank=True, lora_dropout=0.0)
    return ScaleDownModel.build(cfg).eval()


def test_n_layers_compressor_equals_generator_hidden_state_after_layer_n(model_config):
    model = ScaleDownModel.build(model_config(compressor_layers=2)).eval()
    batch = model.collator(num_documents=2)(RECORDS)
    with torch.no_grad():
        memory, _ = model.compress(batch["comp_input_ids"], batch["comp_attention_mask"], 2)
        base = decoder_backbone(model.generator.get_base_model())
        collate = model.collator(num_documents=2)
        for b, rec in enumerate(RECORDS):
            for j in range(2):
                text = rec.documents[j] if j < len(rec.documents) else ""
                ids = torch.tensor([collate.compressor_row(rec.query, text)])
                hidden = base(input_ids=ids, output_hidden_states=True).hidden_states[2]  # after layer 2
                torch.testing.assert_close(memory[b, j], hidden[0, -8:], atol=1e-5, rtol=1e-4)
    # A separate copy: training the compressor must not change the generator.
    assert model.compressor.backbone.layers[0].mlp.up_proj.weight.data_ptr() != \
        base.layers[0].mlp.up_proj.base_layer.weight.data_ptr()
    assert len(model.compressor.backbone.layers) == 2


def test_every_compressed_embedding_lands_in_its_slot(model):
    batch = model.collator(num_documents=2)(RECORDS)
    memory, _ = model.compress(batch["comp_input_ids"], batch["comp_attention_mask"], 2)
    embeds, _ = model._generator_inputs(batch)
    placeholder = batch["gen_input_ids"] == model.placeholder_id
    for b in range(2):
        positions = placeholder[b].nonzero().flatten()
        assert len(positions) == 2 * 8
        torch.testing.assert_close(embeds[b, positions], memory[b].reshape(16, -1))
    # No placeholder embedding survives: none of the spliced rows equals the <MEM> embedding.
    mem_row = model.generator.get_input_embeddings().weight[model.placeholder_id]
    assert not (embeds == mem_row).all(-1).any()


def test_missing_documents_are_masked_slots_not_dropped(model):
    batch = model.collator(num_documents=2)(RECORDS)
    assert batch["doc_mask"].tolist() == [[True, True], [True, False]]
    placeholder = batch["gen_input_ids"] == model.placeholder_id
    visible = (placeholder & batch["gen_attention_mask"].bool()).sum(-1)
    assert visible.tolist() == [16, 8]


def test_loss_is_cross_entropy_over_answer_tokens_only(model):
    batch = model.collator(num_documents=2)(RECORDS)
    labels = batch["labels"]
    tok = model.tokenizer
    for b, rec in enumerate(RECORDS):
        answer = labels[b][labels[b] != IGNORE_INDEX].tolist()
        assert answer == tok(rec.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        # The answer is the end of the sequence, right after the prompt.
        assert batch["gen_input_ids"][b, -len(answer):].tolist() == answer
    with torch.no_grad():
        out = model(**batch)
        logits = model.logits(batch)
    pred, target = logits[:, :-1], labels[:, 1:]
    keep = target != IGNORE_INDEX
    by_hand = F.cross_entropy(pred[keep].float(), target[keep])
    torch.testing.assert_close(out["ce_loss"], by_hand)
    scores = model.compress(batch["comp_input_ids"], batch["comp_attention_mask"], 2)[1]
    mask = batch["doc_mask"]
    mse = ((scores - batch["reranking_scores"])[mask] ** 2).mean()
    torch.testing.assert_close(out["loss"], by_hand + 0.05 * mse)


def test_gradients_reach_trainable_parts_only(model):
    model.train()
    batch = model.collator(num_documents=2)(RECORDS)
    model(**batch)["loss"].backward()
    named = dict(model.named_parameters())
    lora = [n for n in named if "lora_" in n]
    assert lora and all(named[n].grad is not None and named[n].grad.abs().sum() > 0 for n in lora if "lora_B" in n)
    assert all(named[n].grad is not None for n in lora)
    assert model.rerank_head.weight.grad.abs().sum() > 0
    emb = model.compressor.backbone.get_input_embeddings().weight
    mem_ids = model.compressor_tokenizer.convert_tokens_to_ids([f"<MEM{i}>" for i in range(8)])
    assert (emb.grad[mem_ids].abs().sum(-1) > 0).all(), "memory-token rows must be trained"
    layers = [p for n, p in model.compressor.named_parameters() if ".layer" in n and p.requires_grad]
    assert layers and all(p.grad is not None for p in layers)
    if hasattr(model.compressor, "projection"):
        assert all(p.grad.abs().sum() > 0 for p in model.compressor.projection.parameters())
    base = [p for n, p in model.generator.named_parameters() if "lora_" not in n]
    assert base and all(not p.requires_grad and p.grad is None for p in base)


def test_overfits_eight_examples_and_generates_a_training_answer(model_config):
    torch.manual_seed(0)
    model = ScaleDownModel.build(model_config(lora_dropout=0.0))
    names = ["Mellan", "Oda Ren", "Kastrup", "Velo", "Ardent Bay", "Quill", "Sorrow Peak", "Ibex"]
    records = [Record(query=f"Question {i}: what is the name?", documents=[f"The name is {n}.", "Unrelated."],
                      answer=n) for i, n in enumerate(names)]
    batch = model.collator(num_documents=2)(records)
    groups = model.parameter_groups()
    opt = torch.optim.AdamW([{"params": groups["compressor"], "lr": 1e-3},
                             {"params": groups["generator"], "lr": 3e-3}], weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(120):
        loss = model(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    model.eval()
    answers = model.generate([r.query for r in records[:3]], [r.documents for r in records[:3]],
                             max_new_tokens=8)
    assert answers == names[:3]


def test_save_and_reload_in_a_fresh_process_gives_the_same_logits(model, tmp_path):
    with torch.no_grad():
        # Move the trained parts off their initial values so a missed load shows.
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
        emb = model.generator.get_input_embeddings().weight
        emb[model.base_vocab_size:] += torch.randn_like(emb[model.base_vocab_size:])
    batch = model.collator(num_documents=2)(RECORDS)
    # One thread on both sides: with several, MKL/OpenMP may split a product differently when the machine is
    # loaded (fewer threads free), and the summation order moves fp32 logits by ~1e-5: this test once failed so.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            expected = model.logits(batch)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(tmp_path / "export")
    torch.save({"batch": batch, "logits": expected}, tmp_path / "expected.pt")
    names = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert "compressor.safetensors" in names and "adapter" in names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    script = textwrap.dedent(f"""
        import torch
        from scaledown.models.model import ScaleDownModel
        torch.set_num_threads(1)
        data = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
        model = ScaleDownModel.from_pretrained({str(tmp_path / 'export')!r}).eval()
        with torch.no_grad():
            got = model.logits(data["batch"])
        torch.testing.assert_close(got, data["logits"], atol=1e-5, rtol=1e-5)
        print("same logits")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0 and "same logits" in run.stdout, run.stderr[-3000:]


def test_eval_cli_compares_compressed_uncompressed_and_teacher(model_config, tmp_path, tiny_generator):
    from scaledown.data.schema import write_jsonl
    from scaledown.eval.cli import main as eval_main

    model = ScaleDownModel.build(model_config(rerank=True))
    model.save_pretrained(tmp_path / "export")
    rows = [{"id": f"q{i}", "query": r.query, "documents": r.documents, "answer": r.answer,
             "relevance": [1] + [0] * (len(r.documents) - 1)} for i, r in enumerate(RECORDS)]
    write_jsonl(rows, tmp_path / "eval.jsonl")
    write_jsonl([{**row, "answer": f"the answer is {row['answer']}"} for row in rows], tmp_path / "teacher.jsonl")
    table = eval_main(["--model", str(tmp_path / "export"), "--data", str(tmp_path / "eval.jsonl"),
                       "--uncompressed", "--teacher", str(tmp_path / "teacher.jsonl"), "--judge", tiny_generator,
                       "--max-new-tokens", "4", "--out", str(tmp_path / "eval.json")])
    assert set(table) == {"compressed", "uncompressed", "teacher"}
    assert table["teacher"]["accuracy"] == 1.0 and table["teacher"]["exact_match"] == 0.0
    assert "ndcg@10" in table["compressed"] and all("judge" in row for row in table.values())
    assert all(0.0 <= v <= 1.0 for row in table.values() for v in row.values())
    assert len(json.loads((tmp_path / "eval.json").read_text())["predictions"]) == 2


def test_gradient_checkpointing_recomputes_layers_and_keeps_the_gradients(tiny_generator):
    from scaledown.config import load_config
    from scaledown.train import build_model

    grads, calls = [], []
    for checkpointing in (False, True):
        cfg = load_config(None, [f"--model.generator={tiny_generator}", "--model.compressor_layers=2",
                                 "--model.dtype=float32", "--model.lora_dropout=0",
                                 f"--train.gradient_checkpointing={str(checkpointing).lower()}"])
        torch.manual_seed(0)
        model = build_model(cfg)
        layer = model.generator.get_base_model().model.layers[-1]
        count = []
        layer.mlp.register_forward_pre_hook(lambda *_: count.append(1))
        model(**model.collator(num_documents=2)(RECORDS))["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        calls.append(len(count))
    assert calls == [1, 2]  # the checkpointed layer ran again in backward
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_memory_norm_auto_rescales_memory_to_the_embedding_norm_and_the_export_keeps_the_number(model_config,
                                                                                                   tmp_path):
    from scaledown.config import ConfigError, ModelConfig

    torch.manual_seed(0)
    plain = ScaleDownModel.build(model_config(lora_dropout=0.0)).eval()
    torch.manual_seed(0)
    scaled = ScaleDownModel.build(model_config(lora_dropout=0.0, memory_norm="auto")).eval()
    embeddings = scaled.generator.get_input_embeddings().weight[:scaled.base_vocab_size]
    target = embeddings.norm(dim=-1).mean().item()
    assert scaled.config.memory_norm == pytest.approx(target, abs=1e-4)
    batch = scaled.collator(num_documents=2)(RECORDS)
    with torch.no_grad():
        raw, _ = plain.compress(batch["comp_input_ids"], batch["comp_attention_mask"], 2)
        memory, _ = scaled.compress(batch["comp_input_ids"], batch["comp_attention_mask"], 2)
    assert torch.allclose(memory.norm(dim=-1), torch.full(memory.shape[:-1], target), atol=1e-3)
    assert torch.allclose(F.normalize(memory, dim=-1), F.normalize(raw, dim=-1), atol=1e-5)  # direction kept
    assert not torch.allclose(raw.norm(dim=-1), memory.norm(dim=-1), atol=1e-2)
    scaled.save_pretrained(tmp_path / "export")
    again = ScaleDownModel.from_pretrained(tmp_path / "export").eval()
    assert again.config.memory_norm == scaled.config.memory_norm
    with torch.no_grad():
        assert torch.allclose(again(**batch)["loss"], scaled(**batch)["loss"], atol=1e-5)
    for bad in ("-1", "big"):
        with pytest.raises(ConfigError, match="model.memory_norm"):
            ModelConfig(memory_norm=bad)


def test_export_adapter_loads_with_plain_peft_from_another_directory_and_files_follow_the_umask(
        model_config, tiny_generator, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    # The base model by a relative path, as a config in the checkout names it.
    base = Path(tiny_generator)
    monkeypatch.chdir(base.parent)
    model = ScaleDownModel.build(model_config(generator=base.name))
    old = os.umask(0o022)
    try:
        model.save_pretrained(tmp_path / "export")
    finally:
        os.umask(old)
    files = [f for f in (tmp_path / "export").rglob("*") if f.is_file()]
    assert files and {oct(f.stat().st_mode & 0o777) for f in files} == {"0o644"}
    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded base path must still resolve
    settings = json.loads((tmp_path / "export" / "adapter" / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == str(base.resolve())
    lm = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "export" / "adapter"))
    assert any("lora_A" in name for name, _ in lm.named_parameters())


def test_compressor_embeddings_added_trains_the_added_rows_only_and_round_trips(model_config, tmp_path):
    torch.manual_seed(0)
    full = ScaleDownModel.build(model_config(lora_dropout=0.0)).eval()
    torch.manual_seed(0)
    model = ScaleDownModel.build(model_config(lora_dropout=0.0, compressor_embeddings="added")).eval()
    batch = model.collator(num_documents=2)(RECORDS)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(batch), full.logits(batch))  # the same function at the start
    table = model.compressor.backbone.get_input_embeddings()
    trained = {n for n, p in model.compressor.named_parameters() if p.requires_grad}
    assert "backbone.embed_tokens.rows" in trained and not any("frozen" in n for n in trained)
    assert sum(p.numel() for p in model.parameter_groups()["compressor"]) < \
        sum(p.numel() for p in full.parameter_groups()["compressor"]) - table.frozen.numel() + 1
    before = table.weight.detach().clone()
    model.train()
    model(**batch)["loss"].backward()
    torch.optim.SGD(model.parameter_groups()["compressor"], lr=1.0).step()
    after = table.weight.detach()
    first = table.frozen.shape[0]
    assert torch.equal(after[:first], before[:first]) and not torch.equal(after[first:], before[first:])
    model.eval().save_pretrained(tmp_path / "export")
    loaded = ScaleDownModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(batch), model.logits(batch))


def test_model_card_push_to_hub_and_loading_by_hub_id(model_config, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    hub = tmp_path / "hub"  # stands in for the hub: what upload_folder sends, snapshot_download returns

    def upload_folder(self, repo_id, folder_path, commit_message):
        shutil.copytree(folder_path, hub / repo_id)
        return f"https://huggingface.co/{repo_id}/commit/local"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, private, exist_ok: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id: str(hub / repo_id))
    torch.manual_seed(0)
    model = ScaleDownModel.build(model_config(lora_dropout=0.0)).eval()
    assert model.push_to_hub("org/oscar-tiny").endswith("/commit/local")
    card = (hub / "org" / "oscar-tiny" / "README.md").read_text()
    assert f"base_model: {model.config.generator}" in card and "library_name: peft" in card
    assert "ScaleDownModel.from_pretrained" in card
    loaded = ScaleDownModel.from_pretrained("org/oscar-tiny").eval()
    batch = model.collator(num_documents=2)(RECORDS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(batch), model.logits(batch))
