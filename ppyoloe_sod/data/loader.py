"""Training batches: the reader's per-sample augmentations in a Dataset, its batch operators in the collate.

Determinism: every random draw comes from a generator seeded by what it belongs to, never from global state:
- the order of the samples: ``(seed, epoch)``;
- one sample's augmentations: ``(seed, epoch, index)``;
- one batch's size and interpolation: ``(seed, epoch, batch number)``.
The batch sampler yields ``SampleKey(index, epoch, batch)`` items, so every sample carries its epoch and batch
number into the worker that loads it; a batch is therefore the same whatever the number of workers, and stale
copies of the dataset in persistent workers cannot use an old epoch.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DatasetError
from ..imageio import read_image
from .coco import CocoRecord
from .transforms import RESIZE_INTERPS, resize_sample, train_augment

# Stream tags keep the generators of samples, batches and the shuffle apart for the same numbers.
_SAMPLE, _BATCH, _SHUFFLE = 0, 1, 2


def _rng(seed: int, epoch: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), stream, int(index)])


class SampleKey(NamedTuple):
    """What the batch sampler yields per sample: dataset index, epoch and global batch number."""

    index: int
    epoch: int
    batch: int


class TrainDataset(Dataset):
    """Decoded, RGB, augmented training samples; ``dataset[i]`` uses the epoch set by ``set_epoch``,
    ``dataset[SampleKey]`` the key's own epoch.

    A sample is a dict: ``image`` float32 HxWx3 RGB (0..255 scale), ``boxes`` float32 [n, 4] xyxy pixels,
    ``classes`` int64 [n], ``image_id``, and ``batch`` (epoch, batch number) when indexed by a SampleKey.
    """

    def __init__(self, records: Sequence[CocoRecord], seed: int = 0, augment: bool = True):
        self.records = list(records)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        if isinstance(key, SampleKey):
            index, epoch, batch = key.index, key.epoch, (key.epoch, key.batch)
        else:
            index, epoch, batch = int(key), self.epoch, None
        rec = self.records[index]
        image = cv2.cvtColor(read_image(rec.image_path), cv2.COLOR_BGR2RGB)
        boxes = np.asarray(rec.boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(rec.classes, dtype=np.int64).reshape(-1)
        if self.augment:
            image, boxes, classes = train_augment(image, boxes, classes, _rng(self.seed, epoch, _SAMPLE, index))
        else:
            image = image.astype(np.float32)
        return {"image": image, "boxes": boxes, "classes": classes, "image_id": rec.image_id, "batch": batch}


def collate_train(samples: Sequence[dict[str, Any]], sizes: Sequence[int], rng: np.random.Generator
                  ) -> dict[str, Any]:
    """The reader's batch operators: BatchRandomResize, /255, HWC->CHW, PadGT.

    One square size from ``sizes`` and one interpolation from ``RESIZE_INTERPS`` are drawn from ``rng`` (in
    that order) for the whole batch; the aspect ratio is not kept and boxes are scaled and clipped.

    Returns ``images`` [B, 3, S, S] float32 RGB (x/255, not clipped, as in the reference: the colour distortion
    can push values well outside 0..1, cubic/Lanczos resampling a little), ``gt_labels`` [B, n, 1] int64, ``gt_boxes``
    [B, n, 4] float32 xyxy pixels of the resized image, ``pad_mask`` [B, n, 1] float32 (1 for a real box, 0 for
    padding) and ``image_ids``. ``n`` is the largest box count in the batch, but at least 1: a batch without
    any box gets one all-zero padded row with mask 0 (the reference would give n = 0), so that the tensors keep
    their rank and the loss code need not special-case empty targets.
    """
    if not samples:
        raise ValueError("collate_train got an empty batch.")
    if not sizes:
        raise ValueError("collate_train needs at least one training size, got an empty list.")
    size = int(sizes[int(rng.integers(0, len(sizes)))])
    interp = RESIZE_INTERPS[int(rng.integers(0, len(RESIZE_INTERPS)))]
    b = len(samples)
    n = max(1, max(len(s["boxes"]) for s in samples))
    images = np.empty((b, 3, size, size), dtype=np.float32)
    labels = np.zeros((b, n, 1), dtype=np.int64)
    boxes = np.zeros((b, n, 4), dtype=np.float32)
    mask = np.zeros((b, n, 1), dtype=np.float32)
    for i, s in enumerate(samples):
        img, bx = resize_sample(s["image"], np.asarray(s["boxes"], np.float32).reshape(-1, 4), size, interp)
        images[i] = img.transpose(2, 0, 1)
        k = len(bx)
        boxes[i, :k] = bx
        labels[i, :k, 0] = s["classes"]
        mask[i, :k] = 1.0
    images /= np.float32(255.0)
    return {"images": torch.from_numpy(images), "gt_labels": torch.from_numpy(labels),
            "gt_boxes": torch.from_numpy(boxes), "pad_mask": torch.from_numpy(mask),
            "image_ids": [s["image_id"] for s in samples]}


class SeededCollate:
    """``collate_train`` with the batch generator seeded by (seed, epoch, batch number) from the samples."""

    def __init__(self, sizes: Sequence[int], seed: int):
        self.sizes = [int(s) for s in sizes]
        self.seed = int(seed)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        key = samples[0].get("batch")
        if key is None:
            raise ValueError("SeededCollate needs samples loaded through a SampleKey (use EpochBatchSampler).")
        return collate_train(samples, self.sizes, _rng(self.seed, key[0], _BATCH, key[1]))


class EpochBatchSampler(Sampler):
    """Batches of ``SampleKey`` for one rank: shuffled by (seed, epoch), sharded like DistributedSampler.

    The shuffled order is padded by repeating its head to a multiple of ``world_size`` (as torch's
    DistributedSampler does), then rank r takes positions r, r + world_size, ...: every rank gets the same
    number of samples, the shards are disjoint whenever the dataset size is a multiple of ``world_size``, and
    together they cover every sample. Batch b of rank r has global number ``b * world_size + r``.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank {rank}, "
                             f"world_size {world_size}.")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.seed, self.epoch, self.shuffle, self.drop_last = int(seed), int(epoch), shuffle, drop_last
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Move to ``epoch``; ``start_batch`` > 0 skips that many batches without loading them (mid-epoch resume:
        the remaining batches are the same as in an uninterrupted epoch)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    @property
    def shard_size(self) -> int:
        return math.ceil(self.num_samples / self.world_size) if self.num_samples else 0

    def shard(self) -> np.ndarray:
        """This rank's dataset indices for the current epoch, in order."""
        n = self.num_samples
        order = _rng(self.seed, self.epoch, _SHUFFLE).permutation(n) if self.shuffle else np.arange(n)
        total = self.shard_size * self.world_size
        if total > n:
            order = np.concatenate([order, np.resize(order, total - n)])
        return order[self.rank::self.world_size]

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.shard_size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        idx = self.shard()
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = idx[b * self.batch_size:(b + 1) * self.batch_size]
            number = b * self.world_size + self.rank
            yield [SampleKey(int(i), self.epoch, number) for i in chunk]


class TrainLoader(DataLoader):
    """A DataLoader whose epoch can be moved on with ``set_epoch`` (sampler order and augmentations)."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Move to ``epoch``, optionally skipping its first ``start_batch`` batches (mid-epoch resume)."""
        self.batch_sampler.set_epoch(epoch, start_batch)
        self.dataset.set_epoch(epoch)


def build_train_loader(records: Sequence[CocoRecord], sizes: Sequence[int], batch_size: int, seed: int = 0,
                       workers: int = 2, epoch: int = 0, drop_last: bool = True, shuffle: bool = True,
                       rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> TrainLoader:
    """The training DataLoader: batches of ``collate_train`` dicts, identical for any ``workers`` count.

    ``rank`` / ``world_size`` select this process's shard for distributed training. Call ``set_epoch`` on the
    returned loader (or build a new one with ``epoch=``) at the start of every epoch.
    """
    if not records:
        raise DatasetError("The training set has no images with boxes; check the annotation file and image "
                           "directory (see `check_dataset`).")
    sizes = [int(s) for s in sizes]
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"Training sizes must be a non-empty list of positive ints, got {sizes}.")
    sampler = EpochBatchSampler(len(records), batch_size, seed, epoch, shuffle, drop_last, rank, world_size)
    if sampler.batches_per_epoch() == 0:
        raise DatasetError(
            f"The training set has {len(records)} images ({sampler.shard_size} per process over {world_size}), "
            f"fewer than batch_size {batch_size} with drop_last; lower Train.batch_size or add images.")
    dataset = TrainDataset(records, seed)
    dataset.set_epoch(epoch)
    return TrainLoader(dataset, batch_sampler=sampler, collate_fn=SeededCollate(sizes, seed),
                       num_workers=int(workers), pin_memory=pin_memory)
