"""Data larger than memory: examples read on demand from a map-style Dataset, through a DataLoader.

`Examples` wraps a Dataset whose item i is (input, label) (an image folder with `data.in_memory = false`, or a
data hook's Dataset); `StreamedX` is a split's inputs as the training loop sees them: indexing with a batch of
row numbers reads, preprocesses and stacks those rows (what sanity and lr-find use: they read only the batches
they need), and `loader` streams whole epochs through a DataLoader (`data.workers` processes, pinned memory and
non-blocking copies on CUDA, workers kept between epochs). The batch order is drawn from the same generator as
in memory, so a streamed run trains on the same batches as an in-memory one.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import DataError

STATS_BATCH = 256  # examples per read in the streaming pass that fits the preprocessing statistics


def _array(value, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} is {type(value).__name__}, not numbers ({e})") from None
    return a


def _label(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def auto_workers() -> int:
    """DataLoader workers when data.workers is not set: one per core but one, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class Examples:
    """The examples of a map-style Dataset (or a subset of its rows), read on demand."""

    def __init__(self, dataset, shape: tuple[int, ...] | None = None, indices: np.ndarray | None = None):
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._shape = shape

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, rows) -> Examples:
        return Examples(self.dataset, self._shape, self.indices[np.asarray(rows, dtype=np.int64)])

    def item(self, i: int):
        try:
            return self.dataset[int(self.indices[i])]
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 -- the user's Dataset raising is bad input, said in one line
            raise DataError(f"the Dataset's item {int(self.indices[i])} raised {type(e).__name__}: {e}") from None

    def read(self, i: int) -> np.ndarray:
        """Row i's input as float32."""
        item = self.item(i)
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"the Dataset's item {int(self.indices[i])} is {type(item).__name__}; expected a pair "
                            f"(input, label)")
        return _array(item[0], f"the Dataset's item {int(self.indices[i])} input")

    @property
    def example_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = tuple(self.read(0).shape) if len(self) else ()
        return tuple(self._shape)

    def labels(self) -> list:
        """Every row's label: from `dataset.targets` when it has them (no input is read), else item by item."""
        targets = getattr(self.dataset, "targets", None)
        if targets is not None and len(targets) == len(self.dataset):
            t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
            return t[self.indices].tolist()
        return [_label(self.item(i)[1]) for i in range(len(self))]


class _Rows(torch.utils.data.Dataset):
    """Rows of `Examples` as (row number, float32 tensor after `transform`), run in the DataLoader's workers."""

    def __init__(self, examples: Examples, transform: Callable[[np.ndarray], np.ndarray]):
        self.examples, self.transform = examples, transform

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, torch.from_numpy(np.ascontiguousarray(self.transform(self.examples.read(i)[None])[0]))


class _EpochBatches(torch.utils.data.Sampler):
    """Each epoch's minibatches of row numbers: a fresh permutation from `generator` (the in-memory order)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | None):
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __iter__(self):  # a generator: the permutation is drawn at the first batch (a DataLoader calls iter()
        # once more than it iterates, which must not advance the generator)
        order = torch.arange(self.n) if self.generator is None else torch.randperm(self.n, generator=self.generator)
        for b in order.split(self.batch_size):
            yield b.tolist()

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


class StreamedX:
    """A split's inputs read on demand: `x[rows]` reads, preprocesses and stacks those rows; `len`, `shape` and
    `device` behave like a tensor's."""

    def __init__(self, examples: Examples, transform: Callable[[np.ndarray], np.ndarray], device="cpu",
                 workers: int | None = None):
        self.examples, self.transform = examples, transform
        self.device = torch.device(device)
        self.workers = auto_workers() if workers is None else workers
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def shape(self) -> torch.Size:
        if self._shape is None:
            self._shape = tuple(self.transform(np.zeros((1, *self.examples.example_shape), np.float32)).shape[1:])
        return torch.Size((len(self), *self._shape))

    def to(self, device) -> StreamedX:
        out = StreamedX(self.examples, self.transform, device, self.workers)
        out._shape = self._shape
        return out

    def rows(self, rows) -> torch.Tensor:
        """Rows read, preprocessed and stacked: (len(rows), *input_shape) on the device."""
        rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return torch.zeros((0, *self.shape[1:]), device=self.device)
        x = np.stack([self.examples.read(int(i)) for i in rows])
        return torch.from_numpy(np.ascontiguousarray(self.transform(x))).to(self.device)

    def __getitem__(self, rows):
        """x[rows] for a batch of row numbers: a tensor; x[a:b]: a lazy view of those rows, like a tensor view."""
        if isinstance(rows, slice):
            view = StreamedX(self.examples.take(np.arange(len(self))[rows]), self.transform, self.device,
                             self.workers)
            view._shape = self._shape
            return view
        if isinstance(rows, int):
            return self.rows([rows])[0]
        return self.rows(rows)

    def _loader(self, batch_sampler, persistent: bool = False) -> torch.utils.data.DataLoader:
        cuda = self.device.type == "cuda"
        return torch.utils.data.DataLoader(_Rows(self.examples, self.transform), batch_sampler=batch_sampler,
                                           num_workers=self.workers, pin_memory=cuda,
                                           persistent_workers=persistent and self.workers > 0)

    def epochs(self, batch_size: int, generator: torch.Generator | None) -> Epochs:
        """Minibatches for a whole training run: iterate once per epoch (the workers stay between epochs)."""
        return Epochs(self._loader(_EpochBatches(len(self), batch_size, generator), persistent=True), self.device)

    def chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The split in order, batch_size rows at a time (evaluation)."""
        for _, xb in self._loader(_EpochBatches(len(self), batch_size, None)):
            yield xb.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return f"StreamedX({len(self)} rows read on demand, device {self.device})"


class Epochs:
    """Each iteration is one epoch of (rows, x) minibatches, in the order drawn from the generator; rows index
    the labels, which stay in memory."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for rows, xb in self.loader:
            yield rows.to(self.device, non_blocking=True), xb.to(self.device, non_blocking=True)


def fit_stats(examples: Examples, encode: Callable[[np.ndarray], np.ndarray], workers: int | None = None):
    """Sum, sum of squares and count over the training split, read in chunks (a streaming pass), in float64:
    returns (n, sum over rows (D,), sum of squares (D,), sum of outer products (D, D) or None when D > 4096)."""
    n, s1, s2, outer = 0, None, None, None
    loader = torch.utils.data.DataLoader(_Rows(examples, encode), batch_size=STATS_BATCH,
                                         num_workers=auto_workers() if workers is None else workers)
    for _, xb in loader:
        flat = xb.reshape(len(xb), -1).double()
        if s1 is None:
            d = flat.shape[1]
            s1, s2 = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
            outer = torch.zeros(d, d, dtype=torch.float64) if d <= 4096 else None
        n += len(flat)
        s1 += flat.sum(0)
        s2 += (flat * flat).sum(0)
        if outer is not None:
            outer += flat.T @ flat
    return n, s1, s2, outer
