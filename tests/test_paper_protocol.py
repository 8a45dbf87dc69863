"""The paper's protocol: prompts, gold answers with aliases, raw-logit reranking targets, benchmark loaders, the
judge, and the evaluation CLI's device and rank sharding."""

import json
import subprocess
import sys

import pytest
import torch

from launch import ROOT, cpu_env, free_port
from scaledown.data.prompts import SYSTEM_PROMPT
from scaledown.data.schema import DataError, Record, validate_record, write_jsonl

# Mistral-Instruct v0.2's original template: no system role (it raises), [INST] user [/INST] assistant</s>.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def collator_with_template(tiny_generator, template, **config):
    from scaledown.config import ModelConfig
    from scaledown.models.model import ScaleDownModel

    model = ScaleDownModel.build(ModelConfig(generator=tiny_generator, compressor_layers=1, dtype="float32",
                                             num_memory_tokens=2, **config))
    model.tokenizer.chat_template = template
    return model.collator(num_documents=3, with_answers=False)


@pytest.mark.parametrize("template, expected", [
    (MISTRAL_TEMPLATE, "<s>[INST] " + SYSTEM_PROMPT + "\nBackground:\n<MEM><MEM><MEM><MEM><MEM><MEM>\n\n"
                       "Question: Who wrote Tide? [/INST]"),
    (CHATML_TEMPLATE, "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\nBackground:\n"
                      "<MEM><MEM><MEM><MEM><MEM><MEM>\n\nQuestion: Who wrote Tide?<|im_end|>\n"
                      "<|im_start|>assistant\n"),
])
def test_generator_prompt_is_the_papers(tiny_generator, template, expected):
    collate = collator_with_template(tiny_generator, template)
    assert collate.prompt("Who wrote Tide?", 3) == expected
    ids, _ = collate.generator_row("Who wrote Tide?", 3, None)
    assert collate.tokenizer.decode(ids) == expected


def test_doc_separator_follows_each_slot(tiny_generator):
    collate = collator_with_template(tiny_generator, CHATML_TEMPLATE, doc_separator="\n")
    assert "Background:\n<MEM><MEM>\n<MEM><MEM>\n<MEM><MEM>\n\n\nQuestion: q" in collate.prompt("q", 3)


def test_compressor_input_is_the_reference_template(tiny_generator):
    collate = collator_with_template(tiny_generator, MISTRAL_TEMPLATE)
    row = collate.compressor_row("Who wrote Tide?", "Tide was written by Oda Ren.")
    assert collate.compressor_tokenizer.decode(row) == \
        "<s>\nQuery:\nWho wrote Tide?Document:\nTide was written by Oda Ren.<MEM0><MEM1>"


def test_teacher_and_uncompressed_prompt_number_the_documents(tiny_generator):
    from scaledown.data.prompts import text_documents
    from scaledown.build.teacher import HFTeacher

    teacher = HFTeacher(tiny_generator)
    teacher.tokenizer.chat_template = CHATML_TEMPLATE
    docs = [{"title": "T", "text": "a  b\nc"}, {"title": "", "text": "   "}, "x"]
    prompt = teacher.tokenizer.decode(teacher.prompt("Who?", docs))
    assert prompt == ("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\nBackground:\n"
                      "Document 1: T a b c\nDocument 2: x\n\n\nQuestion: Who?<|im_end|>\n<|im_start|>assistant\n")
    assert text_documents([]) == ""


def test_gold_answers_accept_aliases_and_a_single_string():
    base = {"query": "q", "documents": ["d"], "answer": "teacher"}
    assert validate_record({**base, "gold_answers": ["1960", "in 1960"]}, "f:1").gold_answers == ["1960", "in 1960"]
    assert validate_record({**base, "gold_answers": "1960"}, "f:1").gold_answers == ["1960"]
    assert validate_record({**base, "gold_answer": 1960}, "f:1").gold_answers == ["1960"]
    assert validate_record(base, "f:1").gold_answers is None
    with pytest.raises(DataError, match=r"f:3: field 'gold_answers': expected a string, a number or a list"):
        validate_record({**base, "gold_answers": {"a": 1}}, "f:3")
    with pytest.raises(DataError, match="no non-empty answer"):
        validate_record({**base, "gold_answers": ["", " "]}, "f:4")


def test_reranking_targets_are_raw_logits(tmp_path):
    from scipy.special import logit

    from scaledown.build.rerank import CrossEncoderReranker
    from scaledown.models.tiny import make_tiny_cross_encoder

    reranker = CrossEncoderReranker(str(make_tiny_cross_encoder(tmp_path / "ce")), device="cpu")
    passages = [[{"title": "", "text": f"passage {i} about {w}"} for i in range(4)] for w in ("cats", "dogs")]
    ranked = reranker.rerank(["cats?", "dogs?"], passages, top_n=3)
    pairs = [(q, p["text"]) for q, ps in zip(["cats?", "dogs?"], passages) for p in ps]
    default = reranker.model.predict(pairs)  # the model's default activation: a sigmoid for one label
    assert reranker.model.activation_fn.__class__.__name__ == "Sigmoid"
    for (docs, scores), part in zip(ranked, (default[:4], default[4:])):
        assert len(docs) == 3 and scores == sorted(scores, reverse=True)
        assert scores == pytest.approx(sorted(logit(part.astype("float64")), reverse=True)[:3], abs=1e-4)


def write_datasets(path, split, rows):
    import datasets

    datasets.DatasetDict({split: datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


def test_benchmark_loaders_read_each_format(tmp_path):
    from scaledown.build.corpus import Problems, read_queries

    nq = write_datasets(tmp_path / "kilt_nq", "validation", [
        {"id": "n1", "input": "who sang x", "meta": {"left_context": ""},
         "output": [{"answer": "Ann", "provenance": [{"wikipedia_id": "1"}]}, {"answer": "", "provenance": []},
                    {"answer": "Ann B.", "provenance": []}]}])
    (tmp_path / "nq_open.jsonl").write_text(json.dumps({"question": "when was y", "answer": ["1960", "in 1960"]})
                                            + "\n")
    tqa = write_datasets(tmp_path / "trivia_qa", "validation", [
        {"question_id": "tc_1", "question": "Which z?", "question_source": "",
         "answer": {"value": "Zed", "aliases": ["Zed", "Zee"], "normalized_aliases": ["zed", "zee"]}}])
    hotpot = write_datasets(tmp_path / "hotpot_qa", "validation", [
        {"id": "h1", "question": "Both?", "answer": "yes", "type": "comparison", "level": "hard",
         "supporting_facts": {"title": ["A"], "sent_id": [0]}, "context": {"title": ["A"], "sentences": [["s"]]}}])
    (tmp_path / "asqa.jsonl").write_text(json.dumps(
        {"sample_id": "a1", "ambiguous_question": "Who won?", "wikipages": [], "annotations": [],
         "qa_pairs": [{"question": "q1", "short_answers": ["Kim", "K."]}, {"question": "q2",
                                                                          "short_answers": ["Lee", "Kim"]}]}) + "\n")
    (tmp_path / "popqa.jsonl").write_text(json.dumps(
        {"id": 7, "subj": "s", "prop": "occupation", "obj": "o", "question": "What is s's job?",
         "possible_answers": '["painter", "artist"]', "s_pop": 10}) + "\n")
    (tmp_path / "bioasq.json").write_text(json.dumps({"questions": [
        {"id": "b1", "body": "Gene?", "type": "factoid", "exact_answer": [["BRCA1", "brca-1"]], "ideal_answer": ["i"]},
        {"id": "b2", "body": "Which?", "type": "list", "exact_answer": [["a", "A"], ["b"]], "ideal_answer": ["i"]},
        {"id": "b3", "body": "Is it?", "type": "yesno", "exact_answer": "yes", "ideal_answer": ["i"]}]}))
    (tmp_path / "bergen.jsonl").write_text(json.dumps({"id": "g1", "content": "Q?", "label": ["x", "y"]}) + "\n")
    expected = {
        nq: ("n1", "who sang x", ["Ann", "Ann B."]),
        tmp_path / "nq_open.jsonl": ("0", "when was y", ["1960", "in 1960"]),
        tqa: ("tc_1", "Which z?", ["Zed", "Zed", "Zee"]),
        hotpot: ("h1", "Both?", ["yes"]),
        tmp_path / "asqa.jsonl": ("a1", "Who won?", ["Kim", "K.", "Lee"]),
        tmp_path / "popqa.jsonl": ("7", "What is s's job?", ["painter", "artist"]),
        tmp_path / "bergen.jsonl": ("g1", "Q?", ["x", "y"]),
    }
    for path, (qid, text, answers) in expected.items():
        problems = Problems()
        queries = read_queries(path, problems, split="validation")
        assert problems.counts == {}, problems.messages
        assert [(q.id, q.text, q.answers) for q in queries] == [(qid, text, answers)], path
    bio = read_queries(tmp_path / "bioasq.json", Problems())
    assert [(q.id, q.answers) for q in bio] == [("b1", ["BRCA1", "brca-1"]), ("b2", ["a, b", "A, b"]),
                                              ("b3", ["yes"])]
    with pytest.raises(SystemExit, match="splits \\['validation'\\]: choose one with --split"):
        read_queries(nq, Problems())
    (tmp_path / "odd.jsonl").write_text(json.dumps({"prompt": "?"}) + "\n" + json.dumps({"query": "ok"}) + "\n")
    problems = Problems()
    assert [q.text for q in read_queries(tmp_path / "odd.jsonl", problems)] == ["ok"]
    assert "odd.jsonl:1: fields ['prompt'] match none of the query formats" in problems.messages[0]


@pytest.fixture(scope="module")
def eval_export(tmp_path_factory):
    from scaledown.config import ModelConfig
    from scaledown.models.model import ScaleDownModel
    from scaledown.models.tiny import make_tiny_generator

    t = tmp_path_factory.mktemp("eval")
    generator = make_tiny_generator(t / "generator", hidden_size=32, num_layers=2, intermediate_size=64)
    torch.manual_seed(0)
    ScaleDownModel.build(ModelConfig(generator=str(generator), compressor_layers=1, dtype="float32",
                                     max_doc_tokens=16)).save_pretrained(t / "export")
    rows = [{"id": f"q{i}", "query": f"Who is number {i}?", "documents": [f"doc {i} {j}" for j in range(12)],
             "answer": f"teacher {i}", "gold_answers": [f"gold {i}", f"alias {i}"]} for i in range(5)]
    write_jsonl(rows, t / "eval.jsonl")
    return t


def test_eval_scores_against_gold_and_reports_teacher_agreement(eval_export, tmp_path):
    from scaledown.eval.cli import main as eval_main

    table = eval_main(["--model", str(eval_export / "export"), "--data", str(eval_export / "eval.jsonl"),
                       "--device", "cpu", "--max-new-tokens", "3", "--out", str(tmp_path / "out.json")])
    # The records' own answers are the teacher's: scored against gold they miss, and agree with themselves.
    assert table["teacher"]["accuracy"] == 0.0 and table["teacher"]["teacher_f1"] == 1.0
    assert set(table) == {"compressed", "teacher"} and "teacher_f1" in table["compressed"]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["predictions"][0]["gold"] == ["gold 0", "alias 0"]


def test_eval_reads_ten_documents_by_default(eval_export, monkeypatch):
    from scaledown.eval.cli import main as eval_main
    from scaledown.models.model import ScaleDownModel

    seen = []
    original = ScaleDownModel.generate
    monkeypatch.setattr(ScaleDownModel, "generate",
                        lambda self, q, d, **kw: seen.extend(map(len, d)) or original(self, q, d, **kw))
    eval_main(["--model", str(eval_export / "export"), "--data", str(eval_export / "eval.jsonl"),
               "--max-new-tokens", "2"])
    assert seen == [10] * 5


def test_eval_puts_the_model_on_the_requested_device(eval_export):
    from scaledown.eval.cli import load_model, setup_device

    rank, world, device = setup_device("cpu")
    assert (rank, world, device) == (0, 1, torch.device("cpu"))
    model = load_model(str(eval_export / "export"), None, torch.device("meta"), None)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda: no CUDA device"):
            setup_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_eval_runs_on_the_gpu(eval_export):
    from scaledown.eval.cli import load_model, main as eval_main

    model = load_model(str(eval_export / "export"), None, torch.device("cuda"), "bfloat16")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    table = eval_main(["--model", str(eval_export / "export"), "--data", str(eval_export / "eval.jsonl"),
                       "--max-new-tokens", "2", "--uncompressed", "--judge", str(eval_export / "generator")])
    assert all("judge" in row for row in table.values())


def test_judge_scores_batched_equal_one_by_one(eval_export):
    from scaledown.eval.judge import Judge

    judge = Judge(str(eval_export / "generator"), "cpu", batch_size=4)
    records = [Record(f"question {'long ' * i}?", ["d"], gold_answers=["g"]) for i in range(4)]
    preds = ["p", "a longer prediction here", "x", ""]
    batched = judge.scores(records, preds)
    judge.batch_size = 1
    single = judge.scores(records, preds)
    assert batched == pytest.approx(single, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in batched)
    assert "Correct, Partially correct, Wrong" in judge.prompt("q", ["g"], "p")


@pytest.mark.slow
def test_eval_under_torchrun_shards_records_and_gathers_the_same_table(eval_export, tmp_path):
    args = ["-m", "scaledown.eval", "--model", str(eval_export / "export"), "--data",
            str(eval_export / "eval.jsonl"), "--device", "cpu", "--max-new-tokens", "3", "--uncompressed"]
    outs = []
    for nproc in (1, 2):
        out = tmp_path / f"eval{nproc}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--rdzv_backend",
               "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}", *args, "--out", str(out)]
        run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_predict_under_torchrun_writes_the_same_answers_as_one_rank_and_as_python(eval_export, tmp_path):
    from scaledown.models.model import ScaleDownModel

    outs = []
    for nproc in (1, 2):
        out = tmp_path / f"answers{nproc}.jsonl"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--rdzv_backend",
               "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "-m", "scaledown.cli", "predict", "--model",
               str(eval_export / "export"), "--data", str(eval_export / "eval.jsonl"), "--device", "cpu",
               "--max-new-tokens", "3", "--batch-size", "2", "--num-documents", "4", "--out", str(out)]
        run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    rows = [json.loads(line) for line in outs[0].splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(5)]
    # The same answers from Python, several queries at once.
    model = ScaleDownModel.from_pretrained(eval_export / "export", dtype="float32").eval()
    records = [json.loads(line) for line in (eval_export / "eval.jsonl").read_text().splitlines()]
    answers = model.answer([r["query"] for r in records], [r["documents"][:4] for r in records], batch_size=2,
                           max_new_tokens=3)
    assert answers == [r["answer"] for r in rows]


def _shard_and_gather(rank, world, n):
    from scaledown.eval.evaluate import Ranks

    ranks = Ranks.of_process_group()
    index, counted = ranks.share(n)
    total = ranks.sum({"records": float(sum(counted)), "batches": float(len(index))})
    return ranks.map(list(range(n)), lambda share: [f"answer {i}" for i in share]), len(index), total


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_work_gathers_every_record_once_in_input_order_on_rank_zero(world):
    from spawn import run_ranks

    results = run_ranks(_shard_and_gather, world, 7)  # 7 records: padded to equal shares
    assert results[0][0] == [f"answer {i}" for i in range(7)]
    assert [r[0] for r in results[1:]] == [None] * (world - 1)
    # Every rank runs the same number of records (ZeRO-3's collective forwards), and each record counts once.
    assert len({r[1] for r in results}) == 1
    assert all(r[2]["records"] == 7 and r[2]["batches"] == results[0][1] * world for r in results)


def _evaluate_on_ranks(rank, world, generator, n):
    from scaledown.config import ModelConfig
    from scaledown.eval.evaluate import Ranks, evaluate
    from scaledown.models.model import ScaleDownModel
    from scaledown.build.synthetic import make_records

    torch.manual_seed(0)
    model = ScaleDownModel.build(ModelConfig(generator=generator, compressor_layers=2, dtype="float32",
                                             max_doc_tokens=32, max_answer_tokens=16)).eval()
    records = [validate_record(r, f"record {i}") for i, r in enumerate(make_records(n, seed=1))]
    result = evaluate(model, records, Ranks.of_process_group(),
                      ("compressed", "uncompressed", "no_documents"), batch_size=2, max_new_tokens=3,
                      num_documents=2, keep_rows=True)
    return result.metrics, result.rows


def test_evaluate_on_two_ranks_gives_one_ranks_metrics_and_rows(tiny_generator):
    """The one evaluate() of the loop and the commands: 5 records on 2 ranks (the share padded, the padding not
    counted) give the metrics and the per-record answers of one rank."""
    from spawn import run_ranks

    one = _evaluate_on_ranks(0, 1, tiny_generator, 5)
    (metrics, rows), (other_metrics, other_rows) = run_ranks(_evaluate_on_ranks, 2, tiny_generator, 5)
    assert rows == one[1] and len(rows) == 5 and other_rows is None
    assert set(metrics) == set(one[0]) == {"compressed", "uncompressed", "no_documents"}
    for system, values in one[0].items():
        assert {"ce_gold", "accuracy", "f1"} <= set(values)
        assert metrics[system] == pytest.approx(values, rel=1e-5), system
        assert other_metrics[system] == metrics[system]
