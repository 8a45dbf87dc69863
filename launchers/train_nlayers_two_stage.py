"""The original code's `train_nlayers_two_stage.py` has no counterpart yet: it says what to run instead."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaledown.compat import two_stage_refusal  # noqa: E402

if __name__ == "__main__":
    sys.exit(f"{Path(__file__).name}: {two_stage_refusal('n_layers')}")
