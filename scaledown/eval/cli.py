"""`python -m scaledown.eval`: an export on held-out records (see scaledown/eval/__init__.py), sharded by rank
under torchrun, metrics gathered on rank 0."""

from __future__ import annotations

import os
import sys

import torch

from scaledown.eval.answers import references
from scaledown.eval.evaluate import Ranks, evaluate
from scaledown.eval.judge import JUDGE_MODEL, Judge
from scaledown.log import pop_log_level

def setup_device(requested: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun each rank takes the GPU of its LOCAL_RANK."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {requested}: no CUDA device on this machine")
        if device.index is None:
            from scaledown.models.generation import local_device

            device = local_device()  # this rank's LOCAL_RANK GPU, made current
        else:
            torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def run_ranks(main_of_rank, device: str | None):
    """`main_of_rank(rank, world, device)` with the process group of a torchrun launch, closed at the end."""
    rank, world, device = setup_device(device)
    try:
        result = main_of_rank(rank, world, device)
        if world > 1:
            torch.distributed.barrier()  # ranks leave together: rank 0 may still be writing when the others end
        return result
    finally:
        # A rank that exits with its gloo process group alive can abort at interpreter exit ("terminate called
        # without an active exception", SIGABRT) while its threads are destroyed: close it first.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def load_model(path: str, generator: str | None, device: torch.device, dtype: str | None):
    """An export on `device`; on a CPU the default dtype is float32 (no fast bf16 matmul there)."""
    from scaledown.models.model import ScaleDownModel

    dtype = dtype or (None if device.type == "cuda" else "float32")
    return ScaleDownModel.from_pretrained(path, generator=generator, dtype=dtype).to(device).eval()


def add_model_arguments(p, data_help: str) -> None:
    """The arguments `scaledown eval` and `scaledown predict` share: the export, the records, device, batching."""
    p.add_argument("--model", required=True, help="an export folder (save_pretrained)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--generator", default=None, help="base generator path, if it moved since training")
    p.add_argument("--device", default=None, help="cuda (default when available; cuda:LOCAL_RANK under torchrun), cpu")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                   help="default: the model's on a GPU, float32 on a CPU")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-documents", type=int, default=10, help="documents read per query (the paper: 10)")
    p.add_argument("--max-new-tokens", type=int, default=128)


def parser():
    from scaledown.config import command_parser

    p = command_parser("Answer metrics of an exported ScaleDown model (the paper's protocol).")
    add_model_arguments(p, "records with gold_answers and/or answer (JSONL or datasets folder)")
    p.add_argument("--max-examples", type=int, default=0, help="0: every record")
    p.add_argument("--uncompressed", action="store_true",
                   help="also evaluate the base generator with the full documents in its prompt")
    p.add_argument("--teacher", default=None,
                   help="records (same ids) whose 'answer' is the teacher's: scored as a system of its own "
                        "(without it, the records' own 'answer' is, when they also carry gold answers)")
    p.add_argument("--judge", nargs="?", const=JUDGE_MODEL, default=None,
                   help=f"LLM judge, a hub id or local path (flag alone: {JUDGE_MODEL})")
    p.add_argument("--judge-batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="write metrics and predictions here (JSON)")
    return p


def main(argv=None):
    from transformers.utils import logging as hf_logging

    args = parser().parse_args(pop_log_level(sys.argv[1:] if argv is None else argv))
    hf_logging.set_verbosity_error()
    return run_ranks(lambda rank, world, device: evaluate_export(args, rank, world, device), args.device)


def evaluate_export(args, rank: int, world: int, device: torch.device) -> dict | None:
    import json
    from pathlib import Path

    from scaledown.data.schema import load_records

    records = load_records(args.data, require_answer=False)
    records = records[: args.max_examples] if args.max_examples else records
    if not records:
        raise SystemExit(f"{args.data}: no records")
    for rec in records:
        references(rec)  # every record must have something to score against, checked before any compute
    model = load_model(args.model, args.generator, device, args.dtype)
    k = args.num_documents
    teacher = None
    if args.teacher:
        teacher = {r.id: r.answer for r in load_records(args.teacher)}
        missing = [r.id for r in records if r.id not in teacher]
        if missing:
            raise SystemExit(f"{args.teacher}: no teacher answer for ids {missing[:5]}")
    elif all(r.gold_answers and r.answer for r in records):
        teacher = {r.id: r.answer for r in records}
    judge = Judge(args.judge, device, args.dtype, args.judge_batch_size) if args.judge else None

    systems = ["compressed"]
    if args.uncompressed:
        systems.append("uncompressed")
    if teacher is not None:
        systems.append("teacher")
    ranks = Ranks.of_process_group(device if device.type == "cuda" else None)
    result = evaluate(model, records, ranks, systems, ce=False, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, num_documents=k, judge=judge, teacher=teacher,
                      keep_rows=True)
    if rank != 0:
        return None
    table, rows = result.metrics, result.rows
    against = "gold answers" if all(r.gold_answers for r in records) else "the records' answers (no gold_answers)"
    print(f"{len(records)} examples from {args.data}, {k} documents each, scored against {against}")
    columns = list(dict.fromkeys(m for row in table.values() for m in row))
    print(f"{'system':<14}" + "".join(f"{m:>12}" for m in columns))
    for name, row in table.items():
        print(f"{name:<14}" + "".join(f"{row[m]:>12.4f}" if m in row else f"{'-':>12}" for m in columns))
    for rec, row in list(zip(records, rows))[:3]:
        print(f"  Q: {rec.query}\n  gold: {references(rec)}\n  pred: {row['compressed']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": table, "predictions": [
            {"id": rec.id, "query": rec.query, "gold": references(rec), **{n: row[n] for n in systems}}
            for rec, row in zip(records, rows)]}, indent=2))
    return table


if __name__ == "__main__":
    main()
