import json

import pytest

from scaledown.data.schema import DataError, load_records

GOOD = {"query": "who?", "documents": ["a", {"title": "T", "text": "b"}], "answer": "x",
        "reranking_scores": [1.0, 2]}


def write_lines(path, objs):
    path.write_bytes(b"".join(o if isinstance(o, bytes) else (json.dumps(o) + "\n").encode() for o in objs))
    return path


def test_good_records_load(tmp_path):
    recs = load_records(write_lines(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "q7"}]))
    assert recs[0].documents == ["a", "T\nb"] and recs[0].reranking_scores == [1.0, 2.0]
    assert recs[0].id == "1" and recs[1].id == "q7"


@pytest.mark.parametrize("bad, needle", [
    ({**GOOD, "query": "  "}, "field 'query': empty"),
    ({**GOOD, "query": 3}, "field 'query': expected a string"),
    ({**GOOD, "documents": []}, "field 'documents': no documents"),
    ({**GOOD, "documents": "abc"}, "field 'documents': expected a list"),
    ({**GOOD, "documents": ["a", 5]}, r"field 'documents\[1\]'"),
    ({**GOOD, "documents": ["a", {"title": "t"}]}, r"field 'documents\[1\].text': missing"),
    ({**GOOD, "reranking_scores": [1.0]}, "1 scores for 2 documents"),
    ({**GOOD, "reranking_scores": [1.0, "x"]}, "field 'reranking_scores'"),
    ({**GOOD, "answer": None}, "field 'answer': missing"),
    ({**GOOD, "answer": ["x"]}, "field 'answer': expected a string"),
    (b'{"query": "caf\xe9"}\n', "invalid UTF-8"),
    (b'{"query": \n', "invalid JSON"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_record_names_file_line_and_field(tmp_path, bad, needle):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, b"\n", bad])
    with pytest.raises(DataError, match=needle) as err:
        load_records(path)
    assert f"{path}:3" in str(err.value)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no records"):
        load_records(tmp_path / "empty.jsonl")


def test_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets folders need the data extra: pip install -e .[data]")
    rows = [{"query": "q1", "documents": ["d1", "d2"], "answer": "a1"},
            {"query": "", "documents": ["d1"], "answer": "a2"}]
    datasets.Dataset.from_list(rows[:1]).save_to_disk(str(tmp_path / "good"))
    assert load_records(tmp_path / "good")[0].documents == ["d1", "d2"]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"row 1: field 'query': empty"):
        load_records(tmp_path / "bad")


def test_json_list_training_file_is_read_and_errors_name_the_line(tmp_path):
    """The original ScaleDown code's train_data.json: a JSON list, here pretty-printed over several lines."""
    rows = [{"query": "q1", "documents": ["d1"], "answer": "a1"}, {"query": "q2", "documents": ["d2"], "answer": "a2"}]
    path = tmp_path / "train_data.json"
    path.write_text(json.dumps(rows, indent=2))
    assert [r.query for r in load_records(path)] == ["q1", "q2"]
    rows[1]["answer"] = 7
    path.write_text(json.dumps(rows, indent=2))
    second = 1 + json.dumps(rows, indent=2).split("\n").index("  {", 2)
    with pytest.raises(DataError, match=f"train_data.json:{second}: field 'answer'"):
        load_records(path)
    path.write_text('[{"query": "q1", "documents": ["d1"], "answer": "a1"},\n {"query": oops}]')
    with pytest.raises(DataError, match="train_data.json:2: invalid JSON"):
        load_records(path)


def test_corpus_formats_are_sniffed_from_content(tmp_path):
    from scaledown.build.corpus import Problems, read_corpus

    docs = [{"id": "a", "title": "A", "text": "alpha"}, {"id": "b", "title": "B", "text": "beta"}]
    (tmp_path / "list.json").write_text(json.dumps(docs, indent=1))
    (tmp_path / "lines.txt").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "kilt.json").write_text(json.dumps({"wikipedia_id": "a", "wikipedia_title": "A",
                                                    "text": ["A", "alpha"]}) + "\n")
    (tmp_path / "collection.txt").write_text("a\talpha\nb\tbeta\n")
    expected = {"list.json": ["a", "b"], "lines.txt": ["a", "b"], "kilt.json": ["a"], "collection.txt": ["a", "b"]}
    for name, ids in expected.items():
        problems = Problems()
        assert [d[0] for d in read_corpus(tmp_path / name, problems)] == ids, name
        assert not problems.counts, problems.messages
    (tmp_path / "prose.txt").write_text("just some prose\n")
    with pytest.raises(SystemExit, match="prose.txt: not a corpus format.*JSON list"):
        list(read_corpus(tmp_path / "prose.txt", Problems()))
