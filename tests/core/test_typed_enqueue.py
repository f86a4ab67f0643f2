"""Typed enqueue is checked by mypy at the call site: it rejects exactly the wrong calls.

tests/typing/typed_calls.py holds right and wrong calls; each wrong one ends
with ``# rejected``. mypy --strict must report errors on those lines and no
others. (What a typed perform does at run time is in the contract suite.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

pytestmark = pytest.mark.timeout(240)

CALLS = Path(__file__).parents[1] / "typing" / "typed_calls.py"


def test_mypy_rejects_exactly_the_wrong_calls(tmp_path: Path) -> None:
    stdout, stderr, _ = api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(CALLS)]
    )
    assert not stderr, stderr
    flagged = {
        int(match.group(1)) for match in re.finditer(r"typed_calls\.py:(\d+): error:", stdout)
    }
    lines = CALLS.read_text().splitlines()
    marked = {number for number, line in enumerate(lines, 1) if line.endswith("# rejected")}
    assert len(marked) >= 10
    assert flagged == marked, stdout
