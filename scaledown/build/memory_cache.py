"""`scaledown cache`: stage 1 of two-stage training (scaledown/data/memory_cache.py says what and why). The run's
own config builds the model exactly as `scaledown train` would (`train.init_from` included) and its frozen
compressor writes every training record's memory embeddings; sharded by rank under torchrun, resumable chunk by
chunk.

    scaledown cache --config my.yaml --data.memory_cache=runs/cache            # stage 1
    scaledown train --config my.yaml --data.memory_cache=runs/cache            # stage 2: LoRA on the cache
    torchrun --nproc_per_node 8 -m scaledown.cli cache --config my.yaml --data.memory_cache=runs/cache
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from scaledown.data.memory_cache import CHUNK, check, chunk_path, describe
from scaledown.data.schema import DataError
from scaledown.log import get_logger, pop_log_level, progress

log = get_logger(__name__)


@torch.no_grad()
def write_chunks(model, records, folder: str | Path, num_documents: int, batch_size: int, rank: int = 0,
                 world: int = 1, barrier=lambda: None, chunk: int = CHUNK) -> Path:
    """Every chunk of `records` that `folder` lacks, this rank's share (chunks rank, rank + world, ...), written
    by `model`'s compressor on its device; cache.json first (rank 0), refusing a folder made from other inputs."""
    folder = Path(folder)
    meta = {**describe(model, records, num_documents), "chunk": chunk}
    path = folder / "cache.json"
    if not path.exists() and any(folder.glob("chunk-*.safetensors")):  # every rank: all of them stop
        raise DataError(f"{folder}: chunk files without cache.json (what made them is unknown): remove the folder "
                        "or choose another data.memory_cache")
    if rank == 0 and not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path)
    barrier()
    found = check(folder, meta)  # every rank: a cache of other inputs in this folder is refused on all of them
    if found.get("chunk") != chunk:
        raise DataError(f"{path}: chunks of {found.get('chunk')} records there, {chunk} now: remove the folder")
    was_training = model.training
    model.eval()
    device = next(model.compressor.parameters()).device
    collator = model.collator(num_documents)
    total = -(-len(records) // chunk)
    todo = [c for c in range(rank, total, world) if not chunk_path(folder, c).exists()]
    log.info("memory cache %s: %d records in %d chunks; this rank writes %d", folder, len(records), total, len(todo))
    for c in progress(todo, "cache chunks"):
        ids = range(c * chunk, min((c + 1) * chunk, len(records)))
        memory, mask = [], []
        for start in range(ids.start, ids.stop, batch_size):
            batch = collator([records[i] for i in range(start, min(start + batch_size, ids.stop))])
            out, _ = model.compress(batch["comp_input_ids"].to(device), batch["comp_attention_mask"].to(device),
                                    batch["gen_input_ids"].shape[0])
            memory.append(out.cpu())
            mask.append(batch["doc_mask"].to(torch.uint8))
        final = chunk_path(folder, c)
        tmp = final.with_name(final.name + ".tmp")
        save_file({"memory": torch.cat(memory).contiguous(), "doc_mask": torch.cat(mask)}, str(tmp))
        tmp.replace(final)
    model.train(was_training)
    barrier()
    if rank == 0:
        log.info("memory cache complete: %s (stage 2: scaledown train ... --data.memory_cache=%s)", folder, folder)
    return folder


def write_cache(cfg, chunk: int = CHUNK) -> Path:
    """Stage 1 for a run config: its training records, its model as `scaledown train` builds it; under torchrun
    each rank writes its share (the process group of scaledown/eval/cli.py's run_ranks)."""
    from scaledown.eval.cli import run_ranks

    return run_ranks(lambda rank, world, device: stage_one(cfg, rank, world, device, chunk), None)


def stage_one(cfg, rank: int, world: int, device: torch.device, chunk: int) -> Path:
    from scaledown.data.mapped import open_records
    from scaledown.train import build_model

    barrier = torch.distributed.barrier if world > 1 else (lambda: None)
    records = open_records(cfg.data.train_path, barrier, rank, int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(cfg.train.seed)  # as the training run builds it: the same initial weights
    model = build_model(cfg)
    model.compressor.to(device)  # only the compressor runs: the generator stays where it loaded
    return write_chunks(model, records, cfg.data.memory_cache, cfg.data.num_documents, cfg.train.micro_batch_size,
                        rank, world, barrier, chunk)


def two_stage_main(script: str, compressor_type: str, argv: list[str]) -> dict:
    """The original code's two-stage scripts: the training flags (the original's and --section.field=value) plus
    --cache_dir; stage 1 then stage 2 in one command."""
    from scaledown.flags import parse_train_args
    from scaledown.train import train

    if not any(a.split("=")[0] in ("--cache_dir", "--data.memory_cache") for a in argv):
        raise SystemExit(f"{script}: --cache_dir DIR is required (where stage 1 writes the memory embeddings)")
    cfg = parse_train_args(["--compressor_type", compressor_type, *argv])
    cfg.check_paths()
    write_cache(cfg)
    return train(cfg)


def main(argv=None):
    from scaledown.config import parse_config

    cfg = parse_config(pop_log_level(sys.argv[1:] if argv is None else argv))
    if not cfg.data.memory_cache:
        raise SystemExit("scaledown cache: set --data.memory_cache=FOLDER (where the embeddings go)")
    cfg.check_paths(need_train_path=True)
    return write_cache(cfg)


if __name__ == "__main__":
    main()
