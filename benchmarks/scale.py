"""The dataset build at paper scale, stage by stage: what each rank holds in memory and how long it takes.

Vectors (`--vectors`): `splade` (the default), synthetic passages whose term frequencies, weights and lengths are fit
to SPLADE-tiny's output on real Wikipedia passages, searched with SPLADE-tiny's real query vectors of FanOutQA
questions (benchmarks/splade_like.py, ~200 non-zeros per passage, ~21 per query); `zipf`, the first benchmarks'
Zipf-like term ids (~200 per passage, ~15 per query), whose most frequent terms sit in nearly every passage.

Stage `search`: synthetic indexes (no model, ~700-byte passages) written straight into both on-disk formats, the former
shards (`shard-NNNNN.npz` + `.jsonl`, loaded whole by every rank) and the current blocks (memory-mapped inverted
CSR + Arrow passages, scaledown/build/retrieval.py). Each format is searched by 2 ranks (2 processes, each its own
half of the queries, in batches like the build's chunks), and the current one also by 1 rank, to show that 2
ranks share the mapped index (sum of unique memory, USS). Also measured: the other way to split the search, each
rank searching every query against its own half of the blocks, then partial top-k lists merged (timed after the
build's split in each process, or before it with `--split-first`: the first search maps the index's pages).

    python benchmarks/scale.py --stage search --sizes 10000 100000 1000000

Stage `data`: synthetic training sets (5 documents of ~128 tokens per record, ~3 KB of JSON) of 10k, 100k and
893k records; each loaded by 2 ranks as training loads it, the former way (`load_records`: every record a Python
object on every rank) and the current one (scaledown/data/mapped.py: validated once into an Arrow file, then
memory-mapped by every rank), then 2,000 records fetched in sampler order. Per rank: peak RSS, start-up time.

    python benchmarks/scale.py --stage data --sizes 10000 100000 893000

Stage `approx` (one process): the exact search's two ways, the sparse x sparse product it used first and the
per-query gather it uses now (same results checked), and the approximate backend (Seismic, `--search seismic`):
its build time, query time and recall@k against the exact top-k.

    python benchmarks/scale.py --stage approx --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scaledown.build.corpus import Passage  # noqa: E402
from scaledown.build.retrieval import SparseIndex, top_k, write_block  # noqa: E402
from splade_like import fit_profile, passage_rows, query_rows  # noqa: E402

VOCAB = 30522


def zipf_rows(rows: int, draws: int, rng: np.random.Generator, perm: np.ndarray, a: float = 1.1) -> sp.csr_matrix:
    """Rows of the distinct terms among `draws` Zipf-distributed draws (frequent terms spread over the
    vocabulary by `perm`), with positive weights."""
    terms = np.sort(perm[(rng.zipf(a, size=(rows, draws)) - 1) % VOCAB].astype(np.int32), axis=1)
    first = np.ones_like(terms, dtype=bool)
    first[:, 1:] = terms[:, 1:] != terms[:, :-1]
    indptr = np.concatenate([[0], np.cumsum(first.sum(axis=1))])
    data = rng.gamma(2.0, 0.5, size=int(indptr[-1])).astype(np.float32)
    return sp.csr_matrix((data, terms[first], indptr), shape=(rows, VOCAB))


def write_both_formats(n: int, folder: Path, rows_per_block: int = 100_000, seed: int = 0, vectors: str = "zipf",
                       old: bool = True) -> dict:
    """The same synthetic index as former shards (folder/old, unless `old` is false) and current blocks
    (folder/new)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(VOCAB)
    profile = fit_profile() if vectors == "splade" else None
    blob = " ".join(f"w{i}" for i in rng.integers(0, 50_000, size=400_000))  # passage texts are slices of it
    (folder / "old").mkdir(parents=True)
    nnz = 0
    for b, start in enumerate(range(0, n, rows_per_block)):
        rows = min(rows_per_block, n - start)
        # 330 Zipf draws leave ~200 distinct terms
        matrix = passage_rows(rows, profile, rng) if profile else zipf_rows(rows, 330, rng, perm)
        nnz += matrix.nnz
        offsets = rng.integers(0, len(blob) - 800, size=rows)
        passages = [Passage(f"doc{start + i}-0", f"Title {start + i}", blob[o:o + 700]) for i, o in enumerate(offsets)]
        write_block(folder / "new", b, passages, matrix)
        if not old:
            continue
        sp.save_npz(folder / "old" / f"shard-{b:05d}.npz", matrix, compressed=False)
        (folder / "old" / f"shard-{b:05d}.jsonl").write_text(
            "".join(json.dumps(p.as_document()) + "\n" for p in passages))
    return {"nnz_per_passage": nnz / n}


class OldShardIndex:
    """The former SparseIndex (before the block index), verbatim in what it holds: every shard's passages as
    dicts and the stacked matrix's transpose, in every rank's memory."""

    def __init__(self, folder: str | Path):
        shards = sorted(Path(folder).glob("shard-[0-9][0-9][0-9][0-9][0-9].npz"))
        matrices = [sp.load_npz(s).tocsr() for s in shards]
        self.passages: list[dict] = []
        for s in shards:
            with open(s.with_suffix(".jsonl"), encoding="utf-8") as f:
                self.passages += [json.loads(line) for line in f]
        self.matrix_t = sp.vstack(matrices, format="csr").T.tocsr()

    def search(self, queries: sp.csr_matrix, k: int) -> list[list[tuple[int, float]]]:
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


def product_search(index: SparseIndex, queries: sp.csr_matrix, k: int) -> list[list[tuple[int, float]]]:
    """The block index's first exact search, verbatim: per block the sparse x sparse product Q @ D_b^T for a batch
    of queries, each query's top-k kept, then merged over blocks."""
    queries = queries.tocsr()
    found = [[] for _ in range(queries.shape[0])]
    for b, matrix in enumerate(index.matrices):
        scores = (queries @ matrix).tocsr()
        for i in range(scores.shape[0]):
            start, end = scores.indptr[i], scores.indptr[i + 1]
            if start < end:
                found[i].append(top_k(scores.indices[start:end].astype(np.int64) + index.starts[b],
                                      scores.data[start:end], k))
    results = []
    for parts in found:
        rows, vals = (np.concatenate(x) for x in zip(*parts)) if parts else (np.empty(0, int), np.empty(0))
        rows, vals = top_k(rows, vals, k)
        results.append([(int(r), float(v)) for r, v in zip(rows, vals)])
    return results


def make_queries(args) -> sp.csr_matrix:
    """`args.queries` query vectors: real SPLADE-tiny ones (a seeded sample of the FanOutQA questions) or Zipf."""
    if args.vectors == "splade":
        real = query_rows(fit_profile())
        return real[np.sort(np.random.default_rng(1).choice(real.shape[0], args.queries, replace=False))]
    return zipf_rows(args.queries, 17, np.random.default_rng(1), np.random.default_rng(0).permutation(VOCAB))


def search_rank(kind: str, folder: str, queries: sp.csr_matrix, k: int, batch: int, split_first: bool, rank: int,
                world: int, barrier, results) -> None:
    """One rank of the search stage: load, search its half of the queries (and, for the block index with 2
    ranks, every query against its half of the blocks: before the other when `split_first`, since the first search
    maps the pages), then measure memory while every rank still holds it."""
    import psutil

    start = time.perf_counter()
    index = OldShardIndex(folder) if kind == "old" else SparseIndex(folder)
    load_s = time.perf_counter() - start
    out = {"kind": kind, "rank": rank, "world": world, "load_s": load_s}

    def by_queries():
        mine = np.array_split(np.arange(queries.shape[0]), world)[rank]
        start = time.perf_counter()
        hits = []
        for i in range(0, len(mine), batch):
            hits += index.search(queries[mine[i:i + batch]], k)
        out.update(search_s_per_query=(time.perf_counter() - start) / len(mine), hits=hits)

    def by_blocks():  # the alternative split: all queries, own blocks only
        own = list(range(rank, len(index.matrices), world))
        start = time.perf_counter()
        partial = []
        for i in range(0, queries.shape[0], batch):
            partial += index.search(queries[i:i + batch], k, own)
        out.update(own_blocks_s_per_query=(time.perf_counter() - start) / queries.shape[0], partial=partial)

    order = [by_queries, by_blocks] if kind == "new" and world > 1 else [by_queries]
    for search in reversed(order) if split_first else order:
        search()
    barrier.wait()  # every rank holds its index here: pages mapped by both count as shared, not unique
    out["peak_rss_gib"] = peak_rss_gib()
    out["uss_gib"] = psutil.Process().memory_full_info().uss / 2**30
    barrier.wait()
    results.put(out)


def peak_rss_gib() -> float:
    """This process's peak resident set (VmHWM, mapped file pages included). Not getrusage's ru_maxrss: that one
    survives exec, so a spawned worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def spawn_ranks(target, args: tuple, world: int, what: str) -> list[dict]:
    """Run `target(*args, rank, world, barrier, results)` in `world` spawned processes; their results by rank."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(world), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, r, world, barrier, results)) for r in range(world)]
    for p in procs:
        p.start()
    out = []
    while len(out) < world:  # a rank that dies would leave the others waiting at the barrier
        try:
            out.append(results.get(timeout=5))
        except queue.Empty:
            if failed := [p.exitcode for p in procs if p.exitcode]:
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"{what} rank failed with exit code {failed[0]}") from None
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{what} rank failed with exit code {p.exitcode}")
    return sorted(out, key=lambda r: r["rank"])


def run_ranks(kind: str, folder: Path, queries: sp.csr_matrix, world: int, k: int, batch: int,
              split_first: bool = False) -> list[dict]:
    return spawn_ranks(search_rank, (kind, str(folder), queries, k, batch, split_first), world, kind)


def merge_partials(partials: list[list[list[tuple[int, float]]]], k: int) -> list[list[tuple[int, float]]]:
    """Per query, the k best of every rank's partial top-k (the all-gather and merge of the alternative split)."""
    merged = []
    for lists in zip(*partials):
        pairs = [pair for hits in lists for pair in hits]
        rows, vals = top_k(np.array([r for r, _ in pairs], dtype=np.int64),
                           np.array([v for _, v in pairs], dtype=np.float32), k)
        merged.append([(int(r), float(v)) for r, v in zip(rows, vals)])
    return merged


def stage_search(args) -> list[dict]:
    rows = []
    queries = make_queries(args)
    for n in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.tmp))
        try:
            start = time.perf_counter()
            info = write_both_formats(n, folder, vectors=args.vectors)
            print(f"{n} passages: wrote both formats in {time.perf_counter() - start:.0f} s "
                  f"({info['nnz_per_passage']:.0f} non-zeros per passage)", flush=True)
            new2 = run_ranks("new", folder / "new", queries, 2, args.k, args.batch, args.split_first)
            new1 = run_ranks("new", folder / "new", queries, 1, args.k, args.batch)
            old2 = run_ranks("old", folder / "old", queries, 2, args.k, args.batch) if n <= args.max_old else None
            exact_new = new2[0]["hits"] + new2[1]["hits"]
            assert exact_new == new1[0]["hits"], "1 and 2 ranks disagree"
            start = time.perf_counter()
            merged = merge_partials([r["partial"] for r in new2], args.k)
            merge_s = (time.perf_counter() - start) / args.queries
            assert merged == exact_new, "the per-rank-blocks split disagrees"
            row = {"passages": n, "new": new2, "new1": new1[0], "old": old2, "merge_s_per_query": merge_s}
            if old2:
                row["old_equals_new"] = old2[0]["hits"] + old2[1]["hits"] == exact_new
            rows.append(row)
            print_search_row(row, flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print_search_table(rows)
    return rows


def print_search_row(row: dict, flush: bool = False) -> None:
    def ranks(runs):
        return "/".join(f"{r['peak_rss_gib']:.2f}" for r in runs) if runs else "-"

    print(f"  {row['passages']}: peak RSS old {ranks(row['old'])} GiB, new {ranks(row['new'])} GiB", flush=flush)


def print_search_table(rows: list[dict]) -> None:
    ms = 1e3
    print("\nsearch stage, 2 ranks (per rank: max over the 2); times in s (load) and ms per query; memory GiB")
    print(f"{'passages':>9} | {'old load':>8} {'old RSS':>7} {'old q':>6} | {'new load':>8} {'new RSS':>7} "
          f"{'new q':>6} | {'USS 2r':>6} {'USS 1r':>6} {'ratio':>5} | {'split q':>7} {'merge':>5} | old==new")
    for row in rows:
        old, new, one = row["old"], row["new"], row["new1"]
        o = (f"{max(r['load_s'] for r in old):>8.2f} {max(r['peak_rss_gib'] for r in old):>7.2f} "
             f"{max(r['search_s_per_query'] for r in old) * ms:>6.1f}") if old else f"{'(not run)':>23}"
        uss2 = sum(r["uss_gib"] for r in new)
        split = max(r["own_blocks_s_per_query"] for r in new) * ms
        print(f"{row['passages']:>9} | {o} | {max(r['load_s'] for r in new):>8.2f} "
              f"{max(r['peak_rss_gib'] for r in new):>7.2f} {max(r['search_s_per_query'] for r in new) * ms:>6.1f} | "
              f"{uss2:>6.2f} {one['uss_gib']:>6.2f} {uss2 / one['uss_gib']:>5.2f} | {split:>7.1f} "
              f"{row['merge_s_per_query'] * ms:>5.2f} | {row.get('old_equals_new', '-')}")
    print("new q: each rank its half of the queries over all blocks (what the build does); split q: each rank every "
          "query over its half of the blocks, to be merged (merge: ms per query, one process)")


WORDS = [f"w{i}" for i in range(5000)]


def write_training_set(n: int, path: Path, seed: int = 0) -> None:
    """n records of 5 documents of ~100 words (~128 tokens), written in pieces (never all in memory)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for start in range(0, n, 10_000):
            lines = []
            for i in range(start, min(n, start + 10_000)):
                words = rng.integers(0, len(WORDS), size=(5, 100))
                docs = [{"title": f"T{i}-{j}", "text": " ".join(WORDS[w] for w in row)} for j, row in enumerate(words)]
                lines.append(json.dumps({"id": f"q{i}", "query": f"what is w{i % 5000} of T{i}?", "documents": docs,
                                         "answer": f"w{(i * 7) % 5000}", "reranking_scores": rng.random(5).tolist()}))
            f.write("\n".join(lines) + "\n")


def load_rank(kind: str, path: str, rank: int, world: int, barrier, results) -> None:
    """One rank of training's data loading: open the set, then fetch 2,000 records in the sampler's order."""
    from scaledown.data.mapped import open_records
    from scaledown.data.sampler import ShardedSampler
    from scaledown.data.schema import load_records

    start = time.perf_counter()
    records = load_records(path) if kind == "old" else open_records(path)
    load_s = time.perf_counter() - start
    sampler = ShardedSampler(len(records), 128, rank, world, seed=0)
    order = list(sampler)[:2000]
    start = time.perf_counter()
    fetched = [records[i] for i in order]
    fetch_ms = 1e3 * (time.perf_counter() - start) / len(order)
    barrier.wait()
    import psutil

    results.put({"kind": kind, "rank": rank, "load_s": load_s, "fetch_ms": fetch_ms, "peak_rss_gib": peak_rss_gib(),
                 "uss_gib": psutil.Process().memory_full_info().uss / 2**30, "n": len(records),
                 "first": fetched[0].id})
    barrier.wait()


def run_loaders(kind: str, path: Path, world: int) -> list[dict]:
    return spawn_ranks(load_rank, (kind, str(path)), world, f"{kind} loader")


def stage_data(args) -> list[dict]:
    from scaledown.data.mapped import cache_path, convert

    rows = []
    for n in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"scale-data-{n}-", dir=args.tmp))
        try:
            path = folder / "train.jsonl"
            write_training_set(n, path)
            start = time.perf_counter()
            convert(path, cache_path(path))  # what the merge (or a first training start) does once
            convert_s = time.perf_counter() - start
            new = run_loaders("new", path, 2)
            old = run_loaders("old", path, 2) if n <= args.max_old else None
            if old:
                assert [r["first"] for r in old] == [r["first"] for r in new], "old and new fetch other records"
            row = {"records": n, "jsonl_gib": path.stat().st_size / 2**30,
                   "arrow_gib": cache_path(path).stat().st_size / 2**30, "convert_s": convert_s, "new": new, "old": old}
            rows.append(row)
            print(f"  {n}: peak RSS new {max(r['peak_rss_gib'] for r in new):.2f} GiB, old "
                  f"{max(r['peak_rss_gib'] for r in old):.2f} GiB" if old else f"  {n}: new done", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print("\ntraining data loading, 2 ranks (per rank: max over the 2); start-up s, fetch ms per record, memory GiB")
    print(f"{'records':>8} | {'JSONL':>6} {'Arrow':>6} {'convert':>7} | {'old start':>9} {'old RSS':>7} | "
          f"{'new start':>9} {'new RSS':>7} {'fetch':>6} {'USS 2r':>6}")
    for row in rows:
        old, new = row["old"], row["new"]
        o = (f"{max(r['load_s'] for r in old):>9.2f} {max(r['peak_rss_gib'] for r in old):>7.2f}" if old
             else f"{'(not run)':>17}")
        print(f"{row['records']:>8} | {row['jsonl_gib']:>6.2f} {row['arrow_gib']:>6.2f} {row['convert_s']:>7.1f} | "
              f"{o} | "
              f"{max(r['load_s'] for r in new):>9.2f} {max(r['peak_rss_gib'] for r in new):>7.2f} "
              f"{max(r['fetch_ms'] for r in new):>6.3f} {sum(r['uss_gib'] for r in new):>6.2f}")
    return rows


def timed(fn, *args) -> tuple[list, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def recall(found: list, exact: list, k: int) -> float:
    return float(np.mean([len({r for r, _ in a[:k]} & {r for r, _ in e[:k]}) / max(1, len(e[:k]))
                          for a, e in zip(found, exact)]))


def stage_approx(args) -> list[dict]:
    from scaledown.build.approximate import SeismicSearch

    rows = []
    queries = make_queries(args)
    n_q = queries.shape[0]
    for n in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"scale-approx-{n}-", dir=args.tmp))
        try:
            info = write_both_formats(n, folder, vectors=args.vectors, old=False)
            index = SparseIndex(folder / "new")
            batches = [queries[i:i + args.batch] for i in range(0, n_q, args.batch)]
            product, product_s = timed(lambda: [h for q in batches for h in product_search(index, q, args.k)])
            exact, exact_s = timed(lambda: [h for q in batches for h in index.search(q, args.k)])
            assert product == exact, "the gather and the sparse product disagree"
            approx, build_s = timed(SeismicSearch, index, folder / "new" / "seismic-raw.index")
            row = {"passages": n, "nnz_per_passage": info["nnz_per_passage"], "vectors": args.vectors,
                   "product_ms": 1e3 * product_s / n_q, "exact_ms": 1e3 * exact_s / n_q, "build_s": build_s,
                   "seismic": []}
            for heap in args.heap_factors:
                approx.heap_factor = heap
                found, s_ = timed(approx.search, queries, args.k)
                row["seismic"].append({"heap_factor": heap, "ms": 1e3 * s_ / n_q,
                                       "recall": {k: recall(found, exact, k) for k in (10, args.k)}})
                print(f"  {n}: heap {heap} recall@10 {row['seismic'][-1]['recall'][10]:.3f} recall@{args.k} "
                      f"{row['seismic'][-1]['recall'][args.k]:.3f} {1e3 * s_ / n_q:.2f} ms/query (exact "
                      f"{row['exact_ms']:.2f}, product {row['product_ms']:.2f}); built in {build_s:.0f} s", flush=True)
            rows.append(row)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{args.vectors} vectors, {n_q} queries, k = {args.k}, one process; ms per query")
    print(f"{'passages':>9} {'nnz':>5} {'product':>8} {'gather':>7} {'speed-up':>8} | {'build s':>8} {'heap':>5} "
          f"{'seismic':>8} {'R@10':>6} {f'R@{args.k}':>6}")
    for r in rows:
        for a in r["seismic"]:
            print(f"{r['passages']:>9} {r['nnz_per_passage']:>5.0f} {r['product_ms']:>8.2f} {r['exact_ms']:>7.2f} "
                  f"{r['product_ms'] / r['exact_ms']:>7.2f}x | {r['build_s']:>8.0f} {a['heap_factor']:>5} "
                  f"{a['ms']:>8.2f} {a['recall'][10]:>6.3f} {a['recall'][args.k]:>6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


STAGES = {"search": stage_search, "data": stage_data, "approx": stage_approx}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=sorted(STAGES), default="search")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="queries searched together (the build's chunks)")
    p.add_argument("--k", type=int, default=50, help="the build's --retrieve-k")
    p.add_argument("--max-old", type=int, default=1_000_000, help="skip the former code above this size")
    p.add_argument("--tmp", default=None, help="where the synthetic indexes are written (and removed)")
    p.add_argument("--vectors", choices=["splade", "zipf"], default="splade",
                   help="synthetic passages fit to SPLADE-tiny with its real queries, or Zipf term ids")
    p.add_argument("--split-first", action="store_true",
                   help="stage search: time the split by blocks before the split by queries (the first maps the pages)")
    p.add_argument("--heap-factors", type=float, nargs="+", default=[0.7, 0.9], help="Seismic's, stage approx")
    p.add_argument("--json", default=None, help="stage approx: also write its rows here")
    args = p.parse_args(argv)
    return STAGES[args.stage](args)


if __name__ == "__main__":
    main()
