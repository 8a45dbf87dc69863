"""Precision on a CPU: the same SmolLM2 training steps in fp32 and in bf16 variants, side by side in one run.

Each variant is a whole model (SmolLM2-135M-Instruct from the preset, its first 8 layers the compressor) with
its own AdamW, trained on the same batches from the same initial weights; the variants take turns step by step,
so a busy machine slows all of them alike. Prints samples/s, TFLOP/s and MFU against this CPU's bf16 peak
(measured by a matrix-product probe) and the loss curves' largest gap to fp32.

    python benchmarks/cpu_precision.py --steps 60                    # the configs/smollm2.yaml shape
    python benchmarks/cpu_precision.py --steps 10 --shape paper      # 5 documents of 128 tokens

Variants: `fp32` (today's configs/smollm2.yaml before this benchmark), `autocast` (fp32 weights, bf16 autocast:
every frozen weight re-cast each step), `mixed` (frozen weights stored in bf16, trained ones and AdamW in fp32,
bf16 autocast: model.trainable_dtype), `mixed-fp32attn` (the same with attention in fp32:
attn_implementation sdpa_fp32), `bf16` (everything bf16, AdamW on bf16 weights), and the cheaper step on top of the
fastest precision: `autocast-added` (autocast, and only the memory tokens' rows of the compressor's embedding table
train: model.compressor_embeddings=added; the other 49k rows get no gradient and no AdamW state) and `fp32-added`
(the same in fp32: for CPUs without native bf16, AVX2-only ones, where bf16 runs ~20x slower than fp32).

    python benchmarks/cpu_precision.py --steps 60 --variants fp32 autocast autocast-added   # parity + speed
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from scaledown.config import Config, ModelConfig, OptimConfig  # noqa: E402
from scaledown.data.schema import Record  # noqa: E402
from scaledown.build.synthetic import make_records  # noqa: E402
from scaledown.hardware import cpu_fast_dtype, cpu_has_native_bf16  # noqa: E402
from scaledown.metrics import FlopModel, batch_flop_inputs, cpu_peak_tflops  # noqa: E402
from scaledown.models.model import ScaleDownModel  # noqa: E402
from scaledown.train import lr_schedule  # noqa: E402

VARIANTS = {  # model.dtype, model.trainable_dtype, autocast, attention, model.compressor_embeddings
    "fp32": ("float32", "", None, "sdpa", "all"),
    "autocast": ("float32", "", torch.bfloat16, "sdpa", "all"),
    "mixed": ("bfloat16", "float32", torch.bfloat16, "sdpa", "all"),
    "mixed-fp32attn": ("bfloat16", "float32", torch.bfloat16, "sdpa_fp32", "all"),
    "bf16": ("bfloat16", "", None, "sdpa", "all"),
    "autocast-added": ("float32", "", torch.bfloat16, "sdpa", "added"),
    "fp32-added": ("float32", "", None, "sdpa", "added"),
}


def batches(shape: str, n: int, micro: int) -> tuple[list[list[Record]], dict]:
    if shape == "paper":  # 5 documents longer than 128 tokens (truncated to 128), ~20-token answers
        text = " ".join(("the river city was founded by a king who built a bridge and a museum of maps near the "
                         "old harbour").split() * 8)
        rows = [Record(query=f"question {i} about the river city and its bridge?", documents=[text] * 5,
                       answer="the king who built the bridge and the museum of maps near the old harbour")
                for i in range(n * micro)]
        sizes = {"max_doc_tokens": 128, "max_query_tokens": 64, "max_answer_tokens": 32, "docs": 5}
    else:  # the learning benchmark's probe questions, 3 documents (configs/smollm2.yaml)
        rows = [Record(query=r["query"], documents=[d["text"] for d in r["documents"]], answer=r["answer"])
                for r in make_records(n * micro, seed=0, num_documents=3, nonce_share=0.25)]
        sizes = {"max_doc_tokens": 64, "max_query_tokens": 32, "max_answer_tokens": 24, "docs": 3}
    return [rows[i * micro:(i + 1) * micro] for i in range(n)], sizes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--shape", choices=["smollm2", "paper"], default="smollm2")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant first")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    from scaledown.models.presets import smollm2

    generator = smollm2()["generator"]
    data, sizes = batches(args.shape, args.steps + args.warmup, args.micro_batch)
    runs = {}
    for name in args.variants:
        dtype, trainable, autocast, attention, embeddings = VARIANTS[name]
        cfg = ModelConfig(generator=str(generator), compressor_layers=8, dtype=dtype, trainable_dtype=trainable,
                          attn_implementation=attention, compressor_embeddings=embeddings,
                          lora_dropout=0.0, max_doc_tokens=sizes["max_doc_tokens"],
                          max_query_tokens=sizes["max_query_tokens"], max_answer_tokens=sizes["max_answer_tokens"])
        torch.manual_seed(0)
        model = ScaleDownModel.build(cfg).train()
        groups = model.parameter_groups()
        o = OptimConfig(lr_generator=1e-3, lr_compressor=2e-4, weight_decay=0.0)
        optim = torch.optim.AdamW([{"params": groups["compressor"], "lr": o.lr_compressor},
                                   {"params": groups["generator"], "lr": o.lr_generator}])
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_schedule(args.steps + args.warmup, 0.1))
        collate = model.collator(sizes["docs"])
        runs[name] = {"model": model, "optim": optim, "sched": sched, "autocast": autocast,
                      "batches": [collate(b) for b in data], "times": [], "losses": [],
                      "flops": FlopModel.of(model)}
    Config()  # the config classes validate the variants above; nothing else to check
    peak = cpu_peak_tflops()
    for step in range(args.steps + args.warmup):
        for name, run in runs.items():
            batch = run["batches"][step]
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=run["autocast"], enabled=run["autocast"] is not None):
                loss = run["model"](**batch)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in run["optim"].param_groups for p in g["params"]], 1.0)
            run["optim"].step()
            run["sched"].step()
            run["optim"].zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - start
            if step >= args.warmup:
                run["times"].append(elapsed)
            run["losses"].append(float(loss.detach()))
        if step % 10 == 0:
            print(f"step {step}: " + ", ".join(f"{n} {r['losses'][-1]:.3f}" for n, r in runs.items()), flush=True)
    peak_after = cpu_peak_tflops()
    base = runs.get("fp32")
    rows = {}
    for name, run in runs.items():
        flops = statistics.mean(run["flops"].train_flops(*batch_flop_inputs(b))
                                for b in run["batches"][args.warmup:])
        seconds = statistics.median(run["times"])
        tflops = flops / seconds / 1e12
        gap = max(abs(a - b) for a, b in zip(run["losses"], base["losses"])) if base else None
        rows[name] = {"s_per_step": seconds, "samples_per_s": args.micro_batch / seconds, "tflops": tflops,
                      "mfu": tflops / max(peak, peak_after), "max_loss_gap_vs_fp32": gap,
                      "final_loss": statistics.mean(run["losses"][-5:])}
    print(f"shape {args.shape}, micro-batch {args.micro_batch}, {args.steps} timed steps per variant (median), "
          f"{str(cpu_fast_dtype()).removeprefix('torch.')} peak probe {peak:.2f} / {peak_after:.2f} TFLOP/s (before /"
          f" after), threads {torch.get_num_threads()}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 {cpu_has_native_bf16()}")
    print(f"{'variant':<15}{'s/step':>8}{'samples/s':>10}{'vs fp32':>8}{'TFLOP/s':>9}{'MFU':>7}{'loss gap':>9}"
          f"{'last5 loss':>11}")
    for name, r in rows.items():
        speedup = rows["fp32"]["s_per_step"] / r["s_per_step"] if "fp32" in rows else float("nan")
        gap = f"{r['max_loss_gap_vs_fp32']:.3f}" if r["max_loss_gap_vs_fp32"] is not None else "-"
        print(f"{name:<15}{r['s_per_step']:>8.3f}{r['samples_per_s']:>10.2f}{speedup:>7.2f}x{r['tflops']:>9.3f}"
              f"{100 * r['mfu']:>6.1f}%{gap:>9}{r['final_loss']:>11.3f}")
    if any(name.endswith("-added") for name in rows):
        print("(the -added variants train other weights than fp32: their loss gap is the recipe's, not precision's)")
    # The curves in windows of 10 steps: bf16 rounding shows as step-to-step noise, a real drift as a trend.
    windows = range(0, args.steps + args.warmup, 10)
    print("mean loss per 10 steps: " + " ".join(f"{w:>6}" for w in windows))
    for name, run in runs.items():
        print(f"{name:<23}" + " ".join(f"{statistics.mean(run['losses'][w:w + 10]):>6.3f}" for w in windows))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "peak": [peak, peak_after],
                                         "rows": rows, "losses": {n: r["losses"] for n, r in runs.items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
