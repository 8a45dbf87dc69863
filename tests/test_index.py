"""Corpus blocks and the block index: byte spans that cover every line once with true line numbers, streamed
formats cut by document count, and a killed block build redoing only what is unfinished."""

import json
import os

import pytest

from scaledown.build.corpus import (Problems, byte_blocks, count_lines, document_blocks, read_corpus,
                                   splittable)


def write_corpus(path):
    lines = [json.dumps({"id": f"d{i}", "title": f"T{i}", "text": "word " * (i % 7 + 1)}) for i in range(40)]
    lines[7] = "{broken"
    lines[20] = ""  # a blank line is skipped, but still counted
    lines[33] = json.dumps({"id": "x", "text": 5})
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))  # a byte-order mark on line 1 is not data


@pytest.mark.parametrize("block_bytes", [1, 37, 300, 10_000])
def test_byte_blocks_read_every_document_once_with_true_line_numbers(tmp_path, block_bytes):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus)
    assert splittable(corpus)
    whole_problems = Problems()
    whole = list(read_corpus(corpus, whole_problems))
    spans = byte_blocks(corpus, block_bytes)
    assert spans[0][0] == 0 and spans[-1][1] == corpus.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no gap or overlap
    data = corpus.read_bytes()
    assert all(data[s - 1:s] == b"\n" for s, _ in spans[1:])  # each block starts at a line start
    problems, found, first = Problems(), [], 1
    for span in spans:
        found += read_corpus(corpus, problems, span=span, first_line=first)
        first += count_lines(corpus, span)
    assert found == whole and found[0][0] == "d0" and len(found) == 37
    assert problems.messages == whole_problems.messages == [
        f"{corpus}:8: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        f"{corpus}:34: fields 'id' and 'text' (a non-empty string) are required"]
    assert (len(spans) == 1) == (block_bytes == 10_000) and (block_bytes > 37 or len(spans) > 30)


def test_a_line_longer_than_a_block_is_read_once(tmp_path):
    corpus = tmp_path / "c.tsv"
    corpus.write_text("1\tshort\n2\t" + "long " * 200 + "\n3\tafter\n")
    spans = byte_blocks(corpus, 64)
    # Line 2 begins in block 0 and straddles the next 15 block starts, which all fall to line 3.
    assert len(spans) == 2
    problems = Problems()
    ids = [[doc_id for doc_id, _, _ in read_corpus(corpus, problems, span=span, first_line=first)]
           for span, first in zip(spans, (1, 3))]
    assert ids == [["1", "2"], ["3"]] and not problems.counts


def test_streamed_formats_are_cut_by_document_count_for_any_world_size(tmp_path):
    corpus = tmp_path / "list.json"
    corpus.write_text(json.dumps([{"id": str(i), "text": f"text {i}"} for i in range(11)], indent=1))
    assert not splittable(corpus)
    for world in (1, 2, 3):
        owned = {}
        for rank in range(world):
            for number, docs in document_blocks(read_corpus(corpus, Problems()), 4, rank, world):
                assert number % world == rank
                owned[number] = [d[0] for d in docs] if number != 1 else []  # block 1 left unread: skipped
        assert owned == {0: ["0", "1", "2", "3"], 1: [], 2: ["8", "9", "10"]}


def test_a_killed_block_is_redone_and_complete_blocks_are_kept(tmp_path):
    """A block folder still under its .tmp name (the build was killed while writing it) is rebuilt; finished
    blocks are neither read nor rewritten; the search sees exactly the complete blocks."""
    pytest.importorskip("sentence_transformers")
    from scaledown.build.corpus import Passage
    from scaledown.build.retrieval import SparseIndex, block_dir, build_index, load_sparse_encoder
    from scaledown.models.tiny import make_tiny_splade

    encoder = load_sparse_encoder(str(make_tiny_splade(tmp_path / "splade")), device="cpu")
    index_dir = tmp_path / "index"
    passages = [Passage(f"p{i}", "", f"the river {i} flows past bridge {i * 7}") for i in range(9)]
    assert build_index([(0, passages[:3]), (1, passages[3:6])], encoder, index_dir) == [0, 1]
    kept = {b: os.stat(block_dir(index_dir, b) / "inverted.data.npy").st_ino for b in (0, 1)}
    partial = block_dir(index_dir, 2).with_name("block-00002.tmp")
    partial.mkdir()
    (partial / "inverted.data.npy").write_bytes(b"half written")

    def never_read():
        raise AssertionError("a complete block was read again")
        yield

    blocks = [(0, never_read()), (1, never_read()), (2, passages[6:])]
    assert build_index(blocks, encoder, index_dir) == [2]
    assert not partial.exists()
    assert {b: os.stat(block_dir(index_dir, b) / "inverted.data.npy").st_ino for b in (0, 1)} == kept
    index = SparseIndex(index_dir)
    assert len(index) == 9 and [p.id for p in index.passages] == [p.id for p in passages]
    import shutil

    shutil.rmtree(block_dir(index_dir, 1))
    with pytest.raises(FileNotFoundError, match=r"blocks \[1\] are missing"):
        SparseIndex(index_dir)
