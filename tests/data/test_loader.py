"""Training loader: deterministic under a seed whatever the worker count, batch shapes and dtypes, PadGT,
boxes that follow the batch resize, and sharding across ranks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from aug_synth import COLOURS, check_box_colours, scene, write_rgb
from ppyoloe_sod.data.coco import CocoRecord
from ppyoloe_sod.data.loader import (EpochBatchSampler, SampleKey, SeededCollate, TrainDataset, build_train_loader,
                                     collate_train)
from ppyoloe_sod.data.transforms import RESIZE_INTERPS
from ppyoloe_sod.errors import DatasetError, ImageReadError

SIZES = [64, 96]


def _records(tmp_path, n: int = 7) -> list[CocoRecord]:
    """n images of different sizes with 1-3 coloured objects (image 3 has none)."""
    recs = []
    for i in range(n):
        h, w = 64 + 8 * i, 96 + 4 * i
        k = 0 if i == 3 else 1 + i % 3
        boxes = [[4 + 28 * j, 6 + 4 * j, 4 + 28 * j + 20, 6 + 4 * j + 24 + i] for j in range(k)]
        classes = [(i + j) % len(COLOURS) for j in range(k)]
        img, b, c = scene(h, w, boxes, classes)
        path = tmp_path / "images" / f"im_{i}.png"
        write_rgb(path, img)
        recs.append(CocoRecord(str(path), 100 + i, w, h, b, c))
    return recs


def _batches(loader) -> list[dict]:
    return list(loader)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["image_ids"] == y["image_ids"]
        for k in ("images", "gt_labels", "gt_boxes", "pad_mask"):
            assert torch.equal(x[k], y[k]), k


def _differ(a: list[dict], b: list[dict]) -> bool:
    return any(x["image_ids"] != y["image_ids"] or x["images"].shape != y["images"].shape
               or not torch.equal(x["images"], y["images"]) for x, y in zip(a, b))


def test_same_seed_same_batches_with_0_and_2_workers(tmp_path):
    recs = _records(tmp_path)
    a = _batches(build_train_loader(recs, SIZES, 2, seed=3, workers=0, epoch=1))
    b = _batches(build_train_loader(recs, SIZES, 2, seed=3, workers=2, epoch=1))
    assert len(a) == 3  # 7 images, batch 2, drop_last
    _assert_same(a, b)
    assert _differ(a, _batches(build_train_loader(recs, SIZES, 2, seed=4, workers=0, epoch=1)))
    assert _differ(a, _batches(build_train_loader(recs, SIZES, 2, seed=3, workers=0, epoch=2)))


def test_set_epoch_equals_building_for_that_epoch(tmp_path):
    recs = _records(tmp_path)
    loader = build_train_loader(recs, SIZES, 3, seed=0, workers=0)
    first = _batches(loader)
    loader.set_epoch(5)
    _assert_same(_batches(loader), _batches(build_train_loader(recs, SIZES, 3, seed=0, workers=0, epoch=5)))
    loader.set_epoch(0)
    _assert_same(_batches(loader), first)


def test_resume_mid_epoch_gives_the_remaining_batches(tmp_path):
    recs = _records(tmp_path)
    loader = build_train_loader(recs, SIZES, 2, seed=0, workers=0, epoch=2)
    full = _batches(loader)
    loader.set_epoch(2, start_batch=1)
    assert len(loader) == len(full) - 1
    _assert_same(_batches(loader), full[1:])
    loader.set_epoch(2)
    assert len(loader) == len(full)


def test_batch_shapes_dtypes_and_boxes(tmp_path):
    recs = _records(tmp_path)
    by_id = {r.image_id: r for r in recs}
    seen_sizes = set()
    for epoch in range(4):
        for batch in build_train_loader(recs, SIZES, 3, seed=1, workers=0, epoch=epoch):
            imgs = batch["images"]
            b, _, s, s2 = imgs.shape
            assert b == 3 and s == s2 and s in SIZES and imgs.shape[1] == 3 and imgs.dtype == torch.float32
            seen_sizes.add(s)
            n = batch["gt_boxes"].shape[1]
            assert batch["gt_labels"].shape == (b, n, 1) and batch["gt_labels"].dtype == torch.int64
            assert batch["gt_boxes"].shape == (b, n, 4) and batch["gt_boxes"].dtype == torch.float32
            assert batch["pad_mask"].shape == (b, n, 1) and batch["pad_mask"].dtype == torch.float32
            assert len(batch["image_ids"]) == b and set(batch["image_ids"]) <= set(by_id)
            counts = batch["pad_mask"][..., 0].sum(1)
            assert n == max(1, int(counts.max()))
            # The values are on the 0..1 scale (mean image well below 1, objects near 1 somewhere).
            assert 0.0 < float(imgs.mean()) < 1.0 and float(imgs.max()) > 0.5
            for i in range(b):
                k = int(counts[i])
                m = batch["pad_mask"][i, :, 0]
                assert torch.all(m[:k] == 1) and torch.all(m[k:] == 0)  # real boxes first, padding after
                bx = batch["gt_boxes"][i, :k]
                assert torch.all(bx >= 0) and torch.all(bx <= s)
                assert torch.all(batch["gt_boxes"][i, k:] == 0) and torch.all(batch["gt_labels"][i, k:] == 0)
                # Crops may drop objects but never invent a class the image does not have.
                labels = set(batch["gt_labels"][i, :k, 0].tolist())
                assert labels <= set(by_id[batch["image_ids"][i]].classes.tolist())
    assert seen_sizes == set(SIZES)


def _sample(h, w, boxes, classes, image_id=0):
    img, b, c = scene(h, w, boxes, classes)
    return {"image": img.astype(np.float32), "boxes": b, "classes": c, "image_id": image_id}


def test_padgt_with_different_box_counts_and_an_empty_image():
    samples = [_sample(40, 60, [[2, 2, 20, 20]], [3], 1),
               _sample(50, 50, [], [], 2),
               _sample(48, 64, [[1, 1, 10, 12], [20, 5, 40, 30], [44, 30, 60, 46]], [0, 1, 2], 3)]
    out = collate_train(samples, [64], np.random.default_rng(0))
    assert out["image_ids"] == [1, 2, 3]
    np.testing.assert_array_equal(out["pad_mask"][..., 0].numpy(), [[1, 0, 0], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(out["gt_labels"][..., 0].numpy(), [[3, 0, 0], [0, 0, 0], [0, 1, 2]])
    np.testing.assert_allclose(out["gt_boxes"][0, 0].numpy(), np.float32([2, 2, 20, 20]) * np.float32([64 / 60, 64 / 40] * 2),
                               rtol=1e-6)
    np.testing.assert_allclose(out["gt_boxes"][2].numpy(), np.float32([[1, 1, 10, 12], [20, 5, 40, 30],
                                                                       [44, 30, 60, 46]]) * np.float32([1, 64 / 48] * 2),
                               rtol=1e-6)
    assert torch.all(out["gt_boxes"][1] == 0) and torch.all(out["gt_boxes"][0, 1:] == 0)


def test_batch_without_any_box_gets_one_masked_row():
    out = collate_train([_sample(30, 40, [], []), _sample(30, 30, [], [])], [32, 64], np.random.default_rng(1))
    assert out["gt_boxes"].shape == (2, 1, 4) and out["gt_labels"].shape == (2, 1, 1)
    assert torch.all(out["pad_mask"] == 0) and torch.all(out["gt_boxes"] == 0)


def test_batch_resize_keeps_boxes_on_their_objects():
    samples = [_sample(72, 120, [[6, 6, 46, 40], [60, 30, 110, 70]], [0, 4], 0),
               _sample(90, 60, [[10, 50, 50, 85]], [2], 1)]
    seen = set()
    for s in range(40):
        out = collate_train(samples, [64, 96, 128], np.random.default_rng(s))
        imgs = out["images"].numpy().transpose(0, 2, 3, 1) * 255.0
        size = imgs.shape[1]
        # Which interpolation was drawn: nearest keeps exact colours; others blend at edges.
        nearest = np.isin(np.round(imgs, 3), [0.0, 20.0, 255.0]).all()
        seen.add((size, bool(nearest)))
        for i, smp in enumerate(samples):
            k = len(smp["boxes"])
            np.testing.assert_allclose(
                out["gt_boxes"][i, :k].numpy(),
                smp["boxes"] * np.float32([size / smp["image"].shape[1], size / smp["image"].shape[0]] * 2),
                rtol=1e-6)
            margin = 0 if nearest else int(np.ceil(4 * max(1.0, size / 60)))
            assert check_box_colours(imgs[i], out["gt_boxes"][i, :k].numpy(), smp["classes"], margin=margin,
                                     atol=1e-3 if nearest else 1.5) == k
    assert {s for s, _ in seen} == {64, 96, 128} and {n for _, n in seen} == {True, False}


def test_interpolation_and_size_drawn_per_batch_from_all_choices():
    sample = _sample(37, 53, [[3, 3, 30, 30]], [1])
    outs = {}
    for s in range(60):
        r = np.random.default_rng(s)
        size_i, interp_i = int(r.integers(0, 2)), int(r.integers(0, len(RESIZE_INTERPS)))
        out = collate_train([sample], SIZES, np.random.default_rng(s))
        size = SIZES[size_i]
        want = cv2.resize(sample["image"], (size, size), interpolation=RESIZE_INTERPS[interp_i]) / np.float32(255)
        np.testing.assert_allclose(out["images"][0].numpy().transpose(1, 2, 0), want, atol=1e-6)
        outs[(size_i, interp_i)] = True
    assert len(outs) == 2 * len(RESIZE_INTERPS)


def test_dataset_decodes_rgb_and_keeps_records_without_augment(tmp_path):
    recs = _records(tmp_path, 3)
    ds = TrainDataset(recs, seed=0, augment=False)
    s = ds[1]
    assert s["image"].dtype == np.float32 and s["image"].shape == (recs[1].height, recs[1].width, 3)
    assert check_box_colours(s["image"], s["boxes"], s["classes"]) == len(recs[1].boxes)  # RGB, not BGR
    aug = TrainDataset(recs, seed=0)
    a = aug[2]
    aug.set_epoch(1)
    assert aug[2]["image"].shape != a["image"].shape or not np.array_equal(aug[2]["image"], a["image"])
    aug.set_epoch(0)
    np.testing.assert_array_equal(aug[2]["image"], a["image"])


def test_each_index_epoch_and_batch_has_its_own_draws(tmp_path):
    rec = _records(tmp_path, 1)[0]
    ds = TrainDataset([rec, rec], seed=0)  # the same image at two indices
    same = sum(np.array_equal(ds[SampleKey(0, e, 0)]["boxes"], ds[SampleKey(1, e, 0)]["boxes"]) for e in range(8))
    assert same < 4
    sample = _sample(40, 40, [[2, 2, 20, 20]], [1]) | {"batch": None}
    collate = SeededCollate(list(range(32, 32 * 9, 32)), seed=0)

    def size(epoch, batch):
        return collate([sample | {"batch": (epoch, batch)}])["images"].shape[-1]

    assert len({size(e, 0) for e in range(8)}) > 2 and len({size(0, b) for b in range(8)}) > 2
    # the draw depends on (seed, epoch, batch) only: a fresh collate gives the same sizes, another seed does not
    keys = [(e, b) for e in range(4) for b in range(4)]
    fresh = SeededCollate(collate.sizes, seed=0)
    assert [size(e, b) for e, b in keys] == [fresh([sample | {"batch": k}])["images"].shape[-1] for k in keys]
    other = SeededCollate(collate.sizes, seed=1)
    assert [size(e, b) for e, b in keys] != [other([sample | {"batch": k}])["images"].shape[-1] for k in keys]


def test_unreadable_image_names_the_file(tmp_path):
    recs = _records(tmp_path, 2)
    (tmp_path / "images" / "im_1.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="im_1.png"):
        TrainDataset(recs)[1]


def test_bad_arguments_are_explained(tmp_path):
    recs = _records(tmp_path, 3)
    with pytest.raises(DatasetError, match="batch_size 4"):
        build_train_loader(recs, SIZES, 4, workers=0)
    with pytest.raises(DatasetError, match="no images"):
        build_train_loader([], SIZES, 1, workers=0)
    with pytest.raises(ValueError, match="sizes"):
        build_train_loader(recs, [], 1, workers=0)
    with pytest.raises(ValueError, match="rank"):
        EpochBatchSampler(10, 2, rank=2, world_size=2)


@pytest.mark.parametrize("n,world", [(12, 3), (13, 3), (7, 2), (5, 1)])
def test_shards_are_equal_disjoint_and_complete(n, world):
    for epoch in (0, 1):
        shards = [EpochBatchSampler(n, 2, seed=7, epoch=epoch, drop_last=False, rank=r, world_size=world).shard()
                  for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        allidx = np.concatenate(shards)
        assert set(allidx.tolist()) == set(range(n))  # complete
        assert len(allidx) - n == (-n) % world  # only the padding repeats: disjoint when world divides n
        if n % world == 0:
            assert len(set(allidx.tolist())) == n
        batches = [list(EpochBatchSampler(n, 2, seed=7, epoch=epoch, drop_last=False, rank=r, world_size=world))
                   for r in range(world)]
        numbers = [bt[0].batch for rb in batches for bt in rb]
        assert len(numbers) == len(set(numbers))  # every batch of the epoch has its own random stream
        for r, rb in enumerate(batches):
            assert [k.index for bt in rb for k in bt] == shards[r].tolist()
            assert all(k.epoch == epoch for bt in rb for k in bt)
    orders = [EpochBatchSampler(n, 1, seed=7, epoch=e).shard().tolist() for e in range(4)]
    assert n < 6 or len({tuple(o) for o in orders}) > 1  # reshuffled per epoch


def test_sampler_without_shuffle_and_drop_last_lengths():
    s = EpochBatchSampler(10, 4, shuffle=False, drop_last=True)
    assert len(s) == 2 and [[k.index for k in b] for b in s] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    s = EpochBatchSampler(10, 4, shuffle=False, drop_last=False)
    assert len(s) == 3 and [k.index for k in list(s)[-1]] == [8, 9]


def test_loader_ranks_see_disjoint_images(tmp_path):
    recs = _records(tmp_path, 6)
    ids = []
    for rank in range(2):
        batches = _batches(build_train_loader(recs, SIZES, 1, seed=2, workers=0, rank=rank, world_size=2))
        assert len(batches) == 3
        ids.append([i for b in batches for i in b["image_ids"]])
    assert set(ids[0]).isdisjoint(ids[1]) and set(ids[0]) | set(ids[1]) == {r.image_id for r in recs}
