"""Samples/s of ScaleDown's training step against a bare `deepspeed.initialize` loop, side by side in one run.

Both loops train the same OSCAR model (same init, same batches, same DeepSpeed config); timed windows
alternate (bare, ours, bare, ours, ...) so machine drift hits both alike. Prints the median samples/s of
each and the engine's overhead.

    DS_ACCELERATOR=cpu .venv/bin/deepspeed --num_gpus 2 benchmarks/engine_overhead.py          # CPU, gloo
    deepspeed --num_gpus 8 benchmarks/engine_overhead.py --generator mistralai/Mistral-7B-Instruct-v0.2 \
        --dtype bfloat16 --micro-batch 4                                                   # GPU
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))

import deepspeed  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from scaledown.config import Config, ModelConfig  # noqa: E402
from scaledown.data.schema import validate_record  # noqa: E402
from scaledown.build.synthetic import make_records  # noqa: E402
from scaledown.engine.deepspeed import ZeroEngine, resolve_ds_config  # noqa: E402
from scaledown.metrics import FlopModel, Meter  # noqa: E402
from scaledown.models.model import ScaleDownModel  # noqa: E402
from scaledown.models.tiny import make_tiny_generator  # noqa: E402
from scaledown.train import lr_schedule, param_groups, train_step  # noqa: E402


def build(args) -> ScaleDownModel:
    torch.manual_seed(0)
    return ScaleDownModel.build(ModelConfig(generator=args.generator, compressor_layers=args.compressor_layers,
                                            dtype=args.dtype, rerank=True, lora_dropout=0.0))


def main():
    groups = param_groups(Config())  # the paper's LRs and weight decay
    parser = argparse.ArgumentParser()
    parser.add_argument("--generator", default="", help="model path; default: a small random-init one")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compressor-layers", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--ds-config", default=str(ROOT / "ds_configs" / "zero2.json"))
    parser.add_argument("--window", type=int, default=5, help="optimizer steps per timed window")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local_rank", type=int, default=None)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    deepspeed.init_distributed()
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if not args.generator:
        path = Path(tempfile.gettempdir()) / "scaledown-bench-generator"
        if rank == 0 and not (path / "config.json").exists():
            make_tiny_generator(path, hidden_size=128, num_layers=4, intermediate_size=256)
        torch.distributed.barrier()
        args.generator = str(path)
    global_batch = args.micro_batch * args.accumulation * world

    # Ours: the Engine + train_step the trainer runs (metrics accounting included).
    ours = ZeroEngine(global_batch, args.micro_batch, config=args.ds_config, dtype=args.dtype)
    ours.setup()
    ours_model = ours.prepare(lambda: build(args), groups, lr_schedule(10_000, 0.05), 1.0)
    meter = Meter(FlopModel.of(ours.model), 0.0, ours.device)

    # Bare: deepspeed.initialize on the same model, the loop written out by hand.
    model = build(args)
    optimizer = torch.optim.AdamW([g.as_dict() for g in groups(model)])
    ds_config = resolve_ds_config(args.ds_config, ours.batch, 1.0, args.dtype)
    bare, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                    lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                                        opt, lr_schedule(10_000, 0.05)))

    collate = ours.model.collator(num_documents=5)
    records = [validate_record(r, "synthetic") for r in make_records(args.micro_batch * 8, seed=rank)]
    batches = [collate(records[i:i + args.micro_batch]) for i in range(0, len(records), args.micro_batch)]
    ours_iter, bare_iter = itertools.cycle(batches), itertools.cycle(batches)
    device = ours.device

    def run_bare(steps):
        for _ in range(steps * args.accumulation):
            batch = {k: v.to(device) for k, v in next(bare_iter).items()}
            loss = bare(**batch)["loss"]
            bare.backward(loss)
            bare.step()

    def run_ours(steps):
        for _ in range(steps):
            train_step(ours_model, ours, ours_iter, meter)

    def timed(fn):
        torch.distributed.barrier()
        start = time.perf_counter()
        fn(args.window)
        if device.type == "cuda":
            torch.cuda.synchronize()
        torch.distributed.barrier()
        return global_batch * args.window / (time.perf_counter() - start)

    run_bare(1)
    run_ours(1)  # warm-up
    rates = {"bare": [], "ours": []}
    for _ in range(args.rounds):
        rates["bare"].append(timed(run_bare))
        rates["ours"].append(timed(run_ours))
    if rank == 0:
        bare_rate, ours_rate = statistics.median(rates["bare"]), statistics.median(rates["ours"])
        print(f"world {world}, global batch {global_batch} (micro {args.micro_batch} x accum {args.accumulation} "
              f"x dp {world}), {args.rounds} alternating windows of {args.window} steps, device {device}")
        print(f"bare deepspeed.initialize loop: {bare_rate:8.2f} samples/s  (windows: "
              f"{', '.join(f'{r:.1f}' for r in rates['bare'])})")
        print(f"scaledown engine + train_step:  {ours_rate:8.2f} samples/s  (windows: "
              f"{', '.join(f'{r:.1f}' for r in rates['ours'])})")
        print(f"overhead: {100 * (bare_rate / ours_rate - 1):+.2f}% (target <= 3%)")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
