"""Batches: layout, validation letterbox, and reproducibility across workers, epochs and resumes."""
import numpy as np
import pytest
import torch
import torch.distributed as dist

from tests.helpers.samples import make_colour_samples
from utils.ops.boxes import letterbox_params
from utils.data.dataloader import YoloDataset, build_dataloader, mosaic_enabled, yolo_collate
from utils.data.voc import Sample


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def assert_same(a, b):
    assert len(a) == len(b)
    for (ia, ta), (ib, tb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


@pytest.fixture
def samples(tmp_path):
    return make_colour_samples(tmp_path / "imgs", sizes=[(60, 40), (48, 64), (80, 50), (40, 40)] * 2)


def test_same_seed_and_epoch_give_identical_batches_with_0_and_2_workers(samples):
    ds = YoloDataset(samples, 64, train=True, seed=5)
    zero, two = build_dataloader(ds, 3, workers=0, seed=5), build_dataloader(ds, 3, workers=2, seed=5)
    first = epoch_batches(zero, 1)
    assert_same(first, epoch_batches(two, 1))
    assert not torch.equal(first[0][0], epoch_batches(zero, 2)[0][0])
    assert_same(epoch_batches(zero, 2), epoch_batches(two, 2))  # the live workers of `two` get the new epoch
    resumed = build_dataloader(YoloDataset(samples, 64, train=True, seed=5), 3, workers=0, seed=5)
    assert_same(first, epoch_batches(resumed, 1))  # a fresh run started at epoch 1 sees the same data


def test_mosaic_switch_reaches_worker_processes(samples):
    ds = YoloDataset(samples, 64, train=True, mosaic=1.0, seed=2)
    loader = build_dataloader(ds, 4, workers=2, seed=2)
    with_mosaic = epoch_batches(loader, 0)
    ds.set_mosaic(False)
    without = epoch_batches(loader, 0)
    reference = epoch_batches(build_dataloader(YoloDataset(samples, 64, train=True, mosaic=0.0, seed=2), 4, seed=2), 0)
    assert_same(without, reference)
    assert not torch.equal(with_mosaic[0][0], without[0][0])


def test_batch_layout_and_collate(samples):
    images, targets = next(iter(build_dataloader(YoloDataset(samples, (64, 96), train=True), 4, shuffle=False)))
    assert images.shape == (4, 3, 64, 96) and images.dtype == torch.uint8
    assert targets.dtype == torch.float32 and targets.shape[1] == 6
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3} and (targets[:, 2:] >= 0).all() and (targets[:, 2:] <= 1).all()
    empty = yolo_collate([(np.zeros((32, 32, 3), np.uint8), np.zeros((0, 5), np.float32))])
    assert empty[1].shape == (0, 6)


def test_validation_is_letterbox_only_without_difficult(samples):
    s = samples[0]  # 60x40 image into 64x64
    flagged = Sample(s.image_path, s.boxes, s.labels, np.arange(len(s.labels)) == 0, s.width, s.height, False)
    image, targets = YoloDataset([flagged], 64, train=False)[0]
    assert image.shape == (64, 64, 3) and len(targets) == len(s.labels) - 1
    box, lb = s.boxes[1], letterbox_params((40, 60), (64, 64))
    expect_cx = ((box[0] + box[2]) / 2 * lb.scale_x + lb.pad_x) / 64
    expect_cy = ((box[1] + box[3]) / 2 * lb.scale_y + lb.pad_y) / 64
    np.testing.assert_allclose(targets[0, 1:3], [expect_cx, expect_cy], atol=1e-5)
    again, _ = YoloDataset([flagged], 64, train=False)[0]
    assert np.array_equal(image, again)


def test_distributed_sampler(samples, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = build_dataloader(YoloDataset(samples, 64, train=True), 4, distributed=True, seed=1)
        assert (loader.sampler.rank, loader.sampler.world_size) == (0, 1)
        assert_same(epoch_batches(loader, 3), epoch_batches(loader, 3))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("length,world,drop_last", [(10, 2, True), (11, 2, True), (11, 3, False), (7, 2, False)])
def test_rank_shards_are_disjoint_and_together_make_one_process_batches(length, world, drop_last):
    from utils.data.dataloader import EpochSampler
    single = EpochSampler(length, True, seed=3)
    single.set_epoch(2)
    order = list(single)
    assert sorted(order) == list(range(length)) and order != sorted(order)
    shards = []
    for r in range(world):
        sampler = EpochSampler(length, True, seed=3, rank=r, world_size=world, drop_last=drop_last)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    if drop_last:
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat)) == length // world * world  # disjoint
    else:
        assert set(i for s in shards for i in s) == set(range(length))  # every image, padding repeats a few
    per_rank = 2  # batch k of every rank together is batch k of one process with a world x larger batch
    for k in range(length // (per_rank * world)):
        together = sorted(i for s in shards for i in s[k * per_rank:(k + 1) * per_rank])
        assert together == sorted(order[k * per_rank * world:(k + 1) * per_rank * world])


def test_mosaic_schedule_and_input_size_check():
    assert [mosaic_enabled(e, 10, 0.7) for e in (0, 6, 7, 9)] == [True, True, False, False]
    with pytest.raises(ValueError, match="multiple of 32"):
        YoloDataset([Sample("x", np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), 1, 1)], 100, True)
