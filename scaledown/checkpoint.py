"""Checkpoints: `step-000100/` folders written under a temporary name and renamed when complete.

A folder holds the engine's state (model, optimizer, scheduler: DeepSpeed's files or the torch engine's),
`trainer_state.pt` (step, sampler position), one `rng-rank00000.pt` per rank, the resolved `config.yaml`, and,
written last, `MANIFEST.json`: every file with its size and xxh3-128 checksum. A run killed mid-save
leaves only a `*.tmp` folder, which is never loaded and is removed by the next save; old checkpoints are renamed to
`*.deleting` before they are removed, so a kill during clean-up never leaves half a folder under a final name.
`resume=auto` takes the newest folder whose manifest verifies on every rank, and says why it skips the others.
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import re
import shutil
from pathlib import Path

import torch

from scaledown.data.mapped import content_fingerprint
from scaledown.data.schema import umask_modes
from scaledown.engine.base import Engine, rng_state, set_rng_state
from scaledown.log import get_logger

log = get_logger(__name__)

STEP_DIR = re.compile(r"^step-(\d{6,})$")
MANIFEST = "MANIFEST.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path) -> None:
    """Every file with its size and checksum: a same-size corruption of a large shard is caught too."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        files[str(path.relative_to(folder))] = {"size": path.stat().st_size, "xxh3": content_fingerprint(path)}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def verify(folder: Path, checksums: bool = True) -> str | None:
    """None when every file of the manifest is there with its size (and, with `checksums`, its hash); else what
    is wrong. Manifests of earlier versions carry SHA-256 for small files only; both are checked."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (an incomplete or foreign folder)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as err:
        return f"unreadable {MANIFEST}: {err}"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {entry['size']}"
        if name == "config.yaml" or checksums:  # the config is tiny and decides how a resume computes
            for key, digest in (("xxh3", content_fingerprint), ("sha256", sha256)):
                if key in entry and digest(path) != entry[key]:
                    return f"{name} does not match its checksum"
    return None


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under their final names, oldest first (not yet verified)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, root: Path, engine: Engine, checksums: bool = True) -> Path | None:
    """`auto`: the newest checkpoint that verifies on every rank, or None; `none`: None; otherwise that folder,
    which must verify (`checksums`: every file's hash too, train.verify_checksums). Every rank calls this (one
    all-reduce per candidate)."""
    if resume in ("", "none"):
        return None
    candidates = list(reversed(complete_checkpoints(root))) if resume == "auto" else [Path(resume)]
    # Every rank walks the same list (one collective per folder): a rank that sees other folders stops all.
    if engine.all_reduce({"n": float(len(candidates))})["n"] != len(candidates):
        raise RuntimeError(f"{root}: the ranks see different checkpoint folders (is output_dir on a shared "
                           "file system?)")
    for folder in candidates:
        problem = verify(folder, checksums) if STEP_DIR.match(folder.name) and folder.is_dir() else \
            "not a step-NNNNNN folder"
        # Every rank reads the folder: a file missing for one rank's view of the filesystem fails them all.
        if engine.all_reduce({"ok": float(problem is None)})["ok"] == 1.0:
            return folder
        if resume != "auto":
            raise FileNotFoundError(f"train.resume={resume}: {problem or 'incomplete on another rank'}")
        log.info("resume: skipping %s: %s", folder, problem or "incomplete on another rank")
    return None


class Checkpointer:
    def __init__(self, engine: Engine, root: str | Path, every: int, keep_last: int):
        self.engine, self.root, self.every, self.keep_last = engine, Path(root), every, keep_last

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, trainer_state: dict, config) -> Path:
        final = self.root / f"step-{step:06d}"
        tmp = self.root / f"step-{step:06d}.tmp"
        if self.engine.is_main:
            for stale in [*self.root.glob("step-*.tmp"), *self.root.glob("step-*.deleting")]:
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # re-saving the same step after a resume
                self._remove(final)
            tmp.mkdir(parents=True)
        self.engine.barrier()
        self.engine.save_checkpoint(tmp)
        torch.save(rng_state(), tmp / f"rng-rank{self.engine.rank:05d}.pt")
        if self.engine.is_main:
            torch.save(trainer_state, tmp / "trainer_state.pt")
            config.save(tmp / "config.yaml")
        self.engine.barrier()
        if self.engine.is_main:
            umask_modes(tmp)
            write_manifest(tmp)  # last: it vouches for every file the ranks wrote
            tmp.rename(final)  # the commit point: only now is the checkpoint visible to resume
            for old in complete_checkpoints(self.root)[: -self.keep_last]:
                self._remove(old)
        self.engine.barrier()
        return final

    @staticmethod
    def _remove(folder: Path) -> None:
        doomed = folder.with_name(folder.name + ".deleting")
        folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def load(self, folder: Path) -> dict:
        """Restore engine and RNG state; return the trainer state."""
        self.engine.load_checkpoint(folder)
        rng_file = folder / f"rng-rank{self.engine.rank:05d}.pt"
        if rng_file.exists():  # absent only when this run has more ranks than the one that saved
            set_rng_state(torch.load(rng_file, weights_only=True))
        return torch.load(folder / "trainer_state.pt", weights_only=True)


# Settings that decide what a resumed run computes: a resume that changes one does not continue the same run.
EXACTNESS = {"train": ("global_batch_size", "seed", "epochs", "max_steps"),
             "data": ("train_path", "num_documents", "group_by_length"),
             "optim": ("lr_generator", "lr_compressor", "warmup_ratio", "weight_decay", "betas",
                       "generator_frozen_steps")}


def resume_changes(folder: Path, config, num_records: int, data_fingerprint: str | None = None) -> list[str]:
    """Differences in the exactness settings between the checkpoint's config (and data: record count, content
    fingerprint) and this run's."""
    import yaml

    saved = yaml.safe_load((folder / "config.yaml").read_text())
    now = config.to_dict()
    changes = []
    for section, names in EXACTNESS.items():
        # A setting newer than the checkpoint counts as its default there.
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(config, section))}
        for name in names:
            old, new = saved.get(section, {}).get(name, defaults[name]), now[section][name]
            if isinstance(new, tuple):
                new = list(new)
            if old != new:
                changes.append(f"{section}.{name}: {old!r} -> {new!r}")
    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    saved_records = state.get("num_records")
    if saved_records is not None and saved_records != num_records:
        changes.append(f"training records: {saved_records} -> {num_records}")
    saved_fp = state.get("data_fingerprint")
    if saved_fp and data_fingerprint and saved_fp != data_fingerprint:
        changes.append(f"training data content ({config.data.train_path}): fingerprint {saved_fp[:16]} -> "
                       f"{data_fingerprint[:16]}")
    return changes
