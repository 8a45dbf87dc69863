"""Checkpoints: `step-000100/` folders written under a temporary name and renamed when complete.

A folder holds the engine's state (model, optimizer, scheduler: DeepSpeed's files or the torch engine's),
`trainer_state.pt` (step, sampler position), one `rng-rank00000.pt` per rank, and the resolved `config.yaml`.
A run killed mid-save leaves only a `*.tmp` folder, which is never loaded and is removed by the next save.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from scaledown.engine.base import Engine, rng_state, set_rng_state

STEP_DIR = re.compile(r"^step-(\d{6,})$")


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoint folders under root, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, root: Path) -> Path | None:
    """`auto`: the latest complete checkpoint or None; `none`: None; otherwise that folder (must exist)."""
    if resume in ("", "none"):
        return None
    if resume == "auto":
        found = complete_checkpoints(root)
        return found[-1] if found else None
    path = Path(resume)
    if not STEP_DIR.match(path.name) or not path.is_dir():
        raise FileNotFoundError(f"train.resume={resume}: not a complete step-NNNNNN checkpoint folder")
    return path


class Checkpointer:
    def __init__(self, engine: Engine, root: str | Path, every: int, keep_last: int):
        self.engine, self.root, self.every, self.keep_last = engine, Path(root), every, keep_last

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, trainer_state: dict, config) -> Path:
        final = self.root / f"step-{step:06d}"
        tmp = self.root / f"step-{step:06d}.tmp"
        if self.engine.is_main:
            for stale in self.root.glob("step-*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # re-saving the same step after a resume
                shutil.rmtree(final)
            tmp.mkdir(parents=True)
        self.engine.barrier()
        self.engine.save_checkpoint(tmp)
        torch.save(rng_state(), tmp / f"rng-rank{self.engine.rank:05d}.pt")
        if self.engine.is_main:
            torch.save(trainer_state, tmp / "trainer_state.pt")
            config.save(tmp / "config.yaml")
        self.engine.barrier()
        if self.engine.is_main:
            tmp.rename(final)  # the commit point: only now is the checkpoint visible to resume
            for old in complete_checkpoints(self.root)[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        self.engine.barrier()
        return final

    def load(self, folder: Path) -> dict:
        """Restore engine and RNG state; return the trainer state."""
        self.engine.load_checkpoint(folder)
        rng_file = folder / f"rng-rank{self.engine.rank:05d}.pt"
        if rng_file.exists():
            set_rng_state(torch.load(rng_file, weights_only=True))
        return torch.load(folder / "trainer_state.pt", weights_only=True)
