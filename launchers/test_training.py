"""The original code's `test_training.py` (`--test_both`: both compressor kinds): the tests that train each kind,
on tiny models (`tests/test_model.py`, `tests/test_compat.py`). The whole suite: `bash launchers/test.sh`."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"--test_nlayers": "n_layers", "--test_modernbert": "encoder", "--test_both": None}


def command(argv: list[str]) -> list[str]:
    """The pytest command for the original flags; other arguments go to pytest."""
    chosen = [KINDS[a] for a in argv if a in KINDS]
    rest = [a for a in argv if a not in KINDS]
    select = ["-k", " or ".join(chosen)] if chosen and None not in chosen else []
    return [sys.executable, "-m", "pytest", "-q", "tests/test_model.py", "tests/test_compat.py", *select, *rest]


if __name__ == "__main__":
    cmd = command(sys.argv[1:])
    print(" ".join(cmd[1:]), flush=True)
    os.chdir(ROOT)
    os.execv(cmd[0], cmd)
