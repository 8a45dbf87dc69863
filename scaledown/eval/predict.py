"""`scaledown predict`: answers of an export for records without gold answers (questions + documents), batched,
sharded by rank under torchrun like `scaledown eval`; rank 0 writes one JSON line per record, in input order.

    scaledown predict --model runs/x/export --data queries.jsonl --out answers.jsonl
    torchrun --nproc_per_node 8 --no-python scaledown predict --model ... --data ... --out ...
"""

from __future__ import annotations

import sys

from scaledown.log import get_logger, pop_log_level

log = get_logger(__name__)


def parser():
    from scaledown.config import command_parser
    from scaledown.eval.cli import add_model_arguments

    p = command_parser(__doc__.splitlines()[0])
    add_model_arguments(p, "records: query and documents (JSONL or datasets folder)")
    p.add_argument("--out", required=True, help="answers here: one JSON line per record (id, query, answer)")
    return p


def predict(args, rank: int, world: int, device) -> int | None:
    from scaledown.data.schema import load_records, write_jsonl
    from scaledown.eval.cli import load_model
    from scaledown.eval.evaluate import Ranks, generate_answers

    records = load_records(args.data, require_answer=False)
    if not records:
        raise SystemExit(f"{args.data}: no records")
    model = load_model(args.model, args.generator, device, args.dtype)
    ranks = Ranks.of_process_group(device if device.type == "cuda" else None)
    answers = ranks.map(records, lambda shard: generate_answers(
        model, shard, args.batch_size, args.max_new_tokens, args.num_documents))
    if rank == 0:
        write_jsonl([{"id": r.id, "query": r.query, "answer": a} for r, a in zip(records, answers)], args.out)
        log.info("%d answers written to %s", len(answers), args.out)
        return len(answers)
    return None


def main(argv=None):
    from transformers.utils import logging as hf_logging

    from scaledown.eval.cli import run_ranks

    args = parser().parse_args(pop_log_level(sys.argv[1:] if argv is None else argv))
    hf_logging.set_verbosity_error()
    return run_ranks(lambda rank, world, device: predict(args, rank, world, device), args.device)


if __name__ == "__main__":
    main()
