"""A deterministic, resumable sampler sharded by data-parallel rank.

Epoch e's order is a permutation seeded by (seed, e). The global batch of optimizer step s is always samples
perm[s*G : (s+1)*G] whatever the number of ranks: rank r takes every W-th of them (r, r+W, ...), so runs
with 1 and 2 ranks see the same global batches. The tail that does not fill a global batch is dropped.

With `lengths` (data.group_by_length, as transformers' `group_by_length`), each run of `MEGABATCH` global batches
of that permutation is sorted by length, cut into global batches again and those put in a seeded random order:
a micro-batch then holds rows of similar length and pads less, while every epoch still sees every record once,
the order stays a function of (seed, epoch) and 1 and 2 ranks still see the same global batches.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


MEGABATCH = 50  # global batches sorted together by length (transformers' LengthGroupedSampler uses 50 too)


class ShardedSampler(Sampler[int]):
    def __init__(self, num_samples: int, global_batch_size: int, dp_rank: int, dp_size: int, seed: int = 0,
                 lengths: list[int] | None = None):
        if num_samples < global_batch_size:
            raise ValueError(f"{num_samples} training records are fewer than one global batch "
                             f"({global_batch_size}): lower train.global_batch_size or add data")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.dp_rank, self.dp_size, self.seed = dp_rank, dp_size, seed
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"{len(lengths)} lengths for {num_samples} records")
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.epoch = 0
        self.start = 0  # samples of this rank already consumed in the current epoch (for resume)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch * self.global_batch_size // self.dp_size - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g)[: self.steps_per_epoch * self.global_batch_size]
        if self.lengths is not None:
            perm = self._grouped(perm, g)
        mine = perm[self.dp_rank:: self.dp_size].tolist()
        return iter(mine[self.start:])

    def _grouped(self, perm: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Each run of MEGABATCH global batches sorted by length (longest first), its global batches shuffled."""
        size = MEGABATCH * self.global_batch_size
        out = []
        for chunk in perm.split(size):
            chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches = chunk.view(-1, self.global_batch_size)
            out.append(batches[torch.randperm(batches.shape[0], generator=g)].flatten())
        return torch.cat(out)

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start
