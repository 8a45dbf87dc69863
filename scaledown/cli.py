"""The `scaledown` command: one entry for the dataset build, training, evaluation, the report and the memory
estimate (the training flags, with the original ScaleDown code's as aliases: scaledown/flags.py).

    scaledown build --corpus kilt.jsonl --queries q.tsv --out runs/data     # torchrun --no-python scaledown build
    scaledown train --config configs/tiny.yaml --train.max_steps=20          # --help lists every config field
    scaledown eval --model runs/x/export --data eval.jsonl
    scaledown predict --model runs/x/export --data queries.jsonl --out answers.jsonl
    scaledown report runs/x
    scaledown estimate --config configs/small_gpu.yaml
"""

from __future__ import annotations

import sys

from scaledown.config import ConfigError
from scaledown.flags import parse_train_args
from scaledown.log import pop_log_level

COMMANDS = {
    "build": ("scaledown.build.pipeline", "the dataset: SPLADE retrieval, reranking, teacher answers (torchrun)"),
    "prepare_dataset": ("scaledown.build.prepare_dataset", "the original code's dataset command, on the build"),
    "cache": ("scaledown.build.memory_cache", "two-stage training, stage 1: memory embeddings of the training set"),
    "train": ("scaledown.train", "train from a config (the deepspeed launcher: launchers/train_gpu.py)"),
    "eval": ("scaledown.eval.cli", "answer metrics of an export on gold answers, next to baselines"),
    "predict": ("scaledown.eval.predict", "answers of an export for new questions (torchrun-sharded)"),
    "report": ("scaledown.eval.report", "report.md and loss.png of a run folder"),
    "import-oscar": ("scaledown.models.oscar_import", "a released OSCAR/PISCO checkpoint as a ScaleDown export"),
    "estimate": ("scaledown.estimate", "model-state memory per GPU and host; the first configuration that fits"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("scaledown")
    except PackageNotFoundError:  # run from a checkout without `pip install -e .`
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> None:
    import importlib

    argv = pop_log_level(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-V", "--version"):
        print(f"scaledown {version()}")
        return
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"scaledown: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)}; scaledown --help says "
              "what each does)", file=sys.stderr)
        raise SystemExit(2)
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:<16}{text}" for name, (_, text) in COMMANDS.items()]
        print("usage: scaledown [--version] COMMAND [ARGS]   (scaledown COMMAND --help for its arguments)\n\n"
              "commands:\n" + "\n".join(lines))
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    if argv[0] == "train":  # parsed first: `scaledown train --help` answers without loading torch
        try:
            cfg = parse_train_args(argv[1:])
        except ConfigError as err:  # a usage error in one line, as argparse gives them
            print(f"scaledown train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        from scaledown.train import train

        train(cfg)
        return
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sys.argv[0] = f"scaledown {argv[0]}"  # the commands' usage lines say `usage: scaledown build ...`
    try:
        module.main(argv[1:])  # not returned: a console script exits with what main returns
    except ConfigError as err:  # estimate's run config: a usage error in one line, as for train
        print(f"scaledown {argv[0]}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
