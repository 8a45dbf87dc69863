"""The end-of-run report of a training run with eval data: RUN_DIR/report.md and RUN_DIR/loss.png.

    python -m scaledown.eval.report RUN_DIR        # redo it from RUN_DIR/train_result.json

- before/after table on the held-out records: the generator with no documents, the generator reading the
  documents as text (uncompressed), the compressed model before training and after; answer CE against the
  teacher's answers and the gold ones, accuracy, token F1, and agreement with the teacher (teacher_f1);
- loss.png: the training loss, the held-out answer CE and accuracy (every `train.eval_every` steps, with the
  baselines as lines) and the learning rates; the same curve as a table in report.md;
- speed: milliseconds per query, compressed vs uncompressed, same device, same batch, same number of new tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ["ce_teacher", "ce_gold", "ce_gold_other_documents", "accuracy", "f1", "teacher_f1"]
# (label, where in train_result.json, key prefix): the baselines were measured before the first step.
ROWS = [("no documents", ("baseline", "no_documents"), "baseline/no_documents"),
        ("uncompressed (documents as text)", ("baseline", "uncompressed"), "baseline/uncompressed"),
        ("compressed, before training", ("baseline", "compressed"), "eval"),
        ("compressed, after training", ("eval",), "eval")]


def table_rows(result: dict) -> list[tuple[str, dict[str, float]]]:
    """(label, {column: value}) for each system the run measured."""
    rows = []
    for label, where, prefix in ROWS:
        block = result
        for key in where:
            block = (block or {}).get(key)
        if block:
            rows.append((label, {c: block[f"{prefix}/{c}"] for c in COLUMNS if f"{prefix}/{c}" in block}))
    return rows


def curve(result: dict, key: str) -> list[tuple[int, float]]:
    """(step, value) of one held-out metric: before training (step 0), every curve evaluation, the final one."""
    points = [(e["step"], e[key]) for e in result.get("eval_history") or [] if key in e]
    before = ((result.get("baseline") or {}).get("compressed") or {}).get(key)
    if before is not None:
        points.insert(0, (0, before))
    if key in (result.get("eval") or {}) and (not points or points[-1][0] != result["steps"]):
        points.append((result["steps"], result["eval"][key]))
    return points


def baseline_lines(ax, base: dict, metric: str, suffix: str = "") -> None:
    """The text and no-document baselines of one metric as horizontal lines (when the run measured them)."""
    for name, style in (("uncompressed", "--"), ("no_documents", ":")):
        value = base.get(name, {}).get(f"baseline/{name}/{metric}")
        if value is not None:
            ax.axhline(value, linestyle=style, color="grey", label=name.replace("_", " ") + suffix)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = result["history"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    steps = [h["step"] for h in history]
    axes[0].plot(steps, [h["train/loss"] for h in history], label="train loss")
    axes[0].set(title="training loss", xlabel="optimizer step", ylabel="loss")
    base = result.get("baseline") or {}
    for key, label in (("eval/ce_teacher", "teacher's answers"), ("eval/ce_gold", "gold answers"),
                       ("eval/ce_gold_other_documents", "gold answers, another question's documents")):
        points = curve(result, key)
        if points:
            axes[1].plot(*zip(*points), marker="o", label=label)
    baseline_lines(axes[1], base, "ce_gold", " (gold)")
    axes[1].set(title="held-out answer CE", xlabel="optimizer step", ylabel="CE per token")
    points = curve(result, "eval/accuracy")
    if points:
        axes[2].plot(*zip(*points), marker="o", label="compressed")
    baseline_lines(axes[2], base, "accuracy")
    axes[2].set(title="held-out accuracy (gold)", xlabel="optimizer step", ylabel="accuracy")
    for key in sorted({k for h in history for k in h if k.startswith("train/lr_")}):
        axes[3].plot(steps, [h[key] for h in history], label=key.removeprefix("train/lr_"))
    axes[3].set(title="learning rate", xlabel="optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict, run_dir: Path) -> str:
    lines = [f"# Training report: {run_dir}", "", f"{result['steps']} optimizer steps. Held-out records: "
             "answer CE per token (lower is better) against the teacher's answers and the gold answers, and against "
             "the gold answers given another question's documents (equal to ce_gold: the model does not read its "
             "memory); accuracy and token F1 against the gold answers; teacher_f1 = agreement with the teacher's "
             "answer.", ""]
    rows = table_rows(result)
    if rows:
        lines += ["| system | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for label, values in rows:
            lines.append(f"| {label} | " + " | ".join(f"{values[c]:.4f}" if c in values else "-" for c in COLUMNS)
                         + " |")
    lines += ["", "![training curves](loss.png)", ""]
    columns = {k: dict(curve(result, k)) for k in ("eval/ce_gold", "eval/ce_gold_other_documents", "eval/accuracy")}
    keys = [k for k, values in columns.items() if values]
    if keys and len(columns[keys[0]]) > 1:
        steps = sorted({step for values in columns.values() for step in values})
        lines += ["## Learning curve (held-out)", "", "| step | " + " | ".join(k.removeprefix("eval/") for k in keys)
                  + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {step} | " + " | ".join(f"{columns[k][step]:.4f}" if step in columns[k] else "-" for k in keys)
                  + " |" for step in steps]
        lines.append("")
    sp = result.get("speed")
    if sp:
        ratio = sp["uncompressed_ms_per_query"] / sp["compressed_ms_per_query"]
        lines += ["## Speed", "", f"{sp['queries']} queries, batch {sp['batch_size']}, {sp['documents']} documents, "
                  f"{sp['new_tokens']} new tokens each (forced), on {sp['device']}:", "",
                  "| system | ms per query |", "|---|---|",
                  f"| compressed | {sp['compressed_ms_per_query']:.1f} |",
                  f"| uncompressed | {sp['uncompressed_ms_per_query']:.1f} |", "",
                  f"Speed-up of the compressed model: {ratio:.2f}x.", ""]
    else:
        lines += ["## Speed", "", "Not measured (no eval records, or ZeRO-3, where generation is collective).", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    source = run_dir / "train_result.json"
    if not source.exists():
        raise SystemExit(f"{source}: no such file (a finished training run writes it)")
    result = json.loads(source.read_text())
    for name in ("history", "eval_history"):  # every segment of a stopped and resumed run, when kept
        path = run_dir / f"{name}.jsonl"
        if path.exists():
            result[name] = [json.loads(line) for line in path.read_text().splitlines() if line]
    plot(result, run_dir / "loss.png")
    (run_dir / "report.md").write_text(markdown(result, run_dir))
    return run_dir / "report.md"


def main(argv=None):
    from scaledown.config import command_parser

    parser = command_parser(__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    print(write_report(parser.parse_args(argv).run_dir))


if __name__ == "__main__":
    main()
