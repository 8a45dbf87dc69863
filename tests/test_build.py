"""The dataset build: exact sparse retrieval, rank-count independence, SIGKILL + restart, bad input."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from launch import ROOT, cpu_env, free_port, kill_tree

pytest.importorskip("sentence_transformers", reason="the dataset build needs the data extra: pip install -e .[data]")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from scaledown.build.synthetic import make_records
    from scaledown.models.tiny import make_tiny_cross_encoder, make_tiny_generator, make_tiny_splade

    t = tmp_path_factory.mktemp("build")
    models = {"splade": make_tiny_splade(t / "splade"), "ce": make_tiny_cross_encoder(t / "ce"),
              "teacher": make_tiny_generator(t / "teacher", hidden_size=32, num_layers=2, intermediate_size=64)}
    records = make_records(30, seed=0, same_relation=False)  # distinct passages: the backends are compared
    docs = [{"id": f"d{i}-{j}", "title": d["title"], "text": d["text"]}
            for i, r in enumerate(records) for j, d in enumerate(r["documents"])]
    (t / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs) + "{broken\n")
    (t / "queries.tsv").write_text("".join(f"q{i}\t{r['query']}\n" for i, r in enumerate(records)) + "no tab\n")
    return t, models


def args_for(t, models, out, **extra):
    args = ["--corpus", str(t / "corpus.jsonl"), "--queries", str(t / "queries.tsv"), "--out", str(out),
            "--splade", str(models["splade"]), "--cross-encoder", str(models["ce"]), "--teacher",
            str(models["teacher"]), "--max-new-tokens", "6", "--chunk-size", "4", "--block-bytes", "3000",
            "--retrieve-k", "8", "--k", "3", "--quiet"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def run_build(nproc, args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"127.0.0.1:{free_port()}", str(ROOT / "launchers" / "build_dataset.py"), *args]
    run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def test_sparse_search_is_exactly_the_brute_force_top_k(tmp_path):
    """Memory-mapped blocks of uneven size (one empty), searched whole or block by block, give the dense top-k;
    tied scores come out by global row whatever block they sit in."""
    from scaledown.build.corpus import Passage
    from scaledown.build.retrieval import SparseIndex, write_block

    rng = np.random.default_rng(0)
    vocab, sizes = 300, [40, 0, 47, 54]
    dense = (rng.random((sum(sizes), vocab)) < 0.05) * rng.random((sum(sizes), vocab), dtype=np.float32)
    dense[43] = dense[5]  # a tie across blocks: rows 5 (block 0) and 43 (block 2) score the same for every query
    starts = np.cumsum([0] + sizes)
    for b in range(len(sizes)):
        write_block(tmp_path, b, [Passage(f"{b}-{i}", "", "") for i in range(sizes[b])],
                    sp.csr_matrix(dense[starts[b]:starts[b + 1]]))
    index = SparseIndex(tmp_path)
    assert (len(index), index.vocab_size) == (sum(sizes), vocab)
    queries = (rng.random((20, vocab)) < 0.1) * rng.random((20, vocab), dtype=np.float32)
    queries[0] = dense[5]  # the tied pair is this query's best
    queries[19] = 0  # a query with no terms finds nothing
    queries = sp.csr_matrix(queries)
    without_last = dense.copy()
    without_last[starts[3]:] = 0
    for k in (1, 5, 17, 60):  # 60: more than a block holds
        # the whole index, then its first two non-empty blocks (block positions 0 and 1: empty blocks are skipped)
        for hits, matrix in ((index.search(queries, k), dense), (index.search(queries, k, [0, 1]), without_last)):
            for qi in range(20):
                scores = matrix @ queries[qi].toarray().ravel()  # brute force
                positive = np.flatnonzero(scores > 0)
                expected = sorted(positive, key=lambda i: (-scores[i], i))[:k]
                assert [row for row, _ in hits[qi]] == expected
                np.testing.assert_allclose([s for _, s in hits[qi]], scores[expected], rtol=1e-5)
    assert [row for row, _ in index.search(queries, 2)[0]] == [5, 43] and index.search(queries, 5)[19] == []
    assert index.passages[43].id == "2-3" and index.passages[40 + 47].id == "3-0"


def test_splade_index_matches_dense_scoring(setup, tmp_path):
    from scaledown.build.corpus import Passage
    from scaledown.build.retrieval import SparseIndex, build_index, load_sparse_encoder, to_csr

    _, models = setup
    encoder = load_sparse_encoder(str(models["splade"]), device="cpu")
    passages = [Passage(f"p{i}", "", f"the river {i} flows past bridge number {i * 7}") for i in range(25)]
    blocks = [(b, passages[start:start + 10]) for b, start in enumerate(range(0, 25, 10))]
    assert build_index(blocks, encoder, tmp_path) == [0, 1, 2]
    assert build_index(blocks, encoder, tmp_path) == []  # resume: nothing left to do
    index = SparseIndex(tmp_path)
    q = encoder.encode_query(["which bridge is on the river"])
    dense = encoder.encode_document([p.text for p in passages]).to_dense() @ q.to_dense()[0]
    hits = index.search(to_csr(q, index.vocab_size), 5)[0]
    assert [row for row, _ in hits] == torch.argsort(dense, descending=True, stable=True)[:5].tolist()


@pytest.mark.slow
def test_one_two_and_three_ranks_build_the_same_dataset(setup):
    """Several corpus blocks (--block-bytes 3000), each read by one rank only: the index, the retrieved documents
    and their scores are the same at every world size."""
    t, models = setup
    run_build(1, args_for(t, models, t / "one"))
    run_build(2, args_for(t, models, t / "two"))
    run = run_build(3, args_for(t, models, t / "three"))
    one = (t / "one" / "dataset.jsonl").read_text()
    assert one == (t / "two" / "dataset.jsonl").read_text() == (t / "three" / "dataset.jsonl").read_text()
    from scaledown.build.corpus import byte_blocks

    blocks = len(byte_blocks(t / "corpus.jsonl", 3000))
    assert blocks > 3 and len(list((t / "three" / "index").glob("block-?????"))) == blocks  # > 1 block per rank
    rows = [json.loads(line) for line in one.splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(30)]
    assert all(len(r["documents"]) == 3 and len(r["reranking_scores"]) == 3 for r in rows)
    assert all(r["reranking_scores"] == sorted(r["reranking_scores"], reverse=True) for r in rows)
    stats = json.loads((t / "three" / "stats.json").read_text())
    assert stats["queries"] == 30 and stats["records"] + stats["failures"] == 30
    assert stats["bad_input_lines"] == 2  # one corpus line, one query line, each reported with file:line
    assert "corpus.jsonl:151: invalid JSON" in run.stderr or "corpus.jsonl:151" in run.stdout + run.stderr
    from scaledown.data.schema import load_records
    assert len(load_records(t / "three" / "dataset")) == stats["records"]  # the Arrow copy loads for training


def test_approximate_search_backend_against_exact(setup, tmp_path):
    """--search seismic: the same build through Seismic; its retrieval mostly agrees with the exact one (a
    build-level smoke test; recall at size is measured by benchmarks/scale.py --stage approx)."""
    pytest.importorskip("seismic", reason="--search seismic needs pyseismic-lsr: pip install -e .[approx]")
    t, models = setup
    exact_dir = t / "one"
    if not (exact_dir / "dataset.jsonl").exists():
        run_build(1, args_for(t, models, exact_dir))
    run_build(1, args_for(t, models, tmp_path / "approx", search="seismic", index=exact_dir / "index"))
    assert (exact_dir / "index" / "seismic-raw.index").exists()
    exact = {r["id"]: r for r in map(json.loads, (exact_dir / "dataset.jsonl").read_text().splitlines())}
    approx = {r["id"]: r for r in map(json.loads, (tmp_path / "approx" / "dataset.jsonl").read_text().splitlines())}
    assert set(approx) == set(exact)
    same = [len({d["text"] for d in approx[q]["documents"]} & {d["text"] for d in exact[q]["documents"]}) / 3
            for q in exact]
    assert sum(same) / len(same) >= 0.8, same


@pytest.mark.slow
def test_killed_build_restarts_without_losing_or_redoing_chunks(setup):
    t, models = setup
    out = t / "killed"
    cmd = [sys.executable, str(ROOT / "launchers" / "build_dataset.py"),
           *args_for(t, models, out, max_new_tokens=24)]
    proc = subprocess.Popen(cmd, env=cpu_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((out / "chunks").glob("chunk-*.jsonl"))) < 2:
        assert proc.poll() is None and time.time() < deadline, "build ended before it could be killed"
        time.sleep(0.1)
    kill_tree(proc.pid)
    proc.wait()
    done = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (out / "chunks").glob("chunk-*.jsonl")}
    assert 2 <= len(done) < 8 and not (out / "dataset.jsonl").exists()
    run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{len(done)} already done" in run.stderr
    for name, stamp in done.items():
        p = out / "chunks" / name
        assert (p.stat().st_mtime_ns, p.stat().st_ino) == stamp, f"{name} was rebuilt"
    ids = [json.loads(line)["id"] for line in (out / "dataset.jsonl").read_text().splitlines()]
    ids += [json.loads(line)["id"] for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(30))


class StandInTeacher:
    """A recording stand-in, to check our failure handling only: fails on queries containing 'explode'."""

    def answer(self, items):
        if any("explode" in q.text for q, _ in items):
            if len(items) > 1:
                raise RuntimeError("batch failed")
            raise RuntimeError("out of memory")
        return [f"answer to {q.text}" for q, _ in items]


def test_per_query_failures_are_recorded_not_fatal(setup, tmp_path):
    from scaledown.build.pipeline import merge, process_chunk
    from scaledown.build.corpus import Passage, Problems, Query
    from scaledown.build.retrieval import SparseIndex, build_index, load_sparse_encoder

    _, models = setup
    encoder = load_sparse_encoder(str(models["splade"]), device="cpu")
    build_index([(0, [Passage(f"p{i}", "T", f"passage {i} text") for i in range(6)])], encoder, tmp_path / "index")
    index = SparseIndex(tmp_path / "index")

    class Args:
        retrieve_k, k = 4, 2

    queries = [Query("a", "first question"), Query("b", "explode now"), Query("c", "third question")]
    lines = process_chunk(queries, encoder, index, None, StandInTeacher(), Args)
    assert [line["id"] for line in lines] == ["a", "b", "c"]
    assert lines[1]["failed"].startswith("teacher error: out of memory")
    assert lines[0]["answer"] == "answer to first question" and len(lines[2]["documents"]) == 2
    (tmp_path / "chunks").mkdir()
    (tmp_path / "chunks" / "chunk-000000.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    stats = merge(tmp_path, ["a", "b", "c"], Problems())
    assert (stats["records"], stats["failures"], stats["failure_reasons"]) == (2, 1, {"teacher error": 1})
    with pytest.raises(RuntimeError, match="1 queries missing"):
        merge(tmp_path, ["a", "b", "c", "d"], Problems())
    (tmp_path / "chunks" / "chunk-000001.jsonl").write_text(json.dumps(lines[0]) + "\n")
    with pytest.raises(RuntimeError, match="appears twice"):
        merge(tmp_path, ["a", "b", "c"], Problems())


def test_readers_report_bad_lines_with_file_and_line(tmp_path):
    from scaledown.build.corpus import Problems, read_corpus, read_queries

    kilt = tmp_path / "kilt.jsonl"
    kilt.write_text(json.dumps({"wikipedia_id": "12", "wikipedia_title": "Anarchism",
                                "text": ["Anarchism\n", "Anarchism is a philosophy.\n", "It rejects rulers.\n"]}) +
                    "\n" + json.dumps({"wikipedia_id": "13", "text": "not a list"}) + "\n")
    tsv = tmp_path / "collection.tsv"
    tsv.write_bytes(b"7\tsome passage\nbroken\n8\tcaf\xe9\n")
    problems = Problems()
    assert list(read_corpus(kilt, problems)) == [("12", "Anarchism", "Anarchism is a philosophy.\nIt rejects rulers.")]
    assert list(read_corpus(tsv, problems)) == [("7", "", "some passage")]
    assert problems.counts == {"bad_line": 3}
    assert problems.messages == [f"{kilt}:2: field 'text': expected a list of paragraphs",
                                 f"{tsv}:2: expected 2 TAB-separated columns (id, text), found 1",
                                 f"{tsv}:3: invalid UTF-8 at byte 5"]
    queries = tmp_path / "q.txt"
    queries.write_text("first\n\nsecond\n")
    assert [(q.id, q.text) for q in read_queries(queries, problems)] == [("q.txt:1", "first"), ("q.txt:3", "second")]
    # The dataset guide's split-and-merge: two chunks of one list, read apart, give distinct ids.
    (tmp_path / "chunk_1.txt").write_text("third\n")
    assert read_queries(tmp_path / "chunk_1.txt", problems)[0].id == "chunk_1.txt:1"


def test_chunking_respects_the_token_budget_with_stable_ids():
    from scaledown.build.corpus import chunk_passages
    from scaledown.models.tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    text = " ".join(f"word{i}" for i in range(300))
    passages = list(chunk_passages([("doc", "Title", text)], tok, max_tokens=64))
    assert [p.id for p in passages] == [f"doc-{i}" for i in range(len(passages))] and len(passages) > 3
    for p in passages:
        assert len(tok(f"{p.title}\n{p.text}", add_special_tokens=False)["input_ids"]) <= 64 + 2
    assert list(chunk_passages([("doc", "Title", text)], tok, max_tokens=64))[1].text == passages[1].text


def test_eval_set_build_from_a_benchmark_folder_keeps_gold_aliases_by_id(setup, tmp_path):
    """A KILT-NQ `datasets` folder with --split validation: 10 documents by default, gold aliases per query id
    (two ids with the same question keep their own answers), raw cross-encoder logits with the model's name."""
    import datasets

    from scaledown.data.schema import load_records
    from scaledown.build.synthetic import make_records

    t, models = setup
    records = make_records(6, seed=0)
    rows = [{"id": f"nq{i}", "input": r["query"], "output": [{"answer": r["answer"]}, {"answer": f"alt {i}"}]}
            for i, r in enumerate(records)]
    rows.append({"id": "nq-dup", "input": records[0]["query"], "output": [{"answer": "another answer"}]})
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "nq"))
    common = ["--corpus", str(t / "corpus.jsonl"), "--splade", str(models["splade"]), "--cross-encoder",
              str(models["ce"]), "--tokenizer", str(models["teacher"]), "--chunk-size", "4", "--block-bytes", "3000",
              "--quiet"]
    run_build(1, common + ["--queries", str(tmp_path / "nq"), "--split", "validation", "--teacher", "none",
                           "--out", str(tmp_path / "eval")])
    built = {r.id: r for r in load_records(tmp_path / "eval" / "dataset.jsonl", require_answer=False)}
    assert set(built) == {f"nq{i}" for i in range(6)} | {"nq-dup"}
    for i in range(6):
        rec = built[f"nq{i}"]
        assert rec.gold_answers == [records[i]["answer"], f"alt {i}"] and rec.answer is None
        assert len(rec.documents) == 10 and rec.extra["reranking_model"] == str(models["ce"])
    assert built["nq-dup"].gold_answers == ["another answer"]
    # --teacher gold: the training answer is the query's own first alias, looked up by id, not by text.
    run_build(1, common + ["--queries", str(tmp_path / "nq"), "--split", "validation", "--teacher", "gold",
                           "--index", str(tmp_path / "eval" / "index"), "--out", str(tmp_path / "gold")])
    gold = {r.id: r for r in load_records(tmp_path / "gold" / "dataset.jsonl")}
    assert gold["nq0"].answer == records[0]["answer"] and gold["nq-dup"].answer == "another answer"
    assert all(len(r.documents) == 10 for r in gold.values())


def run_build_expecting_failure(args, timeout=600):
    cmd = [sys.executable, str(ROOT / "launchers" / "build_dataset.py"), *args]
    run = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode != 0, run.stdout[-2000:]
    return run.stderr


def test_restarts_redo_what_changed_and_refuse_other_settings(setup, tmp_path):
    """Edited queries (same ids) are rebuilt, not kept; another k or corpus is refused with the difference
    named until --force-rebuild; a corpus with no good passage and a build whose every query fails exit non-zero
    without marking anything complete."""
    t, models = setup
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"q{i}\twhat is the capital of place {i}\n" for i in range(6)))
    args = args_for(t, models, tmp_path / "out", k=2)
    args[args.index("--queries") + 1] = str(queries)
    run_build(1, args)
    queries.write_text(queries.read_text().replace("place 4", "the river"))
    run = run_build(1, args)
    assert "1 of them redone" in run.stderr and "1 already done" in run.stderr
    rows = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "out" / "dataset.jsonl").read_text().split("\n")
            if x}
    assert rows["q4"]["query"] == "what is the capital of the river"
    k3 = [a if a != "2" or args[i - 1] != "--k" else "3" for i, a in enumerate(args)]
    err = run_build_expecting_failure(k3)
    assert "build.json: this build was made with other settings" in err and "k: 2 -> 3" in err
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text((t / "corpus.jsonl").read_text() + json.dumps({"id": "new", "text": "new text"}) + "\n")
    other = [str(corpus) if a == str(t / "corpus.jsonl") else a for a in args]
    err = run_build_expecting_failure(other)
    assert "index/FINGERPRINT.json: this index was made with other settings" in err and "corpus.size" in err
    run_build(1, other + ["--force-rebuild"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('[{"id": "1", "title": "t, no text"},\n 5]\n')
    empty = [str(bad) if a == str(t / "corpus.jsonl") else a for a in args]
    empty[empty.index("--out") + 1] = str(tmp_path / "empty")
    err = run_build_expecting_failure(empty)
    assert "bad.jsonl: no good passages (2 bad lines)" in err and "bad.jsonl:1: fields 'id' and 'text'" in err
    assert "bad.jsonl:2: expected a JSON object" in err
    assert not (tmp_path / "empty" / "index" / "COMPLETE").exists()
    failing = [a for a in args if a != str(models["teacher"])]
    failing[failing.index("--teacher") + 1: failing.index("--teacher") + 1] = ["gold"]
    failing += ["--tokenizer", str(models["teacher"])]
    failing[failing.index("--out") + 1] = str(tmp_path / "fails")
    err = run_build_expecting_failure(failing)  # text queries have no gold answers
    assert "every query failed" in err


def test_a_document_id_on_two_lines_is_refused_with_both_lines_named(setup, tmp_path):
    t, models = setup
    lines = (t / "corpus.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    corpus = tmp_path / "corpus.jsonl"  # the repeat lands in another byte block (--block-bytes 3000)
    corpus.write_text("\n".join(lines + [json.dumps({**first, "text": "another text under the same id"})]) + "\n")
    args = args_for(t, models, tmp_path / "out")
    args[args.index("--corpus") + 1] = str(corpus)
    err = run_build_expecting_failure(args)
    assert f"document id {first['id']!r} on {corpus}:1, {corpus}:{len(lines) + 1}" in err, err[-2000:]
    assert not (tmp_path / "out" / "index" / "COMPLETE").exists()


def test_seismic_input_rows_hold_lengths_sorted_terms_and_weights():
    """Seismic's binary input format, per row: its length, its term ids ascending, their float32 weights."""
    from scaledown.build.approximate import seismic_rows

    matrix = sp.csr_matrix((np.array([0.5, 2.0, 1.5], dtype=np.float32), np.array([7, 3, 1]), np.array([0, 2, 2, 3])),
                           shape=(3, 10))  # row 0 holds terms 7 and 3 out of order; row 1 is empty
    words = seismic_rows(matrix)
    assert words.dtype == np.dtype("<u4") and words.tolist()[:3] == [2, 3, 7]
    assert words[3:5].view("<f4").tolist() == [2.0, 0.5]
    assert words[5:].tolist()[:3] == [0, 1, 1] and words[8:].view("<f4").tolist() == [1.5]
