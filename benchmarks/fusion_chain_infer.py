"""fusion_chain_infer: layer_norm(gelu(x + b) * s + r) over the last axis, exact (erf) GELU,
x and r [8192, 1024], b and s [1024]: a memory-bound chain that one fused kernel should run."""

import numpy as np

from graphc import functional as F

WHAT = "layer_norm(gelu(x + b) * s + r), x and r [8192, 1024], exact GELU"
ROWS, COLS = 8192, 1024
TARGETS = [("time / bandwidth bound", "<= 1.3"), ("speedup over torch eager", ">= 3")]


def chain(F):
    """The chain as a function of tensors, in the library whose functional ``F`` is given."""

    def fusion_chain(x, b, s, r):
        return F.layer_norm(F.gelu(x + b) * s + r, (x.shape[-1],))

    return fusion_chain


def model():
    """The chain with graphc's functional."""
    return chain(F)


def torch_model():
    """The chain with torch.nn.functional, as a parameterless torch Module."""
    import torch

    fn = chain(torch.nn.functional)

    class FusionChain(torch.nn.Module):
        def forward(self, x, b, s, r):
            return fn(x, b, s, r)

    return FusionChain()


def example_inputs():
    """x [8192, 1024], b [1024], s [1024], r [8192, 1024], float32 standard normal."""
    rng = np.random.default_rng(0)
    normal = rng.standard_normal
    return (
        normal((ROWS, COLS), dtype=np.float32),
        normal(COLS, dtype=np.float32),
        normal(COLS, dtype=np.float32),
        normal((ROWS, COLS), dtype=np.float32),
    )


def moved_bytes(inputs):
    """Bytes a perfect kernel moves: read x and r, write the result (the size of x)."""
    x, _, _, r = inputs
    return x.nbytes + r.nbytes + x.nbytes
