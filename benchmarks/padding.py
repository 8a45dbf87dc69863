"""Padding in training's micro-batches: the share of padded positions in the generator's and the compressor's rows
over one epoch, with the paper's random batches and with data.group_by_length. Tokenization only: the model is
built for its collator, never run.

    python benchmarks/padding.py --data runs/quickstart/data/dataset.jsonl --generator .cache/presets/smollm2/generator
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaledown.config import ModelConfig  # noqa: E402
from scaledown.data.mapped import open_records, text_lengths  # noqa: E402
from scaledown.data.sampler import ShardedSampler  # noqa: E402
from scaledown.models.model import ScaleDownModel  # noqa: E402


def padding_shares(records, collate, sampler, micro: int) -> dict[str, float]:
    """Padded share of the generator's and the compressor's positions over the sampler's epoch."""
    order = list(sampler)
    totals = {"gen": [0, 0], "comp": [0, 0]}
    for i in range(0, len(order) - micro + 1, micro):
        batch = collate([records[j] for j in order[i:i + micro]])
        for key, mask in (("gen", batch["gen_attention_mask"]), ("comp", batch["comp_attention_mask"])):
            totals[key][0] += int((mask == 0).sum())
            totals[key][1] += mask.numel()
    return {k: pad / size for k, (pad, size) in totals.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a training set (JSONL or datasets folder)")
    p.add_argument("--generator", required=True, help="the generator whose tokenizer pads")
    p.add_argument("--num-documents", type=int, default=5)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--global-batch", type=int, default=64)
    args = p.parse_args(argv)
    records = open_records(args.data)
    # The model's own collator (its tokenizers and templates); the weights are loaded but never run.
    collate = ScaleDownModel.build(ModelConfig(generator=args.generator, dtype="float32")).collator(args.num_documents)
    global_batch = min(args.global_batch, len(records) // args.micro_batch * args.micro_batch)
    samplers = {"random": ShardedSampler(len(records), global_batch, 0, 1),
                "group_by_length": ShardedSampler(len(records), global_batch, 0, 1, lengths=text_lengths(records))}
    rows = {name: padding_shares(records, collate, sampler, args.micro_batch) for name, sampler in samplers.items()}
    print(f"{len(records)} records, micro-batch {args.micro_batch}, {args.num_documents} documents; padded share of "
          "positions")
    print(f"{'batches':<16} {'generator':>9} {'compressor':>10}")
    for name, r in rows.items():
        print(f"{name:<16} {100 * r['gen']:>8.1f}% {100 * r['comp']:>9.1f}%")


if __name__ == "__main__":
    main()
