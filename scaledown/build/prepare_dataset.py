"""The original ScaleDown code's dataset command, run by the sharded dataset build (scaledown/build/pipeline.py).

    python -m scaledown.data.prepare_dataset --queries_file q.txt --corpus_path kilt_knowledgesource.json \\
        --output_file train_data.json --top_k_retrieval 20 --top_k_reranking 5 --enable_reranking
    torchrun --nproc_per_node 8 -m scaledown.data.prepare_dataset ...      # the same, on 8 ranks

Its flags map onto the build's (`--help` names each); the build's work folder (`OUTPUT.build/`: index, chunks)
makes a rerun resume. The output format follows the extension of `--output_file`: `.json` the original JSON list
(`{"id", "query", "documents": [text], "answer", "reranking_scores"}` per record), `.jsonl` one record per line,
anything else a `datasets` folder. `--download_ms_marco` fetches MS MARCO's dev-small queries (needs internet).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from scaledown.data.schema import atomic_write, document_text, iter_jsonl

MS_MARCO_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking/queries.dev.small.tsv"
DEFAULT_SPLADE = "naver/splade-cocondenser-ensembledistil"
DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
DEFAULT_TEACHER = "mistralai/Mistral-7B-Instruct-v0.2"


def download_ms_marco(url: str, out: Path) -> Path:
    """MS MARCO's queries (`qid<TAB>query` lines, no header) into `out`, checked line by line; the TSV is what
    the build reads, with MS MARCO's own query ids."""
    if out.exists():
        return out
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise SystemExit(f"--download_ms_marco: cannot fetch {url} ({err}); this machine may be offline: download "
                         "queries.dev.small.tsv elsewhere and pass it as --queries_file") from None
    text = raw.decode("utf-8-sig")
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != 2 or not row[0].strip() or not row[1].strip()]
    if bad or not rows:
        raise SystemExit(f"{url}: not MS MARCO's qid<TAB>query TSV (line {bad[0] if bad else 1})")
    atomic_write(out, "".join(f"{qid.strip()}\t{query.strip()}\n" for qid, query in rows))
    return out


def ms_marco_path(work: Path) -> Path:
    return work.parent / "ms_marco_queries.tsv"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scaledown.data.prepare_dataset", description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--queries_file", help="queries: text (one per line, ids file.txt:line), TSV "
                        "qid<TAB>query, or any format of the build's --queries")
    source.add_argument("--num_synthetic_queries", type=int, help="N quick-test queries: made from the corpus, or "
                        "without --corpus_path the project's synthetic facts (corpus, questions, gold answers)")
    source.add_argument("--download_ms_marco", action="store_true",
                        help="MS MARCO dev-small queries (internet needed), saved next to the output")
    p.add_argument("--ms_marco_url", default=MS_MARCO_URL, help=argparse.SUPPRESS)
    p.add_argument("--corpus_path", default=None, help="the build's --corpus: KILT, JSONL, a JSON list, TSV, "
                   "or a datasets folder (optional only with --num_synthetic_queries)")
    p.add_argument("--max_corpus_size", type=int, default=0, help="only the first N corpus documents (0: all)")
    p.add_argument("--top_k_retrieval", type=int, default=20, help="SPLADE candidates per query (--retrieve-k)")
    p.add_argument("--enable_reranking", action="store_true", help="rerank with the cross-encoder and keep its "
                   "scores (reranking_scores)")
    p.add_argument("--top_k_reranking", type=int, default=None,
                   help="documents kept per query after reranking (--k; default 5 with reranking)")
    p.add_argument("--retriever_model", default=DEFAULT_SPLADE, help="SPLADE SparseEncoder (--splade)")
    p.add_argument("--reranker_model", default=DEFAULT_RERANKER, help="CrossEncoder (--cross-encoder)")
    p.add_argument("--teacher_model", default=DEFAULT_TEACHER, help="teacher LLM (--teacher), or 'gold'")
    p.add_argument("--teacher_8bit", action="store_true", help="8-bit teacher (bitsandbytes; CUDA only)")
    p.add_argument("--tokenizer", default="", help="passage-chunking tokenizer (default: the teacher's)")
    p.add_argument("--output_file", default="train_data.json",
                   help=".json: the original JSON list; .jsonl: one record per line; else a datasets folder")
    return p


def synthetic_folder(work: Path) -> Path:
    return work.parent / (work.name + ".synthetic")


def write_synthetic(folder: Path, n: int) -> None:
    """`n` of the project's synthetic facts (scaledown/build/synthetic.py) as a corpus and questions with their gold
    answers, for --num_synthetic_queries without a corpus."""
    from scaledown.build import synthetic

    if not (folder / "queries.jsonl").exists():
        synthetic.main(["--out", str(folder), "--train", str(n), "--eval", "0"])


def build_arguments(args, work: Path) -> list[str]:
    """The dataset build's command line for these flags."""
    rerank = args.enable_reranking or args.top_k_reranking is not None
    k = args.top_k_reranking or (5 if rerank else args.top_k_retrieval)
    corpus = args.corpus_path or str(synthetic_folder(work) / "corpus.jsonl")
    argv = ["--corpus", corpus, "--out", str(work), "--splade", args.retriever_model,
            "--cross-encoder", args.reranker_model if rerank else "", "--teacher", args.teacher_model,
            "--retrieve-k", str(args.top_k_retrieval), "--k", str(k), "--quiet"]
    if args.queries_file:
        argv += ["--queries", args.queries_file]
    elif args.download_ms_marco:
        argv += ["--queries", str(ms_marco_path(work))]  # downloaded by rank 0 before the build's first barrier
    elif args.corpus_path:
        argv += ["--synthetic-queries", str(args.num_synthetic_queries)]
    else:
        argv += ["--queries", str(synthetic_folder(work) / "queries.jsonl")]  # the facts' questions and answers
    for flag, value in (("--max-corpus-size", args.max_corpus_size), ("--tokenizer", args.tokenizer)):
        if value:
            argv += [flag, str(value)]
    return argv + (["--teacher-8bit"] if args.teacher_8bit else [])


def write_output(dataset: Path, output: Path) -> None:
    """The built records in the format `output`'s extension names, written under a temporary name."""
    if output.suffix == ".jsonl":
        tmp = output.with_name(output.name + ".tmp")
        shutil.copyfile(dataset, tmp)
        tmp.replace(output)
        return
    rows = []
    for _, row in iter_jsonl(dataset):
        row["documents"] = [document_text(d) for d in row["documents"]]  # the original format: plain strings
        rows.append(row)
    if output.suffix == ".json":
        atomic_write(output, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    import datasets

    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
    shutil.rmtree(output, ignore_errors=True)
    tmp.replace(output)


def main(argv: list[str] | None = None) -> Path:
    from scaledown.build import pipeline

    from scaledown.distributed import discover

    args = parser().parse_args(argv)
    discover()  # RANK before anything reads it: under srun / mpirun only rank 0 downloads and writes
    output = Path(args.output_file)
    work = output.with_name(output.name + ".build")
    if not args.corpus_path and not args.num_synthetic_queries:
        raise SystemExit("--corpus_path is required (only --num_synthetic_queries makes its own corpus)")
    if args.download_ms_marco and int(os.environ.get("RANK", 0)) == 0:
        download_ms_marco(args.ms_marco_url, ms_marco_path(work))
    if not args.corpus_path:
        if int(os.environ.get("RANK", 0)) == 0:
            write_synthetic(synthetic_folder(work), args.num_synthetic_queries)
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # the others read it once rank 0 has written it
            import torch

            torch.distributed.init_process_group("gloo")
            torch.distributed.barrier()
    pipeline.main(build_arguments(args, work))
    if int(os.environ.get("RANK", 0)) == 0:
        write_output(work / "dataset.jsonl", output)
        print(f"wrote {output} (build folder, for a rerun to resume: {work})")
    return output


if __name__ == "__main__":
    main()
