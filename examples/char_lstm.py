"""A character-level LSTM language model, trained compiled and eager, then sampled from a compiled plan.

    python examples/char_lstm.py                       # about half a minute on 2 cores
    python examples/char_lstm.py --steps 400 --hidden 128 --chars 400
    python examples/char_lstm.py --quick               # a few seconds (the tests run this)

The text ships with Python (no download): the Zen of Python (``this.py``'s ROT13 string, read from
its source so nothing is printed) followed by the docstrings of a few standard-library modules.
The model is Embedding -> LSTM -> Linear over next characters, with cross-entropy and Adam.

It trains twice from the same initial weights on the same batches: with ``graphc.compile_train``
(forward, backward and Adam's update in one compiled graph) and in eager mode (the module called on
arrays, ``loss.backward()``, ``optimizer.step()``); both print their losses falling, and their
first losses agree. Sampling then runs a compiled plan whose ``forward`` is a plain Python ``for``
over per-character noise: ``graphc.compile`` converts it (graphc.autograph) into one ``scan`` that
feeds each sampled character back in, one LSTMCell step per character, and the characters appended
to a list inside the loop come out stacked. Each character is drawn from softmax(logits / T) by the
Gumbel-max trick, argmax(logits / T + Gumbel noise), the noise made up front with NumPy.
"""

from __future__ import annotations

import argparse
import ast
import codecs
import importlib.util
import inspect
import sys
import time
from typing import Any

import numpy as np

import graphc
import graphc.functional as F
import graphc.nn as nn
from graphc import optim

# The standard-library modules whose docstrings follow the Zen of Python in the training text.
_DOC_MODULES = ("textwrap", "string", "bisect", "heapq", "functools")


def corpus() -> str:
    """The training text: the Zen of Python and some standard-library docstrings (no download)."""
    tree = ast.parse(importlib.util.find_spec("this").loader.get_source("this"))  # not imported: no print
    rot13 = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        if isinstance(node.value.value, str) and len(node.value.value) > 100
    )
    parts = [codecs.decode(rot13, "rot13")]
    for name in _DOC_MODULES:
        module = __import__(name)
        docs = [inspect.getdoc(module)]
        docs += [inspect.getdoc(getattr(module, a)) for a in sorted(dir(module)) if not a.startswith("_")]
        parts += [d for d in docs if d and d.isascii()]
    return "\n\n".join(parts)


class CharLSTM(nn.Module):
    """Next-character logits: Embedding(vocab, embed) -> LSTM(embed, hidden) -> Linear(hidden, vocab)."""

    def __init__(self, vocab: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x):
        """``x``: character ids [batch, time] -> logits [batch * time, vocab]."""
        out, _ = self.lstm(self.embed(x))
        return self.head(out).reshape(-1, self.vocab)


class Sampler(nn.Module):
    """Reads a prompt with the trained LSTM, then draws one character per row of ``noise``."""

    def __init__(self, model: CharLSTM, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, float(temperature)
        lstm = model.lstm
        self.cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # the LSTM's own arrays
            setattr(self.cell, name, getattr(lstm, name + "_l0"))

    def forward(self, prompt, noise):
        """``prompt``: ids [batch, length >= 2]; ``noise``: Gumbel noise [steps, batch, vocab].
        Returns the sampled ids [steps, batch]."""
        _, (h, c) = self.model.lstm(self.model.embed(prompt[:, :-1]))
        h, c = h[0], c[0]
        x = prompt[:, -1]
        chars = []
        for g in noise:  # graphc.compile turns this loop into one scan
            h, c = self.cell(self.model.embed(x), (h, c))
            x = (self.model.head(h) / self.temperature + g).argmax(-1)
            chars.append(x)
        return graphc.stack(chars)


def batches(ids: np.ndarray, steps: int, batch: int, length: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """``steps`` batches of random windows: inputs [batch, length] and next characters [batch * length]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - length - 1, batch)
        window = np.stack([ids[s : s + length + 1] for s in starts])
        out.append((np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:].reshape(-1))))
    return out


def train_compiled(model: CharLSTM, data: list, lr: float) -> list[float]:
    """One compiled training step (forward, backward, Adam) per batch; the losses."""
    step = graphc.compile_train(model, F.cross_entropy, optim.Adam(lr=lr), *data[0])
    return [float(step(x, y)) for x, y in data]


def train_eager(model: CharLSTM, data: list, lr: float) -> list[float]:
    """The same training op by op: ``loss.backward()`` and ``optimizer.step()``; the losses."""
    opt = optim.Adam(model.parameters(), lr=lr)
    losses = []
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def _report(name: str, losses: list[float], seconds: float, out: Any) -> None:
    every = max(1, len(losses) // 5)
    shown = ", ".join(f"{i}: {losses[i]:.3f}" for i in range(0, len(losses), every))
    print(f"{name:>8}: loss by step {shown}, last {losses[-1]:.3f} ({seconds:.1f} s)", file=out)


def main(argv: list[str] | None = None, out: Any = None) -> dict[str, Any]:
    """Train both ways, sample, print; return both runs' losses, the sample (text and ids), the
    sampler module and its inputs."""
    out = out or sys.stdout
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60, help="training steps in each mode")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=32, help="characters per training window")
    p.add_argument("--embed", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--chars", type=int, default=200, help="characters to sample")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--prompt", default="Beautiful is")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tiny run (for tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.length, args.hidden, args.chars = 6, 4, 12, 24, 24

    text = corpus()
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.array([index[ch] for ch in text], np.int64)
    print(f"text: {len(text)} characters, {len(vocab)} distinct", file=out)
    data = batches(ids, args.steps, args.batch, args.length, args.seed)

    graphc.manual_seed(args.seed)
    compiled_model = CharLSTM(len(vocab), args.embed, args.hidden)
    eager_model = CharLSTM(len(vocab), args.embed, args.hidden)
    eager_model.load_state_dict(compiled_model.state_dict())
    start = time.perf_counter()
    compiled = train_compiled(compiled_model, data, args.lr)
    _report("compiled", compiled, time.perf_counter() - start, out)
    start = time.perf_counter()
    eager = train_eager(eager_model, data, args.lr)
    _report("eager", eager, time.perf_counter() - start, out)

    prompt_text = "".join(ch for ch in args.prompt if ch in index).rjust(2, "\n")
    prompt = np.array([[index[ch] for ch in prompt_text]], np.int64)
    uniform = np.random.default_rng(args.seed + 1).random((args.chars, 1, len(vocab)))
    noise = (-np.log(-np.log(np.clip(uniform, 1e-12, 1 - 1e-12)))).astype(np.float32)
    sampler = Sampler(compiled_model, args.temperature).eval()
    plan = graphc.compile(sampler, prompt, noise)  # the for loop over noise becomes one scan
    sampled = np.asarray(plan(prompt, noise))[:, 0]
    sample = prompt_text + "".join(vocab[i] for i in sampled)
    print(f"sample (temperature {args.temperature}):\n{sample}", file=out)
    return {
        "compiled": compiled,
        "eager": eager,
        "sample": sample,
        "sampler": sampler,
        "inputs": (prompt, noise),
        "ids": sampled,
    }


if __name__ == "__main__":
    main()
