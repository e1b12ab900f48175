"""The client adapters say which extra to install when their library is missing."""

from __future__ import annotations

import importlib
import re
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("brace.httpx", "httpx", "brace[httpx]"),
        ("brace._aiohttp_client", "aiohttp", "brace[aiohttp]"),
    ],
)
def test_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    """Importing the adapter without its library raises ModuleNotFoundError (an
    ImportError) whose message is the pip command of the extra."""
    monkeypatch.setitem(sys.modules, library, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ModuleNotFoundError, match=re.escape(f"pip install '{extra}'")) as missing:
        importlib.import_module(module)
    assert isinstance(missing.value, ImportError)
    assert missing.value.name == library
