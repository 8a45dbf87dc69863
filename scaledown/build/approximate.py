"""Approximate top-k for learned sparse retrieval at scale: Seismic (`pip install pyseismic-lsr`), behind the build's
`--search seismic`. The exact search of scaledown/build/retrieval.py stays the default and the reference:
`benchmarks/scale.py --stage approx` reports recall@k of this backend against it.

Seismic prunes each posting list to its `n_postings` heaviest entries, clusters them into blocks with summary
vectors, and skips blocks whose summary cannot beat the current top-k (`heap_factor`). Its index is built once from
the index blocks (rank 0, saved as `seismic.index` next to them) and loaded by every rank: unlike the exact index it
lives in each rank's memory (Seismic has no memory-mapped form), so run one search rank per node, or few, with it.
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


class SeismicSearch:
    """Approximate `search(queries_csr, k)` over the passages of a SparseIndex, same (row, score) results."""

    def __init__(self, index: SparseIndex, path: str | Path, n_postings: int = 4000, centroid_fraction: float = 0.1,
                 summary_energy: float = 0.4, query_cut: int = 20, heap_factor: float = 0.7, build: bool = True):
        seismic = _require()
        self.path, self.query_cut, self.heap_factor = Path(path), query_cut, heap_factor
        self._string = seismic.get_seismic_string()
        if not self.path.exists():
            if not build:
                raise FileNotFoundError(f"{self.path}: no Seismic index (rank 0 builds it)")
            dataset = seismic.SeismicDataset()
            for start, inverted in zip(index.starts, index.matrices):
                rows = sp.csr_matrix(inverted).T.tocsr()  # one block at a time: passages x terms
                for r in range(rows.shape[0]):
                    lo, hi = rows.indptr[r], rows.indptr[r + 1]
                    dataset.add_document(str(start + r), self._terms(rows.indices[lo:hi]),
                                         np.asarray(rows.data[lo:hi], dtype=np.float32))
            built = seismic.SeismicIndex.build_from_dataset(dataset, n_postings=n_postings,
                                                            centroid_fraction=centroid_fraction,
                                                            summary_energy=summary_energy)
            tmp = self.path.with_name(self.path.name + ".tmp")
            built.save(str(tmp))
            saved = Path(str(tmp) + ".index.seismic") if not tmp.exists() else tmp  # save() may add a suffix
            saved.replace(self.path)
        self.index = seismic.SeismicIndex.load(str(self.path))

    def _terms(self, ids: np.ndarray) -> np.ndarray:
        return np.array([str(t) for t in ids], dtype=self._string)

    def search(self, queries: sp.csr_matrix, k: int) -> list[list[tuple[int, float]]]:
        queries = queries.tocsr()
        ids = np.array([str(i) for i in range(queries.shape[0])], dtype=self._string)
        terms, values = [], []
        for i in range(queries.shape[0]):
            lo, hi = queries.indptr[i], queries.indptr[i + 1]
            terms.append(self._terms(queries.indices[lo:hi]))
            values.append(np.asarray(queries.data[lo:hi], dtype=np.float32))
        found = self.index.batch_search(ids, terms, values, k, self.query_cut, self.heap_factor)
        by_query = {hits[0][0]: hits for hits in found if hits}  # results come back in any order
        # Best first, ties by row, as the exact search orders them.
        return [sorted(((int(doc), float(score)) for _, score, doc in by_query.get(str(i), [])),
                       key=lambda h: (-h[1], h[0])) for i in range(queries.shape[0])]
