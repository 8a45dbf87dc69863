"""The original code's `train_nlayers_two_stage.py`: two-stage training with the n_layers compressor. Stage 1
writes the frozen compressor's memory embeddings of every training record to --cache_dir (`scaledown cache`),
stage 2 trains the generator's LoRA on them (`scaledown train --data.memory_cache`); the compressor does not
train. Every training flag works (the original's and --section.field=value); torchrun shards both stages.

    python launchers/train_nlayers_two_stage.py --train_data data.json --cache_dir ./cache --output_dir ./out
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaledown.build.memory_cache import two_stage_main  # noqa: E402

if __name__ == "__main__":
    two_stage_main(Path(__file__).name, "n_layers", sys.argv[1:])
