"""The embedded default source: Wikipedia pages from gensim's wheel, questions from fanoutqa's wheel."""

import importlib.util
import json

import pytest

from scaledown.data.embedded import answer_text


def test_answer_text_flattens_structured_answers():
    assert answer_text({"Pat Burrell": "Right", "JD Drew": "Left"}) == "Pat Burrell: Right; JD Drew: Left"
    assert answer_text(["a", 3, True]) == "a, 3, yes"
    assert answer_text(1998) == "1998"


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None or importlib.util.find_spec("fanoutqa") is None,
                    reason="gensim and fanoutqa carry the embedded corpus and questions: "
                           "launchers/setup.sh installs them")
def test_embedded_source_is_real_text(tmp_path):
    from scaledown.data.corpus import Problems, read_corpus, read_queries
    from scaledown.data.embedded import main

    main(["--out", str(tmp_path), "--eval", "10"])
    problems = Problems()
    docs = list(read_corpus(tmp_path / "corpus.jsonl", problems))
    titles = {title for _, title, _ in docs}
    assert len(docs) > 50 and "Anarchism" in titles and problems.counts == {}
    assert not any(text.upper().startswith("#REDIRECT") or "'''" in text for _, _, text in docs)
    queries = read_queries(tmp_path / "queries.jsonl", problems)
    held_out = read_queries(tmp_path / "eval_queries.jsonl", problems)
    assert len(queries) > 1000 and len(held_out) == 10 and all(q.answers for q in queries + held_out)
    assert not {q.id for q in queries} & {q.id for q in held_out}
    first = json.loads((tmp_path / "queries.jsonl").read_text().splitlines()[0])
    assert first["query"].endswith("?")
