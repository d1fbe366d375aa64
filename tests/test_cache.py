"""--cache ram: decoded images kept in memory give the batches of a run without it, and a cache that would not
fit is refused before it is filled."""
import pytest
import torch

import train
from tests.helpers.samples import make_colour_samples
from tests.helpers.voc import write_tiny_voc
from utils.data import image_cache
from utils.data.dataloader import YoloDataset, build_dataloader
from utils.data.image_cache import ImageCache, cache_bytes, check_fits

SIZES = [(60, 40), (48, 64), (80, 50), (40, 40), (64, 36), (50, 70)]


def batches(samples, cache, workers, epoch, train_set=True):
    ds = YoloDataset(samples, 64, train=train_set, mosaic=0.6, mixup=0.5, seed=3, cache=cache)
    loader = build_dataloader(ds, 3, workers=workers, seed=3, shuffle=train_set)
    loader.set_epoch(epoch)
    return list(loader)


def assert_equal(a, b):
    assert len(a) == len(b) > 0
    for (ia, ta), (ib, tb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


def test_cached_batches_equal_uncached_ones_tensor_for_tensor(tmp_path):
    samples = make_colour_samples(tmp_path / "imgs", sizes=SIZES)
    expected = {(epoch, t): batches(samples, None, 0, epoch, t) for epoch in (0, 1) for t in (True, False)}
    cache = ImageCache.fill(samples, threads=2)
    assert cache.nbytes == cache_bytes(samples)  # the estimate is exact for decoded images
    assert all(not image.flags.writeable for image in cache.images.values())  # augmentation cannot change them
    for path in (tmp_path / "imgs").iterdir():
        path.unlink()  # from here on, only the cache can give the pixels
    for (epoch, train_set), want in expected.items():
        assert_equal(batches(samples, cache, 0, epoch, train_set), want)
    assert_equal(batches(samples, cache, 2, 1, True), expected[(1, True)])  # forked workers read the parent's cache


def test_a_cache_that_does_not_fit_is_refused_naming_the_flag(tmp_path):
    samples = make_colour_samples(tmp_path / "imgs", sizes=SIZES)
    needed = cache_bytes(samples)
    assert needed == sum(w * h * 3 for w, h in SIZES)
    assert check_fits(samples, available=10 * needed) == needed
    assert check_fits(samples, available=None) == needed  # memory unknown: not checked
    with pytest.raises(ValueError, match=r"--cache ram: the 6 decoded images need .* GiB.*--cache none"):
        check_fits(samples, available=needed)


def test_train_refuses_a_cache_that_does_not_fit_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "scan_cache"))
    data = write_tiny_voc(tmp_path / "VOCtiny", 2)
    monkeypatch.setattr(image_cache, "available_memory", lambda: 1000)
    filled = []
    monkeypatch.setattr(ImageCache, "fill", classmethod(lambda cls, *a, **k: filled.append(1)))
    args = ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64", "--batch-size", "2",
            "--workers", "0", "--save-dir", str(tmp_path / "logs"), "--quiet", "--epochs", "1", "--cache", "ram"]
    assert train.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cache ram" in err[0] and "GiB" in err[0], err
    assert not filled and not list((tmp_path / "logs").glob("exp/*")), "the run wrote files before it stopped"
