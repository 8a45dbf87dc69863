"""SPLADE retrieval with sentence-transformers' SparseEncoder over an on-disk sparse index.

The index is a folder of shards: `shard-00000.npz` (a scipy CSR matrix, passages x vocabulary) and
`shard-00000.jsonl` (the passages, in row order), each written under a temporary name and renamed, so a killed
build redoes only unfinished shards. Search is exact: Q @ D^T as a sparse x sparse product (only passages that
share a term with the query are touched, as with an inverted index), then the top-k of each row.

Scale (the paper's Wikipedia-KILT, ~25M passages of 128 tokens): SPLADE passages keep ~200 non-zeros, so CSR
needs 25M x 200 x (4 B value + 4 B column) = 40 GB plus 0.2 GB of row pointers; it fits one large node's memory.
Encoding is the cost: at ~1,000 passages/s per A100 for a BERT-base SPLADE, 25M passages take ~7 GPU-hours,
split over the build's ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from scaledown.data.corpus import Passage
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


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_index(passages: Iterable[Passage], encoder, out_dir: str | Path, shard_size: int = 100_000,
                rank: int = 0, world_size: int = 1, batch_size: int = 64, progress: bool = False) -> list[int]:
    """Encode this rank's shards (shard j belongs to rank j % world_size); skip shards already on disk.

    Returns the shard numbers this call wrote."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for shard, chunk in enumerate(_batches(passages, shard_size)):
        matrix_file, text_file = out / f"shard-{shard:05d}.npz", out / f"shard-{shard:05d}.jsonl"
        if shard % world_size != rank or (matrix_file.exists() and text_file.exists()):
            continue
        vectors = encoder.encode_document([document_text(p.as_document()) for p in chunk],
                                          batch_size=batch_size, show_progress_bar=progress)
        tmp_text = text_file.with_name(text_file.name + ".tmp")
        tmp_text.write_text("".join(json.dumps(p.as_document(), ensure_ascii=False) + "\n" for p in chunk))
        tmp_matrix = out / f"shard-{shard:05d}.tmp.npz"
        sp.save_npz(tmp_matrix, to_csr(vectors), compressed=False)
        tmp_text.replace(text_file)
        tmp_matrix.replace(matrix_file)  # the matrix last: its presence marks the shard complete
        written.append(shard)
    return written


class SparseIndex:
    """All shards of an index folder, loaded for search."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        shards = sorted(folder.glob("shard-[0-9][0-9][0-9][0-9][0-9].npz"))
        if not shards:
            raise FileNotFoundError(f"{folder}: no index shards (shard-NNNNN.npz)")
        matrices = [sp.load_npz(s).tocsr() for s in shards]
        self.passages: list[dict] = []
        self.offsets = []
        for s in shards:
            self.offsets.append(len(self.passages))
            with open(s.with_suffix(".jsonl"), encoding="utf-8") as f:
                self.passages += [json.loads(line) for line in f]
        # One terms x passages matrix (the inverted index) for search; only this copy is kept in memory.
        self.matrix_t = sp.vstack(matrices, format="csr").T.tocsr()

    def __len__(self) -> int:
        return self.matrix_t.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.matrix_t.shape[0]

    def search(self, queries: sp.csr_matrix, k: int) -> list[list[tuple[int, float]]]:
        """Exact top-k (passage row, score) by sparse dot product, best first (ties: lower row first)."""
        scores = (queries @ self.matrix_t).tocsr()
        results = []
        for i in range(scores.shape[0]):
            start, end = scores.indptr[i], scores.indptr[i + 1]
            cols, vals = scores.indices[start:end], scores.data[start:end]
            keep = vals > 0
            cols, vals = cols[keep], vals[keep]
            if len(vals) > k:
                top = np.argpartition(-vals, k - 1)[:k]
                cols, vals = cols[top], vals[top]
            order = np.lexsort((cols, -vals))
            results.append([(int(cols[j]), float(vals[j])) for j in order])
        return results



def __getattr__(name):
    if name == "SPLADERetriever":  # the original ScaleDown code's import path (scaledown/compat.py)
        from scaledown.compat import SPLADERetriever

        return SPLADERetriever
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
