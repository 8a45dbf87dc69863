"""The learning probe, compressor pretraining (auto-encoding + continuation), train.init_from, and the precision
settings: on tiny random models, in this process (torch engine)."""

import json
import shutil

import pytest
import torch

from launch import make_run_inputs
from scaledown.config import ConfigError, load_config
from scaledown.data.collate import IGNORE_INDEX
from scaledown.build.pretraining import AUTOENCODE_QUERY, CONTINUE_QUERY, pretraining_records
from scaledown.data.schema import write_jsonl
from scaledown.build.synthetic import make_records
from scaledown.train import train

COMMON = ["--engine.backend=torch", "--model.compressor_layers=1", "--model.dtype=float32", "--model.rerank=false",
          "--train.global_batch_size=4", "--train.micro_batch_size=2", "--train.log_every=1", "--data.eval_path=",
          "--model.lora_dropout=0.1"]


@pytest.mark.parametrize("nonce_share", [0.0, 1.0, 0.25])
def test_each_probe_answer_is_in_exactly_one_of_its_documents(nonce_share):
    records = make_records(300, seed=3, num_documents=5, nonce_share=nonce_share)
    subsets = {r["subset"] for r in records}
    assert subsets == ({"word"} if nonce_share == 0 else {"nonce"} if nonce_share == 1 else {"word", "nonce"})
    for r in records:
        holding = [j for j, d in enumerate(r["documents"]) if f" {r['answer']} " in f" {d['text']} ".replace(",", " ")
                   .replace(".", " ")]
        assert holding == [r["gold_document"]], r
        gold = r["documents"][r["gold_document"]]
        assert gold["title"] in r["query"]  # the question names the gold passage's entity, not a distractor's
        assert [d["title"] in r["query"] for d in r["documents"]].count(True) == 1  # a full name is never shared
        # Distractors state the same relation about other entities.
        assert len({d["title"] for d in r["documents"]}) == 5


def test_probe_word_answers_are_spread_over_their_values():
    records = make_records(2000, seed=0, num_documents=3, nonce_share=0.0)
    for relation in {r["relation"] for r in records}:
        answers = [r["answer"] for r in records if r["relation"] == relation]
        top = max(answers.count(a) for a in set(answers))
        assert top / len(answers) < 0.25, relation  # a constant guess stays near chance


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    t = tmp_path_factory.mktemp("corpus")
    words = [f"word{i}" for i in range(400)]
    write_jsonl([{"id": f"d{j}", "title": f"Title {j}", "text": " ".join(words[j * 7:j * 7 + 150])}
                 for j in range(4)], t / "corpus.jsonl")
    return t / "corpus.jsonl"


def test_pretraining_batches_put_labels_on_the_passage_or_its_continuation(corpus, model_config):
    from scaledown.models.model import ScaleDownModel

    model = ScaleDownModel.build(model_config(max_doc_tokens=24, max_answer_tokens=24, rerank=False))
    tok = model.tokenizer
    records = pretraining_records(corpus, tok, 24, 24, continuation_share=0.5, seed=0)
    tasks = {r.extra["task"] for r in records}
    assert tasks == {"autoencoding", "continuation"}
    batch = model.collator(num_documents=1)(records[:8])
    for b, rec in enumerate(records[:8]):
        labelled = batch["labels"][b][batch["labels"][b] != IGNORE_INDEX].tolist()
        assert labelled[-1] == tok.eos_token_id
        text = tok.decode(labelled[:-1])
        document = rec.documents[0].split("\n", 1)[-1]
        if rec.extra["task"] == "autoencoding":
            assert rec.query == AUTOENCODE_QUERY and text.strip() == document
        else:
            # The continuation is the text right after the compressed passage in the same document.
            assert rec.query == CONTINUE_QUERY and text.strip() not in document
            source = "".join(f"word{i}" for i in range(400))  # spaces aside: a cut can split a word in two
            assert (document + text).replace(" ", "") in source
        # The compressor reads the passage: its tokens are in the compressor row, the labels are not its input.
        assert tok.decode(batch["comp_input_ids"][b]).count(document[:20]) == 1


def test_pretraining_then_fine_tuning_from_its_export(corpus, tmp_path):
    inputs = make_run_inputs(tmp_path, n_train=16)
    generator = next(a for a in inputs if a.startswith("--model.generator="))
    pre = train(load_config(None, [generator, *COMMON, f"--data.train_path={corpus}", "--train.objective=pretrain",
                                   "--train.max_steps=2", "--model.max_doc_tokens=16", "--model.max_answer_tokens=16",
                                   "--data.num_documents=1", f"--train.output_dir={tmp_path / 'pre'}"]))
    assert pre["steps"] == 2 and all(h["train/loss"] > 0 for h in pre["history"])
    export = tmp_path / "pre" / "export"
    fine = train(load_config(None, inputs + COMMON + ["--train.max_steps=1", f"--train.init_from={export}",
                                                      f"--train.output_dir={tmp_path / 'fine'}"]))
    assert fine["steps"] == 1
    # The fine-tuning run started from the pretrained compressor, not from a fresh copy of the generator.
    from safetensors.torch import load_file

    pretrained = load_file(str(export / "compressor.safetensors"))
    from scaledown.models.model import ScaleDownModel

    fresh = ScaleDownModel.build(load_config(None, inputs + COMMON).model).compressor.state_dict()
    key = next(k for k in pretrained if "layers.0.mlp" in k)
    assert not torch.equal(pretrained[key], fresh[key])
    with pytest.raises(ConfigError, match="model.num_memory_tokens=4"):
        train(load_config(None, inputs + COMMON + ["--train.max_steps=1", f"--train.init_from={export}",
                                                   "--model.num_memory_tokens=4",
                                                   f"--train.output_dir={tmp_path / 'bad'}"]))


def test_resume_inside_pretraining_is_exact(corpus, tmp_path):
    inputs = make_run_inputs(tmp_path, n_train=16)
    generator = next(a for a in inputs if a.startswith("--model.generator="))
    args = [generator, *COMMON, f"--data.train_path={corpus}", "--train.objective=pretrain", "--train.max_steps=4",
            "--model.max_doc_tokens=16", "--model.max_answer_tokens=16", "--data.num_documents=1",
            "--train.save_every=2"]
    full = train(load_config(None, args + [f"--train.output_dir={tmp_path / 'full'}"]))
    run = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoints", run / "checkpoints")
    shutil.rmtree(run / "checkpoints" / "step-000004")
    resumed = train(load_config(None, args + [f"--train.output_dir={run}"]))
    losses = {h["step"]: h["train/loss"] for h in full["history"]}
    assert {h["step"]: h["train/loss"] for h in resumed["history"]} == {s: losses[s] for s in (3, 4)}


def test_trainable_dtype_keeps_trained_weights_in_fp32_and_frozen_ones_in_bf16(model_config):
    from scaledown.models.model import ScaleDownModel

    model = ScaleDownModel.build(model_config(dtype="bfloat16", trainable_dtype="float32", rerank=True))
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    batch = model.collator(num_documents=2)(make_records_as_records())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch)["loss"]
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="DeepSpeed keeps its own fp32"):
        load_config(None, ["--model.trainable_dtype=float32", "--engine.backend=deepspeed"])


def make_records_as_records():
    from scaledown.data.schema import Record

    return [Record(query=r["query"], documents=[d["text"] for d in r["documents"]], answer=r["answer"],
                   reranking_scores=r["reranking_scores"]) for r in make_records(2, seed=5, num_documents=2)]


def test_left_padding_leaves_no_query_row_without_keys():
    """The SDPA mask opens the rows of padding positions (bf16 CUDA kernels return NaN gradients for empty ones)
    and changes nothing at real positions."""
    from transformers import LlamaConfig, LlamaModel
    from transformers.masking_utils import create_causal_mask

    import scaledown.models.generator  # noqa: F401  (registers the mask)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa")
    model = LlamaModel(config).eval()
    ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    attention = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mask = create_causal_mask(config=config, inputs_embeds=model.embed_tokens(ids), attention_mask=attention,
                              past_key_values=None, position_ids=torch.arange(4)[None].expand(2, 4))
    assert mask.any(-1).all()
    padded = model(input_ids=ids, attention_mask=attention,
                   position_ids=(attention.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
    alone = model(input_ids=ids[:1, 2:]).last_hidden_state
    torch.testing.assert_close(padded[:1, 2:], alone)
    assert torch.isfinite(padded).all()


def test_synthetic_cli_writes_subset_query_files(tmp_path):
    from scaledown.build.synthetic import main

    main(["--out", str(tmp_path), "--train", "8", "--eval", "8", "--nonce-share", "0.25", "--documents", "3"])
    gold = json.loads((tmp_path / "gold_passages.json").read_text())
    word = [json.loads(line) for line in (tmp_path / "eval_queries-word.jsonl").read_text().splitlines()]
    nonce = [json.loads(line) for line in (tmp_path / "eval_queries-nonce.jsonl").read_text().splitlines()]
    assert len(word) == 6 and len(nonce) == 2 and all(q["id"] in gold for q in word + nonce)


def test_generator_frozen_steps_keep_the_lora_still_while_the_compressor_trains(tmp_path):
    from safetensors.torch import load_file

    inputs = make_run_inputs(tmp_path, n_train=16)
    run = lambda steps, out: train(load_config(None, inputs + COMMON + [  # noqa: E731
        f"--train.max_steps={steps}", "--optim.generator_frozen_steps=2", "--optim.warmup_ratio=0",
        "--optim.weight_decay=0.1", f"--train.output_dir={tmp_path / out}"]))
    # The history logs each step's LRs after the scheduler moved on: the ones the next step uses.
    frozen = run(2, "frozen")
    assert [h["train/lr_generator"] for h in frozen["history"]] == [0.0, 0.0]
    assert frozen["history"][0]["train/lr_compressor"] > 0
    lora = load_file(str(tmp_path / "frozen" / "export" / "adapter" / "adapter_model.safetensors"))
    assert all(not v.any() for k, v in lora.items() if "lora_B" in k)  # LoRA B starts at 0 and has not moved
    later = run(4, "later")
    assert [h["train/lr_generator"] > 0 for h in later["history"]] == [False, True, True, False]  # steps 3, 4
    lora = load_file(str(tmp_path / "later" / "export" / "adapter" / "adapter_model.safetensors"))
    assert any(v.any() for k, v in lora.items() if "lora_B" in k)
