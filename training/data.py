"""Data order for training: reproducible, shardable across ranks, resumable mid-epoch.

The order of epoch e is a permutation that depends only on (seed, e). Rank r of w takes
every w-th index of it starting at r (the same global order, disjoint slices), drops the
tail that does not fill a batch, and the sampler starts at any (epoch, batch) position, so
a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

_ORDER_STREAM = 0
_LOADER_STREAM = 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed hashed from non-negative ints (numpy SeedSequence), so nearby inputs
    give unrelated streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class ResumableBatchSampler:
    """Infinite batch sampler over epochs; yields this rank's index lists from a start position."""

    def __init__(self, num_items: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 start_epoch: int = 0, start_batch: int = 0):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batches_per_epoch = (num_items // world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the dataset has {num_items} items: not one full batch of {batch_size} "
                             f"for each of {world_size} process(es); lower batch_size or add data")
        self.start_epoch, self.start_batch = self.normalize(start_epoch, start_batch)

    def normalize(self, epoch: int, batch: int) -> tuple[int, int]:
        """The same position with batch in [0, batches_per_epoch)."""
        return epoch + batch // self.batches_per_epoch, batch % self.batches_per_epoch

    def advance(self, epoch: int, batch: int) -> tuple[int, int]:
        """The position after consuming the batch at (epoch, batch)."""
        return self.normalize(epoch, batch + 1)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global permutation of epoch `epoch`: a pure function of (seed, epoch)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _ORDER_STREAM, epoch))
        return torch.randperm(self.num_items, generator=generator)

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of epoch `epoch` (drop_last)."""
        mine = self.epoch_order(epoch)[self.rank::self.world_size].tolist()
        n = self.batches_per_epoch * self.batch_size
        return [mine[i:i + self.batch_size] for i in range(0, n, self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch = self.start_epoch, self.start_batch
        while True:
            batches = self.rank_batches(epoch)
            yield from batches[batch:]
            epoch, batch = epoch + 1, 0


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a DataLoader worker from the torch seed that the loader
    gave it (base seed from the loader's seeded generator, plus the worker id)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def train_loader(dataset: Dataset, sampler: ResumableBatchSampler, *, collate_fn: Callable | None,
                 num_workers: int, pin_memory: bool) -> DataLoader:
    """The loader the loop draws batches from. Its own generator (seeded from seed and rank)
    gives worker seeds, so creating its iterator leaves the global torch RNG untouched."""
    generator = torch.Generator().manual_seed(derive_seed(sampler.seed, _LOADER_STREAM, sampler.rank))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                      pin_memory=pin_memory, worker_init_fn=seed_worker if num_workers else None,
                      generator=generator)


def setup_loader(dataset: Dataset, batch_size: int, *, collate_fn: Callable | None, num_workers: int,
                 seed: int) -> DataLoader:
    """One pass over the dataset in index order, for a task's `setup` (statistics over the data)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, _LOADER_STREAM, 2**31))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, collate_fn=collate_fn,
                      num_workers=num_workers, worker_init_fn=seed_worker if num_workers else None,
                      generator=generator)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) mappings (returned as dicts), lists, tuples and named tuples moved to
    `device`; anything else as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
