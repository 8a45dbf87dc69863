"""Nothing wrong passes silently: records, special-token strings in data, config values, queries files."""

import json

import pytest
import torch

from scaledown.config import ConfigError, load_config
from scaledown.data.collate import IGNORE_INDEX, PLACEHOLDER_TOKEN
from scaledown.build.corpus import Problems, read_corpus, read_queries
from scaledown.data.schema import DataError, Record, load_records


def write_lines(path, rows, prefix=b""):
    path.write_bytes(prefix + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path


ROW = {"query": "q", "documents": ["d"], "answer": "a"}


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [{**ROW, "id": "x"}, {**ROW, "id": "y"}, {**ROW, "id": "x"}])
    with pytest.raises(DataError, match=r"t.jsonl:3: field 'id': 'x' repeats the record at .*t.jsonl:1"):
        load_records(path)
    same = write_lines(tmp_path / "same.jsonl", [ROW, ROW])  # verbatim duplicates without ids: lines 1 and 2
    assert [r.id for r in load_records(same)] == ["1", "2"]
    # Two files built apart, then concatenated: their line-number ids repeat; the error says what to do instead.
    merged = write_lines(tmp_path / "merged.jsonl", [{**ROW, "id": "1"}, {**ROW, "id": "1"}])
    with pytest.raises(DataError, match=r"'1' repeats the record .*build all the queries in one sharded command"):
        load_records(merged)


@pytest.mark.parametrize("rid", [None, "", "  ", True, 1.5, ["a"]])
def test_null_empty_and_non_scalar_ids_are_refused(tmp_path, rid):
    path = write_lines(tmp_path / "t.jsonl", [{**ROW, "id": rid}])
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'id': expected a non-empty string or an integer"):
        load_records(path)


def test_lone_surrogates_are_refused_with_file_line_and_field(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"query": "bad \\ud800 query", "documents": ["d"], "answer": "a"}\n')
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'query': invalid Unicode"):
        load_records(tmp_path / "t.jsonl")
    (tmp_path / "d.jsonl").write_text('{"query": "q", "documents": ["ok", "x\\udfff"], "answer": "a"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'documents\[1\]': invalid Unicode"):
        load_records(tmp_path / "d.jsonl")
    (tmp_path / "q.jsonl").write_text('{"id": "1", "query": "x\\ud800"}\n{"id": "2", "query": "fine"}\n')
    problems = Problems()
    assert [q.id for q in read_queries(tmp_path / "q.jsonl", problems)] == ["2"]
    assert "q.jsonl:1: field 'query': invalid Unicode" in problems.messages[0]


def test_a_byte_order_mark_is_not_data(tmp_path):
    bom = "\ufeff".encode()
    assert len(load_records(write_lines(tmp_path / "t.jsonl", [ROW, ROW], prefix=bom))) == 2
    (tmp_path / "q.txt").write_bytes(bom + b"first question\nsecond question\n")
    assert [q.text for q in read_queries(tmp_path / "q.txt", Problems())] == ["first question", "second question"]
    (tmp_path / "c.tsv").write_bytes(bom + b"d1\tfirst passage\n")
    assert [d[0] for d in read_corpus(tmp_path / "c.tsv", Problems())] == ["d1"]


def test_duplicate_query_ids_name_the_id_and_both_lines(tmp_path):
    (tmp_path / "q.tsv").write_text("a\tone\nb\ttwo\na\tthree\n")
    with pytest.raises(SystemExit, match=r"q.tsv:3: query id 'a' repeats the query at .*q.tsv:1"):
        read_queries(tmp_path / "q.tsv", Problems())


def test_gold_answers_of_any_json_type_become_strings_or_are_reported(tmp_path):
    rows = [{"id": "1", "query": "q1", "answer": ["a", "b"]}, {"id": "2", "query": "q2", "answer": 1960},
            {"id": "3", "query": "q3", "answer": {"x": 1}}, {"id": "4", "query": "q4", "answer": [["n", 2]]}]
    problems = Problems()
    queries = read_queries(write_lines(tmp_path / "q.jsonl", rows), problems)
    assert [(q.id, q.answers) for q in queries] == [("1", ["a", "b"]), ("2", ["1960"]), ("4", ["n", "2"])]
    assert "q.jsonl:3: format plain: answers: expected a string, a number or a list of them, got dict" \
        in problems.messages[0]


def test_empty_documents_become_masked_slots(model_config):
    from scaledown.models.model import ScaleDownModel

    model = ScaleDownModel.build(model_config(num_memory_tokens=2))
    batch = model.collator(num_documents=3)([Record("q", ["real", "", "   "], answer="a")])
    assert batch["doc_mask"].tolist() == [[True, False, False]]
    placeholders = batch["gen_input_ids"][0] == model.placeholder_id
    visible = batch["gen_attention_mask"][0].bool() & placeholders
    assert int(placeholders.sum()) == 6 and int(visible.sum()) == 2


def special_strings_of(tok):
    from scaledown.data.prompts import special_strings

    return special_strings(tok)


@pytest.mark.parametrize("compressor", ["n_layers", "encoder"])
def test_special_token_strings_in_data_stay_text(model_config, tiny_encoder, compressor):
    """Every special token of both tokenizers, inside a document, a query and an answer: no special id from
    the data reaches the compressor rows, the generator prompt or the labels."""
    from scaledown.models.model import ScaleDownModel

    model = ScaleDownModel.build(model_config(compressor=compressor, encoder=tiny_encoder, rerank=True,
                                              num_memory_tokens=2))
    tok, ctok = model.tokenizer, model.compressor_tokenizer
    strings = sorted(set(special_strings_of(tok)) | set(special_strings_of(ctok)))
    assert {"<MEM0>", "<MEM1>", "<RR>", PLACEHOLDER_TOKEN, "</s>", "<s>", "<pad>"} <= set(strings)
    poison = " ".join(strings)
    clean = model.collator(num_documents=2)([Record("q", ["d", "e"], answer="a")])
    batch = model.collator(num_documents=2)([Record(f"q {poison}", [f"d {poison}", "e"], answer=f"a {poison}")])
    for key, t in (("comp_input_ids", ctok), ("gen_input_ids", tok)):
        special = torch.tensor(sorted(set(t.all_special_ids) | set(t.added_tokens_encoder.values())))
        for row_clean, row in zip(clean[key], batch[key]):
            count = lambda r: torch.isin(r, special).sum() - (r == t.pad_token_id).sum()  # noqa: E731
            assert count(row) == count(row_clean), (key, t.decode(row))
    labels = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert (labels == tok.eos_token_id).sum() == 1 and labels[-1] == tok.eos_token_id
    assert tok.decode(labels[:-1]) == f"a {poison}"[: len(tok.decode(labels[:-1]))]


def test_teacher_prompt_keeps_special_strings_as_text(tiny_generator):
    from scaledown.build.teacher import HFTeacher

    teacher = HFTeacher(tiny_generator)
    tok = teacher.tokenizer
    ids = teacher.prompt("who </s> <s>?", [{"title": "", "text": "doc <pad> </s>"}])
    clean = teacher.prompt("who?", [{"title": "", "text": "doc"}])
    specials = set(tok.all_special_ids)
    assert sum(i in specials for i in ids) == sum(i in specials for i in clean)
    assert "who </s> <s>?" in tok.decode(ids) and "doc <pad> </s>" in tok.decode(ids)


@pytest.mark.parametrize("override, message", [
    ("--train.max_steps=-5", "train.max_steps=-5: must be a number >= 0"),
    ("--train.output_dir=", "train.output_dir is empty"),
    ("--optim.eps=-1e-8", "optim.eps=-1e-08: must be > 0"),
    ("--optim.weight_decay=-0.1", "optim.weight_decay=-0.1: must be a number >= 0"),
    ("--optim.max_grad_norm=-1", "optim.max_grad_norm=-1.0: must be a number >= 0"),
    ("--train.save_every=-2", "train.save_every=-2: must be a number >= 0"),
    ("--train.eval_every=-1", "train.eval_every=-1: must be a number >= 0"),
    ("--optim.betas=[2, 3]", r"optim.betas=\[2.0, 3.0\]: expected two numbers in \[0, 1\)"),
    ("--model.rerank_weight=-1", "model.rerank_weight=-1.0: must be a number >= 0"),
    ("--data.num_workers=-1", "data.num_workers=-1: must be a number >= 0"),
    ("--train.resume_changes=maybe", "train.resume_changes='maybe': expected refuse or allow"),
])
def test_config_values_out_of_range_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_paths_are_named_before_any_model_loads(tmp_path):
    train = write_lines(tmp_path / "t.jsonl", [ROW])
    cfg = load_config(None, [f"--data.train_path={train}", f"--model.generator={tmp_path}/no/such/model",
                             "--engine.backend=torch"])
    with pytest.raises(ConfigError, match=r"model.generator=.*/no/such/model: no such file or folder"):
        cfg.check_paths()
    cfg = load_config(None, [f"--data.train_path={tmp_path}/missing.jsonl", "--engine.backend=torch"])
    with pytest.raises(ConfigError, match="data.train_path=.*missing.jsonl: no such file or folder"):
        cfg.check_paths()
    with pytest.raises(ConfigError, match="data.train_path is empty"):
        load_config(None, ["--engine.backend=torch"]).check_paths()
    # A hub id is left to the hub (it may be cached); only path-like names must exist here.
    load_config(None, [f"--data.train_path={train}", "--engine.backend=torch"]).check_paths()


def test_a_tab_inside_tsv_text_is_reported_not_cut(tmp_path):
    """Corpus and query TSVs: a third column means a TAB in the text; the line is reported with its number."""
    problems = Problems()
    corpus = tmp_path / "collection.tsv"
    corpus.write_text("1\tfirst passage\n2\tsecond\tpassage with a tab\n3\tthird\n")
    assert [d[0] for d in read_corpus(corpus, problems)] == ["1", "3"]
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\twho wrote it?\nq2\twhere is\tthe tab?\n")
    assert [(q.id, q.text) for q in read_queries(queries, problems)] == [("q1", "who wrote it?")]
    assert problems.messages == [
        f"{corpus}:2: expected 2 TAB-separated columns (id, text), found 3 (a TAB inside the text?)",
        f"{queries}:2: expected 2 TAB-separated columns (qid, query), found 3 (a TAB inside the text?)"]


def test_an_empty_queries_file_says_so(tmp_path):
    empty = tmp_path / "queries.tsv"
    empty.write_text("\n\n")
    with pytest.raises(SystemExit, match=r"queries.tsv: no queries in this file$"):
        read_queries(empty, Problems())
    broken = tmp_path / "broken.tsv"
    broken.write_text("only-one-column\n")
    with pytest.raises(SystemExit, match=r"broken.tsv: no queries in this file; 1 bad lines, first: .*broken.tsv:1"):
        read_queries(broken, Problems())


def test_a_local_looking_model_path_is_checked_before_any_download(tmp_path, monkeypatch):
    from scaledown.build.pipeline import check_model_paths, parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    train = write_lines(tmp_path / "t.jsonl", [ROW])
    cfg = load_config(None, [f"--data.train_path={train}", "--model.generator=runs/nope", "--engine.backend=torch"])
    with pytest.raises(ConfigError, match=r"model.generator=runs/nope: no such file or folder"):
        cfg.check_paths()
    args = parser().parse_args(["--corpus", "c.jsonl", "--out", "o", "--teacher", "runs/teacher"])
    with pytest.raises(SystemExit, match=r"--teacher runs/teacher: no such file or folder"):
        check_model_paths(args)
    # Hub ids (no such folder here) are left to the hub.
    check_model_paths(parser().parse_args(["--corpus", "c.jsonl", "--out", "o", "--cross-encoder", ""]))


def test_the_arrow_cache_follows_content_and_a_damaged_one_is_rebuilt(tmp_path, capsys):
    import os

    from scaledown.data.mapped import open_records

    rows = [{**ROW, "id": f"r{i}", "answer": f"a{i}"} for i in range(70)]
    path = write_lines(tmp_path / "t.jsonl", rows)
    first = open_records(path)
    stat = path.stat()
    # Replaced by another file of the same size and timestamp: a new cache, not the stale one.
    write_lines(path, [{**r, "answer": r["answer"].replace("a", "b")} for r in rows])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    second = open_records(path)
    assert second.path != first.path and second[5].answer == "b5" and first.fingerprint != second.fingerprint
    # A truncated cache is found at open, named, and rebuilt.
    data = second.path.read_bytes()
    second.path.write_bytes(data[: len(data) // 2])
    third = open_records(path)
    assert f"{second.path}: unreadable" in capsys.readouterr().err
    assert third.path == second.path and len(third) == 70 and third[69].answer == "b69"


def test_a_resume_on_changed_training_content_is_refused(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from launch import make_run_inputs
    from scaledown.train import train

    inputs = make_run_inputs(tmp_path, n_train=16)
    args = inputs + ["--engine.backend=torch", "--model.compressor_layers=1", "--model.dtype=float32",
                     "--model.rerank=false", "--train.global_batch_size=4", "--train.micro_batch_size=4",
                     "--data.eval_path=", f"--train.output_dir={tmp_path / 'run'}"]
    train(load_config(None, args + ["--train.max_steps=2"]))
    data = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["answer"] = "another answer"  # same path, same record count, other content
    write_lines(data, rows)
    with pytest.raises(ConfigError, match=r"training data content \(.*train.jsonl\): fingerprint \w+ -> \w+"):
        train(load_config(None, args + ["--train.max_steps=3"]))
    assert train(load_config(None, args + ["--train.max_steps=3", "--train.resume_changes=allow"]))["steps"] == 3


def test_budgets_beyond_the_context_length_are_refused_at_start_up(tmp_path, tiny_generator):
    from transformers import AutoConfig

    from scaledown.train import check_context

    context = AutoConfig.from_pretrained(tiny_generator).max_position_embeddings
    train = write_lines(tmp_path / "t.jsonl", [ROW])
    base = [f"--data.train_path={train}", f"--model.generator={tiny_generator}", "--engine.backend=torch"]
    with pytest.raises(ConfigError, match=rf"the compressor's rows need at least {context + 74} tokens .* context of "
                                          rf"{context}"):
        cfg = load_config(None, base + [f"--model.max_doc_tokens={context + 1}"])
        check_context(cfg, AutoConfig.from_pretrained(tiny_generator))
    with pytest.raises(ConfigError, match=r"the generator's rows need"):
        cfg = load_config(None, base + [f"--model.max_answer_tokens={context}"])
        check_context(cfg, AutoConfig.from_pretrained(tiny_generator))
    check_context(load_config(None, base), AutoConfig.from_pretrained(tiny_generator))
