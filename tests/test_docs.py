"""The documentation is tested: its code runs, its navigation points at real pages.

Every fenced block whose info string is ``python`` in ``docs/*.md`` (and ``README.md``)
is executed, in page order, in one fresh namespace per page, so a later block may use
names an earlier one defined. Blocks marked ``pycon``, ``py``, ``text``... are not run.
The blocks drive their own event loop (``anyio.run(...)`` / ``asyncio.run(...)``) with
real time, so they must be quick: use ``brace.testing.FakeClock`` or tiny sleeps.

Line numbers in a failing block's traceback are the line numbers of the Markdown file.

The site itself is checked too: every page in mkdocs.yml's nav exists and every page is
in the nav, docs/api.md covers ``brace.__all__``, and the exception hierarchy drawn in
docs/design.md is the real one. (``mkdocs build --strict`` checks links and references.)
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

import brace
import brace.testing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"

# A whole page's code gets this long (wall clock) before the test calls it too slow.
PAGE_BUDGET = 10.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """One fenced code block: where it starts in its file and its dedented source."""

    index: int  # 1-based position among the blocks collected (the python ones when run)
    info: str
    line: int  # 1-based line number of the first line of code
    source: str


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced code block of a Markdown text, indented ones (tabs, admonitions) too."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        opening = _FENCE.match(lines[position])
        if opening is None:
            position += 1
            continue
        indent = len(opening["indent"])
        fence = opening["fence"]
        body: list[str] = []
        position += 1
        start = position + 1
        while position < len(lines):
            line = lines[position]
            closing = _FENCE.match(line)
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            position += 1
        position += 1
        source = "\n".join(body) + "\n"
        blocks.append(CodeBlock(len(blocks) + 1, opening["info"], start, source))
    return blocks


def python_blocks(text: str) -> list[CodeBlock]:
    """The blocks that are run: info string ``python`` (attributes after it allowed)."""
    blocks = [block for block in code_blocks(text) if block.info.split(" ", 1)[0] == "python"]
    return [
        CodeBlock(index, block.info, block.line, block.source)
        for index, block in enumerate(blocks, start=1)
    ]


def run_page(path: Path) -> None:
    """Run every ``python`` block of ``path`` in order in one namespace; fail with context."""
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks")
    relative = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(path)}
    retry_testing = brace.testing.is_retry_testing()
    started = time.perf_counter()
    try:
        _run_blocks(path, relative, blocks, namespace)
    finally:
        left_on = brace.testing.is_retry_testing() and not retry_testing
        if left_on:  # a global switch must not leak into the rest of the test suite
            brace.testing.set_retry_testing(False)
    assert not left_on, f"{relative}: the page's code left the retry testing switch on"
    elapsed = time.perf_counter() - started
    assert elapsed < PAGE_BUDGET, (
        f"{relative}: the page's code took {elapsed:.1f} s (budget {PAGE_BUDGET} s); "
        "use brace.testing.FakeClock or shorter sleeps"
    )


def _run_blocks(
    path: Path, relative: Path, blocks: list[CodeBlock], namespace: dict[str, Any]
) -> None:
    for block in blocks:
        # Pad with blank lines so that traceback line numbers are those of the .md file.
        source = "\n" * (block.line - 1) + block.source
        try:
            code = compile(source, str(path), "exec", dont_inherit=True)
            exec(code, namespace)
        except BaseException as error:  # SystemExit, KeyboardInterrupt-like errors too
            if isinstance(error, KeyboardInterrupt):
                raise
            details = "".join(traceback.format_exception(error))
            pytest.fail(
                f"{relative}: python block {block.index} of {len(blocks)} "
                f"(starting at line {block.line}) raised {type(error).__name__}:\n{details}",
                pytrace=False,
            )


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", [path.name for path in _pages()])
def test_docs_page_code_runs(page: str) -> None:
    """Every python block of the page runs without error, in order, in one namespace."""
    run_page(DOCS / page)


@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="no README.md")
def test_readme_code_runs() -> None:
    """Every python block of README.md runs without error, in order, in one namespace."""
    run_page(ROOT / "README.md")


class _MkdocsLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A safe loader that reads ``!!python/name:...`` tags as plain strings."""


def _python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    return f"!!python/{suffix}"


_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag)


def _nav_pages(entry: object) -> list[str]:
    if isinstance(entry, str):
        return [entry] if entry.endswith(".md") else []
    if isinstance(entry, list):
        return [page for item in entry for page in _nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in _nav_pages(value)]
    return []


def _load_nav() -> list[str]:
    config = yaml.load(MKDOCS_YML.read_text(encoding="utf-8"), Loader=_MkdocsLoader)
    pages = _nav_pages(config["nav"])
    assert pages, "mkdocs.yml has an empty nav"
    return pages


def test_every_nav_page_exists() -> None:
    """Every page named in mkdocs.yml's nav is a file in docs/."""
    missing = [page for page in _load_nav() if not (DOCS / page).is_file()]
    assert not missing, f"pages in mkdocs.yml nav but not in docs/: {missing}"


def test_every_page_is_in_the_nav() -> None:
    """Every docs/*.md page is reachable from mkdocs.yml's nav, and listed once."""
    nav = _load_nav()
    orphans = [path.name for path in _pages() if path.name not in nav]
    assert not orphans, f"pages in docs/ missing from mkdocs.yml nav: {orphans}"
    duplicates = sorted({page for page in nav if nav.count(page) > 1})
    assert not duplicates, f"pages listed twice in mkdocs.yml nav: {duplicates}"


def test_api_reference_lists_every_public_name() -> None:
    """docs/api.md has a ``::: brace.X`` block for every name in ``brace.__all__``."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^:::[ \t]+brace\.(\w+)[ \t]*$", text, flags=re.MULTILINE))
    missing = sorted(set(brace.__all__) - documented)
    assert not missing, f"docs/api.md lacks '::: brace.X' blocks for: {missing}"
    stale = sorted(documented - set(brace.__all__) - {"testing"})
    assert not stale, f"docs/api.md documents names not in brace.__all__: {stale}"


def test_fence_parser_finds_python_blocks_only() -> None:
    """The collector takes ``python`` blocks (indented ones too) and skips other languages."""
    text = "\n".join(
        [
            "# Page",
            "```python",
            "x = 1",
            "```",
            "```pycon",
            ">>> x",
            "```",
            '=== "Tab"',
            "",
            "    ```python",
            "    if x:",
            "        y = 2",
            "    ```",
            "````text",
            "```python",
            "not code",
            "```",
            "````",
            "```py",
            "z = 3",
            "```",
        ]
    )
    blocks = python_blocks(text)
    assert [block.source for block in blocks] == ["x = 1\n", "if x:\n    y = 2\n"]
    assert [block.line for block in blocks] == [3, 11]


def test_failing_block_names_page_block_and_line(tmp_path: Path) -> None:
    """A failing block fails the test with the page, the block index and the md line."""
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\ntext\n\n```python\n\nraise ValueError(x)\n```\n")
    with pytest.raises(pytest.fail.Exception) as failure:
        run_page(page)
    message = str(failure.value)
    assert "page.md: python block 2 of 2 (starting at line 8)" in message
    assert "line 9" in message
    assert "ValueError: 1" in message


def test_design_exception_diagram_matches_the_classes() -> None:
    """The exception hierarchy drawn in docs/design.md is the real one, edge for edge."""
    blocks = [
        block
        for block in code_blocks((DOCS / "design.md").read_text(encoding="utf-8"))
        if block.info == "mermaid" and "BraceError" in block.source
    ]
    assert len(blocks) == 1, "docs/design.md should draw the exception hierarchy once"
    drawn = set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", blocks[0].source, re.MULTILINE))
    exceptions = [
        value
        for value in (getattr(brace, name) for name in brace.__all__)
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    actual = {(cls.__name__, base.__name__) for cls in exceptions for base in cls.__bases__}
    assert drawn == actual, (
        f"missing from the diagram: {sorted(actual - drawn)}; "
        f"drawn but not real: {sorted(drawn - actual)}"
    )


_REFERENCE_BLOCK = re.compile(r"^::: (brace\.[\w.]+)[ \t]*\n((?:[ \t]+\S.*\n)*)", re.MULTILINE)


def test_api_reference_defers_to_the_primitive_pages() -> None:
    """A name with its own page is rendered in api.md without registering a second anchor.

    mkdocstrings registers every rendered object for cross-references; an object rendered
    on two pages makes every link to it ambiguous (a warning, so ``mkdocs build --strict``
    fails). api.md therefore renders those with ``skip_local_inventory: true`` and links
    go to the object's own page; names documented only in api.md must register there.
    """
    elsewhere = {
        name
        for page in _pages()
        if page.name != "api.md"
        for name, _ in _REFERENCE_BLOCK.findall(page.read_text(encoding="utf-8"))
    }
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    wrong = [
        name
        for name, options in _REFERENCE_BLOCK.findall(api)
        if ("skip_local_inventory: true" in options) != (name in elsewhere)
    ]
    assert not wrong, (
        "in docs/api.md, give these blocks 'options: skip_local_inventory: true' exactly "
        f"when the name has a '::: ' block on another page: {wrong}"
    )
