"""The seed MLP (784-64-32-10, ReLU) and a small CNN, with dropout and batch-norm slots.

Each hidden block is Linear/Conv -> [BatchNorm] -> activation -> [Dropout]: batch norm sits
before the activation; dropout (PyTorch's inverted dropout) after it. Regularizers switch the
slots on through ``model_options()``; with the slots off the blocks are plain layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import batch_bounds
from .errors import ConfigError

EVAL_ROWS = 4096  # rows per evaluation chunk on a GPU
CPU_EVAL_BYTES = 8 * 2**20  # on a CPU, a chunk's widest activation stays about this size (``eval_rows``)


def eval_rows(widest: int, device: torch.device, members: int = 1) -> int:
    """Rows per evaluation chunk when ``members`` models' activations of ``widest`` numbers per row sit side by side.
    On a CPU, chunks whose widest activation stays cache-sized (``CPU_EVAL_BYTES``): with larger ones every op
    streams its output through memory. Measured on the seed CNN (2-core AMD EPYC, its first conv output 12,544
    numbers per row), 3,000 rows evaluated in chunks of 64-192 rows: 236-249 ms; of 256: 432 ms; of 4,096:
    588 ms. On a GPU, EVAL_ROWS rows (divided among the members for the CNN, as before)."""
    if device.type != "cpu":
        return max(1, EVAL_ROWS // members)
    return max(1, min(EVAL_ROWS, CPU_EVAL_BYTES // (4 * widest * members)))


def ghost_chunks(x: torch.Tensor, ghost: int, dim: int = 0) -> list[torch.Tensor]:
    """Ghost batch norm's sub-batches of ``ghost`` rows along ``dim``; a trailing sub-batch of one row joins the
    previous one (a one-row batch has no variance), the rule of the mini-batches themselves (``data.batch_bounds``)."""
    return [x.narrow(dim, start, end - start) for start, end in batch_bounds(x.shape[dim], ghost)]


def conv_grid(height: int, width: int, blocks: int) -> list[tuple[int, int, bool]]:
    """Each conv block's output size before pooling and whether it max-pools (while both sides are >= 2)."""
    grid = []
    for _ in range(blocks):
        pool = min(height, width) >= 2
        grid.append((height, width, pool))
        height, width = (height // 2, width // 2) if pool else (height, width)
    return grid


def output_widths(input_shape: tuple[int, ...], n_classes: int, hidden, channels=()) -> list[int]:
    """Numbers one row produces at each layer's output: every conv output (before pooling), hidden and output unit.
    The memory estimate sums them; evaluation chunks are sized by the largest (``eval_rows``)."""
    widths = []
    if channels:
        _, height, width = input_shape
        widths = [int(c) * rows * cols for c, (rows, cols, _) in zip(channels, conv_grid(height, width, len(channels)))]
    return widths + [int(h) for h in hidden] + [n_classes]


def model_output_widths(cfg, input_shape: tuple[int, ...], n_classes: int) -> list[int]:
    """``output_widths`` of the model a ModelConfig builds (``build_model``), without building it."""
    return output_widths(input_shape, n_classes, cfg.hidden, cfg.channels if cfg.name == "cnn" else ())


class _Ghost:
    """Ghost batch norm: in training, statistics come from sub-batches of ``ghost`` rows (a trailing
    sub-batch of one row joins the previous one). Smaller ghost batches mean noisier statistics: BN's
    regularizing effect, changed without changing the optimizer's batch size. Eval uses running statistics."""

    ghost: int | None = None
    training: bool

    def forward(self, x):
        g = self.ghost
        if not self.training or g is None or x.shape[0] <= g:
            return super().forward(x)  # type: ignore[misc]
        return torch.cat([super(_Ghost, self).forward(c) for c in ghost_chunks(x, g)])  # type: ignore[misc]


class GhostBatchNorm1d(_Ghost, nn.BatchNorm1d):
    def __init__(self, n: int, momentum: float, ghost: int | None):
        super().__init__(n, momentum=momentum)
        self.ghost = ghost


class GhostBatchNorm2d(_Ghost, nn.BatchNorm2d):
    def __init__(self, n: int, momentum: float, ghost: int | None):
        super().__init__(n, momentum=momentum)
        self.ghost = ghost


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling. On a CPU in the channels-last layout: PyTorch's CPU kernel for contiguous (N, C, H, W)
    tensors is several times slower (measured on a 2-core AMD EPYC, forward + backward of a (32, 16, 28, 28)
    batch: 1.33 ms vs 0.28 ms with both layout copies; the seed CNN spent a third of its training in it). The
    maxima are the same; the result is contiguous again, so the next layer runs as before."""
    if x.device.type != "cpu":
        return F.max_pool2d(x, 2)
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


class MaxPool2(nn.Module):
    """``max_pool2`` as a layer (``nn.MaxPool2d(2)``'s place in the CNN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2(x)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def _dense_head(
    n_in: int, hidden: list[int], n_classes: int, act: str, dropout: float, batchnorm: bool, momentum: float, ghost: int | None = None
) -> list[nn.Module]:
    """Hidden blocks Linear -> [BatchNorm1d] -> activation -> [Dropout], then the output Linear. A layer followed by
    batch norm has no bias (``bias=not batchnorm``, as torchvision's ResNets): the norm subtracts it again, so its
    true gradient is zero and what autograd returns is rounding noise, which Adam scales up to full-size steps. The
    bias then random-walked, and the running mean with it, differently in every implementation (the population
    engine's grouped convolution sums that noise in another order: see docs/population.md, equivalence)."""
    layers: list[nn.Module] = []
    sizes = [n_in, *hidden]
    for a, b in zip(sizes, sizes[1:]):
        layers.append(nn.Linear(a, b, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(b, momentum=momentum) if ghost is None else GhostBatchNorm1d(b, momentum, ghost))
        layers.append(ACTIVATIONS[act]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-1], n_classes))
    return layers


class MLP(nn.Module):
    def __init__(self, input_shape, n_classes, hidden, activation="relu", dropout=0.0, batchnorm=False, bn_momentum=0.1, bn_ghost=None):
        super().__init__()
        self.widest = max(output_widths(input_shape, n_classes, hidden))  # (``eval_rows``)
        self.net = nn.Sequential(
            nn.Flatten(),
            *_dense_head(math.prod(input_shape), list(hidden), n_classes, activation, dropout, batchnorm, bn_momentum, bn_ghost),
        )

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(
        self, input_shape, n_classes, channels, hidden, activation="relu", dropout=0.0, batchnorm=False, bn_momentum=0.1, bn_ghost=None
    ):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        self.widest = max(output_widths(input_shape, n_classes, hidden, channels))  # (``eval_rows``)
        for out, (_, _, pool) in zip(channels, conv_grid(h, w, len(channels))):
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm))  # no bias before a norm (_dense_head)
            if batchnorm:
                layers.append(
                    nn.BatchNorm2d(out, momentum=bn_momentum) if bn_ghost is None else GhostBatchNorm2d(out, bn_momentum, bn_ghost)
                )
            layers.append(ACTIVATIONS[activation]())
            if pool:
                layers.append(MaxPool2())
                h, w = h // 2, w // 2
            c = out
        layers.append(nn.Flatten())
        layers += _dense_head(c * h * w, list(hidden), n_classes, activation, dropout, batchnorm, bn_momentum, bn_ghost)
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def build_model(cfg, input_shape: tuple[int, ...], n_classes: int, **options) -> nn.Module:
    """``cfg`` is a ModelConfig; ``options`` come from the active regularizers."""
    if cfg.name == "mlp":
        return MLP(input_shape, n_classes, list(cfg.hidden), cfg.activation, **options)
    if len(input_shape) != 3:
        raise ConfigError(
            "model.name",
            cfg.name,
            f"a CNN needs image data (C, H, W); this data has flat features of shape {tuple(input_shape)}; use model=mlp",
        )
    return CNN(input_shape, n_classes, list(cfg.channels), list(cfg.hidden), cfg.activation, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def add_eval_sums(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sums: torch.Tensor, rows: int | None = None) -> None:
    """Adds ``model``'s (cross-entropy sum, correct, rows) on ``x``, ``y`` to ``sums``, in chunks of ``rows`` (default
    ``eval_rows`` of the model's widest layer): the one evaluation loop of ``evaluate`` and the validation step."""
    rows = rows or eval_rows(int(getattr(model, "widest", 1)), x.device)
    for xs, ys in zip(x.split(rows), y.split(rows)):
        logits = model(xs)
        sums += torch.stack(
            (F.cross_entropy(logits, ys, reduction="sum"), (logits.argmax(1) == ys).sum().float(), sums.new_tensor(float(len(ys))))
        )


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None):
    """(mean cross-entropy, accuracy) of ``model`` in eval mode (``add_eval_sums``); restores the previous mode."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, device=x.device)
    add_eval_sums(model, x, y, sums, batch_size)
    model.train(was_training)
    loss, correct, _ = sums.tolist()
    return loss / len(y), correct / len(y)
