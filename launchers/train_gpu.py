"""Training entry point for the DeepSpeed launcher and torchrun.

    deepspeed --num_gpus 8 launchers/train_gpu.py --config my.yaml --deepspeed_config ds_configs/zero2.json
    torchrun --nproc_per_node 8 launchers/train_gpu.py --config ... --train.micro_batch_size=4
Every `--section.field=value` overrides the config file.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The CPU communication op is JIT-built once per machine, not once per run.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging  # noqa: E402

from scaledown.cli import main  # noqa: E402

if __name__ == "__main__":
    hf_logging.set_verbosity_error()
    main(["train", *sys.argv[1:]])
