"""The reliability and security documents name the tests that prove them; each name exists.

A guarantee whose test was renamed or deleted would otherwise point at
nothing, and the document would promise what no test holds any more.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["docs/reliability.md", "docs/security.md"]
#: `tests/...py` or `tests/...py::test_name` in backticks.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def references(doc: str) -> list[tuple[str, str | None]]:
    return [(m[1], m[2]) for m in REFERENCE.finditer((ROOT / doc).read_text())]


def functions_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_test_exists(doc: str) -> None:
    found = references(doc)
    assert len(found) >= 10, f"{doc} names too few tests"
    missing = [
        f"{path}::{name}" if name else path
        for path, name in found
        if not (ROOT / path).is_file() or (name and name not in functions_in(path))
    ]
    assert not missing, f"{doc} names tests that do not exist: {missing}"
