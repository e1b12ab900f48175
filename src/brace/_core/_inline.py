"""Hot-path steps written once in a core, inlined into the shells that call them.

Theory of operation
-------------------
A decision has one source: a *step* function in a core module (``gcra_step``,
``window_weight``, ``admit_now``...). Shells and stores call it, and so read and type-check
as plain calls. On a path where the call itself would cost too much (a Python call is
about a tenth of an uncontended ``async with bucket``), the shell's function is decorated
with :func:`inline_steps`: at import, its source is parsed, every statement of the form
``target = step(args)`` is replaced with the step's body (its parameters bound to the
arguments, its locals renamed apart), and the function is compiled again, so the fast path
is *generated* from the core's one copy and runs the same operations on the same floats.

The same compilation writes *coroutine twins*: ``twin = coroutine_twin(f, clock, cost=1)``,
where ``f`` is a function defined in the same function, becomes an ``async def twin`` that
takes ``f``'s parameters but the last (with the defaults given as keywords), binds the last
to ``clock()`` and runs ``f``'s body: a coroutine that does ``f``'s work in its own frame,
instead of a coroutine that calls ``f`` (the keyed limiter's ``await limiter.hit(key)``).
Without the source, ``coroutine_twin`` returns that second kind: the same answers, one
call more.

A step need not be a decision: ``brace._cancel``'s look-ups of the running loop and of
anyio's scope of a task are steps too, inlined into ``PriorityExecutor.run``.

A step is written in a restricted form that makes this substitution exact: its body is
a sequence of statements with a single ``return`` at the end, no ``return`` elsewhere, no
``yield``, no nested function, no name bound by ``global`` / ``nonlocal``, and no
assignment to a parameter. A module-level name it reads (an enum, a constant) must be
imported by the caller's module too: the inliner checks it is the same object there. A step may
still be called normally (from any shell, and by the tests), and a function whose source
cannot be read (a frozen application, ``python -OO``) keeps its calls: the same decision,
at the cost of one call.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import copy
import functools
import inspect
import itertools
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ("coroutine_twin", "inline_steps", "step")

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

_STEPS: dict[str, ast.FunctionDef] = {}
# the module-level names each step reads, with their values: inlined into another module,
# the step must find the same objects there
_GLOBALS: dict[str, dict[str, object]] = {}
_fresh = itertools.count()


def step(function: F) -> F:
    """Mark ``function`` as a step that :func:`inline_steps` may inline; check its form."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):  # no source: callers keep the call
        return function
    tree = ast.parse(source).body[0]
    if not isinstance(tree, ast.FunctionDef):  # pragma: no cover - a step is a def
        raise TypeError(f"{function.__qualname__}: a step is a plain def")
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if not body or not isinstance(body[-1], ast.Return) or body[-1].value is None:
        raise TypeError(f"{function.__qualname__}: a step ends with `return <value>`")
    for node in ast.walk(ast.Module(body=body[:-1], type_ignores=[])):
        if isinstance(
            node,
            ast.Return
            | ast.Yield
            | ast.YieldFrom
            | ast.Await
            | ast.Global
            | ast.Nonlocal
            | ast.FunctionDef
            | ast.AsyncFunctionDef
            | ast.Lambda
            | ast.ClassDef,
        ):
            raise TypeError(
                f"{function.__qualname__}: a step has one return, at its end, and no "
                f"{type(node).__name__}"
            )
    args = tree.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
        raise TypeError(f"{function.__qualname__}: a step takes plain positional parameters")
    params = {arg.arg for arg in args.args}
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id in params:
            raise TypeError(f"{function.__qualname__}: a step does not assign its parameters")
    tree.body = body
    code = ast.Module(body=body, type_ignores=[])
    stored = {
        n.id for n in ast.walk(code) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    free = {
        n.id
        for n in ast.walk(code)
        if isinstance(n, ast.Name)
        and isinstance(n.ctx, ast.Load)
        and n.id not in params
        and n.id not in stored
        and n.id not in vars(builtins)
    }
    _STEPS[function.__name__] = tree
    _GLOBALS[function.__name__] = {name: function.__globals__[name] for name in free}
    return function


def coroutine_twin(
    function: Callable[..., R], clock: Callable[[], float], /, **defaults: object
) -> Callable[..., Coroutine[Any, Any, R]]:
    """An ``async def`` taking ``function``'s parameters but the last, which it reads from
    ``clock()``, with ``defaults`` for its trailing parameters (see the module docstring).

    A function compiled by :func:`inline_steps` gets the twin written out in its own code
    (``function``'s body in the coroutine's frame); this is the twin everywhere else: the
    coroutine calls ``function``.
    """
    code = function.__code__
    names = code.co_varnames[: code.co_argcount - 1]
    unknown = set(defaults) - set(names)
    if unknown:
        raise TypeError(f"coroutine_twin: {sorted(unknown)} are not parameters of the twin")

    async def twin(*args: Any) -> R:
        if len(args) < len(names):
            args = (*args, *(defaults[name] for name in names[len(args) :]))
        return function(*args, clock())

    twin.__name__ = twin.__qualname__ = f"{function.__name__}_twin"
    return twin


class _Rename(ast.NodeTransformer):
    """Binds a step's names; folds ``1 * x`` (a cost of 1 passed as a constant) to ``x``."""

    def __init__(self, names: dict[str, ast.expr]) -> None:
        self.names = names

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.op, ast.Mult):
            for one, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(one, ast.Constant) and one.value == 1 and type(one.value) is int:
                    return other  # exact for every float and int
        return node

    def visit_Name(self, node: ast.Name) -> ast.expr:
        new = self.names.get(node.id)
        if new is None:
            return node
        if isinstance(node.ctx, ast.Load):
            return ast.copy_location(_copy(new), node)
        assert isinstance(new, ast.Name)
        return ast.copy_location(ast.Name(new.id, node.ctx), node)


def _copy(node: ast.expr) -> ast.expr:
    copied = ast.parse(ast.unparse(node), mode="eval").body
    return copied


def _expand(definition: ast.FunctionDef, call: ast.Call, where: ast.stmt) -> list[ast.stmt]:
    """The statements of ``definition`` with its parameters bound to ``call``'s arguments."""
    params = [arg.arg for arg in definition.args.args]
    if call.keywords or len(call.args) != len(params):
        raise TypeError(f"inline {definition.name}: pass every parameter positionally")
    serial = next(_fresh)
    prologue: list[ast.stmt] = []
    names: dict[str, ast.expr] = {}
    uses = _loads(definition.body)
    mutates = any(
        isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store)
        for node in ast.walk(ast.Module(body=definition.body, type_ignores=[]))
    )
    for param, argument in zip(params, call.args, strict=True):
        if isinstance(argument, ast.Name | ast.Constant) or (
            uses.get(param, 0) <= 1 and not mutates and _is_path(argument)
        ):
            # bound directly, no copy into a local: a name or a constant, or an attribute
            # read once by a step that changes no object (nothing can come between)
            names[param] = argument
        else:
            local = f"_{definition.name}_{serial}_{param}"
            prologue.append(ast.Assign([ast.Name(local, ast.Store())], argument))
            names[param] = ast.Name(local, ast.Load())
    assert isinstance(where, ast.Assign)
    returned = definition.body[-1]
    assert isinstance(returned, ast.Return)
    target = where.targets[0] if len(where.targets) == 1 else None
    if (
        isinstance(returned.value, ast.Name)
        and returned.value.id not in params
        and isinstance(target, ast.Name)
        and not any(_mentions(argument, target.id) for argument in call.args)
    ):
        # ``return local``: the step's local is the caller's target (no copy at the end)
        names[returned.value.id] = ast.Name(target.id, ast.Load())
    for node in ast.walk(ast.Module(body=definition.body, type_ignores=[])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in names:
            names[node.id] = ast.Name(f"_{definition.name}_{serial}_{node.id}", ast.Load())
    body = [_Rename(names).visit(_copy_stmt(statement)) for statement in definition.body]
    result = body.pop()
    assert isinstance(result, ast.Return)
    assert result.value is not None
    out = [*prologue, *body]
    if not (isinstance(result.value, ast.Name) and isinstance(target, ast.Name)) or (
        result.value.id != target.id
    ):
        out.append(ast.Assign(where.targets, result.value))
    for statement in out:
        ast.copy_location(statement, where)
        ast.fix_missing_locations(statement)
        for node in ast.walk(statement):
            if isinstance(node, ast.expr | ast.stmt):
                node.lineno = where.lineno
                node.end_lineno = where.end_lineno
                node.col_offset = where.col_offset
                node.end_col_offset = where.end_col_offset
    return out


def _loads(body: list[ast.stmt]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            counts[node.id] = counts.get(node.id, 0) + 1
    return counts


def _is_path(node: ast.expr) -> bool:
    """``a.b.c``: attribute reads of a name."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _mentions(node: ast.expr, name: str) -> bool:
    return any(isinstance(child, ast.Name) and child.id == name for child in ast.walk(node))


def _copy_stmt(statement: ast.stmt) -> ast.stmt:
    return ast.parse(ast.unparse(statement)).body[0]


_MISSING = object()


class _Inline(ast.NodeTransformer):
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.inlined = 0
        self.namespace = namespace
        self.functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        self.results: set[int] = set()  # the ids of the statements that take a step's result

    def _fuse(self, statements: list[ast.stmt]) -> list[ast.stmt]:
        """``t = a if c else None`` (a step's result) then ``if t is not None: ...`` becomes
        ``if c: t = a; ...`` when nothing else reads ``t``: the test the step made, made once."""
        out: list[ast.stmt] = []
        index = 0
        while index < len(statements):
            statement = statements[index]
            following = statements[index + 1] if index + 1 < len(statements) else None
            if (
                id(statement) in self.results
                and isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.IfExp)
                and isinstance(statement.value.orelse, ast.Constant)
                and statement.value.orelse.value is None
                and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and isinstance(following, ast.If)
                and self._tests_not_none(following.test, statement.targets[0].id)
                and self._read_only_in(statement.targets[0].id, following)
            ):
                guess = statement.value
                assign = ast.Assign([statement.targets[0]], guess.body)
                ast.copy_location(assign, statement)
                fused = ast.If(guess.test, [assign, *following.body], following.orelse)
                ast.copy_location(fused, following)
                out.append(fused)
                index += 2
                continue
            out.append(statement)
            index += 1
        return out

    @staticmethod
    def _tests_not_none(test: ast.expr, name: str) -> bool:
        return (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == name
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.IsNot)
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None
        )

    def _read_only_in(self, name: str, branch: ast.If) -> bool:
        """True if ``name`` is read nowhere in the function but in ``branch``'s body."""
        if not self.functions:
            return False
        inside = {
            id(node)
            for statement in branch.body
            for node in ast.walk(statement)
            if isinstance(node, ast.Name) and node.id == name
        }
        inside.add(id(branch.test.left))  # type: ignore[attr-defined]
        return all(
            id(node) in inside
            for node in ast.walk(self.functions[-1])
            if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
        )

    def _twin(self, statement: ast.Assign, call: ast.Call) -> ast.AsyncFunctionDef:
        """``name = coroutine_twin(f, clock, **defaults)`` written out as ``async def name``."""
        target = statement.targets[0] if len(statement.targets) == 1 else None
        if (
            not isinstance(target, ast.Name)
            or len(call.args) != 2
            or not isinstance(call.args[0], ast.Name)
        ):
            raise TypeError("coroutine_twin: write `name = coroutine_twin(function, clock)`")
        name = call.args[0].id
        scope = self.functions[-1] if self.functions else ast.Module(body=[], type_ignores=[])
        found = [
            node
            for node in ast.walk(scope)
            if isinstance(node, ast.FunctionDef) and node.name == name
        ]
        if len(found) != 1:
            raise TypeError(f"coroutine_twin: no single def {name} in the same function")
        original = found[0]
        params = original.args.args[:-1]
        if not original.args.args or original.args.defaults or original.args.vararg:
            raise TypeError(f"coroutine_twin: {name} takes plain positional parameters")
        given = {keyword.arg: keyword.value for keyword in call.keywords}
        names = [arg.arg for arg in params]
        if None in given or not set(given) <= set(names):
            raise TypeError(f"coroutine_twin: defaults name parameters of {name}'s twin")
        first = min((names.index(key) for key in given if key is not None), default=len(names))
        if any(n not in given for n in names[first:]):
            raise TypeError(f"coroutine_twin: the defaults of {name}'s twin are its last")
        body = [copy.deepcopy(node) for node in original.body]
        lead = 0
        while lead < len(body) and isinstance(body[lead], ast.Nonlocal | ast.Global):
            lead += 1
        read = ast.Assign(
            [ast.Name(original.args.args[-1].arg, ast.Store())],
            ast.Call(copy.deepcopy(call.args[1]), [], []),
        )
        body.insert(lead, read)
        twin = ast.AsyncFunctionDef(
            name=target.id,
            args=ast.arguments(
                posonlyargs=[],
                args=[copy.deepcopy(arg) for arg in params],
                vararg=None,
                kwonlyargs=[],
                kw_defaults=[],
                kwarg=None,
                defaults=[copy.deepcopy(given[n]) for n in names[first:]],
            ),
            body=body,
            decorator_list=[],
            returns=copy.deepcopy(original.returns),
            type_comment=None,
        )
        if sys.version_info >= (3, 12):  # pragma: no cover - the field is new in 3.12
            twin.type_params = []
        # the new nodes (the twin, its clock read) take the marker's line
        ast.fix_missing_locations(ast.copy_location(twin, statement))
        self.inlined += 1
        return twin

    def _block(self, statements: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for statement in statements:
            statement = self.visit(statement)
            if (
                isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.Call)
                and isinstance(statement.value.func, ast.Name)
                and statement.value.func.id == "coroutine_twin"
            ):
                out.append(self._twin(statement, statement.value))
                continue
            if (
                isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.Call)
                and isinstance(statement.value.func, ast.Name | ast.Attribute)
            ):
                func = statement.value.func
                name = func.id if isinstance(func, ast.Name) else func.attr
                definition = _STEPS.get(name)
                if definition is not None:
                    for free, value in _GLOBALS[name].items():
                        if self.namespace.get(free, _MISSING) is not value:
                            raise TypeError(
                                f"inline {name}: the step reads {free!r}, which the caller's "
                                f"module must import too"
                            )
                    expanded = _expand(definition, statement.value, statement)
                    self.results.add(id(expanded[-1]))
                    out.extend(expanded)
                    self.inlined += 1
                    continue
            out.append(statement)
        return self._fuse(out)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.functions.append(node)
            try:
                return self._visit_fields(node)
            finally:
                self.functions.pop()
        return self._visit_fields(node)

    def _visit_fields(self, node: ast.AST) -> ast.AST:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(node, field, self._block(block))
        for field, value in ast.iter_fields(node):
            if field in ("body", "orelse", "finalbody"):
                continue
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)
        return node


def inline_steps(function: F) -> F:
    """Compile ``function`` again with every ``x = step(...)`` statement inlined.

    Only statements that assign a step's result (at any depth, nested functions included)
    are rewritten; the function keeps its name, globals, defaults and line numbers.
    """
    try:
        lines, first = inspect.getsourcelines(function)
    except (OSError, TypeError):  # no source: keep the calls
        return function
    source = textwrap.dedent("".join(lines))
    module = ast.parse(source)
    definition = module.body[0]
    if not isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef):  # pragma: no cover
        raise TypeError(f"{function.__qualname__}: inline_steps decorates a def")
    definition.decorator_list = [
        d
        for d in definition.decorator_list
        if not (isinstance(d, ast.Name) and d.id == "inline_steps")
    ]
    transformer = _Inline(function.__globals__)
    transformer.visit(module)
    if not transformer.inlined:  # e.g. the cores' source could not be read: keep the calls
        return function
    ast.increment_lineno(module, first - 1)
    filename = inspect.getsourcefile(function) or "<inline>"
    flags = __future__.annotations.compiler_flag  # annotations stay unevaluated
    code = compile(module, filename, "exec", flags=flags, dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(code, function.__globals__, namespace)  # the module's own source, rewritten
    compiled = namespace[function.__name__]
    compiled.__qualname__ = function.__qualname__
    compiled.__defaults__ = function.__defaults__
    compiled.__kwdefaults__ = function.__kwdefaults__
    compiled.__module__ = function.__module__
    functools.update_wrapper(compiled, function, assigned=("__doc__",), updated=())
    compiled.__wrapped_source__ = function  # the function as written, for the tests
    return compiled  # type: ignore[no-any-return]
