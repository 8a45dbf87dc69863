"""The dataset build: SPLADE retrieval, optional cross-encoder reranking, teacher answers; sharded and resumable.

    torchrun --nproc_per_node 8 launchers/build_dataset.py --corpus kilt_knowledgesource.json \\
        --queries queries.tsv --out runs/data-build

Stages, each safe to kill and restart:
  1. index: the corpus is cut into blocks (byte spans of `--block-bytes` for JSONL and TSV, `--block-docs`
     documents for a JSON list or a datasets folder); block j is read, chunked and encoded by rank j % world only,
     and skipped when already on disk. The blocks, and so the passage rows, do not depend on the number of ranks;
  2. queries are cut into chunks of `--chunk-size` in a fixed order; chunk j belongs to rank j % world, so the
     output does not depend on the number of ranks. A chunk is written under a temporary name and renamed; a
     restarted job skips finished chunks. Per-query failures are recorded in the chunk, never abort it;
  3. merge (rank 0): every query id exactly once, then dataset.jsonl, an Arrow `datasets` folder, stats.json.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from scaledown.build import corpus, sources
from scaledown.config import command_parser
from scaledown.data import prompts
from scaledown.data.mapped import cache_path, convert
from scaledown.distributed import discover
from scaledown.build.corpus import Problems, Query, chunk_passages, read_corpus, read_queries, synthetic_queries
from scaledown.build.retrieval import (SparseIndex, block_metas, build_index, load_sparse_encoder, repeated_documents,
                                       to_csr)
from scaledown.data.schema import atomic_write, write_jsonl
from scaledown.log import EVERY_RANK, get_logger, pop_log_level

log = get_logger(__name__)


def barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def process_chunk(queries: list[Query], encoder, index: SparseIndex, reranker, teacher, args,
                  searcher=None) -> list[dict]:
    """One line per query: a training record, or {"id", "failed": reason}. `searcher` (default: the exact index)
    finds the rows."""
    vectors = to_csr(encoder.encode_query([q.text for q in queries], batch_size=64), index.vocab_size)
    hits = (searcher or index).search(vectors, args.retrieve_k if reranker else args.k)
    lines, found = {}, []
    for q, rows in zip(queries, hits):
        if rows:
            found.append((q, [index.passages[row].as_document() for row, _ in rows]))
        else:
            lines[q.id] = {"id": q.id, "failed": "empty retrieval (no passage shares a term with the query)"}
    if reranker:
        ranked = reranker.rerank([q.text for q, _ in found], [docs for _, docs in found], args.k)
        todo = [(q, docs, scores) for (q, _), (docs, scores) in zip(found, ranked)]
    else:
        todo = [(q, docs[: args.k], None) for q, docs in found]
    answers = teacher_answers(teacher, todo) if teacher else [None] * len(todo)
    for (q, docs, scores), answer in zip(todo, answers):
        if teacher and (isinstance(answer, Exception) or not answer):
            reason = f"teacher error: {answer}" if isinstance(answer, Exception) else "teacher gave an empty answer"
            lines[q.id] = {"id": q.id, "failed": reason}
            continue
        rec = {"id": q.id, "query": q.text, "documents": [{"title": d["title"], "text": d["text"]} for d in docs],
               "passage_ids": [d["id"] for d in docs]}
        if answer is not None:
            rec["answer"] = answer
        if q.answers:
            rec["gold_answers"] = q.answers
        if scores is not None:
            rec["reranking_scores"] = scores
            rec["reranking_model"] = reranker.name
        lines[q.id] = rec
    return [lines[q.id] for q in queries]


def teacher_answers(teacher, items) -> list:
    """Answers for the whole batch; if the batch fails, query by query, so one bad query fails alone."""
    pairs = [(q, docs) for q, docs, _ in items]
    try:
        return teacher.answer(pairs)
    except Exception:  # noqa: BLE001 - any teacher error is recorded per query below
        out = []
        for pair in pairs:
            try:
                out.append(teacher.answer([pair])[0])
            except Exception as err:  # noqa: BLE001
                out.append(err)
        return out


def merge(out: Path, query_ids: list[str], problems: Problems, num_chunks: int | None = None) -> dict:
    """Check that every query appears exactly once across the chunks (the first `num_chunks`: a shorter queries
    file leaves stale ones behind); write the dataset and its statistics."""
    seen: dict[str, dict] = {}
    chunks = sorted((out / "chunks").glob("chunk-*.jsonl"))
    if num_chunks is not None:
        chunks = [c for c in chunks if int(c.stem.removeprefix("chunk-")) < num_chunks]
    for chunk in chunks:
        for line in chunk.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["id"] in seen:
                raise RuntimeError(f"{chunk}: query id {row['id']!r} appears twice")
            seen[row["id"]] = row
    missing = [q for q in query_ids if q not in seen]
    extra = set(seen) - set(query_ids)
    if missing or extra:
        raise RuntimeError(f"merge: {len(missing)} queries missing (e.g. {missing[:5]}), {len(extra)} unknown")
    records = [seen[q] for q in query_ids if "failed" not in seen[q]]
    failures = [seen[q] for q in query_ids if "failed" in seen[q]]
    write_jsonl(records, out / "dataset.jsonl")
    write_jsonl(failures, out / "failures.jsonl")
    if records:  # validated once, here: training memory-maps this Arrow copy instead of reading the JSONL
        with_answers = all("answer" in r for r in records)
        convert(out / "dataset.jsonl", cache_path(out / "dataset.jsonl", with_answers), with_answers)
    try:
        import datasets

        if records:
            datasets.Dataset.from_list(records).save_to_disk(str(out / "dataset"))
    except ImportError:
        log.warning("datasets is not installed: wrote dataset.jsonl only")
    reasons: dict[str, int] = {}
    for f in failures:
        key = f["failed"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    answer_words = [len(r["answer"].split()) for r in records if "answer" in r] or [0]
    stats = {"queries": len(query_ids), "records": len(records), "failures": len(failures),
             "failure_reasons": reasons, "bad_input_lines": problems.counts.get("bad_line", 0),
             "documents_per_query": statistics.mean(len(r["documents"]) for r in records) if records else 0,
             "answer_words_mean": statistics.mean(answer_words), "answer_words_max": max(answer_words)}
    atomic_write(out / "stats.json", json.dumps(stats, indent=2))
    return stats


def file_fingerprint(path: str | Path, window: int = 1 << 20) -> dict:
    """Size and a hash of the first and last MiB: cheap at 35 GB, and any change of size, or of those bytes, is
    caught. Name and date are left out: the same bytes copied elsewhere are the same corpus."""
    path = Path(path)
    if path.is_dir():  # a `datasets` folder: every file in it
        return {str(f.relative_to(path)): file_fingerprint(f, window) for f in sorted(path.rglob("*")) if f.is_file()}
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(window))
        if size > window:
            f.seek(max(window, size - window))
            digest.update(f.read(window))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def index_fingerprint(args) -> dict:
    return {"corpus": file_fingerprint(args.corpus), "corpus_format": args.corpus_format, "splade": args.splade,
            "tokenizer": args.tokenizer or args.teacher, "passage_tokens": args.passage_tokens,
            "block_bytes": args.block_bytes, "block_docs": args.block_docs, "max_corpus_size": args.max_corpus_size}


def build_fingerprint(args, index: dict) -> dict:
    """What every chunk of this build depends on besides its own queries."""
    return {"index": index, "cross_encoder": args.cross_encoder, "retrieve_k": args.retrieve_k, "k": args.k,
            "teacher": args.teacher, "teacher_backend": args.teacher_backend, "max_new_tokens": args.max_new_tokens,
            "system_prompt": args.system_prompt, "user_template": args.user_template,
            "chunk_size": args.chunk_size, "search": args.search,
            "synthetic": None if args.queries else [args.synthetic_queries, args.seed]}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_fingerprint(path: Path, current: dict, what: str, force_hint: str) -> bool:
    """True when `path` records `current`, False when it does not exist yet; SystemExit naming every
    difference."""
    if not path.exists():
        return False
    changed = differences(json.loads(path.read_text()), current)
    if changed:
        raise SystemExit(f"{path}: this {what} was made with other settings; {force_hint}:\n  "
                         + "\n  ".join(changed))
    return True


def queries_hash(queries: list[Query]) -> str:
    return hashlib.sha256(json.dumps([[q.id, q.text, q.answers] for q in queries]).encode()).hexdigest()


def corpus_blocks(args, problems: Problems, rank: int, world: int, tokenizer):
    """(block number, passages) of this rank's corpus blocks, read lazily: a block already on disk is not read."""
    path = Path(args.corpus)
    if args.max_corpus_size or not corpus.splittable(path, args.corpus_format):
        documents = read_corpus(path, problems, args.corpus_format)
        if args.max_corpus_size:  # the first N documents of the file: read in order, so streamed
            documents = itertools.islice(documents, args.max_corpus_size)
        for number, docs in corpus.document_blocks(documents, args.block_docs, rank, world):
            yield number, chunk_passages(docs, tokenizer, args.passage_tokens)
        return
    spans = corpus.byte_blocks(path, args.block_bytes)
    mine = range(rank, len(spans), world)
    # True line numbers: each rank counts its own blocks' newlines (a fast byte scan), all ranks share the counts.
    counts = {j: corpus.count_lines(path, spans[j]) for j in mine}
    if torch.distributed.is_initialized():
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, counts)
        counts = {j: n for part in gathered for j, n in part.items()}
    first_lines = [1]
    for j in range(len(spans) - 1):
        first_lines.append(first_lines[-1] + counts[j])
    for j in mine:
        documents = read_corpus(path, problems, args.corpus_format, spans[j], first_lines[j])
        yield j, chunk_passages(documents, tokenizer, args.passage_tokens)


def check_repeated_documents(args, index_dir: Path) -> None:
    """One document id on two lines would be indexed twice and retrieved twice into the same record: refused,
    with the lines named, before the index is marked complete (a fixed corpus is a new fingerprint: re-indexed)."""
    repeated = repeated_documents(index_dir)
    if not repeated:
        return
    lines = corpus.where_documents(args.corpus, set(repeated), args.corpus_format)
    shown = "\n".join(f"  document id {i!r} on {', '.join(lines.get(i, ['?']))}" for i in repeated)
    raise SystemExit(f"{args.corpus}: document ids repeat (each must name one document; showing up to 10):\n{shown}")


def check_model_paths(args) -> None:
    """Model arguments that look like local paths must exist: checked before any rank starts, instead of a
    download attempt and its retries that would not name the path."""
    from scaledown.config import looks_local

    models = {"--splade": args.splade, "--cross-encoder": args.cross_encoder, "--tokenizer": args.tokenizer,
              "--teacher": "" if args.teacher in ("gold", "none") else args.teacher}
    for flag, value in models.items():
        if value and looks_local(value) and not Path(value).exists():
            raise SystemExit(f"{flag} {value}: no such file or folder (a local path, not a hub id)")


def build(args) -> dict | None:
    check_model_paths(args)
    discover()  # mpirun / srun without torchrun: RANK, WORLD_SIZE and the rendezvous from mpi4py or Slurm
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    out = Path(args.out)
    index_dir = Path(args.index) if args.index else out / "index"
    index_fp = index_fingerprint(args)
    build_fp = build_fingerprint(args, index_fp)
    if args.force_rebuild:
        barrier()
        if rank == 0:
            stale = [out / "chunks", out / "build.json"]
            fingerprint = index_dir / "FINGERPRINT.json"
            if not args.index and fingerprint.exists() and json.loads(fingerprint.read_text()) != index_fp:
                stale.append(index_dir)  # an index that still matches is kept: it is the expensive part
            for path in stale:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        barrier()
    hint = "run with --force-rebuild to redo it, or use another --out"
    index_known = check_fingerprint(index_dir / "FINGERPRINT.json", index_fp, "index",
                                    "pass --index of a matching index" if args.index else hint)
    check_fingerprint(out / "build.json", build_fp, "build", hint)
    barrier()
    if rank == 0:
        (out / "chunks").mkdir(parents=True, exist_ok=True)
        index_dir.mkdir(parents=True, exist_ok=True)
        if not index_known:
            atomic_write(index_dir / "FINGERPRINT.json", json.dumps(index_fp, indent=2))
        atomic_write(out / "build.json", json.dumps(build_fp, indent=2))
    barrier()
    problems = Problems()
    from scaledown.models.generator import load_tokenizer

    from scaledown.models.generation import local_device

    encoder = load_sparse_encoder(args.splade, device=str(local_device()), trust_remote_code=args.trust_remote_code)
    if not (index_dir / "COMPLETE").exists():
        if not args.tokenizer and args.teacher in ("gold", "none"):
            raise SystemExit(f"--teacher {args.teacher} needs --tokenizer (the generator's) for passage chunking")
        tokenizer = load_tokenizer(args.tokenizer or args.teacher, args.trust_remote_code)
        build_index(corpus_blocks(args, problems, rank, world, tokenizer), encoder, index_dir, problems,
                    progress=rank == 0 and not args.quiet)
        barrier()
        metas = block_metas(index_dir)
        # Streamed formats: every rank read every line. Blocks: each rank only its own, counted in meta.json.
        blocked = corpus.splittable(args.corpus, args.corpus_format) and not args.max_corpus_size
        corpus_bad = sum(m["bad_lines"] for m in metas) if blocked else problems.counts.get("bad_line", 0)
        if not sum(m["passages"] for m in metas):
            shown = "".join(f"\n  {m}" for m in problems.messages[:5])
            raise SystemExit(f"{args.corpus}: no good passages ({corpus_bad} bad lines){shown}")
        check_repeated_documents(args, index_dir)
        if rank == 0:
            atomic_write(index_dir / "COMPLETE", json.dumps({"bad_corpus_lines": corpus_bad}))
        barrier()
    problems.counts["bad_line"] = json.loads((index_dir / "COMPLETE").read_text())["bad_corpus_lines"]
    index = SparseIndex(index_dir)
    searcher = None
    if args.search == "seismic":  # approximate; rank 0 builds it once from the blocks, every rank loads it
        from scaledown.build.approximate import SeismicSearch

        if rank == 0:
            SeismicSearch(index, index_dir / "seismic-raw.index")
        barrier()
        searcher = SeismicSearch(index, index_dir / "seismic-raw.index", build=False)
    if args.queries:
        queries = read_queries(args.queries, problems, args.queries_format, args.split)
    else:
        queries = synthetic_queries(index.passages, args.synthetic_queries, args.seed)
    ids = [q.id for q in queries]
    reranker = None
    if args.cross_encoder:
        from scaledown.build.rerank import CrossEncoderReranker

        reranker = CrossEncoderReranker(args.cross_encoder, trust_remote_code=args.trust_remote_code)
    from scaledown.build.teacher import GoldAnswers, HFTeacher, VLLMTeacher

    if args.teacher == "none":
        teacher = None
    elif args.teacher == "gold":
        teacher = GoldAnswers({q.id: q.answers for q in queries if q.answers})
    else:
        teacher_cls = VLLMTeacher if args.teacher_backend == "vllm" else HFTeacher
        if args.teacher_8bit and args.teacher_backend == "vllm":
            raise SystemExit("--teacher-8bit is for the hf teacher backend (vLLM quantizes with its own options)")
        int8 = {"load_in_8bit": True} if args.teacher_8bit else {}
        teacher = teacher_cls(args.teacher, args.system_prompt, args.user_template, args.max_new_tokens,
                              args.teacher_batch_size, trust_remote_code=args.trust_remote_code, **int8)
    chunks = [queries[i:i + args.chunk_size] for i in range(0, len(queries), args.chunk_size)]
    mine = [j for j in range(len(chunks)) if j % world == rank]
    done = skipped = redone = 0
    for j in tqdm(mine, desc=f"rank {rank}", position=rank, disable=args.quiet):
        path = out / "chunks" / f"chunk-{j:06d}.jsonl"
        made_from = path.with_suffix(".queries")  # the hash of the chunk's ids, texts and gold answers
        wanted = queries_hash(chunks[j])
        if path.exists():
            if made_from.exists() and made_from.read_text() == wanted:
                skipped += 1
                continue
            redone += 1  # the queries file changed under this chunk (same position, other ids or texts)
        lines = process_chunk(chunks[j], encoder, index, reranker, teacher, args, searcher)
        write_jsonl(lines, path)
        atomic_write(made_from, wanted)  # after the chunk: a kill in between only redoes it
        done += 1
    log.info("rank %d: %d chunks built (%d of them redone: their queries changed), %d already done; bad input "
             "lines: %d", rank, done, redone, skipped, problems.counts.get("bad_line", 0), extra=EVERY_RANK)
    for message in problems.messages[:10]:
        log.warning("%s", message, extra=EVERY_RANK)
    barrier()
    stats = None
    if rank == 0:
        stats = merge(out, ids, problems, len(chunks))
        print(json.dumps(stats, indent=2))
    barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if stats is not None and not stats["records"]:
        raise SystemExit(f"{out}: every query failed ({stats['failure_reasons']}; see {out / 'failures.jsonl'})")
    return stats


def parser():
    p = command_parser("Build a ScaleDown training set (retrieve, rerank, teacher answers).")
    p.add_argument("--corpus", required=True, help="KILT JSONL, JSONL or a JSON list of {id,title,text}, TSV "
                                                   "id<TAB>text, or a datasets folder")
    p.add_argument("--corpus-format", default="auto", choices=["auto", "jsonl", "tsv", "datasets"],
                   help="auto: sniffed from the content")
    p.add_argument("--queries", default="",
                   help="text (one per line), TSV qid<TAB>query, or JSONL / JSON / a datasets folder in one of the "
                        "formats of scaledown/build/sources.py (NQ, TriviaQA, HotpotQA, ASQA, PopQA, BioASQ, ...)")
    p.add_argument("--queries-format", default="auto",
                   choices=["auto", "text", "tsv", "jsonl", "datasets", *sources.NAMES],
                   help="auto: from the file name and the rows' fields")
    p.add_argument("--split", default=None, help="split of a DatasetDict folder (train, dev, validation, test)")
    p.add_argument("--synthetic-queries", type=int, default=100, help="without --queries: made from the corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--index", default="", help="index folder (default OUT/index); an existing one is reused")
    p.add_argument("--splade", default="naver/splade-v3", help="SparseEncoder path or hub id")
    p.add_argument("--cross-encoder", default="naver/trecdl22-crossencoder-debertav3",
                   help="CrossEncoder path or hub id; empty: no reranking")
    p.add_argument("--teacher", default="mistralai/Mistral-7B-Instruct-v0.2",
                   help="causal LM path or hub id; 'gold': each query's first gold answer, no teacher model; "
                        "'none': no 'answer' field (evaluation sets, scored on their gold answers)")
    p.add_argument("--teacher-backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--teacher-8bit", action="store_true", help="load the hf teacher in 8 bits (bitsandbytes, CUDA)")
    p.add_argument("--teacher-batch-size", type=int, default=16)
    p.add_argument("--tokenizer", default="", help="for passage chunking (default: the teacher's)")
    p.add_argument("--passage-tokens", type=int, default=128)
    p.add_argument("--max-corpus-size", type=int, default=0, help="index only the first N documents (0: all)")
    p.add_argument("--search", default="exact", choices=["exact", "seismic"],
                   help="exact (the reference) or seismic: approximate, pip install pyseismic-lsr "
                        "(recall against exact: benchmarks/scale.py --stage approx)")
    p.add_argument("--retrieve-k", type=int, default=50, help="retrieved per query before reranking (the paper: 50)")
    p.add_argument("--k", type=int, default=None,
                   help="documents kept per query (default: 5 for training sets, 10 for --split dev/validation/test)")
    p.add_argument("--chunk-size", type=int, default=256, help="queries per output chunk")
    p.add_argument("--block-bytes", type=int, default=64 << 20,
                   help="index block size: bytes of a JSONL or TSV corpus (a block is one rank's unit of work)")
    p.add_argument("--block-docs", type=int, default=50_000,
                   help="index block size for a JSON list or datasets corpus, which is streamed: documents")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--system-prompt", default=prompts.SYSTEM_PROMPT, help="the teacher's system turn (the paper's)")
    p.add_argument("--user-template", default=prompts.USER_TEMPLATE,
                   help="the teacher's user turn, with {docs} and {question} (the paper's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--force-rebuild", action="store_true",
                   help="redo everything (the chunks, and the index unless --index names a shared one)")
    p.add_argument("--quiet", action="store_true")
    return p


EVAL_SPLITS = ("dev", "validation", "test")


def main(argv=None):
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args = parser().parse_args(pop_log_level(sys.argv[1:] if argv is None else argv))
    if args.k is None:
        args.k = 10 if args.split in EVAL_SPLITS else 5
    return build(args)


if __name__ == "__main__":
    main()
