"""A deterministic, resumable sampler sharded by data-parallel rank.

Epoch e's order is a permutation seeded by (seed, e). The global batch of optimizer step s is always samples
perm[s*G : (s+1)*G] whatever the number of ranks: rank r takes every W-th of them (r, r+W, ...), so runs
with 1 and 2 ranks see the same global batches. The tail that does not fill a global batch is dropped.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    def __init__(self, num_samples: int, global_batch_size: int, dp_rank: int, dp_size: int, seed: int = 0):
        if num_samples < global_batch_size:
            raise ValueError(f"{num_samples} training records are fewer than one global batch "
                             f"({global_batch_size}): lower train.global_batch_size or add data")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.dp_rank, self.dp_size, self.seed = dp_rank, dp_size, seed
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
        mine = perm[self.dp_rank:: self.dp_size].tolist()
        return iter(mine[self.start:])

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start
