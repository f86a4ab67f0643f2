"""No pickle, eval or exec anywhere in the library; names are imported only from the CLI's own argument."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "amqp_worker"
FORBIDDEN = re.compile(r"\b(pickle|marshal|shelve|dill)\b|\beval\(|\bexec\(|__import__\(")
#: The only import of a name given at run time: `amqp-worker run module:attr`, from the operator.
IMPORTS_BY_NAME = {"cli/loading.py"}


def test_no_module_deserialises_or_evaluates_code() -> None:
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not FORBIDDEN.search(line), f"{path.relative_to(SRC)}:{number}: {line.strip()}"


def test_names_are_imported_only_where_the_operator_gives_them() -> None:
    importing = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "import_module" in path.read_text()
    }
    assert importing <= IMPORTS_BY_NAME
