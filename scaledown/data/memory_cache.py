"""Two-stage training's cache of memory embeddings (`data.memory_cache`, for small GPUs): stage 1 (`scaledown
cache`, scaledown/build/memory_cache.py) runs the frozen compressor once over every training record; stage 2
(`scaledown train --data.memory_cache=DIR`) trains the generator's LoRA on the cached embeddings and never runs
the compressor (held-out evaluations still do), which therefore does not train (neither did the original code's
two-stage trainers): no compressor gradients, optimizer state or activations, at the cost of a compressor that
never adapts.

    DIR/cache.json                    what the cache was made from (FIELDS) and its chunk size
    DIR/chunk-000000.safetensors      records [c x chunk, (c+1) x chunk): memory [n, k, l, d], doc_mask [n, k]

Chunks are written under a temporary name and renamed, so an interrupted stage 1 resumes at the first missing
chunk; a cache made from other records, another compressor or other row settings is refused field by field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open

from scaledown.data.schema import DataError

CHUNK = 256  # records per chunk file
# What the cached embeddings depend on: the records, the compressor's weights and how its rows are built.
FIELDS = ("num_records", "records", "compressor", "num_documents", "num_memory_tokens", "hidden_size", "dtype")
ROW_SETTINGS = ("input_format", "compressor_template", "max_query_tokens", "max_doc_tokens", "num_memory_tokens",
                "memory_norm", "compressor_embeddings")


def chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:06d}.safetensors"


def compressor_fingerprint(model) -> str:
    """sha256 of the compressor's weights (in name order) and of the settings that build its rows."""
    h = hashlib.sha256(json.dumps({k: getattr(model.config, k) for k in ROW_SETTINGS}, sort_keys=True).encode())
    for name, tensor in sorted(model.compressor.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def records_fingerprint(records) -> str:
    """The records' content fingerprint (scaledown/data/mapped.py's for a training file), or for records in
    memory a sha256 of each one's id, query and documents, in order (the cache is read by index)."""
    known = getattr(records, "fingerprint", None)
    if known:
        return known
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.id, r.query, r.documents], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def describe(model, records, num_documents: int) -> dict:
    """The FIELDS of a cache made by `model` from `records`, from the model's config and the compressor
    fingerprint taken when it was built (train.build_model): readable after an engine partitioned the weights."""
    c = model.config
    fingerprint = getattr(model, "compressor_fingerprint", None) or compressor_fingerprint(model)
    return {"num_records": len(records), "records": records_fingerprint(records), "compressor": fingerprint,
            "num_documents": num_documents, "num_memory_tokens": c.num_memory_tokens,
            "hidden_size": model.generator.get_base_model().config.hidden_size,
            "dtype": c.trainable_dtype or c.dtype}


def check(folder: Path, expected: dict) -> dict:
    """cache.json of `folder` if it was made as `expected` says; a DataError naming each field that differs."""
    path = folder / "cache.json"
    if not path.is_file():
        raise DataError(f"{path}: no such file: write the cache first (scaledown cache, same config)")
    found = json.loads(path.read_text())
    differ = [f"{k}: {found.get(k)!r} in the cache, {expected[k]!r} here" for k in FIELDS
              if found.get(k) != expected[k]]
    if differ:
        raise DataError(f"{path}: this cache was made from other inputs (rewrite it with scaledown cache):\n  "
                        + "\n  ".join(differ))
    return found


class CachedMemory(torch.utils.data.Dataset):
    """The training records, each with its index (a batch's memory rows are read by index)."""

    def __init__(self, folder: str | Path, records, model, num_documents: int):
        self.folder, self.records = Path(folder), records
        self.meta = check(self.folder, describe(model, records, num_documents))
        self.chunk = self.meta["chunk"]
        missing = [str(chunk_path(self.folder, c)) for c in range(-(-len(records) // self.chunk))
                   if not chunk_path(self.folder, c).is_file()]
        if missing:
            raise DataError(f"{self.folder}: the cache is incomplete ({len(missing)} chunks missing, first "
                            f"{missing[0]}): run scaledown cache again, it resumes")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        return i, self.records[i]

    @property
    def fingerprint(self) -> str | None:  # the training file's, for checkpoints' resume checks
        return getattr(self.records, "fingerprint", None)

    def rows(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory [B, k, l, d], doc_mask [B, k]) of these records, each chunk file opened once per batch."""
        by_chunk: dict[int, list[tuple[int, int]]] = {}
        for position, i in enumerate(indices):
            c, row = divmod(i, self.chunk)
            by_chunk.setdefault(c, []).append((position, row))
        memory, mask = [None] * len(indices), [None] * len(indices)
        for c, wanted in by_chunk.items():
            with safe_open(str(chunk_path(self.folder, c)), framework="pt") as f:
                memory_rows, mask_rows = f.get_slice("memory"), f.get_slice("doc_mask")
                for position, row in wanted:
                    memory[position], mask[position] = memory_rows[row:row + 1], mask_rows[row:row + 1]
        return torch.cat(memory), torch.cat(mask).bool()

    def collate(self, collator):
        """The collator's generator rows and labels with the cached memory instead of compressor rows."""
        def collate(items):
            batch = collator([record for _, record in items])
            batch.pop("comp_input_ids"), batch.pop("comp_attention_mask")
            batch["memory"], batch["doc_mask"] = self.rows([i for i, _ in items])
            return batch
        return collate
