"""Training-step throughput: samples/s, tokens/s per device, TFLOP/s and MFU, over a sweep of micro-batch sizes,
ZeRO stages and compressor depths. Random weights (speed does not need trained ones); FLOPs are counted by
scaledown.metrics (LoRA-aware: frozen generator weights cost forward + input gradient only).

    DS_ACCELERATOR=cpu .venv/bin/deepspeed --num_gpus 1 benchmarks/train_throughput.py --arch tiny
    deepspeed --num_gpus 1 benchmarks/train_throughput.py --arch mistral-7b --dtype bfloat16 \
        --micro-batches 1 2 4 8 --zero-stages 2 --compressor-layers 8 5      # H100/H200: peak 989 TFLOP/s

MFU is against the datasheet's dense bf16 peak on known GPUs, and on a CPU against its bf16 matrix-product
rate measured at start-up (scaledown.metrics.device_peak_tflops). benchmarks/gpu.sh runs the GPU sweep.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from inference import ARCHS  # noqa: E402
from scaledown.config import Config, ModelConfig  # noqa: E402
from scaledown.data.schema import Record  # noqa: E402
from scaledown.engine.deepspeed import ZeroEngine  # noqa: E402
from scaledown.metrics import FlopModel, Meter, device_peak_tflops  # noqa: E402
from scaledown.models.generator import DTYPES  # noqa: E402
from scaledown.models.model import ScaleDownModel  # noqa: E402
from scaledown.models.tiny import make_tiny_tokenizer  # noqa: E402
from scaledown.train import lr_schedule, param_groups, train_step  # noqa: E402

WORDS = "the river city was founded by a king who built a bridge and a museum of maps near the old harbour".split()


def records(n: int, docs: int) -> list[Record]:
    """Documents longer than 128 tokens (the collator truncates them to the budget), ~32-token answers."""
    text = " ".join(WORDS * 12)
    return [Record(query=f"question {i} about the river city and its bridge?", documents=[text] * docs,
                   answer=" ".join(WORDS[: 20])) for i in range(n)]


def ds_config(stage: int) -> dict:
    return json.loads((ROOT / "ds_configs" / f"zero{stage}.json").read_text())


def measure(args, layers: int, stage: int, tokenizer) -> list[tuple[int, dict]]:
    """One model and engine per (compressor depth, ZeRO stage), every micro-batch size on it: DeepSpeed sizes
    nothing by the micro-batch (accumulation 1), so only the batches fed change."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    top = max(args.micro_batches)
    engine = ZeroEngine(top * world, top, config=ds_config(stage), dtype=args.dtype)
    engine.setup()
    cfg = ModelConfig(generator=args.arch, compressor_layers=layers, dtype=args.dtype, rerank=True)
    device = engine.device

    def model_fn():
        torch.manual_seed(0)
        with torch.device(device):  # random init where it runs: seconds for 7B on a GPU, minutes on a CPU
            lm = AutoModelForCausalLM.from_config(ARCHS[args.arch](), dtype=DTYPES[args.dtype])
            return ScaleDownModel.build(cfg, lm=lm, tokenizer=tokenizer)

    model = engine.prepare(model_fn, param_groups(Config()), lr_schedule(10_000, 0.05), 1.0)
    collate = engine.model.collator(num_documents=args.docs)
    flops, peak = FlopModel.of(engine.model), device_peak_tflops(engine.device, args.peak_tflops)
    out = []
    for micro in args.micro_batches:
        batch = collate(records(micro, args.docs))
        it = iter(lambda: batch, None)  # the same batch forever: data loading is not what is measured
        meter = Meter(flops, peak, engine.device)
        for _ in range(args.warmup):
            train_step(model, engine, it, meter)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        meter.reset()
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(model, engine, it, meter)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        summary = meter.summary()
        summary["seconds_per_step"] = (time.perf_counter() - start) / args.steps
        summary["peak_tflops"] = meter.peak
        out.append((micro, summary))
        if args.profile and micro == args.micro_batches[-1] and engine.rank == 0:
            profile_step(model, engine, it, meter, args.profile)
    del model, engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def profile_step(model, engine, batches, meter, rows: int) -> None:
    """One more step under torch.profiler: the operators that own its time (GPU time on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = engine.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        train_step(model, engine, batches, meter)
        if cuda:
            torch.cuda.synchronize()
    key = "cuda_time_total" if cuda else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--docs", type=int, default=5)
    p.add_argument("--micro-batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--zero-stages", type=int, nargs="+", default=[2])
    p.add_argument("--compressor-layers", type=int, nargs="+", default=[2])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="per device; default: known GPUs' bf16 peak")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="profile one step at the largest micro-batch and print its top ROWS operators")
    p.add_argument("--local_rank", type=int, default=None)
    args = p.parse_args()
    hf_logging.set_verbosity_error()
    tokenizer = make_tiny_tokenizer()  # token ids only matter for shapes; any tokenizer with a chat template
    tokenizer.padding_side = "left"
    rows = []
    for layers in args.compressor_layers:
        for stage in args.zero_stages:
            rows += [(layers, stage, micro, s) for micro, s in measure(args, layers, stage, tokenizer)]
    if int(os.environ.get("RANK", 0)) == 0:
        if args.json:
            args.json.write_text(json.dumps({"arch": args.arch, "dtype": args.dtype, "docs": args.docs,
                                             "device": torch.cuda.get_device_name() if torch.cuda.is_available()
                                             else "cpu", "rows": [{"compressor_layers": n, "zero": z,
                                                                   "micro_batch": m, **s} for n, z, m, s in rows]},
                                            indent=2))
        print(f"arch {args.arch} ({args.dtype}), {args.docs} documents of 128 tokens, world "
              f"{os.environ.get('WORLD_SIZE', 1)}, {args.steps} timed steps after {args.warmup} warm-up")
        print(f"{'layers':>6} {'zero':>4} {'micro':>5} {'samples/s':>10} {'tok/s/dev':>10} {'TFLOP/s':>8} "
              f"{'MFU':>6} {'mem GiB':>8}")
        for layers, stage, micro, s in rows:
            mfu = f"{100 * s['perf/mfu']:.1f}%" if "perf/mfu" in s else "n/a"
            mem = s.get("memory/peak_allocated_gib", s.get("memory/peak_rss_gib", 0.0))
            print(f"{layers:>6} {stage:>4} {micro:>5} {s['perf/samples_per_s_per_device']:>10.2f} "
                  f"{s['perf/tokens_per_s_per_device']:>10.0f} {s['perf/tflops_per_device']:>8.4f} {mfu:>6} "
                  f"{mem:>8.2f}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
