"""The embedded default source: Wikipedia pages from gensim's wheel, questions from fanoutqa's wheel."""

import importlib.util
import json

import pytest

from scaledown.build.embedded import answer_text


def test_answer_text_flattens_structured_answers():
    assert answer_text({"Pat Burrell": "Right", "JD Drew": "Left"}) == "Pat Burrell: Right; JD Drew: Left"
    assert answer_text(["a", 3, True]) == "a, 3, yes"
    assert answer_text(1998) == "1998"


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None or importlib.util.find_spec("fanoutqa") is None,
                    reason="gensim and fanoutqa carry the embedded corpus and questions: "
                           "launchers/setup.sh installs them")
def test_embedded_source_is_real_text(tmp_path):
    from scaledown.build.corpus import Problems, read_corpus, read_queries
    from scaledown.build.embedded import main

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


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None or importlib.util.find_spec("fanoutqa") is None,
                    reason="gensim and fanoutqa carry the embedded corpus and questions: "
                           "launchers/setup.sh installs them")
def test_embedded_build_gives_every_record_its_own_answer(tmp_path):
    """FanOutQA repeats question texts under different ids with different answers: the quick start's build
    (--teacher gold) must give each record the answer of its own id, never another query's."""
    import subprocess
    import sys
    from collections import Counter

    from launch import ROOT, cpu_env
    from scaledown.build.embedded import main
    from scaledown.data.schema import load_records
    from scaledown.models.tiny import make_tiny_cross_encoder, make_tiny_generator, make_tiny_splade

    main(["--out", str(tmp_path / "source"), "--eval", "10"])
    rows = [json.loads(line) for line in (tmp_path / "source" / "queries.jsonl").read_text().splitlines()]
    counts = Counter(r["query"] for r in rows)
    repeated = [r for r in rows if counts[r["query"]] > 1]
    assert len({r["answer"] for r in repeated}) > 1  # the hazard is real in this source
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in repeated))
    pages = (tmp_path / "source" / "corpus.jsonl").read_text().splitlines()[:20]
    (tmp_path / "corpus.jsonl").write_text("\n".join(pages) + "\n")
    generator = make_tiny_generator(tmp_path / "gen", hidden_size=32, num_layers=1, intermediate_size=64)
    cmd = [sys.executable, str(ROOT / "launchers" / "build_dataset.py"), "--corpus", str(tmp_path / "corpus.jsonl"),
           "--queries", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "data"), "--teacher", "gold",
           "--splade", str(make_tiny_splade(tmp_path / "splade")), "--cross-encoder",
           str(make_tiny_cross_encoder(tmp_path / "ce")), "--tokenizer", str(generator), "--quiet"]
    run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    own = {r["id"]: r["answer"] for r in repeated}
    built = load_records(tmp_path / "data" / "dataset.jsonl")
    assert len(built) == len(repeated)
    assert [r.id for r in built if r.answer != own[r.id]] == []
