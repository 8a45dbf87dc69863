"""SPLADE retrieval with sentence-transformers' SparseEncoder over a memory-mapped, columnar index on disk.

The index is a folder of blocks, one per block of the corpus (scaledown/build/corpus.py), each a folder
`block-00000/` written as `block-00000.tmp/` and renamed when complete, so a killed build redoes only
unfinished blocks:
  inverted.indptr.npy  int64 [vocab + 1]  the block's inverted index: term-major CSR, offsets of each term's postings
  inverted.rows.npy    int32 [nnz]        passage rows within the block, ascending within a term
  inverted.data.npy    float32 [nnz]      SPLADE weights
  passages.arrow       Arrow IPC file of (id, title, text) in row order
  meta.json            passages, non-zeros, vocabulary size, bad corpus lines read for the block
Only the term-major (inverted) matrix is kept: search reads postings by term, and the passage-major matrix is its
transpose should an approximate backend need it. float32, not float16: the encoder's weights are float32, and
scores must equal the former in-memory index (float16's 11-bit mantissa reorders near-ties); it would save a
quarter of 8 bytes per non-zero. 32-bit rows and per-block int64 offsets: a block holds far fewer than 2^31
non-zeros, while the whole index (25M x 200 = 5e9) would overflow 32-bit offsets.

Search memory-maps every block (`np.load(mmap_mode="r")`, `pa.memory_map`): nothing is copied into the process, so
the ranks of a node share one copy in the page cache, and only the postings of the query terms are read. Each rank
searches its own query chunks against all blocks: per query and block, the postings of the query's terms summed into
a dense score vector over the block's passages, its top-k kept, then merged over blocks, ties broken by global
passage row, so the result is the same exact top-k as one matrix over the whole corpus, whatever the number of ranks
or blocks. The alternative, each rank searching every query against its own blocks and merging partial top-k lists
across ranks, does the same postings work in total but turns every chunk into a collective step (no rank can resume
its chunks alone). Measured with the first (sparse-product) search on Zipf vectors (benchmarks/scale.py --stage
search --vectors zipf, 1M synthetic passages, 238 non-zeros each, 10 blocks, 2 ranks, k = 50): a rank's half of the
queries over every block costs 56.5 ms per query, every query over half the blocks 26.2 ms plus 0.05 ms to merge, so
per rank 64 x 56.5 = 3.6 s against 128 x 26.3 = 3.4 s: 7% less work for the split, paid for with a collective per
chunk. Memory does not tell them apart on one node (both map the blocks they search; 2 ranks' unique memory 0.32 GiB
in all against 1.93 GiB for one rank alone). The split would win where a node's page cache cannot hold the whole
index (60 GB at 25M passages, text included).

Scale (the paper's Wikipedia-KILT, ~25M passages of 128 tokens): SPLADE passages keep ~200 non-zeros, so the
postings take 25M x 200 x 8 B = 40 GB on disk and in a node's page cache (not per rank), the passages ~20 GB.
Encoding is the cost: at ~1,000 passages/s per A100 for a BERT-base SPLADE, 25M passages take ~7 GPU-hours,
split over the build's ranks.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.sparse as sp
import torch

from scaledown.build.corpus import Passage, Problems
from scaledown.data.schema import document_text


def to_csr(vectors: torch.Tensor, vocab_size: int | None = None) -> sp.csr_matrix:
    """A torch sparse (or dense) [n, vocab] tensor as a float32 scipy CSR matrix."""
    vocab_size = vocab_size or vectors.shape[1]
    if vectors.is_sparse:
        vectors = vectors.coalesce().cpu()
        rows, cols = vectors.indices().numpy()
        values = vectors.values().float().numpy()
        return sp.csr_matrix((values, (rows, cols)), shape=(vectors.shape[0], vocab_size), dtype=np.float32)
    return sp.csr_matrix(vectors.float().cpu().numpy())


def load_sparse_encoder(name_or_path: str, device: str | None = None, trust_remote_code: bool = False):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(name_or_path, device=device, trust_remote_code=trust_remote_code)


BLOCK = re.compile(r"block-(\d{5})")


def block_dir(out_dir: str | Path, number: int) -> Path:
    return Path(out_dir) / f"block-{number:05d}"


def write_block(out_dir: str | Path, number: int, passages: list[Passage], matrix: sp.csr_matrix,
                bad_lines: int = 0) -> Path:
    """One complete block from its passages and their [passages x vocab] matrix; the rename marks it done."""
    import pyarrow as pa

    final = block_dir(out_dir, number)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed build
    tmp.mkdir(parents=True)
    inverted = matrix.T.tocsr()  # term-major; tocsr sorts the rows within each term
    np.save(tmp / "inverted.indptr.npy", inverted.indptr.astype(np.int64))
    np.save(tmp / "inverted.rows.npy", inverted.indices.astype(np.int32))
    np.save(tmp / "inverted.data.npy", inverted.data.astype(np.float32))
    table = pa.table({"id": [p.id for p in passages], "title": [p.title for p in passages],
                      "text": [p.text for p in passages]})
    with pa.OSFile(str(tmp / "passages.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    meta = {"passages": len(passages), "nnz": int(matrix.nnz), "vocab_size": matrix.shape[1], "bad_lines": bad_lines}
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.replace(tmp, final)
    return final


def build_index(blocks: Iterable[tuple[int, Iterable[Passage]]], encoder, out_dir: str | Path,
                problems: Problems | None = None, batch_size: int = 64, progress: bool = False) -> list[int]:
    """Encode and write each (block number, passages) not yet on disk; a block already there is not read. The
    bad corpus lines met while reading a block's passages are recorded in its meta.json.

    Returns the block numbers this call wrote."""
    problems = problems or Problems()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for number, passages in blocks:
        if block_dir(out_dir, number).exists():
            continue
        before = problems.counts.get("bad_line", 0)
        passages = list(passages)  # one block: ~100k passages for 64 MiB of corpus
        matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        if passages:
            vectors = encoder.encode_document([document_text(p.as_document()) for p in passages],
                                              batch_size=batch_size, show_progress_bar=progress)
            matrix = to_csr(vectors)
        write_block(out_dir, number, passages, matrix, problems.counts.get("bad_line", 0) - before)
        written.append(number)
    return written


def block_metas(folder: str | Path) -> list[dict]:
    """meta.json of every complete block, in block order; an error if a block number is missing."""
    found = sorted((int(m.group(1)), d) for d in Path(folder).iterdir() if (m := BLOCK.fullmatch(d.name)))
    if [n for n, _ in found] != list(range(len(found))):
        missing = sorted(set(range(found[-1][0] + 1)) - {n for n, _ in found})
        raise FileNotFoundError(f"{folder}: index blocks {missing[:10]} are missing")
    return [json.loads((d / "meta.json").read_text()) | {"folder": d} for _, d in found]


def repeated_documents(folder: str | Path, limit: int = 10) -> list[str]:
    """Document ids indexed more than once (a corpus with one id on two lines), first `limit` of them. Each
    document's first passage is `<id>-0`; only the id columns of the blocks are read (Arrow, memory-mapped)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = []
    for meta in block_metas(folder):
        column = pa.ipc.open_file(pa.memory_map(str(meta["folder"] / "passages.arrow"))).read_all()["id"]
        ids.append(pc.filter(column, pc.ends_with(column, "-0")))
    if not ids:
        return []
    counts = pc.value_counts(pa.chunked_array(ids, pa.string()))
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    return [i[:-2] for i in repeated.to_pylist()[:limit]]


class Passages(Sequence):
    """The passages of an index by global row, read from the memory-mapped Arrow files on demand."""

    def __init__(self, index: SparseIndex):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row: int) -> Passage:
        if not 0 <= row < len(self):
            raise IndexError(row)
        b = bisect.bisect_right(self.index.starts, row) - 1
        rec = self.index.tables[b].slice(row - self.index.starts[b], 1).to_pylist()[0]
        return Passage(rec["id"], rec["title"], rec["text"])


class SparseIndex:
    """All blocks of an index folder, memory-mapped for search."""

    def __init__(self, folder: str | Path):
        import pyarrow as pa

        metas = [m for m in block_metas(folder) if m["passages"]]
        if not metas:
            raise FileNotFoundError(f"{folder}: no index blocks with passages (block-NNNNN/)")
        vocab = {m["vocab_size"] for m in metas}
        if len(vocab) > 1:
            raise ValueError(f"{folder}: blocks of different vocabulary sizes {sorted(vocab)}")
        self._vocab_size = vocab.pop()
        self.starts, self.matrices, self.tables = [], [], []
        total = 0
        for m in metas:
            d = m["folder"]
            arrays = [np.load(d / f"inverted.{name}.npy", mmap_mode="r") for name in ("data", "rows", "indptr")]
            # copy=False: scipy keeps the mapped rows and data (only the small indptr may be cast to int32).
            self.matrices.append(sp.csr_matrix(tuple(arrays), shape=(self._vocab_size, m["passages"]), copy=False))
            self.tables.append(pa.ipc.open_file(pa.memory_map(str(d / "passages.arrow"))).read_all())
            self.starts.append(total)
            total += m["passages"]
        self._len = total
        self.passages = Passages(self)

    def __len__(self) -> int:
        return self._len

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def search(self, queries: sp.csr_matrix, k: int, blocks: Iterable[int] | None = None
               ) -> list[list[tuple[int, float]]]:
        """Exact top-k (passage row, score) by sparse dot product, best first (ties: lower row first). `blocks`
        (positions in this index) restricts the search, for measuring a split of the index.

        One query at a time: its terms' posting lists gathered from each block and summed into a dense score
        vector (float32, terms in the query's order: the same bits as the sparse x sparse product Q @ D_b^T, which
        builds a hash of every candidate: 2.3x slower at 100k and 3.4x at 1M SPLADE-fit passages, 1.9x at 400k
        Zipf ones; benchmarks/scale.py --stage approx)."""
        queries = queries.tocsr()
        if queries.shape[1] != self.vocab_size:
            raise ValueError(f"query vectors of width {queries.shape[1]} for an index of {self.vocab_size} terms")
        blocks = range(len(self.matrices)) if blocks is None else list(blocks)  # read once per query
        results = []
        for i in range(queries.shape[0]):
            lo, hi = queries.indptr[i], queries.indptr[i + 1]
            terms, weights = queries.indices[lo:hi], queries.data[lo:hi].astype(np.float32)
            parts = [dense_top_k(weights @ self.matrices[b][terms], k, self.starts[b]) for b in blocks]
            rows, vals = (np.concatenate(x) for x in zip(*parts)) if parts else (np.empty(0, int), np.empty(0))
            rows, vals = top_k(rows, vals, k)
            results.append([(int(r), float(v)) for r, v in zip(rows, vals)])
        return results


def dense_top_k(scores: np.ndarray, k: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """top_k of one block's dense score vector (rows counted from `offset`): a partition finds the k-th best, and
    only rows scoring at least that (and above 0) are sorted."""
    kth = np.partition(scores, len(scores) - k)[len(scores) - k] if len(scores) > k else 0.0
    rows = np.flatnonzero(scores >= kth) if kth > 0 else np.flatnonzero(scores > 0)
    return top_k(rows.astype(np.int64) + offset, scores[rows], k)


def top_k(rows: np.ndarray, vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best positive (row, value) pairs, best first, ties by lower row: every value equal to the k-th
    best is kept for the sort, so which of the tied rows survive never depends on the order they came in."""
    keep = vals > 0
    rows, vals = rows[keep], vals[keep]
    if len(vals) > k:
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        keep = vals >= kth
        rows, vals = rows[keep], vals[keep]
    order = np.lexsort((rows, -vals))[:k]
    return rows[order].astype(np.int64), vals[order]
