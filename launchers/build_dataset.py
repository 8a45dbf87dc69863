"""Dataset build entry point (retrieval, reranking, teacher answers), for torchrun or plain python.

    torchrun --nproc_per_node 8 launchers/build_dataset.py --corpus kilt.jsonl --queries q.tsv --out runs/data
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from scaledown.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["build", *sys.argv[1:]])
