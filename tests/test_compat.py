"""The original ScaleDown code's interface, as its README and QUICKSTART wrote it (tiny models, device_type="cpu"),
its commands and flags, and the refusals of inconsistent runs."""

import json
import subprocess
import sys

import pytest
import torch

from launch import ROOT, cpu_env
from scaledown.build.synthetic import make_records


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from scaledown.models.tiny import make_tiny_cross_encoder, make_tiny_generator, make_tiny_splade

    t = tmp_path_factory.mktemp("compat")
    return {"generator": make_tiny_generator(t / "gen", hidden_size=32, num_layers=10, intermediate_size=64),
            "splade": make_tiny_splade(t / "splade"), "ce": make_tiny_cross_encoder(t / "ce"), "root": t}


def readme_data(n=8):
    """The README's record format: query, plain-string documents, the teacher's answer, optional scores."""
    return [{"query": r["query"], "documents": [d["text"] for d in r["documents"]], "answer": r["answer"],
             "reranking_scores": r["reranking_scores"]} for r in make_records(n, seed=1, num_documents=3)]


def test_quickstart_example_runs_as_written_and_its_export_loads_anywhere(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    import torch  # noqa: F401  (the QUICKSTART's first line)

    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.data import ScaleDownDataset
    from scaledown.training import ScaleDownTrainer

    # 1. Configure (the QUICKSTART's, with a tiny generator and the CPU)
    config = ScaleDownConfig(
        compressor_type="n_layers",
        num_compressor_layers=8,
        compression_rate=16,
        device_type="cpu",
        batch_size=4,
        generator_model_name=str(tiny["generator"]),
        use_bf16=False,
        num_documents_train=3,
    )
    # 2. Prepare data: here as the predecessor's train_data.json, a JSON list
    data = readme_data()
    (tmp_path / "train_data.json").write_text(json.dumps(data, indent=2))
    # 3. Create dataset and model
    dataset = ScaleDownDataset("train_data.json", config)
    assert len(dataset) == 8 and ScaleDownDataset(data, config)[0].query == data[0]["query"]
    model = ScaleDownModel(config)
    # 4. Train
    trainer = ScaleDownTrainer(model, config, dataset)
    result = trainer.train()
    assert result["steps"] == 2 and (tmp_path / "checkpoints" / "tensorboard").is_dir()
    export = tmp_path / "checkpoints" / "export"
    recorded = json.loads((export / "scaledown_config.json").read_text())["model"]["generator"]
    assert recorded == str(tiny["generator"].resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = ScaleDownModel.from_pretrained(export)
    answers = loaded.generate([data[0]["query"]], [data[0]["documents"]], max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_config_mapping_and_refusals(capsys):
    from scaledown import ScaleDownConfig
    from scaledown.config import ConfigError

    ScaleDownConfig(device_type="gpu").to_config()
    warned = "device_type='gpu' but this machine has no CUDA GPU: training runs on the CPU" in capsys.readouterr().err
    assert warned == (not torch.cuda.is_available())
    cfg = ScaleDownConfig(compressor_type="modernbert", enable_reranking=True, batch_size=6,
                          lora_target_modules=["q_proj", "v_proj"], learning_rate_compressor_modernbert=3e-4,
                          extra={"train.max_steps": 9}).to_config("out")
    assert (cfg.model.compressor, cfg.model.encoder, cfg.model.rerank) == ("encoder", "answerdotai/ModernBERT-base",
                                                                          True)
    assert cfg.model.lora_target_modules == "q_proj,v_proj" and cfg.optim.lr_compressor == 3e-4
    assert (cfg.train.global_batch_size, cfg.train.micro_batch_size, cfg.train.max_steps) == (6, 2, 9)
    assert cfg.model.max_doc_tokens == 128 and cfg.engine.backend == "torch" and cfg.train.output_dir == "out"
    for kwargs, needle in [({"compression_rate": 12}, "compression_rate=12"),
                           ({"max_seq_length": 256}, "max_seq_length=256"),
                           ({"use_lora": False}, "LoRA only"), ({"device_type": "tpu"}, "device_type='tpu'"),
                           ({"extra": {"train.nonsense": 1}}, "nonsense")]:
        with pytest.raises(ConfigError, match=needle):
            ScaleDownConfig(**kwargs)


def test_data_helpers_over_an_in_memory_corpus(tiny):
    from scaledown.data.reranker import add_reranking_scores
    from scaledown.data.retrieval import SPLADERetriever
    from scaledown.data.teacher import generate_teacher_answers

    records = make_records(6, seed=2, num_documents=2)
    corpus = [{"id": f"{i}-{j}", "title": d["title"], "text": d["text"]}
              for i, r in enumerate(records) for j, d in enumerate(r["documents"])]
    results = SPLADERetriever(str(tiny["splade"]), device="cpu").retrieve([r["query"] for r in records], corpus,
                                                                         top_k=3)
    assert len(results) == 6 and all(len(hits) == 3 for hits in results)
    assert all(h["retrieval_score"] >= 0 and {"id", "title", "text"} <= set(h) for hits in results for h in hits)
    assert all(a["retrieval_score"] >= b["retrieval_score"] for hits in results for a, b in zip(hits, hits[1:]))
    items = [{"query": r["query"], "documents": hits} for r, hits in zip(records, results)]
    scored = add_reranking_scores(items, reranker_model_name=str(tiny["ce"]))
    assert all(len(s["reranking_scores"]) == 3 and "reranking_scores" not in i for s, i in zip(scored, items))
    answered = generate_teacher_answers(scored[:2], teacher_model_name=str(tiny["generator"]), max_new_tokens=3)
    assert all(isinstance(a["answer"], str) for a in answered)
    from scaledown.compat import ScaleDownDataset

    assert len(ScaleDownDataset([dict(a, answer=a["answer"] or "x") for a in answered])) == 2


def run(args, cwd, timeout=600):
    return subprocess.run([sys.executable, *args], env=cpu_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_prepare_dataset_with_its_flags_writes_its_json_list(tiny, tmp_path):
    records = make_records(10, seed=3, num_documents=2)
    corpus = [{"id": f"{i}-{j}", "title": d["title"], "text": d["text"]}
              for i, r in enumerate(records) for j, d in enumerate(r["documents"])]
    (tmp_path / "corpus.json").write_text(json.dumps(corpus, indent=2))  # a JSON list corpus
    (tmp_path / "q.txt").write_text("".join(r["query"] + "\n" for r in records))
    flags = ["-m", "scaledown.data.prepare_dataset", "--queries_file", "q.txt", "--corpus_path", "corpus.json",
             "--output_file", "train_data.json", "--top_k_retrieval", "6", "--top_k_reranking", "3",
             "--enable_reranking", "--retriever_model", str(tiny["splade"]), "--reranker_model", str(tiny["ce"]),
             "--teacher_model", str(tiny["generator"]), "--max_corpus_size", "15"]
    done = run(flags, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "train_data.json").read_text())
    assert len(rows) == 10 and all(set(r) >= {"query", "documents", "answer", "reranking_scores"} for r in rows)
    assert all(len(r["documents"]) == 3 and all(isinstance(d, str) for d in r["documents"]) for r in rows)
    from scaledown.build.retrieval import SparseIndex

    index = SparseIndex(tmp_path / "train_data.json.build" / "index")
    index_ids = {index.passages[row].id.rsplit("-", 1)[0] for row in range(len(index))}
    assert len(index_ids) == 15  # --max_corpus_size: the first 15 documents
    # The same flags, JSONL by extension; --teacher_8bit on a machine without CUDA: a clear refusal.
    eight = run([*flags[:flags.index("--output_file") + 1], "out8.json", *flags[flags.index("--output_file") + 2:],
                 "--teacher_8bit"], tmp_path)
    assert eight.returncode != 0 and "needs a CUDA GPU" in eight.stderr


@pytest.mark.slow
def test_synthetic_queries_without_a_corpus_use_the_projects_facts(tiny, tmp_path):
    done = run(["-m", "scaledown.data.prepare_dataset", "--num_synthetic_queries", "6", "--output_file", "s.jsonl",
                "--top_k_retrieval", "4", "--retriever_model", str(tiny["splade"]), "--teacher_model", "gold",
                "--tokenizer", str(tiny["generator"])], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["answer"] == r["gold_answers"][0] and len(r["documents"]) == 4 for r in rows)
    assert (tmp_path / "s.jsonl.build.synthetic" / "corpus.jsonl").exists()
    missing = run(["-m", "scaledown.data.prepare_dataset", "--queries_file", "q.txt"], tmp_path)
    assert missing.returncode != 0 and "--corpus_path is required" in missing.stderr


def test_ms_marco_download_parses_its_tsv_and_fails_clearly_offline(tmp_path):
    from scaledown.build.prepare_dataset import download_ms_marco

    source = tmp_path / "queries.dev.small.tsv"
    source.write_text("1048585\twhat is paula deen's brother\n2\tandorra\n")
    out = download_ms_marco(source.as_uri(), tmp_path / "ms_marco_queries.tsv")
    assert out.read_text().splitlines() == ["1048585\twhat is paula deen's brother", "2\tandorra"]
    (tmp_path / "broken.tsv").write_text("just text\n")
    with pytest.raises(SystemExit, match="not MS MARCO's qid<TAB>query TSV"):
        download_ms_marco((tmp_path / "broken.tsv").as_uri(), tmp_path / "b.tsv")
    with pytest.raises(SystemExit, match="cannot fetch .* offline"):
        download_ms_marco("http://127.0.0.1:9/queries.dev.small.tsv", tmp_path / "c.tsv")


@pytest.mark.slow
def test_train_flags_of_the_original_train_py(tiny, tmp_path):
    (tmp_path / "data.json").write_text(json.dumps(readme_data()))
    args = ["-m", "scaledown.train", "--train_data", "data.json", "--compressor_type", "n_layers", "--num_layers",
            "2", "--device", "cpu", "--output_dir", "ckpt", "--batch_size", "4", "--num_epochs", "1",
            "--enable_reranking", f"--model.generator={tiny['generator']}", "--model.dtype=float32",
            "--data.num_documents=3", "--optim.betas=0.9,0.95"]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    saved = (tmp_path / "ckpt" / "config.yaml").read_text()
    assert "rerank: true" in saved and "compressor_layers: 2" in saved and "- 0.95" in saved
    assert (tmp_path / "ckpt" / "export" / "compressor.safetensors").exists()


def test_inconsistent_runs_are_refused_before_compute(tiny, tmp_path):
    from scaledown.config import ConfigError, load_config
    from scaledown.train import train

    rows = readme_data(4)
    for row in rows[1:]:
        del row["reranking_scores"]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [f"--model.generator={tiny['generator']}", f"--data.train_path={tmp_path / 'd.jsonl'}",
            "--engine.backend=torch", "--model.dtype=float32", "--train.global_batch_size=2",
            "--train.micro_batch_size=2", f"--train.output_dir={tmp_path / 'o'}", "--data.num_documents=3"]
    with pytest.raises(ConfigError, match="3 of 4 training records .* have no reranking_scores"):
        train(load_config(None, base + ["--model.rerank=true", "--model.compressor_layers=2"]))
    with pytest.raises(ConfigError, match="has 10 decoder layers; .* at most 9"):
        train(load_config(None, base + ["--model.compressor_layers=10"]))
    result = train(load_config(None, base + ["--model.rerank=true", "--model.rerank_missing=ignore",
                                             "--model.compressor_layers=2", "--train.max_steps=1"]))
    assert result["steps"] == 1


def test_estimate_matches_deepspeeds_estimators_when_everything_trains(tiny):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from scaledown.config import load_config
    from scaledown.estimate import Counts, count, per_gpu, per_node_cpu, table

    c = Counts(frozen=0, trainable=7_000_000, largest_layer=500_000, weight_bytes=2)
    for gpus in (1, 8):
        for offload in (False, True):
            cpu, gpu = estimate_zero2_model_states_mem_needs(c.trainable, gpus, 1, cpu_offload=offload)
            choice = "optimizer" if offload else "none"
            assert per_gpu(c, 2, choice, gpus) == pytest.approx(gpu, abs=1)
            assert per_node_cpu(c, 2, choice, gpus, 1) == pytest.approx(cpu, abs=1) or not offload
        for offload, params in ((False, False), (True, False), (True, True)):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(c.trainable, c.largest_layer, gpus, 1,
                                                                cpu_offload=offload, cpu_offload_params=params)
            choice = "optimizer+params" if params else "optimizer" if offload else "none"
            assert per_gpu(c, 3, choice, gpus) == pytest.approx(gpu, abs=1)
            if offload:
                assert per_node_cpu(c, 3, choice, gpus, 1) == pytest.approx(cpu, abs=1)
    # The configured model: the frozen generator is counted as frozen, the 8-layer compressor and LoRA train.
    cfg = load_config(None, [f"--model.generator={tiny['generator']}", "--model.compressor_layers=8"])
    counts = count(cfg)
    from scaledown.models.model import ScaleDownModel

    model = ScaleDownModel.build(cfg.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.trainable == pytest.approx(trainable, rel=0.02)
    text = table(counts, 8, 1, 80.0)
    assert "3     optimizer+params" in text and text.count("yes") == 7


def test_estimate_names_a_configuration_that_fits_a_7b_generator_on_a_16gb_gpu_and_12gb_host(tmp_path, capsys):
    """The free-Colab target: Mistral-7B's shape with a ModernBERT-base compressor, one 16 GB GPU, 12 GB of host
    memory. The estimate names flags; the run config they make parses, and its model, built on the meta device,
    fits both."""
    import json
    from transformers import MistralConfig, ModernBertConfig

    from scaledown.config import load_config
    from scaledown.estimate import GIB, count, main, per_gpu, per_node_cpu

    MistralConfig().save_pretrained(tmp_path / "mistral-7b")  # the defaults are Mistral-7B's shape
    ModernBertConfig().save_pretrained(tmp_path / "modernbert-base")
    model = [f"--model.generator={tmp_path / 'mistral-7b'}", "--model.compressor=encoder",
             f"--model.encoder={tmp_path / 'modernbert-base'}"]
    text = main(["--gpus-per-node", "1", "--gpu-memory", "16", "--host-memory", "12", *model])
    assert "First fit:" in text
    flags = text.rsplit("add: ", 1)[1].split()
    cfg = load_config(None, model + flags)
    stage = json.loads((ROOT / cfg.engine.deepspeed_config).read_text())["zero_optimization"]["stage"]
    offload = "optimizer" if "offload" in cfg.engine.deepspeed_config else "none"
    c = count(cfg)
    assert c.frozen > 7e9 and c.quantization == cfg.model.quantization
    assert per_gpu(c, stage, offload, 1) < 0.8 * 16 * GIB and per_node_cpu(c, stage, offload, 1, 1) < 0.8 * 12 * GIB
    # In full precision nothing fits that GPU and host: the frozen 7B alone is 13.5 GiB.
    assert "nf4" in flags[0] and text.split("First fit")[0].count(" yes") == 0
    # Two-stage training: the compressor's weights stay, frozen; only LoRA trains.
    two = count(load_config(None, model + flags + [f"--data.memory_cache={tmp_path / 'cache'}"]))
    assert two.frozen - c.frozen == c.trainable - two.trainable > 0.5 * c.trainable


def test_console_script_lists_commands_and_train_help_has_every_field():
    done = run(["-m", "scaledown.cli", "train", "--help"], ROOT)
    assert done.returncode == 0 and "--model.compressor_layers" in done.stdout and "--train_data" in done.stdout
    listing = run(["-m", "scaledown.cli"], ROOT)
    assert listing.returncode == 2 and all(c in listing.stdout for c in ("build", "train", "eval", "estimate"))


@pytest.mark.parametrize("command", ["build", "eval", "predict", "report", "import-oscar", "estimate", "cache"])
def test_every_command_answers_help_with_its_own_name(command, capsys, monkeypatch):
    from scaledown import cli

    monkeypatch.setattr(sys, "argv", ["scaledown"])
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0 and f"usage: scaledown {command}" in capsys.readouterr().out


def test_build_flags_from_a_config_file_and_no_abbreviations(tmp_path, capsys, monkeypatch):
    from scaledown.build.pipeline import parser

    monkeypatch.setattr(sys, "argv", ["scaledown build"])
    (tmp_path / "build.yaml").write_text("corpus: kilt.jsonl\nout: runs/data\ncorpus_format: tsv\nretrieve_k: 20\n")
    args = parser().parse_args(["--config", str(tmp_path / "build.yaml"), "--retrieve-k", "30"])
    assert (args.corpus, args.corpus_format, args.retrieve_k, args.out) == ("kilt.jsonl", "tsv", 30, "runs/data")
    with pytest.raises(SystemExit) as done:
        parser().parse_args(["--corp", "kilt.jsonl", "--out", "x"])
    assert done.value.code == 2 and "unrecognized arguments: --corp" in capsys.readouterr().err


def test_estimate_refuses_an_abbreviated_flag_in_one_line(capsys):
    from scaledown import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["estimate", "--config", "configs/tiny.yaml", "--gpus", "4"])  # not --gpus-per-node
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.strip() == "scaledown estimate: error: unrecognized arguments: --gpus 4"


def test_estimate_offline_says_at_once_that_it_needs_a_local_config(monkeypatch):
    import time

    from scaledown import estimate
    from scaledown.config import load_config

    monkeypatch.setattr(estimate, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(SystemExit, match="neither a local folder nor in the hub cache, and the hub is not reachable"):
        estimate.count(load_config(None, ["--model.generator=some-org/not-a-cached-model"]))
    assert time.perf_counter() - start < 10  # no retries against an unreachable hub


SQUAD = {"version": "1.1", "data": [{"title": "Normans", "paragraphs": [
    {"context": "The Normans gave their name to Normandy, a region in France.",
     "qas": [{"id": "q1", "question": "In what country is Normandy?",
              "answers": [{"text": "France", "answer_start": 54}, {"text": "France", "answer_start": 54}]},
             {"id": "q2", "question": "Who gave their name to Normandy?", "answers": [{"text": "The Normans"}]}]},
    {"context": "Rollo was a Viking leader.",
     "qas": [{"id": "q3", "question": "Who was Rollo?", "answers": [{"text": "a Viking leader"}]},
             {"id": "q4", "question": "Unanswerable?", "answers": [], "is_impossible": True}]}]}]}


def test_prepare_small_real_dataset_reads_squad_in_both_shapes(tmp_path):
    official = tmp_path / "dev-v1.1.json"
    official.write_text(json.dumps(SQUAD))
    done = run([str(ROOT / "launchers" / "prepare_small_real_dataset.py"), "--dataset", "squad", "--num_examples",
                "2", "--squad_path", str(official), "--output_file", "small.json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "small.json").read_text())
    assert [(r["id"], r["answer"], r["gold_answers"]) for r in rows] == [("q1", "France", ["France"]),
                                                                         ("q2", "The Normans", ["The Normans"])]
    assert rows[0]["documents"] == [{"title": "Normans", "text": SQUAD["data"][0]["paragraphs"][0]["context"]}]
    # The hub's rows (rajpurkar/squad) as JSONL; an unanswerable question is skipped, not labelled.
    from scaledown.build.squad import small_real_records

    hub = tmp_path / "rows.jsonl"
    hub.write_text("".join(json.dumps({"id": qa["id"], "title": "Normans", "context": p["context"],
                                       "question": qa["question"],
                                       "answers": {"text": [a["text"] for a in qa["answers"]], "answer_start": []}})
                           + "\n" for p in SQUAD["data"][0]["paragraphs"] for qa in p["qas"]))
    assert [r["id"] for r in small_real_records(hub, 10)] == ["q1", "q2", "q3"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "x", "question": "q?"}) + "\n")
    bad = run([str(ROOT / "launchers" / "prepare_small_real_dataset.py"), "--squad_path", "bad.jsonl"], tmp_path)
    assert bad.returncode != 0 and "bad.jsonl:1: not a SQuAD row (missing context, answers" in bad.stderr


def test_the_original_scripts_run_or_name_their_replacement(tmp_path):
    sys.path.insert(0, str(ROOT / "launchers"))
    try:
        from test_training import command
    finally:
        sys.path.remove(str(ROOT / "launchers"))
    assert command(["--test_both"])[-2:] == ["tests/test_model.py", "tests/test_compat.py"]
    assert command(["--test_modernbert", "-x"])[-3:] == ["-k", "encoder", "-x"]
    for kind in ("nlayers", "modernbert"):
        done = run([str(ROOT / "launchers" / f"train_{kind}_two_stage.py"), "--train_data", "t.json"], tmp_path)
        assert done.returncode == 1 and "--cache_dir DIR is required" in done.stderr
    evaluation = run([str(ROOT / "launchers" / "train_with_evaluation.py"), "--train_data", "t.json"], tmp_path)
    assert evaluation.returncode == 1 and "--eval_data FILE" in evaluation.stderr
    helped = run([str(ROOT / "launchers" / "train_with_evaluation.py"), "--help"], tmp_path)
    assert helped.returncode == 0 and "usage: scaledown train" in helped.stdout


def test_the_two_stage_script_and_trainer_cache_then_train_the_generator_only(tiny, tmp_path, monkeypatch):
    """train_nlayers_two_stage.py and TwoStageNLayersTrainer(..., cache_dir=...): stage 1 writes the memory
    cache, stage 2 trains the LoRA on it; the exported compressor is the one that wrote the cache."""
    from safetensors.torch import load_file

    (tmp_path / "data.json").write_text(json.dumps(readme_data()))
    done = run([str(ROOT / "launchers" / "train_nlayers_two_stage.py"), "--train_data", "data.json", "--num_layers",
                "2", "--device", "cpu", "--output_dir", "out", "--batch_size", "4", "--cache_dir", "cache",
                f"--model.generator={tiny['generator']}", "--model.dtype=float32", "--data.num_documents=3"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "cache" / "cache.json").exists() and (tmp_path / "cache" / "chunk-000000.safetensors").exists()
    assert "two-stage training: memory embeddings from cache" in done.stderr
    assert (tmp_path / "out" / "export" / "compressor.safetensors").exists()

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from scaledown import ScaleDownConfig, ScaleDownModel, TwoStageModernBERTTrainer
    from scaledown.data import ScaleDownDataset
    from scaledown.training import TwoStageNLayersTrainer

    config = ScaleDownConfig(compressor_type="n_layers", num_compressor_layers=2, device_type="cpu", batch_size=4,
                             generator_model_name=str(tiny["generator"]), use_bf16=False, num_documents_train=3)
    model = ScaleDownModel(config)
    before = {k: v.clone() for k, v in model.compressor.state_dict().items()}
    with pytest.raises(Exception, match="this trainer is for compressor_type='modernbert'"):
        TwoStageModernBERTTrainer(model, config, ScaleDownDataset(readme_data(), config), cache_dir="c2")
    result = TwoStageNLayersTrainer(model, config, ScaleDownDataset(readme_data(), config), output_dir="api",
                                    cache_dir="./demo_cache").train()
    assert result["steps"] == 2 and (tmp_path / "demo_cache" / "cache.json").exists()
    exported = load_file(str(tmp_path / "api" / "export" / "compressor.safetensors"))
    assert all(torch.equal(exported[k], before[k]) for k in before)  # frozen: the compressor that wrote the cache
