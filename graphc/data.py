"""DataLoader: batches of NumPy arrays in a deterministic, resumable order, prefetched on a thread.

The order of epoch ``e`` depends only on ``(seed, e)``, and the loader counts the batches it has
handed out, so ``state_dict()`` saved in a checkpoint lets a resumed run see exactly the batches
the uninterrupted run would have seen.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from graphc.ir import GraphcError

Batch = Any  # one array, or a tuple of arrays (one per field of the dataset)


class DistributedSampler:
    """Which samples one rank of a data-parallel job sees: a disjoint shard of each epoch's order.

    Every rank draws the same permutation of the dataset from the loader's ``(seed, epoch)`` (so
    the seed must be the same on every rank: the default 0 is), and rank ``r`` of ``n`` takes
    every n-th sample from position ``r``. Shards have equal sizes, so every rank runs the same
    number of steps: ``drop_last=True`` drops the last ``len % n`` samples of the order,
    otherwise the order is padded with its own first samples (PyTorch's DistributedSampler), so
    an evaluation over padded shards counts those few samples twice.
    ``num_replicas`` and ``rank`` default to ``graphc.distributed.world_size()`` and ``rank()``.
    """

    def __init__(
        self, num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False
    ) -> None:
        if num_replicas is None or rank is None:
            import graphc.distributed as distributed

            num_replicas = distributed.world_size() if num_replicas is None else num_replicas
            rank = distributed.rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise GraphcError(
                f"DistributedSampler: num_replicas must be a positive int, got {num_replicas!r}"
            )
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise GraphcError(f"DistributedSampler: rank must be an int in [0, {num_replicas}), got {rank!r}")
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, bool(drop_last)

    def shard_size(self, n: int) -> int:
        """Samples per rank and epoch for a dataset of ``n`` samples."""
        return n // self.num_replicas if self.drop_last else -(-n // self.num_replicas)

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's part of one epoch's sample order."""
        size = self.shard_size(len(order))
        total = size * self.num_replicas
        if total > len(order):
            if len(order) == 0:
                raise GraphcError("DistributedSampler: the dataset is empty")
            order = np.resize(order, total)  # repeats the order from its start
        return order[self.rank : total : self.num_replicas]

    def __repr__(self) -> str:
        return f"<DistributedSampler rank {self.rank} of {self.num_replicas}, drop_last={self.drop_last}>"


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size`` samples.

    ``dataset`` is a tuple of NumPy arrays with equal first dimension (batches are tuples of
    slices), one array (batches are arrays), or an object with ``__len__`` and ``__getitem__``
    whose items (arrays, scalars or tuples of them) are stacked. ``shuffle`` draws a fresh
    permutation per epoch from ``(seed, epoch)``; ``drop_last`` drops a short final batch (a
    compiled step has a fixed batch size); ``prefetch`` batches are assembled ahead on a
    background thread (0: assemble on the caller's thread). ``sampler`` (a DistributedSampler)
    restricts each epoch to this rank's shard of the (shuffled) order.

    Each ``iter(loader)`` runs the rest of the current epoch, starting from the resumable
    position, and then moves to the next epoch.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
        sampler: DistributedSampler | None = None,
    ) -> None:
        if batch_size <= 0:
            raise GraphcError(f"DataLoader: batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = max(0, int(prefetch))
        if sampler is not None and not isinstance(sampler, DistributedSampler):
            raise GraphcError(
                f"DataLoader: sampler must be a DistributedSampler, got {type(sampler).__name__}"
            )
        self.sampler = sampler
        self._fields: tuple[np.ndarray, ...] | None = None
        self._single = False
        if isinstance(dataset, np.ndarray):
            self._fields, self._single = (dataset,), True
        elif isinstance(dataset, (tuple, list)) and all(isinstance(a, np.ndarray) for a in dataset):
            if not dataset:
                raise GraphcError("DataLoader: the dataset tuple is empty")
            lengths = {len(a) for a in dataset}
            if len(lengths) != 1:
                shapes = ", ".join(str(a.shape) for a in dataset)
                raise GraphcError(f"DataLoader: arrays differ in length (first dimension): {shapes}")
            self._fields = tuple(dataset)
        elif not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise GraphcError(
                "DataLoader: dataset must be a NumPy array, a tuple of arrays, or an object "
                f"with __len__ and __getitem__; got {type(dataset).__name__}"
            )
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    # ------------------------------------------------------------ sizes and order
    @property
    def num_samples(self) -> int:
        """Samples in the dataset."""
        return len(self._fields[0]) if self._fields is not None else len(self.dataset)

    @property
    def samples_per_epoch(self) -> int:
        """Samples this loader hands out per epoch (its shard's size with a sampler)."""
        n = self.num_samples
        return self.sampler.shard_size(n) if self.sampler is not None else n

    def __len__(self) -> int:
        """Batches per epoch."""
        n, bs = self.samples_per_epoch, self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def indices(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch``: a permutation seeded by (seed, epoch), or 0..n-1
        (with a sampler, this rank's shard of it)."""
        n = self.num_samples
        if not self.shuffle:
            order = np.arange(n)
        else:
            order = np.random.default_rng((self.seed, int(epoch))).permutation(n)
        return order if self.sampler is None else self.sampler.shard(order)

    def fetch(self, idx: np.ndarray) -> Batch:
        """Assemble the batch of the given sample indices."""
        if self._fields is not None:
            parts = tuple(a[idx] for a in self._fields)
            return parts[0] if self._single else parts
        items = [self.dataset[int(i)] for i in idx]
        if isinstance(items[0], (tuple, list)):
            return tuple(np.stack([np.asarray(it[j]) for it in items]) for j in range(len(items[0])))
        return np.stack([np.asarray(it) for it in items])

    def example_batch(self) -> Batch:
        """The first ``batch_size`` samples in dataset order (for compile examples); no state change."""
        return self.fetch(np.arange(min(self.batch_size, self.num_samples)))

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Batch]:
        order = self.indices(self.epoch)
        n_batches, bs = len(self), self.batch_size
        start = self.position
        if start > n_batches:
            raise GraphcError(f"DataLoader: position {start} is past the {n_batches} batches of an epoch")

        def make(b: int) -> Batch:
            return self.fetch(order[b * bs : (b + 1) * bs])

        if self.prefetch == 0:
            for b in range(start, n_batches):
                batch = make(b)
                self.position = b + 1
                yield batch
        else:
            yield from self._prefetched(make, start, n_batches)
        self.epoch += 1
        self.position = 0

    def _prefetched(self, make, start: int, stop: int) -> Iterator[Batch]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop_event = threading.Event()

        def put(item) -> bool:
            # Poll so that an abandoned iterator (the consumer broke out) lets the thread end.
            while not stop_event.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for b in range(start, stop):
                    if not put(("batch", b, make(b))):
                        return
            except BaseException as err:  # handed to the consumer, raised on its thread
                put(("error", None, err))
                return
            put(("end", None, None))

        thread = threading.Thread(target=produce, name="graphc-dataloader", daemon=True)
        thread.start()
        try:
            while True:
                kind, b, payload = q.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise payload
                self.position = b + 1
                yield payload
        finally:
            stop_event.set()
            thread.join()

    # ------------------------------------------------------------ resuming
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch on the next iteration."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        """Where the loader stands: epoch and batches already handed out (JSON-able)."""
        epoch, position = self.epoch, self.position
        if position >= len(self):  # an epoch handed out in full: resume at the next one
            epoch, position = epoch + 1, 0
        return {"epoch": epoch, "position": position, "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position (the next batch is the one after the last handed out)."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.seed = int(state.get("seed", self.seed))
        self.shuffle = bool(state.get("shuffle", self.shuffle))

    def __repr__(self) -> str:
        return (
            f"<DataLoader {self.num_samples} samples, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, epoch={self.epoch}, position={self.position}>"
        )
