"""transformer_infer: examples/transformer.py's post-norm encoder layer, d 256, 4 heads, ff 1024,
seq 128, batch 8, forward only (eval mode)."""

from pathlib import Path

import numpy as np

from graphc import functional as F
from graphc import nn
from graphc.modelfile import import_file

transformer = import_file(Path(__file__).resolve().parents[1] / "examples" / "transformer.py")

WHAT = "post-norm encoder layer d=256, 4 heads, ff 1024 ReLU, seq 128 (examples/transformer.py)"
BATCH = 8
TARGETS = [("time / onnxruntime", "<= 1")]


def model():
    """The graphc encoder layer, eval mode."""
    return transformer.build(nn, F).eval()


def torch_model():
    """The same layer in PyTorch, eval mode."""
    import torch

    return transformer.build(torch.nn, torch.nn.functional).eval()


def example_inputs():
    """x [8, 128, 256] float32, standard normal."""
    shape = (BATCH, transformer.SEQ, transformer.D_MODEL)
    return (np.random.default_rng(0).standard_normal(shape, dtype=np.float32),)
