"""Approximate top-k for learned sparse retrieval at scale: Seismic (`pip install pyseismic-lsr`), behind the build's
`--search seismic`. The exact search of scaledown/build/retrieval.py stays the default and the reference:
`benchmarks/scale.py --stage approx` reports recall@k of this backend against it.

Seismic prunes each posting list to its `n_postings` heaviest entries, clusters them into blocks with summary
vectors, and skips blocks whose summary cannot beat the current top-k (`heap_factor`). Its index is built once from
the index blocks (rank 0, saved as `seismic-raw.index` next to them) and loaded by every rank: unlike the exact index it
lives in each rank's memory (Seismic has no memory-mapped form), so run one search rank per node, or few, with it.
The raw index is used (term ids and passage rows as integers, no string maps): it is built from Seismic's binary
input format, written block by block to a temporary file next to the index (8 bytes per non-zero) and removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from scaledown.build.retrieval import SparseIndex


def _require():
    try:
        import seismic
    except ImportError:
        raise SystemExit("--search seismic needs pyseismic-lsr: pip install pyseismic-lsr") from None
    return seismic


def seismic_rows(matrix: sp.csr_matrix) -> np.ndarray:
    """Passage rows in Seismic's binary input format, as little-endian 32-bit words: per row its number of
    non-zeros, its term ids ascending, then their float32 weights (the file starts with the number of rows)."""
    matrix = matrix.tocsr(copy=True)
    matrix.sum_duplicates()  # Seismic needs each row's term ids strictly ascending
    lens = np.diff(matrix.indptr)
    out = np.empty(matrix.shape[0] + 2 * matrix.nnz, dtype="<u4")
    starts = np.arange(matrix.shape[0]) + 2 * matrix.indptr[:-1]
    out[starts] = lens
    terms_at = np.repeat(starts + 1, lens) + np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], lens)
    out[terms_at] = matrix.indices
    out[terms_at + np.repeat(lens, lens)] = matrix.data.astype("<f4").view("<u4")
    return out


class SeismicSearch:
    """Approximate `search(queries_csr, k)` over the passages of a SparseIndex, same (row, score) results."""

    def __init__(self, index: SparseIndex, path: str | Path, n_postings: int = 4000, centroid_fraction: float = 0.1,
                 summary_energy: float = 0.4, query_cut: int = 20, heap_factor: float = 0.7, build: bool = True):
        seismic = _require()
        self.path, self.query_cut, self.heap_factor = Path(path), query_cut, heap_factor
        if not self.path.exists():
            if not build:
                raise FileNotFoundError(f"{self.path}: no Seismic index (rank 0 builds it)")
            rows = self.path.with_name(self.path.name + ".input.tmp")
            try:
                with open(rows, "wb") as f:
                    np.array([len(index)], dtype="<u4").tofile(f)
                    for inverted in index.matrices:  # one block at a time: passages x terms
                        seismic_rows(sp.csr_matrix(inverted).T).tofile(f)
                built = seismic.SeismicIndexRaw.build(str(rows), n_postings=n_postings,
                                                      centroid_fraction=centroid_fraction,
                                                      summary_energy=summary_energy)
            finally:
                rows.unlink(missing_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            built.save(str(tmp))
            saved = Path(str(tmp) + ".index.seismic") if not tmp.exists() else tmp  # save() may add a suffix
            saved.replace(self.path)
        self.index = seismic.SeismicIndexRaw.load(str(self.path))

    def search(self, queries: sp.csr_matrix, k: int) -> list[list[tuple[int, float]]]:
        queries = queries.tocsr(copy=True)
        queries.sum_duplicates()  # Seismic refuses unsorted term ids and miscounts repeated ones
        results = []
        for i in range(queries.shape[0]):
            lo, hi = queries.indptr[i], queries.indptr[i + 1]
            found = self.index.search(queries.indices[lo:hi].astype(np.int32),
                                      queries.data[lo:hi].astype(np.float32), k, self.query_cut, self.heap_factor,
                                      0, True) if hi > lo else []
            # Best first, ties by row, as the exact search orders them.
            results.append(sorted(((int(row), float(score)) for score, row in found), key=lambda h: (-h[1], h[0])))
        return results
