"""Sparse-index retrieval vs brute-force dense-vocabulary scoring, side by side, and how both grow with the corpus.

The dense baseline is what the implementation this project replaces did: a [passages x vocab] dense matrix times
the query vector. Encoding a large corpus with SPLADE is too slow on a CPU, so vectors are synthetic with
SPLADE-like statistics: ~200 non-zeros per passage, ~30 per query, Zipf-distributed term ids over a
30,522-term vocabulary, positive weights.

    python benchmarks/retrieval.py --sizes 10000 30000 100000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scaledown.build.corpus import Passage  # noqa: E402
from scaledown.build.retrieval import SparseIndex, write_block  # noqa: E402

VOCAB = 30522


def zipf_sparse(rows: int, nnz: int, rng: np.random.Generator, a: float = 1.1) -> sp.csr_matrix:
    """Rows of about `nnz` distinct Zipf-distributed term ids with positive weights."""
    ranks = rng.zipf(a, size=(rows, nnz * 6)) - 1  # draws repeat terms: oversample, keep nnz distinct
    perm = rng.permutation(VOCAB)  # frequent terms spread over the vocabulary
    indptr, indices = [0], []
    for r in range(rows):
        terms = np.unique(perm[ranks[r][ranks[r] < VOCAB] % VOCAB])[:nnz]
        indices.append(terms)
        indptr.append(indptr[-1] + len(terms))
    indices = np.concatenate(indices)
    data = rng.gamma(2.0, 0.5, size=len(indices)).astype(np.float32)
    return sp.csr_matrix((data, indices, np.array(indptr)), shape=(rows, VOCAB))


def index_from(matrix: sp.csr_matrix, folder: Path) -> SparseIndex:
    """The matrix as a one-block on-disk index (passages without text), memory-mapped."""
    write_block(folder, 0, [Passage(str(i), "", "") for i in range(matrix.shape[0])], matrix)
    return SparseIndex(folder)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--dense-queries", type=int, default=8, help="dense scoring is slow: fewer queries")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--max-dense-gib", type=float, default=13.0, help="skip the dense baseline above this size")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    queries = zipf_sparse(args.queries, 30, rng)
    print(f"{'passages':>9} {'nnz/psg':>7} {'index MiB':>9} {'sparse q/s':>11} {'dense q/s':>10} {'speed-up':>8}")
    for n in args.sizes:
        docs = zipf_sparse(n, 200, rng)
        folder = Path(tempfile.mkdtemp(prefix="retrieval-bench-"))
        index = index_from(docs, folder)
        index_mib = (docs.data.nbytes + docs.indices.nbytes + docs.indptr.nbytes) / 2**20
        start = time.perf_counter()
        hits = index.search(queries, args.k)
        sparse_qps = args.queries / (time.perf_counter() - start)
        dense_gib = n * VOCAB * 4 / 2**30
        dense_qps = float("nan")
        if dense_gib <= args.max_dense_gib:
            dense = docs.toarray()
            qd = queries[: args.dense_queries].toarray()
            start = time.perf_counter()
            for i in range(args.dense_queries):
                scores = dense @ qd[i]
                top = np.argpartition(-scores, args.k)[: args.k]
            dense_qps = args.dense_queries / (time.perf_counter() - start)
            # Same answer: the dense top-k scores equal the sparse ones.
            assert np.allclose(np.sort(scores[top])[::-1][: len(hits[args.dense_queries - 1])],
                               [s for _, s in hits[args.dense_queries - 1]], rtol=1e-4)
            del dense
        del index
        shutil.rmtree(folder)
        print(f"{n:>9} {docs.nnz / n:>7.0f} {index_mib:>9.1f} {sparse_qps:>11.1f} {dense_qps:>10.2f} "
              f"{sparse_qps / dense_qps:>8.0f}x")
    per_passage = (docs.nnz / n) * 8 + 4
    print(f"25M passages: CSR index ~{25e6 * per_passage / 2**30:.0f} GiB (values + column ids + row pointers), "
          f"dense matrix {25e6 * VOCAB * 4 / 2**40:.1f} TiB")


if __name__ == "__main__":
    main()
