"""Shared fixtures for the front-end tests."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fixed-seed NumPy generator."""
    return np.random.default_rng(1234)
