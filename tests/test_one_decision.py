"""One decision per policy: no decision formula of a core appears outside ``brace._core``,
and no object reads another's private state (an AST lint over ``src/brace``)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "brace"

# Private fields of one object that others used to read (issue 16); each now has a public
# or internal method, or a step function of its core.
PRIVATE_FIELDS = frozenset(
    {"_detector", "_epoch_start", "_last_change", "_waiting", "_hold", "_table"}
)


def _mentions(node: ast.AST, word: str) -> bool:
    """True if ``node`` names something containing ``word`` (a variable or an attribute)."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and word in child.id:
            return True
        if isinstance(child, ast.Attribute) and word in child.attr:
            return True
    return False


def _is_max_idiom(node: ast.AST) -> bool:
    """``a if a > b else b`` (or ``max(a, b)``): the GCRA's ``max(tat, now)``."""
    if isinstance(node, ast.IfExp) and isinstance(node.test, ast.Compare):
        return isinstance(node.test.ops[0], ast.Gt | ast.GtE | ast.Lt | ast.LtE)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("max", "min")
    )


def _gcra_step(node: ast.AST) -> bool:
    """``max(tat, now) + cost * interval``: the GCRA step's new tat."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)):
        return False
    for one, other in ((node.left, node.right), (node.right, node.left)):
        if _mentions(one, "interval") and (
            _is_max_idiom(other)
            or (isinstance(other, ast.Name) and (other.id == "base" or other.id.endswith("tat")))
        ):
            return True
    return False


def _window_weight(node: ast.AST) -> bool:
    """``previous * (1 - offset / window)``: the window counter's estimate."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)):
        return False
    for side in (node.left, node.right):
        if (
            isinstance(side, ast.BinOp)
            and isinstance(side.op, ast.Sub)
            and isinstance(side.left, ast.Constant)
            and side.left.value == 1
            and isinstance(side.right, ast.BinOp)
            and isinstance(side.right.op, ast.Div)
        ):
            return True
    return False


def _admission_order(node: ast.AST) -> bool:
    """``running < concurrency``: the executor's admission test."""
    return (
        isinstance(node, ast.Compare)
        and isinstance(node.ops[0], ast.Lt | ast.LtE | ast.Gt | ast.GtE)
        and _mentions(node.left, "running")
        and _mentions(node.comparators[0], "concurrency")
    )


RULES = {
    "the GCRA step": _gcra_step,
    "the window estimate": _window_weight,
    "the admission order": _admission_order,
}


def findings(source: str, name: str) -> Iterator[str]:
    """Every decision formula and foreign private read in the module ``source``."""
    for node in ast.walk(ast.parse(source)):
        for rule, matches in RULES.items():
            if matches(node):
                yield f"{name}:{getattr(node, 'lineno', '?')}: {rule} outside _core"
        if (
            isinstance(node, ast.Attribute)
            and node.attr in PRIVATE_FIELDS
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            yield f"{name}:{node.lineno}: reads another object's {node.attr}"


def foreign_private_reads(source: str, name: str) -> Iterator[str]:
    """``other._name`` where the module defines no ``_name`` of its own (as ``self._name``,
    a slot, a def, a class or a module-level name): one object reading another's private
    state across modules. Modules imported by name are not objects."""
    tree = ast.parse(source)
    own: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            own.add(node.value)  # __slots__ entries
        elif isinstance(node, ast.Import):
            modules.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.update(alias.asname or alias.name for alias in node.names)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in own
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            and not (isinstance(node.value, ast.Name) and node.value.id in modules)
        ):
            yield f"{name}:{node.lineno}: reads another object's {ast.unparse(node)}"


def shell_modules(root: Path) -> Iterator[Path]:
    """The library's modules outside the cores."""
    for path in sorted(root.rglob("*.py")):
        if "_core" not in path.relative_to(root).parts:
            yield path


# Reads of another library's private state, each with its reason. anyio has no public
# way to ask whether a cancel scope shields, which the native cancellation must respect
# (tests/test_executor_native_cancel.py pins the behaviour on the installed anyio).
THIRD_PARTY_INTERNALS = {
    # anyio's cancel scopes (a shield holds a native cancellation off), and on 3.11 the
    # dict behind asyncio.current_task (3.12+ has it in C) and the thread an asyncio loop
    # runs in (asyncio's running-loop lookup calls getpid() each time before 3.12;
    # tests/test_cancel_lookup.py pins running_loop() to it)
    "_cancel.py": {
        "scope._shield",
        "scope._parent_scope",
        "asyncio.tasks._current_tasks",
        "loop._thread_id",
    },
}


def test_no_object_reads_another_modules_private_state() -> None:
    """Across modules, objects use each other's public or internal methods only."""
    found = [
        finding
        for path in sorted(SOURCE.rglob("*.py"))
        for finding in foreign_private_reads(path.read_text(), str(path.relative_to(SOURCE)))
        if finding.rsplit("'s ", 1)[-1]
        not in THIRD_PARTY_INTERNALS.get(str(path.relative_to(SOURCE)), set())
    ]
    assert found == []


def test_the_private_state_rule_catches_the_old_reads() -> None:
    """The reads issue 16 removed are caught by the general rule too."""
    old = """
def get(self, breaker):
    threshold = breaker._core.failure_threshold
    core._last_change = now
"""
    assert len(list(foreign_private_reads(old, "old"))) == 2


def test_no_decision_outside_the_cores() -> None:
    """No shell, store or adapter holds a copy of a core's decision formula."""
    found = [
        finding
        for path in shell_modules(SOURCE)
        for finding in findings(path.read_text(), str(path.relative_to(SOURCE)))
    ]
    assert found == []


# The copies the lint was written against (taken from the tree before issue 16): each must
# be caught, so that the lint is known to fail on them.
OLD_COPIES = {
    "_bucket.py": """
async def __aenter__(self):
    tat = core.tat
    new_tat = (tat if tat > now else now) + core.interval
    if new_tat - now <= core.reach:
        core.tat = new_tat
""",
    "_store.py (GCRA)": """
def hit_now(key, cost, now):
    base = tat if tat > now else now
    new_tat = base + cost * interval
""",
    "_store.py (window)": """
def hit_now(key, cost, now):
    weight = previous * (1.0 - offset / window) if previous else 0.0
""",
    "_executor.py (admission)": """
async def __aenter__(self):
    running = core.running
    if running < core.concurrency and not core.pending and not core._detector:
        core.busy_time += running * (now - core._last_change)
""",
    "_executor.py (guard)": """
def statistics(self):
    return self._guard._waiting
""",
    "_limiter.py (store)": """
def __init__(self, store):
    table = store._table(self._policy)
""",
}


@pytest.mark.parametrize("name", sorted(OLD_COPIES))
def test_lint_catches_the_old_copies(name: str) -> None:
    """Each copy that issue 16 removed is reported by the lint."""
    assert list(findings(OLD_COPIES[name], name))


def test_cores_hold_the_formulas() -> None:
    """The rules are not vacuous: the cores themselves hold each formula."""
    core = SOURCE / "_core"
    text = {path.name: path.read_text() for path in core.glob("*.py")}
    found = [f for name, source in text.items() for f in findings(source, name)]
    for rule in RULES:
        assert any(rule in finding for finding in found), rule


if __name__ == "__main__":  # pragma: no cover - lint another tree: python this.py src/brace
    root = Path(sys.argv[1])
    every = [f for p in shell_modules(root) for f in findings(p.read_text(), str(p))]
    every += [f for p in root.rglob("*.py") for f in foreign_private_reads(p.read_text(), str(p))]
    print("\n".join(every))
    raise SystemExit(1 if every else 0)


def test_fast_paths_are_generated_from_the_steps() -> None:
    """The hot paths run the core's step inlined (no call left), from the core's source."""
    import dis

    from brace._executor import _Slot
    from brace._store import _CounterTable, _GCRATable

    def called(code: object) -> set[str]:
        names: set[str] = set()
        for instruction in dis.get_instructions(code):  # type: ignore[arg-type]
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_DEREF", "LOAD_NAME"):
                names.add(str(instruction.argval))
        for const in getattr(code, "co_consts", ()):
            if hasattr(const, "co_code"):
                names |= called(const)
        return names

    import brace

    paths: dict[str, list[Any]] = {
        "gcra_step": [brace.TokenBucket.__aenter__, _GCRATable._hit_function],
        "window_weight": [_CounterTable._hit_function],
        "admit_now": [_Slot.__aenter__],
        "release_idle": [_Slot.__aexit__],
        "memory_admission": [brace.MemoryGuard.admit],
    }
    for step_name, functions in paths.items():
        for function in functions:
            code = function.__code__
            assert step_name not in called(code), (step_name, function)
            assert hasattr(function, "__wrapped_source__"), function  # made by inline_steps
