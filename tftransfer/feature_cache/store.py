"""Where cached features live: arrays in memory or `.npy` memory maps."""

import dataclasses
import os

import numpy as np


class Writer:
    """Collects one feature array, in memory or in a `.npy` memory map."""

    def __init__(self, shape, dtype, capacity, path):
        self.shape, self.dtype, self.path = tuple(shape), np.dtype(dtype), path
        self.count, self.capacity, self._files = 0, 0, 0
        self.array = self._new(capacity)

    def _new(self, capacity):
        self.capacity = capacity
        if self.path is None:
            return np.empty((capacity, *self.shape), self.dtype)
        self._files += 1
        return np.lib.format.open_memmap(
            f"{self.path}-{self._files}.npy", mode="w+", dtype=self.dtype,
            shape=(capacity, *self.shape),
        )

    def append(self, batch):
        n = len(batch)
        if self.count + n > self.capacity:  # the dataset was longer than announced
            old = self.array
            self.array = self._new(max(self.count + n, 2 * self.capacity))
            self.array[:self.count] = old[:self.count]
            if isinstance(old, np.memmap):
                filename = old.filename
                del old
                os.remove(filename)
        self.array[self.count:self.count + n] = batch
        self.count += n

    def finish(self):
        if self.path is None:
            return self.array[:self.count]
        self.array.flush()
        filename = self.array.filename
        del self.array
        return np.load(filename, mmap_mode="r")[:self.count]


@dataclasses.dataclass
class Entry:
    features: np.ndarray  # or a read-only memmap
    storage: str


@dataclasses.dataclass
class Stream:
    """What a dataset yielded: its labels and weights, batch size, order."""

    targets: list
    structure: object
    batch_size: int
    shuffle: bool
