"""Python control flow captured as written: ``if``/``while``/``for`` on traced Tensors become
cond/while_loop/scan.

``graphc.compile(model, x)`` traces ``converted(model)``: a source-to-source rewrite of
``forward`` (or of a plain function), in the spirit of tf.autograph. Each ``if``, ``while`` and
``for`` statement of the function (not of functions it calls) becomes a call into this module with
the branches / the loop body as nested functions whose parameters are the variables the statement
assigns (found by analysing the assignments). At run time a condition that is a traced Tensor
builds a ``cond`` / ``while_loop`` node; any other condition runs as plain Python, so loops over
Python numbers still unroll. A ``for`` over a traced Tensor (or ``zip``/``enumerate`` of them) is
one ``scan``, over ``range(n)`` with a traced ``n`` a ``while_loop``; over anything else it is the
Python loop (graphc/autograph_loops.py has the rules, including ``ys.append(...)`` in a scanned
loop: the values come out stacked, one per step).

What is not converted: ``return``/``break``/``continue`` inside such a statement, ``while ... else``,
``for ... else``, ``global``/``nonlocal``. Those statements stay Python; if their condition (a for
loop's iterable) turns out to be a traced Tensor, a GraphcError names the construct and the user's
line. A variable first assigned inside a converted loop is local to the loop body (a scanned loop
gives the ones read after it their last step's values); one assigned in only one branch of a
converted ``if`` is undefined after it (using it raises a GraphcError naming it and the ``if``'s
line). Appending to a list inside a converted ``while`` (or a ``for`` over a traced ``range``) or
inside a converted ``if`` raises a GraphcError saying what to write instead.
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

from graphc import control_flow as cf
from graphc.autograph_loops import (
    Appends,
    Undefined,
    _LoopError,
    enumerate_,
    for_stmt,
    range_,
    static_iter,
    zip_,
)
from graphc.autograph_loops import carried as _carried
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, _short, current_context

__all__ = [
    "convert",
    "converted",
    "enumerate_",
    "for_stmt",
    "if_stmt",
    "range_",
    "static_iter",
    "while_stmt",
    "zip_",
]

_AG = "__graphc_autograph__"


# ---------------------------------------------------------------------------- run-time helpers
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


def if_stmt(
    test: Any,
    true_fn: Callable,
    false_fn: Callable,
    init: tuple,
    names: tuple,
    where: str,
    used_after: tuple = (),
    appends: tuple = (),
) -> tuple:
    """Run an ``if`` statement: Python's when ``test`` is not a traced Tensor, else a cond node.
    ``used_after`` names the variables read after the statement: each must be defined on both paths;
    ``appends`` the lists the branches append to (refused under a traced condition)."""
    if not isinstance(test, Tensor):
        return true_fn(*init) if test else false_fn(*init)
    slots = [i for i, v in enumerate(init) if _carried(v)]
    why = (
        f"inside the converted if statement at {where} (its condition is a traced Tensor): assign the "
        "value to a variable in the if statement and append it after the statement"
    )

    def branch(fn: Callable) -> Callable:
        def run(*vals: Any) -> list:
            full = _refuse_appends(init, names, appends, where, why)
            for i, v in zip(slots, vals):
                full[i] = v
            out = fn(*full)
            return [v if _carried(v) else None for v in out]

        return run

    try:
        results = cf.cond_partial(test, branch(true_fn), branch(false_fn), [init[i] for i in slots], names)
    except _LoopError:
        raise
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


def _refuse_appends(init: tuple, names: tuple, appends: tuple, where: str, why: str) -> list:
    """``init`` with each list the statement appends to replaced by one that refuses ``append``."""
    out = list(init)
    for i, (n, v) in enumerate(zip(names, init)):
        if n in appends and isinstance(v, (list, Appends)):
            out[i] = Appends(n, where, None, why)
    return out


def while_stmt(
    cond_fn: Callable, body_fn: Callable, init: tuple, names: tuple, where: str, appends: tuple = ()
) -> tuple:
    """Run a ``while`` statement: Python's while its condition is not a traced Tensor, else a
    while_loop node carrying the variables the loop assigns that exist before it (``appends``: the
    lists the body appends to, refused then since the trip count is not known while tracing)."""
    vals = tuple(init)
    test = cond_fn(*vals)
    while not isinstance(test, Tensor):
        if not test:
            return vals
        vals = tuple(body_fn(*vals))
        test = cond_fn(*vals)
    slots = [i for i, v in enumerate(vals) if _carried(v)]
    why = (
        f"inside the converted while loop at {where}: its trip count is not known while tracing; iterate "
        "over a Tensor with a for loop instead (a scan collects appended values), or write the values into "
        "a Tensor carried by the loop"
    )
    start = tuple(_refuse_appends(vals, names, appends, where, why))

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
    except _LoopError:
        raise
    except GraphcError as err:
        raise GraphcError(f"{_at(where)}in the converted while loop: {err}") from None
    return tuple(v if isinstance(s, Appends) else f for v, s, f in zip(vals, start, full(final)))


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


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _appended(stmts: list[ast.stmt]) -> list[str]:
    """Names ``X`` of the ``X.append(...)`` calls in ``stmts`` (nested function bodies excluded)."""
    out: list[str] = []
    for s in stmts:
        if isinstance(s, _SCOPES):
            continue
        for node in _walk_local(s, True):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr == "append" and isinstance(f.value, ast.Name):
                if f.value.id not in out:
                    out.append(f.value.id)
    return out


def _escapes(stmts: list[ast.stmt], loop_level: bool) -> str | None:
    """The first return/break/continue/global/nonlocal that leaves ``stmts`` (None if none)."""
    for s in stmts:
        if isinstance(s, _SCOPES):  # a nested function (the rewrite makes some): its return stays in it
            continue
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

    def _names(self, names: list[str]) -> ast.Tuple:
        return ast.Tuple([ast.Constant(n) for n in names], ast.Load())

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
        appends = _appended(node.body + node.orelse)
        self.generic_visit(node)
        escape = _escapes(node.body + node.orelse, False)
        if escape:
            return self._guard(node, escape)
        self.changed = True
        self.count += 1
        names = _assigned(node.body + node.orelse)
        names += [n for n in appends if n not in names]
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
            self._names(appends),
        )
        out = [true_fn, false_fn, self._bind(names, call)]
        for s in out:
            ast.copy_location(s, node)
            ast.fix_missing_locations(s)
        return out

    def visit_While(self, node: ast.While) -> ast.AST:
        appends = _appended(node.body)
        self.generic_visit(node)
        escape = _escapes(node.body, True) or ("an else clause" if node.orelse else None)
        if escape:
            return self._guard(node, escape)
        self.changed = True
        self.count += 1
        names = _assigned(node.body)
        names += [n for n in appends if n not in names]
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
            self._names(names),
            ast.Constant(where),
            self._names(appends),
        )
        out = [cond_fn, body_fn, self._bind(names, call)]
        for s in out:
            ast.copy_location(s, node)
            ast.fix_missing_locations(s)
        return out

    def _iter(self, expr: ast.expr) -> ast.expr:
        """``range``/``zip``/``enumerate`` calls of a for's iterable routed through this module."""
        if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in _ITERS):
            return expr
        if any(isinstance(a, ast.Starred) for a in expr.args) or any(k.arg is None for k in expr.keywords):
            return expr
        args = expr.args
        if expr.func.id == "zip":
            args = [self._iter(a) for a in args]
        elif expr.func.id == "enumerate" and args:
            args = [self._iter(args[0]), *args[1:]]
        call = self._call(_ITERS[expr.func.id], expr.func, *args)
        call.keywords = expr.keywords
        return ast.copy_location(call, expr)

    def visit_For(self, node: ast.For) -> ast.AST:
        appends = _appended(node.body)
        self.generic_visit(node)
        if any(
            isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await))
            for s in node.body
            for n in _walk_local(s, True)
        ):
            return node
        node.iter = self._iter(node.iter)
        where = self._where(node)
        escape = _escapes(node.body, True) or ("an else clause" if node.orelse else None)
        if escape:
            what = ast.Constant(f"{escape} inside this for statement")
            node.iter = self._call("static_iter", node.iter, what, ast.Constant(where))
            return node
        self.changed = True
        self.count += 1
        targets: list[str] = []
        _target_names(node.target, targets)
        names = [n for i, n in enumerate(targets) if n not in targets[:i]]
        names += [n for n in _assigned(node.body) if n not in names]
        names += [n for n in appends if n not in names]
        item = f"__graphc_item_{self.count}"
        body = [ast.Assign([node.target], ast.Name(item, ast.Load())), *node.body]
        body_fn = self._fn(
            f"__graphc_for_body_{self.count}", [item, *names], body, self._tuple(names, ast.Load())
        )
        call = self._call(
            "for_stmt",
            node.iter,
            ast.Name(body_fn.name, ast.Load()),
            self._init(names, where),
            self._names(names),
            self._names(targets),
            self._names(appends),
            ast.Constant(where),
            self._names([n for n in names if self.last_read.get(n, 0) > (node.end_lineno or node.lineno)]),
        )
        out = [body_fn, self._bind(names, call)]
        for s in out:
            ast.copy_location(s, node)
            ast.fix_missing_locations(s)
        return out


_ITERS = {"range": "range_", "zip": "zip_", "enumerate": "enumerate_"}


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
    if not any(isinstance(n, (ast.If, ast.While, ast.For)) for n in ast.walk(fdef)):
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
