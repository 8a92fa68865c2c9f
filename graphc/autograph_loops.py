"""Run-time side of graphc.autograph's ``for`` conversion (and the values every converted statement shares).

The rewrite (graphc/autograph.py) turns ``for TARGET in ITER: BODY`` into a call of ``for_stmt``
with the body as a function of the loop item and of the variables it assigns. ``range``/``zip``/
``enumerate`` calls written as the loop's iterable go through ``range_``/``zip_``/``enumerate_``,
which return the builtins' results unless a traced Tensor is involved. Then:

- a traced Tensor, ``zip`` of traced Tensors or ``enumerate`` of one iterate the leading axis:
  one ``scan`` node (zip stops at the shortest, as Python's does; enumerate's index is an i64 scalar);
- ``range(...)`` with a traced scalar bound or step is a ``while_loop`` with the counter carried;
- anything else (a Python range, a list, an eager Tensor) runs as the Python loop it is (a traced
  Tensor's leading axis is static, so ``range(x.shape[0])`` still unrolls).

Loop-carried variables are the ones the body assigns that hold a Tensor or number before the loop
(one that starts as a Python number, ``total = 0``, starts as a Tensor of the type its first step
gives it). A Python list defined before a scanned loop and only appended to in it (``ys.append(h)``)
collects the appended values as scan outputs; after the loop it holds one Tensor per step, as in
Python, so ``stack(ys)`` works. After a scan, the loop variable and the variables first assigned in
the loop that are read after it hold their last step's values (more scan outputs); after a
while_loop they are undefined (using one raises a GraphcError naming it and the loop's line). A
body may not rebind or read an appended list, nor turn a variable that is not a Tensor or number
(``h = None``) into a Tensor: a GraphcError says what to write instead.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from graphc import control_flow as cf
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, current_context, user_source

__all__ = ["Undefined", "enumerate_", "for_stmt", "range_", "static_iter", "zip_"]


class Undefined:
    """The value of a variable that a converted statement leaves undefined; any use raises."""

    def __init__(self, name: str, where: str, why: str = "is not defined on every path here") -> None:
        object.__setattr__(self, "_what", f"{where}variable {name!r} {why}")

    def _fail(self, *args: object, **kwargs: object) -> Any:
        raise GraphcError(object.__getattribute__(self, "_what"))

    __getattr__ = __call__ = __bool__ = __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = _fail
    __rmul__ = __truediv__ = __rtruediv__ = __neg__ = __getitem__ = __iter__ = __len__ = _fail
    __lt__ = __le__ = __gt__ = __ge__ = __matmul__ = __rmatmul__ = __pow__ = _fail


def carried(v: Any) -> bool:
    """Whether a converted loop or branch carries ``v`` as a graph value (a Tensor or a number)."""
    return isinstance(v, (Tensor, bool, int, float, np.ndarray, np.generic))


def _carriable(v: Any) -> bool:
    """What a converted for loop carries: a Tensor, a number, or a tuple of those (``state = (h, c)``)."""
    return carried(v) or (isinstance(v, tuple) and len(v) > 0 and all(_carriable(e) for e in v))


def _traced(x: Any) -> bool:
    return isinstance(x, Tensor) and not x.ctx.eager


class _LoopError(GraphcError):
    """A GraphcError already naming the loop's line (not wrapped again by enclosing loops)."""


# ---------------------------------------------------------------------------- appended lists
class Appends:
    """A Python list inside a converted loop body: only ``append`` works, and (in a scan) the
    appended values become the scan's stacked outputs. ``why`` set: appending itself is refused."""

    def __init__(self, name: str, where: str, ctx: Any, why: str | None = None) -> None:
        self._name, self._where, self._ctx, self._why = name, where, ctx, why
        self.items: list[Any] = []

    def append(self, item: Any) -> None:
        """Record one value of this step (a Tensor of the loop body, of an enclosing trace, or a number)."""
        if self._why is not None:
            raise _LoopError(f"{_at(user_source())}{self._name}.append(...) {self._why}")
        if isinstance(item, Tensor):
            if not self._ctx.lifts_from(item.ctx):
                raise _LoopError(
                    f"{_at(user_source())}{self._name}.append(...) of a value computed inside a converted if "
                    "statement (whose condition is a traced Tensor) within the converted for loop at "
                    f"{self._where}: assign the value to a variable in the if statement and append it after"
                )
            item = self._ctx.lift(item)
        elif not isinstance(item, (bool, int, float, np.generic, np.ndarray)):
            raise _LoopError(
                f"{_at(user_source())}{self._name}.append(...) inside the converted for loop at "
                f"{self._where}: only Tensors and numbers can be collected, got {type(item).__name__}"
            )
        self.items.append(item)

    def _fail(self, *args: object, **kwargs: object) -> Any:
        raise _LoopError(
            f"{_at(user_source())}list {self._name!r} is only appended to ({self._name}.append(...)) inside "
            f"the converted loop at {self._where}: reading or changing it otherwise there is not supported; "
            "carry the value in a variable of its own"
        )

    def __getattr__(self, name: str) -> Any:
        return self._fail()

    __getitem__ = __setitem__ = __delitem__ = __len__ = __iter__ = __contains__ = __bool__ = _fail
    __add__ = __iadd__ = __mul__ = __reversed__ = _fail


def _loop_vars(init: tuple, names: tuple, targets: tuple, appends: tuple) -> tuple[list[int], list[int]]:
    """Indices of the carried variables and of the appended lists (those holding a list before)."""
    slots, lists = [], []
    for i, (n, v) in enumerate(zip(names, init)):
        if n in appends and isinstance(v, (list, Appends)):
            lists.append(i)
        elif n not in targets and _carriable(v):
            slots.append(i)
    return slots, lists


def _has_tensor(v: Any) -> bool:
    return (
        any(isinstance(leaf, Tensor) for leaf in cf._flatten(v)[0]) if not isinstance(v, Appends) else False
    )


def _form(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"a Tensor {v.value.type}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)} values"
    return f"a {type(v).__name__}"


class _Retype(Exception):
    """Carried variables that start as Python numbers became Tensors of other types: trace again."""


def _check_step(
    out: tuple,
    init: tuple,
    names: tuple,
    slots: list[int],
    given: dict[Any, Any],
    where: str,
    what: str,
    retype: dict[int, Tensor] | None,
) -> None:
    """The variables after one traced step: carried ones still Tensors of their types, lists not
    rebound, and no variable that is not carried turned into a Tensor. A carried variable that
    starts as a Python number (``total = 0``) and becomes a Tensor of another type is recorded in
    ``retype`` (when given) and raises _Retype: the loop is traced again starting from a Tensor
    of that type (``0 + x`` broadcasts as the first step would)."""
    for i, v in enumerate(out):
        n = names[i]
        if i in given:
            if v is not given[i]:
                raise _LoopError(
                    f"{_at(where)}list {n!r} is rebound inside the converted {what}; only {n}.append(...) is "
                    "supported there (the values become the loop's stacked outputs)"
                )
        elif i in slots:
            start = given["in", i]
            if not _carriable(v) or cf._flatten(v)[1] != cf._flatten(start)[1]:
                raise _LoopError(
                    f"{_at(where)}variable {n!r} is {_form(start)} before the converted {what} and "
                    f"{_form(v)} after a step of it; a loop-carried variable must keep its form"
                )
            for a, b in zip(cf._flatten(v)[0], cf._flatten(start)[0]):
                if isinstance(a, Tensor) and a.value.type != b.value.type:
                    if retype is not None and isinstance(init[i], (bool, int, float, np.generic)):
                        retype[i] = a
                        continue
                    raise _LoopError(
                        f"{_at(where)}variable {n!r} is {a.value.type} after a step of the converted {what} "
                        f"and {b.value.type} before it; a loop-carried variable must keep its shape and dtype"
                    )
        elif not isinstance(init[i], Undefined) and v is not init[i] and _has_tensor(v):
            raise _LoopError(
                f"{_at(where)}variable {n!r} is a {type(init[i]).__name__} before the converted {what} and "
                f"holds Tensors after a step of it; give it a Tensor value of the loop's shape and dtype "
                "before the loop (e.g. zeros) so that the loop can carry it, or collect values with "
                f"{n}.append(...) into a list defined before the loop"
            )
    if retype:
        raise _Retype()


def _after(
    init: tuple,
    names: tuple,
    slots: list[int],
    final: Any,
    targets: tuple,
    stepped: list[Any],
    known: dict[int, Any],
    where: str,
    what: str,
) -> list[Any]:
    """The variables after a converted loop: carried ones from the loop, ``known`` ones given,
    Python values the traced step assigned kept, loop-local Tensors undefined."""
    out = list(init)
    for i, v in zip(slots, final):
        out[i] = v
    for i, n in enumerate(names):
        v = stepped[i] if stepped else init[i]
        if i in slots or v is init[i] or isinstance(v, Appends):  # an appended list: extended already
            continue
        if i in known:
            out[i] = known[i]
        elif isinstance(v, (Undefined, Appends)) or _has_tensor(v):
            why = f"is first assigned inside the converted {what}; assign it before the loop to use it after"
            if n in targets:
                why = f"(the loop variable of the converted {what}) is not defined after it"
            out[i] = Undefined(n, _at(where), why)
        else:  # a Python value (the same in every step): as after the Python loop
            out[i] = v
    return out


# ---------------------------------------------------------------------------- iterables
class ScanSource:
    """Traced Tensors iterated together along their leading axis; ``build`` makes one loop item."""

    def __init__(self, leaves: list[Tensor], build: Callable[[list], Any], python: Callable[[], Iterator]):
        self.leaves, self.build, self.python = leaves, build, python
        self.length = int(leaves[0].shape[0])

    def __iter__(self) -> Iterator[Any]:
        return self.python()


class TensorRange:
    """``range(start, stop, step)`` where a bound or the step is a traced Tensor (integer scalars)."""

    def __init__(self, start: Any, stop: Any, step: Any) -> None:
        self.start, self.stop, self.step = start, stop, step


def scan_source(x: Any) -> ScanSource | None:
    """``x`` as a ScanSource when it is a traced Tensor (or already one), else None."""
    if isinstance(x, ScanSource):
        return x
    if not _traced(x):
        return None
    if not x.shape:
        raise GraphcError(f"{_at(user_source())}iteration over a 0-d tensor")
    return ScanSource([x], lambda xs: xs[0], lambda: iter(x))


def range_(fn: Any, *args: Any) -> Any:
    """``range(*args)``; a TensorRange when ``fn`` is the builtin and an argument is a traced Tensor."""
    if fn is not builtins.range or not any(_traced(a) for a in args):
        return fn(*args)
    if not 1 <= len(args) <= 3:
        raise GraphcError(f"{_at(user_source())}range expected 1 to 3 arguments, got {len(args)}")
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]
    dtypes = set()
    for a in (start, stop, step):
        if isinstance(a, Tensor):
            if a.value.dtype not in ("i32", "i64") or a.value.type.numel != 1:
                raise GraphcError(
                    f"{_at(user_source())}range() of a traced Tensor needs integer scalars, "
                    f"got {a.value.type}"
                )
            dtypes.add(a.value.dtype)
        elif not isinstance(a, (int, np.integer)):
            raise GraphcError(f"{_at(user_source())}range() needs integers, got {type(a).__name__}")
    if isinstance(step, (int, np.integer)) and step == 0:
        raise GraphcError(f"{_at(user_source())}range() arg 3 must not be zero")
    dtype = "i64" if "i64" in dtypes else "i32"
    ctx = current_context()

    def scalar(a: Any) -> Tensor:
        t = a if isinstance(a, Tensor) else as_tensor(int(a), ctx=ctx)
        t = t.to(dtype)
        return t.reshape(()) if tuple(t.shape) != () else t

    return TensorRange(
        scalar(start), scalar(stop), int(step) if not isinstance(step, Tensor) else scalar(step)
    )


def zip_(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``zip(*args)``; a ScanSource when ``fn`` is the builtin and every argument is a traced Tensor."""
    if fn is not builtins.zip or kwargs or not args:
        return fn(*args, **kwargs)
    sources = [scan_source(a) for a in args]
    if any(s is None for s in sources):  # a Python sequence among them: Python's zip (tensors unroll)
        return builtins.zip(*args)
    length = min(s.length for s in sources)
    leaves = [leaf if s.length == length else leaf[:length] for s in sources for leaf in s.leaves]
    counts = [len(s.leaves) for s in sources]

    def build(xs: list) -> tuple:
        out, pos = [], 0
        for s, c in zip(sources, counts):
            out.append(s.build(xs[pos : pos + c]))
            pos += c
        return tuple(out)

    return ScanSource(leaves, build, lambda: builtins.zip(*args))


def enumerate_(fn: Any, iterable: Any, *args: Any, **kwargs: Any) -> Any:
    """``enumerate(iterable, start)``; a ScanSource (the index an i64 scalar) over a traced Tensor."""
    source = scan_source(iterable) if fn is builtins.enumerate else None
    if source is None:
        return fn(iterable, *args, **kwargs)
    start = int(args[0] if args else kwargs.get("start", 0))
    index = as_tensor(np.arange(start, start + source.length, dtype=np.int64), ctx=current_context())
    return ScanSource(
        [index, *source.leaves],
        lambda xs: (xs[0], source.build(xs[1:])),
        lambda: builtins.enumerate(iterable, start),
    )


def static_iter(iterable: Any, construct: str, where: str) -> Any:
    """The iterable of a ``for`` that cannot be converted; a GraphcError if it needs converting."""
    if isinstance(iterable, (ScanSource, TensorRange)) or _traced(iterable):
        raise GraphcError(
            f"{_at(where)}{construct} cannot be converted to graphc control flow (scan/while_loop) when "
            "the loop iterates over a traced Tensor; rewrite it without return/break/continue/else (assign "
            "a variable instead), or loop over range(n) with a Python int n (e.g. x.shape[0]) to unroll it"
        )
    return iterable


# ---------------------------------------------------------------------------- the loop
def for_stmt(
    iterable: Any,
    body_fn: Callable,
    init: tuple,
    names: tuple,
    targets: tuple,
    appends: tuple,
    where: str,
    used_after: tuple = (),
) -> tuple:
    """Run a ``for`` statement: a scan over a traced Tensor (or zip/enumerate of them), a while_loop
    over ``range`` with a traced bound, else the Python loop. ``body_fn(item, *vars)`` runs one
    step and returns the variables; ``targets`` are the loop variable's names, ``appends`` the
    lists the body appends to, ``used_after`` the variables read after the loop (a scan gives
    those first assigned in it their last step's values)."""
    if isinstance(iterable, TensorRange):
        return _for_range(iterable, body_fn, init, names, targets, appends, where)
    source = scan_source(iterable)
    if source is None:
        vals = tuple(init)
        for item in iterable:
            vals = tuple(body_fn(item, *vals))
        return vals
    if source.length == 0:
        return tuple(init)
    return _for_scan(source, body_fn, init, names, targets, appends, where, used_after)


def _retrying(run: Callable[[tuple, dict | None], tuple], init: tuple) -> tuple:
    """``run(init, retype)``; again with Tensor starting values when Python numbers changed type."""
    retype: dict[int, Tensor] = {}
    try:
        return run(init, retype)
    except _Retype:
        pass
    start = list(init)
    for i, v in retype.items():
        start[i] = as_tensor(np.full(v.shape, init[i], np.dtype(v.dtype)), like=v, ctx=current_context())
    return run(tuple(start), None)


def _for_scan(*args: Any) -> tuple:
    """A scan over ``source`` (see ``for_stmt``)."""
    source, body_fn, init, *rest = args
    return _retrying(lambda start, retype: _for_scan_once(source, body_fn, start, *rest, retype), init)


def _for_range(*args: Any) -> tuple:
    """A while_loop over a TensorRange (see ``for_stmt``)."""
    rng, body_fn, init, *rest = args
    return _retrying(lambda start, retype: _for_range_once(rng, body_fn, start, *rest, retype), init)


def _for_scan_once(
    source: ScanSource,
    body_fn: Callable,
    init: tuple,
    names: tuple,
    targets: tuple,
    appends: tuple,
    where: str,
    used_after: tuple,
    retype: dict | None,
) -> tuple:
    slots, lists = _loop_vars(init, names, targets, appends)
    used = [i for i, n in enumerate(names) if n in used_after and i not in slots and i not in lists]
    counts: list[int] = []
    stepped: list[Any] = []
    last: list[int] = []  # variables first assigned in the loop and read after it: their last values

    def step(carry: tuple, xs: list) -> tuple:
        full = list(init)
        given: dict[Any, Any] = {}
        for i, v in zip(slots, carry):
            full[i] = given["in", i] = v
        for i in lists:
            full[i] = given[i] = Appends(names[i], where, current_context())
        out = tuple(body_fn(source.build(list(xs)), *full))
        _check_step(out, init, names, slots, given, where, "for loop", retype)
        counts[:] = [len(given[i].items) for i in lists]
        stepped[:] = out
        last[:] = [i for i in used if isinstance(out[i], Tensor)]
        ys = [y for i in lists for y in given[i].items] + [out[i] for i in last]
        return tuple(out[i] for i in slots), ys

    try:
        final, ys = cf.scan(step, tuple(init[i] for i in slots), source.leaves)
    except _LoopError:
        raise
    except GraphcError as err:
        raise _LoopError(f"{_at(where)}in the converted for loop: {err}") from None
    pos = 0
    for i, count in zip(lists, counts):
        mine, pos = ys[pos : pos + count], pos + count
        for k in range(source.length):
            for y in mine:
                init[i].append(y[k])
    known = {i: y[source.length - 1] for i, y in zip(last, ys[pos:])}
    return tuple(_after(init, names, slots, final, targets, stepped, known, where, "for loop"))


def _for_range_once(
    rng: TensorRange,
    body_fn: Callable,
    init: tuple,
    names: tuple,
    targets: tuple,
    appends: tuple,
    where: str,
    retype: dict | None,
) -> tuple:
    slots, lists = _loop_vars(init, names, targets, appends)
    why = (
        f"inside the converted for loop at {where} over range() of a traced Tensor: the number of values is "
        "not known while tracing; iterate over a Tensor instead (a scan collects appended values), or write "
        "the values into a Tensor carried by the loop"
    )
    stop, step = rng.stop, rng.step
    stepped: list[Any] = []

    def test(carry: tuple) -> Any:
        i = carry[0]
        if isinstance(step, int):
            return i < stop if step > 0 else i > stop
        return (stop - i) * step > 0

    def body(carry: tuple) -> tuple:
        full = list(init)
        given: dict[Any, Any] = {}
        for i, v in zip(slots, carry[1:]):
            full[i] = given["in", i] = v
        for i in lists:
            full[i] = given[i] = Appends(names[i], where, current_context(), why)
        out = tuple(body_fn(carry[0], *full))
        _check_step(out, init, names, slots, given, where, "for loop", retype)
        stepped[:] = out
        return (carry[0] + step, *(out[i] for i in slots))

    try:
        final = cf.while_loop(test, body, (rng.start, *(init[i] for i in slots)))
    except _LoopError:
        raise
    except GraphcError as err:
        raise _LoopError(f"{_at(where)}in the converted for loop: {err}") from None
    return tuple(_after(init, names, slots, final[1:], targets, stepped, {}, where, "for loop"))
