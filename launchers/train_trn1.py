"""Training entry point on AWS Trn1 (neuronx-distributed), started by torchrun (see slurm/train_trn1.sh).

    torchrun --nproc_per_node 32 launchers/train_trn1.py --config configs/trn1_mistral7b_tp8.yaml
configs/trn1_mistral7b_tp8.yaml is the recipe: TP 8, fp32 weights with bf16 autocast.
NOT YET RUN ON TRAINIUM: see the README's table of what is verified where.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# bf16 comes from torch.autocast; keep the compiler from down-casting the remaining fp32 matmuls on its own.
os.environ.setdefault("NEURON_CC_FLAGS", "--auto-cast=none")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from scaledown.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["train", "--engine.backend=neuron", *sys.argv[1:]])
