"""graphc.data.DataLoader: order, determinism, drop_last, datasets, prefetch, resume."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.data import DataLoader
from graphc.ir import GraphcError


def _data(n=10):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    return x, y


@pytest.mark.parametrize("prefetch", [0, 2])
def test_sequential_batches_and_short_last(prefetch):
    x, y = _data(10)
    loader = DataLoader((x, y), batch_size=4, prefetch=prefetch)
    assert len(loader) == 3
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    np.testing.assert_array_equal(batches[0][0], x[:4])
    assert loader.epoch == 1 and loader.position == 0


def test_drop_last():
    loader = DataLoader(_data(10), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [b[1].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("prefetch", [0, 3])
def test_shuffle_is_deterministic_per_seed_and_epoch(prefetch):
    def epochs(seed):
        loader = DataLoader(_data(20), batch_size=5, shuffle=True, seed=seed, prefetch=prefetch)
        return [np.concatenate([b[1] for b in loader]).tolist() for _ in range(3)]

    a, b, c = epochs(0), epochs(0), epochs(1)
    assert a == b
    assert a != c
    assert a[0] != a[1]  # a fresh permutation each epoch
    for order in a:
        assert sorted(order) == list(range(20))


def test_single_array_and_getitem_datasets():
    x, y = _data(6)
    assert [b.shape for b in DataLoader(x, batch_size=4)] == [(4, 2), (2, 2)]

    class Items:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return x[i], int(y[i])

    batches = list(DataLoader(Items(), batch_size=4, prefetch=1))
    np.testing.assert_array_equal(batches[0][0], x[:4])
    assert batches[1][1].tolist() == [4, 5] and batches[1][1].dtype == np.int64


def test_bad_datasets():
    with pytest.raises(GraphcError, match="length"):
        DataLoader((np.zeros(3), np.zeros(4)))
    with pytest.raises(GraphcError, match="__getitem__"):
        DataLoader(42)
    with pytest.raises(GraphcError, match="batch_size"):
        DataLoader(np.zeros(3), batch_size=0)


def test_errors_in_the_prefetch_thread_reach_the_caller():
    class Broken:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 2:
                raise ValueError("bad sample 2")
            return np.zeros(1)

    with pytest.raises(ValueError, match="bad sample 2"):
        list(DataLoader(Broken(), batch_size=1, prefetch=2))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_mid_epoch(prefetch):
    def make():
        return DataLoader(_data(17), batch_size=3, shuffle=True, seed=5, drop_last=True, prefetch=prefetch)

    full = make()
    reference = [b[1].tolist() for _ in range(3) for b in full]

    loader = make()
    seen = [b[1].tolist() for b in loader]  # epoch 0
    for i, batch in enumerate(loader):  # epoch 1, interrupted after three batches
        seen.append(batch[1].tolist())
        if i == 2:
            break
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["position"] == 3

    resumed = make()
    resumed.load_state_dict(state)
    rest = [b[1].tolist() for b in resumed] + [b[1].tolist() for b in resumed]
    assert seen + rest == reference


def test_state_after_a_full_epoch_points_to_the_next():
    loader = DataLoader(_data(4), batch_size=2)
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0
    loader.set_epoch(7)
    assert loader.epoch == 7 and loader.position == 0


def test_abandoned_iterator_stops_its_thread():
    import threading

    before = threading.active_count()
    loader = DataLoader(_data(100), batch_size=1, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    assert threading.active_count() == before
    assert loader.position == 4
