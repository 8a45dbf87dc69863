"""SPLADE-like synthetic vectors whose statistics are fit to a real SPLADE model's output, for search at scale.

A search's cost is set by the posting lists its query terms open, so synthetic passages must have real SPLADE's
term frequencies: a Zipf draw puts the most frequent terms in nearly every passage, which real SPLADE vectors are
trained to avoid (their FLOPS regularizer), and makes pruning backends look far worse than they are.

`fit_profile` encodes the Wikipedia passages the embedded default ships (gensim's sample, cut into 128-token
passages) and the FanOutQA questions with SPLADE-tiny (the preset's `splade/`) and keeps: each term's document
frequency, the mean and spread of its log-weight, the number of non-zeros per passage, and the real query vectors.
`passage_rows` draws passages from that profile; searches use the real query vectors.

    python benchmarks/splade_like.py            # fit (cached in .cache/splade_profile.npz) and print the fit
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROFILE = ROOT / ".cache" / "splade_profile.npz"


def fit_profile(path: Path = PROFILE, splade: Path | None = None, max_tokens: int = 128) -> dict[str, np.ndarray]:
    """The profile of SPLADE-tiny's (or `splade`'s) vectors on the embedded Wikipedia passages and FanOutQA
    questions, cached at `path` with the model and passage length it was fit with (another pair refits)."""
    from scaledown.models.presets import smollm2

    source = str(Path(splade or smollm2()["splade"]).resolve())
    if path.exists():
        with np.load(path) as f:
            if "source" in f and str(f["source"]) == source and int(f["max_tokens"]) == max_tokens:
                return dict(f)
    from scaledown.build.corpus import chunk_passages
    from scaledown.build.embedded import fanoutqa_questions, wikipedia_pages
    from scaledown.build.retrieval import load_sparse_encoder, to_csr
    from scaledown.data.schema import document_text

    encoder = load_sparse_encoder(source, device="cpu")
    pages = [(p["id"], p["title"], p["text"]) for p in wikipedia_pages()]
    passages = list(chunk_passages(pages, encoder.tokenizer, max_tokens))
    docs = to_csr(encoder.encode_document([document_text(p.as_document()) for p in passages], batch_size=64))
    queries = to_csr(encoder.encode_query([q["query"] for q in fanoutqa_questions()], batch_size=64))
    docs.eliminate_zeros()
    queries.eliminate_zeros()
    vocab = docs.shape[1]
    df = np.bincount(docs.indices, minlength=vocab) / docs.shape[0]
    logs = np.log(docs.data.astype(np.float64))
    count = np.bincount(docs.indices, minlength=vocab)
    mean = np.bincount(docs.indices, weights=logs, minlength=vocab) / np.maximum(count, 1)
    var = np.bincount(docs.indices, weights=logs ** 2, minlength=vocab) / np.maximum(count, 1) - mean ** 2
    # Terms seen fewer than 3 times borrow the spread (and, if unseen, the mean) of all weights.
    rare = count < 3
    mean[count == 0] = logs.mean()
    std = np.sqrt(np.where(rare, logs.var(), np.maximum(var, 0.0)))
    profile = {"df": df, "log_mean": mean, "log_std": std, "nnz": np.diff(docs.indptr),
               "q_indptr": queries.indptr, "q_indices": queries.indices, "q_data": queries.data,
               "passages": np.array(docs.shape[0]), "source": np.array(source), "max_tokens": np.array(max_tokens)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **profile)
    tmp.replace(path)
    return profile


def query_rows(profile: dict[str, np.ndarray]) -> sp.csr_matrix:
    """The real SPLADE query vectors of the FanOutQA questions."""
    indptr = profile["q_indptr"]
    return sp.csr_matrix((profile["q_data"], profile["q_indices"], indptr),
                         shape=(len(indptr) - 1, len(profile["df"])))


def passage_rows(rows: int, profile: dict[str, np.ndarray], rng: np.random.Generator) -> sp.csr_matrix:
    """`rows` synthetic passages: each draws its number of non-zeros from the real ones, its terms from the
    real document frequencies, and each term's weight from that term's real log-normal fit.

    Terms are drawn with replacement and repeats dropped: with m draws per passage, a term's draw probability
    p = 1 - (1 - df)^(1/m) makes a passage hold it with its real frequency df, and m is the one where these p sum
    to 1. Terms never seen in the fit get half a passage's worth of frequency, so a large corpus keeps a rare tail."""
    df = np.minimum(np.maximum(profile["df"], 0.5 / int(profile["passages"])), 0.999)
    lo, hi = 1.0, 1e5  # sum(p) falls as m grows: bisect for sum(p) = 1
    for _ in range(60):
        m = (lo * hi) ** 0.5
        lo, hi = (m, hi) if (1.0 - (1.0 - df) ** (1.0 / m)).sum() > 1.0 else (lo, m)
    p = 1.0 - (1.0 - df) ** (1.0 / m)
    p /= p.sum()
    nnz = profile["nnz"]
    counts = np.maximum(np.rint(rng.choice(nnz, size=rows) * m / nnz.mean()).astype(np.int64), 1)
    terms = rng.choice(len(p), size=int(counts.sum()), p=p).astype(np.int32)
    row_of = np.repeat(np.arange(rows), counts)
    # A passage holds a term once: sort by (row, term) so repeats sit side by side, and keep the first.
    order = np.lexsort((terms, row_of))
    terms, row_of = terms[order], row_of[order]
    keep = np.ones(len(terms), dtype=bool)
    keep[1:] = (terms[1:] != terms[:-1]) | (row_of[1:] != row_of[:-1])
    terms, row_of = terms[keep], row_of[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=rows))])
    weights = np.exp(profile["log_mean"][terms] + profile["log_std"][terms] * rng.standard_normal(len(terms)))
    return sp.csr_matrix((weights.astype(np.float32), terms, indptr), shape=(rows, len(p)))


def compare(profile: dict[str, np.ndarray], rows: int = 20_000, seed: int = 0) -> dict[str, float]:
    """How well `passage_rows` reproduces the profile: non-zeros per passage, the document frequency of the most
    frequent terms, and the postings a real query opens per passage (the search's work)."""
    synth = passage_rows(rows, profile, np.random.default_rng(seed))
    synth_df = np.bincount(synth.indices, minlength=synth.shape[1]) / rows
    top = np.argsort(-profile["df"])[:100]
    q = query_rows(profile)

    def postings_per_passage(df):  # expected postings a query opens, per passage of the corpus
        return float(np.mean([df[q.indices[q.indptr[i]:q.indptr[i + 1]]].sum() for i in range(q.shape[0])]))

    return {"nnz_real": float(profile["nnz"].mean()), "nnz_synth": float(np.diff(synth.indptr).mean()),
            "top100_df_real": float(profile["df"][top].mean()), "top100_df_synth": float(synth_df[top].mean()),
            "max_df_real": float(profile["df"].max()), "max_df_synth": float(synth_df.max()),
            "query_terms": float(np.diff(q.indptr).mean()), "queries": q.shape[0],
            "postings_real": postings_per_passage(profile["df"]), "postings_synth": postings_per_passage(synth_df),
            "log_weight_real": float((profile["df"] * profile["log_mean"]).sum() / profile["df"].sum()),
            "log_weight_synth": float(np.log(synth.data).mean())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", type=Path, default=PROFILE)
    args = p.parse_args(argv)
    profile = fit_profile(args.profile)
    print(f"fit on {int(profile['passages'])} passages: " + ", ".join(f"{k} {v:.4g}" for k, v in
                                                                     compare(profile).items()))


if __name__ == "__main__":
    main()
