"""The original code's `train_with_evaluation.py`: training with held-out evaluation, which `scaledown train`
does whenever it has eval records (the learning curve every `--train.eval_every` steps, then report.md with the
before/after table and the text baselines, loss.png and the compressed-vs-text speed line in the run folder).

    python launchers/train_with_evaluation.py --train_data train.json --eval_data eval.json --output_dir runs/x
Every flag of `scaledown train` (and the original train.py's) works here.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaledown.cli import main  # noqa: E402


def has_eval_data(argv: list[str]) -> bool:
    return any(a.split("=")[0] in ("--eval_data", "--data.eval_path") for a in argv) or any(
        a.startswith("--config") for a in argv)  # a config file may name it; the loop says when it does not


if __name__ == "__main__":
    if "-h" not in sys.argv and "--help" not in sys.argv and not has_eval_data(sys.argv[1:]):
        raise SystemExit("train_with_evaluation.py: --eval_data FILE (or --data.eval_path) is the evaluation "
                         "this script is for; without it, run scaledown train")
    main(["train", *sys.argv[1:]])
