"""Python control flow captured as written: ``if``/``while`` on traced Tensors become cond/while_loop.

``graphc.compile(model, x)`` traces ``converted(model)``: a source-to-source rewrite of
``forward`` (or of a plain function), in the spirit of tf.autograph. Each ``if`` and ``while``
statement of the function (not of functions it calls) becomes a call into this module with the
branches / the loop body as nested functions whose parameters are the variables the statement
assigns (found by analysing the assignments). At run time a condition that is a traced Tensor
builds a ``cond`` / ``while_loop`` node; any other condition runs as plain Python, so loops over
Python numbers still unroll.

What is not converted: ``return``/``break``/``continue`` inside such a statement, ``while ... else``,
``global``/``nonlocal``. Those statements stay Python; if their condition turns out to be a traced
Tensor, a GraphcError names the construct and the user's line. A variable first assigned inside a
converted loop is local to the loop body; one assigned in only one branch of a converted ``if`` is
undefined after it (using it raises a GraphcError naming it and the ``if``'s line).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from graphc import control_flow as cf
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, _short, current_context

__all__ = ["convert", "converted", "if_stmt", "while_stmt"]

_AG = "__graphc_autograph__"


# ---------------------------------------------------------------------------- run-time helpers
class Undefined:
    """The value of a variable that a converted statement leaves undefined; any use raises."""

    def __init__(self, name: str, where: str) -> None:
        object.__setattr__(self, "_what", f"{where}variable {name!r} is not defined on every path here")

    def _fail(self, *args: object, **kwargs: object) -> Any:
        raise GraphcError(object.__getattribute__(self, "_what"))

    __getattr__ = __call__ = __bool__ = __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = _fail
    __rmul__ = __truediv__ = __rtruediv__ = __neg__ = __getitem__ = __iter__ = __len__ = _fail
    __lt__ = __le__ = __gt__ = __ge__ = __matmul__ = __rmatmul__ = __pow__ = _fail


def ld(getter: Callable[[], Any], name: str, where: str) -> Any:
    """The variable's value, or an ``Undefined`` if it has none yet."""
    try:
        return getter()
    except NameError:
        return Undefined(name, _at(where))


def static_test(test: Any, construct: str, where: str) -> bool:
    """The truth of a condition guarding a statement that cannot be converted."""
    if isinstance(test, Tensor):
        raise GraphcError(
            f"{_at(where)}{construct} cannot be converted to graphc control flow (cond/while_loop) "
            "when its condition depends on a traced Tensor; rewrite it without return/break/continue "
            "inside the statement (assign a variable instead), or use graphc.cond / graphc.while_loop"
        )
    return bool(test)


def _carried(v: Any) -> bool:
    return isinstance(v, (Tensor, bool, int, float, np.ndarray, np.generic))


def if_stmt(
    test: Any,
    true_fn: Callable,
    false_fn: Callable,
    init: tuple,
    names: tuple,
    where: str,
    used_after: tuple = (),
) -> tuple:
    """Run an ``if`` statement: Python's when ``test`` is not a traced Tensor, else a cond node.
    ``used_after`` names the variables read after the statement: each must be defined on both paths."""
    if not isinstance(test, Tensor):
        return true_fn(*init) if test else false_fn(*init)
    slots = [i for i, v in enumerate(init) if _carried(v)]

    def branch(fn: Callable) -> Callable:
        def run(*vals: Any) -> list:
            full = list(init)
            for i, v in zip(slots, vals):
                full[i] = v
            out = fn(*full)
            return [v if _carried(v) else None for v in out]

        return run

    try:
        results = cf.cond_partial(test, branch(true_fn), branch(false_fn), [init[i] for i in slots], names)
    except GraphcError as err:
        raise GraphcError(f"{_at(where)}in the converted if statement: {err}") from None
    out = list(init)
    for i, v in enumerate(results):
        if v is None and names[i] in used_after and (isinstance(init[i], Undefined) or _carried(init[i])):
            raise GraphcError(
                f"{_at(where)}variable {names[i]!r} is not defined on every path here: it is assigned in "
                "only one branch of this if statement, whose condition is a traced Tensor, and read after it"
            )
        out[i] = (
            v if v is not None else (init[i] if not _carried(init[i]) else Undefined(names[i], _at(where)))
        )
    return tuple(out)


def while_stmt(cond_fn: Callable, body_fn: Callable, init: tuple, names: tuple, where: str) -> tuple:
    """Run a ``while`` statement: Python's while its condition is not a traced Tensor, else a
    while_loop node carrying the variables the loop assigns that exist before it."""
    vals = tuple(init)
    test = cond_fn(*vals)
    while not isinstance(test, Tensor):
        if not test:
            return vals
        vals = tuple(body_fn(*vals))
        test = cond_fn(*vals)
    slots = [i for i, v in enumerate(vals) if _carried(v)]
    start = vals

    def full(carry: Any) -> list:
        out = list(start)
        for i, v in zip(slots, carry):
            out[i] = v
        return out

    def body(carry: Any) -> tuple:
        out = body_fn(*full(carry))
        result = []
        for i in slots:
            if not _carried(out[i]):
                raise GraphcError(f"{_at(where)}while loop: variable {names[i]!r} is not a tensor or number")
            result.append(out[i])
        return tuple(result)

    try:
        final = cf.while_loop(lambda carry: cond_fn(*full(carry)), body, tuple(vals[i] for i in slots))
    except GraphcError as err:
        raise GraphcError(f"{_at(where)}in the converted while loop: {err}") from None
    return tuple(full(final))


# ---------------------------------------------------------------------------- analysis
def _target_names(node: ast.AST, out: list[str]) -> None:
    if isinstance(node, ast.Name):
        out.append(node.id)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for e in node.elts:
            _target_names(e, out)
    elif isinstance(node, ast.Starred):
        _target_names(node.value, out)


def _assigned(stmts: list[ast.stmt]) -> list[str]:
    """Names the statements bind, in first-binding order (nested function bodies excluded)."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(node.name)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.Assign):
            for t in node.targets:
                _target_names(t, out)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            _target_names(node.target, out)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            _target_names(node.target, out)
        elif isinstance(node, ast.NamedExpr):
            _target_names(node.target, out)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            _target_names(node.optional_vars, out)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for s in stmts:
        visit(s)
    return [n for i, n in enumerate(out) if n not in out[:i] and not n.startswith("__graphc")]


def _escapes(stmts: list[ast.stmt], loop_level: bool) -> str | None:
    """The first return/break/continue/global/nonlocal that leaves ``stmts`` (None if none)."""
    for s in stmts:
        for node in _walk_local(s, loop_level):
            if isinstance(node, ast.Return):
                return "a return statement"
            if isinstance(node, (ast.Break, ast.Continue)):
                return f"a {type(node).__name__.lower()} statement"
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                return f"a {type(node).__name__.lower()} statement"
    return None


def _walk_local(node: ast.AST, loop_level: bool) -> Iterator[ast.AST]:
    """Nodes of ``node`` outside nested functions; break/continue of inner loops excluded."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, (ast.For, ast.While, ast.AsyncFor)) and child in node.body:
            yield from (n for n in _walk_local(child, True) if not isinstance(n, (ast.Break, ast.Continue)))
            continue
        yield from _walk_local(child, loop_level)


# ---------------------------------------------------------------------------- the rewrite
class _Rewriter(ast.NodeTransformer):
    def __init__(self, filename: str, fdef: ast.FunctionDef) -> None:
        self.filename = filename
        self.last_read: dict[str, int] = {}  # name -> the last line that reads it
        for n in ast.walk(fdef):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                self.last_read[n.id] = max(self.last_read.get(n.id, 0), n.lineno)
        self.count = 0
        self.changed = False

    def _where(self, node: ast.AST) -> str:
        return f"{_short(self.filename)}:{node.lineno}"

    def _call(self, fn: str, *args: ast.expr) -> ast.Call:
        return ast.Call(ast.Attribute(ast.Name(_AG, ast.Load()), fn, ast.Load()), list(args), [])

    def _init(self, names: list[str], where: str) -> ast.Tuple:
        loads = [
            self._call(
                "ld",
                ast.Lambda(ast.arguments([], [], None, [], [], None, []), ast.Name(n, ast.Load())),
                ast.Constant(n),
                ast.Constant(where),
            )
            for n in names
        ]
        return ast.Tuple(loads, ast.Load())

    def _fn(self, name: str, params: list[str], body: list[ast.stmt], result: ast.expr) -> ast.FunctionDef:
        args = ast.arguments([], [ast.arg(p) for p in params], None, [], [], None, [])
        return ast.FunctionDef(name, args, [*body, ast.Return(result)], [], None, type_params=[])

    def _tuple(self, names: list[str], ctx: ast.expr_context) -> ast.Tuple:
        return ast.Tuple([ast.Name(n, ctx) for n in names], ctx)

    def _bind(self, names: list[str], call: ast.Call) -> ast.stmt:
        if not names:
            return ast.Expr(call)
        return ast.Assign([self._tuple(names, ast.Store())], call)

    def _guard(self, node: ast.If | ast.While, construct: str) -> ast.stmt:
        what = f"{construct} inside this {'if' if isinstance(node, ast.If) else 'while'} statement"
        node.test = self._call("static_test", node.test, ast.Constant(what), ast.Constant(self._where(node)))
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node  # nested functions keep their Python semantics

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        # X /= 2 rebinds X (a traced Tensor's value), so it can be a loop-carried variable.
        if isinstance(node.target, ast.Name):
            value = ast.BinOp(ast.Name(node.target.id, ast.Load()), node.op, node.value)
            return ast.copy_location(ast.Assign([ast.Name(node.target.id, ast.Store())], value), node)
        return node

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        escape = _escapes(node.body + node.orelse, False)
        if escape:
            return self._guard(node, escape)
        self.changed = True
        self.count += 1
        names = _assigned(node.body + node.orelse)
        where = self._where(node)
        end = node.end_lineno or node.lineno
        result = self._tuple(names, ast.Load())
        true_fn = self._fn(f"__graphc_if_true_{self.count}", names, node.body, result)
        false_fn = self._fn(f"__graphc_if_false_{self.count}", names, node.orelse or [ast.Pass()], result)
        call = self._call(
            "if_stmt",
            node.test,
            ast.Name(true_fn.name, ast.Load()),
            ast.Name(false_fn.name, ast.Load()),
            self._init(names, where),
            ast.Tuple([ast.Constant(n) for n in names], ast.Load()),
            ast.Constant(where),
            ast.Tuple([ast.Constant(n) for n in names if self.last_read.get(n, 0) > end], ast.Load()),
        )
        out = [true_fn, false_fn, self._bind(names, call)]
        for s in out:
            ast.copy_location(s, node)
            ast.fix_missing_locations(s)
        return out

    def visit_While(self, node: ast.While) -> ast.AST:
        self.generic_visit(node)
        escape = _escapes(node.body, True) or ("an else clause" if node.orelse else None)
        if escape:
            return self._guard(node, escape)
        self.changed = True
        self.count += 1
        names = _assigned(node.body)
        where = self._where(node)
        cond_fn = self._fn(f"__graphc_while_cond_{self.count}", names, [], node.test)
        body_fn = self._fn(
            f"__graphc_while_body_{self.count}", names, node.body, self._tuple(names, ast.Load())
        )
        call = self._call(
            "while_stmt",
            ast.Name(cond_fn.name, ast.Load()),
            ast.Name(body_fn.name, ast.Load()),
            self._init(names, where),
            ast.Tuple([ast.Constant(n) for n in names], ast.Load()),
            ast.Constant(where),
        )
        out = [cond_fn, body_fn, self._bind(names, call)]
        for s in out:
            ast.copy_location(s, node)
            ast.fix_missing_locations(s)
        return out


def convert(fn: Callable) -> Callable | None:
    """``fn`` with its ``if``/``while`` statements rewritten (see the module docstring), or None
    when it has none or its source is not available (then it is traced as it is)."""
    func = fn.__func__ if isinstance(fn, types.MethodType) else fn
    if not isinstance(func, types.FunctionType) or func.__name__ == "<lambda>":
        return None
    try:
        lines, first = inspect.getsourcelines(func)
    except (OSError, TypeError):
        return None
    source = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    fdef = tree.body[0] if tree.body else None
    if not isinstance(fdef, ast.FunctionDef) or "super(" in source:
        return None
    ast.increment_lineno(tree, first - 1)
    filename = inspect.getsourcefile(func) or func.__code__.co_filename
    rewriter = _Rewriter(filename, fdef)
    new_body = []
    for stmt in fdef.body:
        out = rewriter.visit(stmt)
        new_body.extend(out if isinstance(out, list) else [out])
    if not any(isinstance(n, (ast.If, ast.While)) for n in ast.walk(fdef)):
        return None
    fdef.body = new_body
    fdef.decorator_list = []
    ast.fix_missing_locations(tree)
    namespace = dict(func.__globals__)
    if func.__closure__:
        for name, cell in zip(func.__code__.co_freevars, func.__closure__):
            with contextlib.suppress(ValueError):
                namespace[name] = cell.cell_contents
    namespace[_AG] = sys.modules[__name__]
    try:
        exec(compile(tree, filename, "exec"), namespace)  # noqa: S102 - the user's own function, rewritten
    except (SyntaxError, ValueError, TypeError):  # a form the rewrite does not handle: trace it as it is
        return None
    new = namespace[fdef.name]
    new.__defaults__, new.__kwdefaults__ = func.__defaults__, func.__kwdefaults__
    functools.update_wrapper(new, func, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    return types.MethodType(new, fn.__self__) if isinstance(fn, types.MethodType) else new


@contextlib.contextmanager
def converted(model: Any) -> Iterator[Any]:
    """``model`` with control flow converted while tracing: a Module's ``forward`` is replaced on
    the instance for the duration; a function is replaced by its rewrite."""
    from graphc.nn import Module

    if current_context() is not None:
        raise GraphcError("autograph conversion happens before tracing, not inside a trace")
    if isinstance(model, Module):
        new = convert(model.forward)
        if new is None:
            yield model
            return
        object.__setattr__(model, "forward", new)
        try:
            yield model
        finally:
            with contextlib.suppress(AttributeError):
                object.__delattr__(model, "forward")
    else:
        new = convert(model) if callable(model) else None
        yield new if new is not None else model
