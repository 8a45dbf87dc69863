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
