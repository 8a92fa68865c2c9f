"""lstm_train: nn.LSTM (input 64, hidden 256, batch_first) + Linear(256 -> 10) on the last step,
cross-entropy, Adam lr 1e-3, batch 32, at T=64 and T=512 in one run, against torch eager's nn.LSTM.

A custom workload of the suite (``graphc bench lstm_train``, or ``python benchmarks/lstm_train.py
[bench options]``; docs/BENCHMARKS.md). Each case builds graphc's training step and torch
eager's with the model-workload machinery (graphc.bench.engines.build_engine: the same seeded
weights, the first step's losses compared) and times them round-robin with the run's settings.

The LSTM is one ``graphc.scan`` per layer, whose body is compiled once: building the T=512 step
should take about as long as the T=64 one (target ``compile T=512 / T=64 <= 1.2``). That figure
is the in-process plan build (``compile_train``, without the first step) measured once both
plans have been built, so with a warm kernel cache: what a user waits for on a second run; each
length is built three more times, alternating, and its fastest build counts. The
T=512 case also gives each engine's time per extra time step (forward + backward), (t(512) -
t(64)) / 448, in microseconds. At T=512 the backward's cotangents decay through the denormal
range (graphc's loops flush them to zero; torch eager slows down there).

The file still defines model(), torch_model() and example_inputs() (T=64), so ``graphc compile``
and ``graphc run`` take it as a model file.
"""

import sys

import numpy as np

from graphc import functional as F
from graphc import nn

WHAT = "nn.LSTM(64 -> 256) + Linear(256 -> 10) on the last step, cross-entropy, Adam lr 1e-3, T=64 and T=512"
PEERS = ("torch",)
BATCH = 32
STEPS = (64, 512)
QUICK_STEPS = (4, 16)  # --quick: stand-ins for T=64 and T=512
FEATURES, HIDDEN, CLASSES = 64, 256, 10
LOSS = "cross_entropy"
OPTIMIZER = ("Adam", {"lr": 1e-3})
COMPILE_RATIO = "compile T=512 / T=64"
REBUILDS = 3  # builds of each length for the compile ratio (the fastest counts)
TARGETS = [("graphc / torch", "<= 1"), (COMPILE_RATIO, "<= 1.2")]


def build(nn, F):
    """The model in the library whose ``nn`` and functional ``F`` are given (graphc's or torch's)."""

    class LSTMClassifier(nn.Module):
        """An LSTM over the sequence, then a Linear layer on its last output."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(FEATURES, HIDDEN, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    return LSTMClassifier()


def model():
    """The graphc model."""
    return build(nn, F)


def torch_model():
    """The same model in PyTorch."""
    import torch

    return build(torch.nn, torch.nn.functional)


def sequence(steps: int) -> np.ndarray:
    """x [32, steps, 64] float32, standard normal."""
    return np.random.default_rng(0).standard_normal((BATCH, steps, FEATURES), dtype=np.float32)


def example_inputs():
    """x [32, 64, 64] float32 (T=64), standard normal."""
    return (sequence(STEPS[0]),)


def example_labels():
    """Class labels [32] int64."""
    return np.random.default_rng(1).integers(0, CLASSES, size=BATCH).astype(np.int64)


def workload(steps: int):
    """This file as a model workload at sequence length ``steps`` (for graphc.bench.engines)."""
    from graphc.modelfile import ModelFile

    return ModelFile(
        path=__file__,
        name=f"lstm_train T={steps}",
        what=WHAT,
        model=model,
        example_inputs=lambda: (sequence(steps),),
        torch_model=torch_model,
        example_labels=example_labels,
        loss=LOSS,
        optimizer=OPTIMIZER,
        batch=BATCH,
    )


def _case(steps: int, state: dict | None, opts: dict) -> tuple[dict, dict]:
    """One sequence length: graphc and (when asked) torch built, checked and timed; the case, runners."""
    from graphc.bench.custom import failed, not_asked, wanted
    from graphc.bench.engines import Skip, build_engine
    from graphc.bench.targets import agreement, agrees
    from graphc.bench.timing import measure as time_runners

    w = workload(steps)
    inputs = w.inputs()
    threads = opts["threads"]
    label = f"T={steps}"
    try:
        runners = {"graphc": build_engine("graphc", w, inputs, state, "cpu", threads)}
    except Exception as err:  # graphc never skips
        return {"case": label, "engines": {"graphc": failed(err)}}, {}
    entries: dict[str, dict] = {}
    if wanted(opts, "torch"):
        try:
            runners["torch"] = build_engine("torch", w, inputs, state, "cpu", threads)
        except Skip as err:
            entries["torch"] = {"status": "skipped", "note": str(err)}
        except Exception as err:
            entries["torch"] = failed(err)
    else:
        entries["torch"] = not_asked("torch")
    opts["log"](f"  lstm_train: timing {label} ...")
    timed = time_runners(runners, opts["repeat"], opts["warmup"], opts["min_time"], opts["settle"])
    engines = {**timed, **entries}
    g = engines["graphc"]
    g["first_loss"] = runners["graphc"].first
    g["compile_s"] = runners["graphc"].compile_s
    if "torch" in runners:
        diff = agreement(runners["graphc"].first, runners["torch"].first)
        text = diff.get("error") or f"first loss differs by {diff['max_abs_diff']:.3g}"
        g.update(agreement={"torch": text}, agrees=agrees(diff))
    case = {"case": label, "engines": engines, "ratios": {}, "extra": {}}
    if g.get("status") == "ok" and engines["torch"].get("status") == "ok":
        case["ratios"]["graphc / torch"] = g["median_ms"] / engines["torch"]["median_ms"]
    return case, runners


def measure(opts: dict) -> dict:
    """The suite's custom-workload entry point: cases T=64 and T=512 (``quick``: T=4 and T=16)."""
    from graphc.bench.custom import failed
    from graphc.bench.engines import build_engine
    from graphc.bench.weights import seeded_graphc_model, state_of

    short, long = QUICK_STEPS if opts["quick"] else STEPS
    try:
        state = state_of(seeded_graphc_model(model))
    except Exception:  # graphc's model() fails: its build says why
        state = None
    cases, builds = [], {}
    for steps in (short, long):
        case, runners = _case(steps, state, opts)
        cases.append(case)
        if "graphc" in runners:
            builds[steps] = runners["graphc"].build_s
        runners.clear()
    notes = []
    if len(builds) == 2:
        # Built again, now that this process holds both plans' kernels: the first build of the run
        # also loads kernels from the disk cache (or compiles them on a cold one).
        # Each is built REBUILDS times, alternating, and its fastest build counts: a build takes tens
        # of milliseconds, so one timing of each varied by +-50% run to run (the machine's noise).
        w = {s: workload(s) for s in builds}
        try:
            times: dict[int, list[float]] = {s: [] for s in builds}
            for _ in range(REBUILDS):
                for s in builds:
                    runner = build_engine("graphc", w[s], w[s].inputs(), state, "cpu", opts["threads"])
                    times[s].append(runner.build_s)
                    del runner
            builds = {s: min(ts) for s, ts in times.items()}
        except Exception as err:  # graphc never skips
            cases[-1]["engines"]["graphc"] = failed(err)
        else:
            cases[-1]["ratios"][COMPILE_RATIO] = builds[long] / builds[short]
            cases[-1]["extra"].update({f"build_s_T{s}": b for s, b in builds.items()})
            notes.append(
                "compile = graphc's in-process plan build (compile_train, without the first step), "
                f"built again {REBUILDS} times in this process, alternating, the fastest build counted: "
                "warm kernel cache"
            )
    if opts["quick"]:
        notes.append(f"quick: T={short} and T={long} stand in for T=64 and T=512")
    first, last = (c["engines"] for c in cases)
    for engine in ("graphc", "torch"):
        a, b = first.get(engine, {}), last.get(engine, {})
        if a.get("status") == b.get("status") == "ok":
            per_step_us = (b["median_ms"] - a["median_ms"]) * 1e3 / (long - short)
            cases[-1]["extra"][f"per_step_us_{engine}"] = per_step_us
    if "per_step_us_graphc" in cases[-1]["extra"]:
        flops = 3 * 2 * BATCH * (FEATURES + HIDDEN) * 4 * HIDDEN  # forward GEMMs, x3 with the backward
        us = cases[-1]["extra"]["per_step_us_graphc"]
        cases[-1]["extra"]["per_step_gflops_graphc"] = flops / (us * 1e3) if us > 0 else float("nan")
        notes.append(
            f"per_step_us = (median at T={long} - at T={short}) / {long - short}: the time of one more "
            f"time step (forward + backward); its GEMMs are {flops / 1e6:.0f} MFLOP"
        )
    return {"cases": cases, "notes": notes}


if __name__ == "__main__":
    from graphc.bench.custom import run_script

    sys.exit(run_script(__file__))
