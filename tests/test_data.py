"""Splits, bundled datasets, torchvision on-disk formats (tiny files written here), csv, and data errors."""

import gzip
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from conftest import tiny

from sweeper import config
from sweeper.data import load_splits, split_indices
from sweeper.errors import ConfigError
from sweeper.trial import prepare, run_trial


def test_splits_are_stratified_disjoint_and_fixed_by_seed():
    cfg = config.load(["data=digits"])
    from sklearn.datasets import load_digits

    y = load_digits().target
    tr, va, te = split_indices(y, cfg.data)
    assert len(set(tr) | set(va) | set(te)) == len(y)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    overall = np.bincount(y) / len(y)
    for part in (tr, va, te):
        assert np.abs(np.bincount(y[part], minlength=10) / len(part) - overall).max() < 0.02
    again = split_indices(y, cfg.data)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    other = split_indices(y, config.load(["data=digits", "data.split_seed=1"]).data)
    assert not np.array_equal(tr, other[0])


def test_split_indices_are_cached_by_labels_fractions_and_seed(tmp_path, monkeypatch):
    """scikit-learn computes a split once; later start-ups read it from the cache folder (and never import sklearn's
    model_selection, about a second of start-up). The cached indices are the computed ones; a changed label, seed or
    a damaged file gives a fresh computation, never a wrong split."""
    import shutil
    import subprocess
    import sys

    from sweeper import data

    load_splits(config.load([]).data)  # the bundled digits parsed once into the session's cache: copied, not parsed again
    shutil.copy(data.cache_dir() / "mnist5k.npz", tmp_path)
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path))
    cfg = config.load(["data=digits"]).data
    y = np.random.default_rng(0).integers(0, 5, 400)
    computed = data._split_indices(y, cfg)
    first = split_indices(y, cfg)
    files = list((tmp_path / "splits").iterdir())
    assert len(files) == 1 and all(np.array_equal(a, b) for a, b in zip(first, computed))
    assert all(np.array_equal(a, b) for a, b in zip(split_indices(y, cfg), computed))  # read back
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 5
    split_indices(y2, cfg)
    split_indices(y, config.load(["data=digits", "data.split_seed=7"]).data)
    assert len(list((tmp_path / "splits").iterdir())) == 3
    files[0].write_bytes(b"not an npz")
    assert all(np.array_equal(a, b) for a, b in zip(split_indices(y, cfg), computed))

    probe = (
        "import sys; from sweeper import config; from sweeper.data import load_splits; "
        "load_splits(config.load([]).data); print('sklearn.model_selection' in sys.modules)"
    )
    env = {**__import__("os").environ, "SWEEPER_CACHE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"]  # computed once, then read from the cache


def test_mnist5k_is_the_bundled_5000_digits():
    s = load_splits(config.load([]).data)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 5000
    assert s.input_shape == (1, 28, 28) and s.n_classes == 10
    assert s.x_train.min().item() >= 0.0 and s.x_train.max().item() <= 1.0


def test_train_fraction_subsamples_the_train_split_only():
    full = load_splits(config.load(["data=digits"]).data)
    half = load_splits(config.load(["data=digits", "data.train_fraction=0.5"]).data)
    assert len(half.y_train) == pytest.approx(len(full.y_train) / 2, abs=1)
    assert len(half.y_val) == len(full.y_val) and len(half.y_test) == len(full.y_test)


def test_a_train_fraction_too_small_for_every_class_names_the_fraction_not_the_split():
    # it named data.split and its value, which were fine: the fraction is what to change
    from sweeper.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_splits(config.load(["data=digits", "data.train_fraction=0.001"]).data)
    message = str(err.value)
    assert message.startswith("data.train_fraction: 0.001 is invalid") and "all 10 classes (at least 0.00796 needed)" in message


def _write_idx(folder, prefix, n, rng, gz=False):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    img = struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()
    lab = struct.pack(">II", 0x801, n) + labels.tobytes()
    for name, blob in ((f"{prefix}-images-idx3-ubyte", img), (f"{prefix}-labels-idx1-ubyte", lab)):
        (folder / name).write_bytes(blob)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_mnist_formats_from_tiny_idx_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw, "train", 100, rng)
    _write_idx(raw, "t10k", 40, rng)
    cfg = config.load(tiny(f"data={name}", f"data.root={tmp_path}", "trainer.max_epochs=1"))
    r = run_trial(cfg)
    assert r.status == "completed"
    s = load_splits(cfg.data)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 140 and s.input_shape == (1, 28, 28)


def test_cifar10_from_tiny_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch))
    cfg = config.load(
        tiny("data=cifar10", f"data.root={tmp_path}", "model=cnn", "model.channels=[4]", "model.hidden=[8]", "trainer.max_epochs=1")
    )
    r = run_trial(cfg)
    assert r.status == "completed"
    assert load_splits(cfg.data).input_shape == (3, 32, 32)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_torchvision_dataset_says_how_to_get_it(tmp_path, name):
    cfg = config.load([f"data={name}", f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match=r"data\.root: .*not found.*data\.download=true"):
        prepare(cfg)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_damaged_torchvision_files_are_named_not_a_traceback(tmp_path, name):
    """Files that are there but do not parse (a copy cut short, another file under the name) were torchvision's bare
    AssertionError or pickle's ValueError as a traceback; a truncated idx file and a batch that is not a pickle."""
    rng = np.random.default_rng(0)
    if name == "mnist":
        raw = tmp_path / "MNIST" / "raw"
        raw.mkdir(parents=True)
        _write_idx(raw, "train", 100, rng)
        _write_idx(raw, "t10k", 40, rng)
        blob = (raw / "train-images-idx3-ubyte").read_bytes()
        (raw / "train-images-idx3-ubyte").write_bytes(blob[:1000])
        where = str(raw)
    else:
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / n).write_bytes(b"garbage\n")
        where = str(folder / "data_batch_1")
    with pytest.raises(ConfigError, match=rf"data\.root: .* the {name} files in {re.escape(where)} cannot be read \(.*damaged"):
        prepare(config.load([f"data={name}", f"data.root={tmp_path}"]))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_failed_download_is_one_error_naming_data_download(tmp_path, monkeypatch, name):
    """Offline with data.download=true: torchvision's error (or its URLError traceback, for CIFAR-10) was reported as
    'data.download=false'. The mirrors point at a closed local port, so the download really fails, here and offline."""
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    cfg = config.load([f"data={name}", f"data.root={tmp_path}", "data.download=true"])
    with pytest.raises(ConfigError, match=rf"data\.download: True .*downloading {name} into {tmp_path} failed \(.*refused.*\); run where"):
        prepare(cfg)


def _csv(tmp_path, rows=120):
    rng = np.random.default_rng(0)
    lines = ["a,b,c,target"]
    for i in range(rows):
        cls = ["cat", "dog", "eel"][i % 3]
        lines.append(f"{rng.normal() + i % 3},{rng.normal()},{rng.normal() * 2},{cls}")
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_dataset_trains_on_generated_file(tmp_path):
    path = _csv(tmp_path)
    cfg = config.load(tiny("data=csv", f"data.path={path}", "data.label=target"))
    r = run_trial(cfg)
    assert r.status == "completed"
    s = load_splits(cfg.data)
    assert s.input_shape == (3,) and s.n_classes == 3


def test_csv_errors_name_the_problem(tmp_path):
    path = _csv(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.label: 'nope'.*column not in"):
        prepare(config.load(["data=csv", f"data.path={path}", "data.label=nope"]))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,x,0\n2,y,1\n")
    with pytest.raises(ConfigError, match=r"feature column 'b' is not numeric"):
        prepare(config.load(["data=csv", f"data.path={bad}"]))
    with pytest.raises(ConfigError, match=r"data\.path: .*does not exist"):
        config.load(["data=csv", f"data.path={tmp_path / 'missing.csv'}"])
    rows = [f"{i},{-i if i != 4 else 'inf'},{i % 2}" for i in range(40)]
    (tmp_path / "inf.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")  # inf: every run's loss NaN at step 1
    with pytest.raises(ConfigError, match=r"feature columns with infinite values: b$"):
        prepare(config.load(["data=csv", f"data.path={tmp_path / 'inf.csv'}"]))
    rows = [f"{i},{-i},{i % 2 if i not in (6, 9) else ''}" for i in range(40)]
    (tmp_path / "nolabel.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")  # not a class "nan"
    with pytest.raises(ConfigError, match=r"data\.label: 'label'.*missing in 2 row\(s\).*first: data row 7"):
        prepare(config.load(["data=csv", f"data.path={tmp_path / 'nolabel.csv'}"]))
    with pytest.raises(ConfigError, match=r"model\.name: 'cnn'.*needs image data"):
        prepare(config.load(["data=csv", f"data.path={path}", "data.label=target", "model=cnn"]))


def test_csv_integer_labels_keep_their_numbers_as_classes(tmp_path):
    """Labels 0..11 are classes 0..11 (a registered model's output k is label k); sorted as text, label 10 was
    class 2 and label 2 was class 4."""
    rows = [f"{i % 12},{i},{i % 12}" for i in range(240)]  # feature a carries its row's label (standardized)
    (tmp_path / "twelve.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    s = load_splits(config.load(["data=csv", f"data.path={tmp_path / 'twelve.csv'}"]).data)
    assert s.n_classes == 12
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        levels = np.unique(x[:, 0].numpy())  # the 12 label values, in numeric order (standardizing keeps it)
        assert (y.numpy() == np.searchsorted(levels, x[:, 0].numpy())).all()


def test_csv_without_rows_or_with_another_separator_says_so(tmp_path):
    (tmp_path / "header.csv").write_text("a,b,label\n")  # was "feature column 'a' is not numeric"
    with pytest.raises(ConfigError, match=r"data\.path: .*header\.csv' is invalid; has a header but no data rows"):
        prepare(config.load(["data=csv", f"data.path={tmp_path / 'header.csv'}"]))
    (tmp_path / "semi.csv").write_text("a;b;label\n" + "".join(f"{i};{-i};{i % 2}\n" for i in range(40)))
    with pytest.raises(ConfigError, match=r"columns: a;b;label \(the file looks ';'-separated; sweeper reads comma-separated CSV\)"):
        prepare(config.load(["data=csv", f"data.path={tmp_path / 'semi.csv'}"]))


def test_csv_features_of_any_finite_magnitude_standardize_like_small_ones(tmp_path):
    """Standardizing in float32 overflowed: a column near 1e20 had variance inf (it became all zeros, silently) and
    one beyond 3.4e38 became inf (every loss NaN at the first step). The same table scaled by 1e20, 1e39 or 1e300
    now gives the same features as unscaled, and a constant column stays 0."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    label = (x[:, 0] > 0).astype(int)

    def features(scale: float) -> np.ndarray:
        path = tmp_path / f"scaled_{scale:g}.csv"
        rows = [f"{float(a) * scale!r},{b},7.5,{lab}" for (a, b), lab in zip(x, label)]
        path.write_text("a,b,const,label\n" + "\n".join(rows) + "\n")
        s = load_splits(config.load(["data=csv", f"data.path={path}"]).data)
        return np.concatenate([s.x_train.numpy(), s.x_val.numpy(), s.x_test.numpy()])

    plain = features(1.0)
    assert abs(plain[:, 0].mean()) < 0.2 and 0.8 < plain[:, 0].std() < 1.2 and (plain[:, 2] == 0).all()
    for scale in (1e20, 1e39, 1e300):
        scaled = features(scale)
        assert np.isfinite(scaled).all()
        np.testing.assert_allclose(scaled, plain, rtol=1e-5, atol=1e-6)


def test_csv_with_a_continuous_or_one_row_per_class_label_says_why(tmp_path):
    """A regression target as data.label became one class per row, and the split's error was scikit-learn's, listing
    every class ("Classes with too few members are: [0, 1, 2, ...]")."""
    rows = [f"{i},{-i},{i * 0.37 + 0.01}" for i in range(60)]
    (tmp_path / "price.csv").write_text("a,b,price\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"data\.label: 'price' is invalid; has non-integer values \(e\.g\. 0\.01\).*trains classifiers"):
        prepare(config.load(["data=csv", f"data.path={tmp_path / 'price.csv'}", "data.label=price"]))
    rows = [f"{i},{-i},id{i}" for i in range(60)]
    (tmp_path / "ids.csv").write_text("a,b,who\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"data\.split: .*60 of the 60 classes have a single sample \(every split needs") as exc:
        prepare(config.load(["data=csv", f"data.path={tmp_path / 'ids.csv'}", "data.label=who"]))
    assert len(str(exc.value)) < 300
    rows = [f"{i},{-i},{float(i % 3)}" for i in range(60)]  # 0.0, 1.0, 2.0: integers written as floats are classes
    (tmp_path / "floats.csv").write_text("a,b,lab\n" + "\n".join(rows) + "\n")
    assert load_splits(config.load(["data=csv", f"data.path={tmp_path / 'floats.csv'}", "data.label=lab"]).data).n_classes == 3


def test_a_damaged_or_unwritable_cache_is_rebuilt_not_a_traceback(tmp_path, monkeypatch):
    """The converted mnist5k and the split indices are cached (``$SWEEPER_CACHE``): a damaged cache file (a disk that
    filled mid-write, a copy cut short) was np.load's traceback at every start; now it is rebuilt from the bundled
    copy, and a cache folder that cannot be written only costs the next start the conversion."""
    from sweeper import data

    monkeypatch.setattr(data, "_CACHE", {})
    cache = tmp_path / "cache"
    monkeypatch.setenv("SWEEPER_CACHE", str(cache))
    cfg = config.load(["trainer.max_epochs=1"]).data
    first = load_splits(cfg)
    files = [cache / "mnist5k.npz", *sorted((cache / "splits").glob("*.npz"))]
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"PK\x03\x04 not a zip at all")
    monkeypatch.setattr(data, "_CACHE", {})
    again = load_splits(cfg)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    monkeypatch.setattr(data, "_CACHE", {})
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("SWEEPER_CACHE", str(blocker / "below"))  # no folder can be made there, even as root
    assert torch.equal(load_splits(cfg).x_val, first.x_val)
