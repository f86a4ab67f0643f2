"""The layout is the architecture: packages by role, enforced.

- the core (``_core``) never imports the RabbitMQ transport, the in-memory
  one, the integrations or an AMQP client library; the memory transport never
  imports the RabbitMQ one;
- no import cycle between modules (module level, ``TYPE_CHECKING`` included);
- no module in ``src/`` over 400 lines, no class over 300;
- the public modules are the ones ``docs/architecture.md`` says are public,
  every other one is private (a leading underscore, or inside a private
  package), and the document names every module there is.

Each rule is a pure function over source files, tested on a broken example
too, so a rule that stopped finding anything would fail here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "amqp_worker"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

AMQP_CLIENTS = ("aio_pika", "aiormq", "pamqp")
INTEGRATIONS = tuple(
    f"amqp_worker.{name}" for name in ("cli", "dashboard", "metrics", "sync", "testing", "tracing")
)
#: Package -> what no module in it may import (a name or any module under it).
FORBIDDEN = {
    "_core": (*AMQP_CLIENTS, "amqp_worker._rabbitmq", "amqp_worker._memory", *INTEGRATIONS),
    "_memory": (*AMQP_CLIENTS, "amqp_worker._rabbitmq", *INTEGRATIONS),
    "_rabbitmq": ("amqp_worker._memory", *INTEGRATIONS),
}
#: The public API: the root package and these; everything else starts with "_" or lives in a
#: package that does.
PUBLIC = {"__init__.py", "errors.py", "sync.py", "metrics.py", "tracing.py", "py.typed"}
PUBLIC_PACKAGES = {"cli", "dashboard", "testing"}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, src: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """Every module ``path`` imports, absolute; ``from m import x`` yields ``m.x`` too."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes: Iterable[ast.AST] = ast.walk(tree)
    if top_level_only:
        nodes = [
            inner
            for node in tree.body
            for inner in ([node] if not isinstance(node, ast.If) else [node, *node.body])
        ]
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def violations(src: Path, package: str, forbidden: Iterable[str]) -> list[str]:
    """``module -> import`` for every forbidden import in ``src/amqp_worker/<package>``."""
    found = []
    for path in sorted((src / "amqp_worker" / package).rglob("*.py")):
        for target in set(imports(path, src)):
            if any(target == bad or target.startswith(bad + ".") for bad in forbidden):
                found.append(f"{module_name(path, src)} -> {target}")
    return sorted(found)


def cycles(src: Path) -> list[list[str]]:
    """Import cycles between the modules under ``src`` (module-level imports only)."""
    paths = {module_name(p, src): p for p in src.rglob("*.py")}
    graph = {
        name: {t for t in imports(path, src, top_level_only=True) if t in paths and t != name}
        for name, path in paths.items()
    }
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # A package's __init__ re-exporting its modules is not a cycle of theirs.
            if paths[nxt].name == "__init__.py" and node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def oversized(src: Path) -> list[str]:
    """Modules over :data:`MAX_MODULE_LINES` lines and classes over :data:`MAX_CLASS_LINES`."""
    found = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(src)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(f"{path.relative_to(src)}: class {node.name}, {size} lines")
    return found


def public_entries(package: Path) -> set[str]:
    return {
        p.name
        for p in package.iterdir()
        if not p.name.startswith("_") or p.name == "__init__.py"
        if p.name != "__pycache__"
    }


# -- the rules, on the real source ------------------------------------------------


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_package_imports_only_what_its_role_allows(package: str) -> None:
    assert violations(PACKAGE.parent, package, FORBIDDEN[package]) == []


def test_no_import_cycles() -> None:
    assert cycles(PACKAGE.parent) == []


def test_no_module_or_class_is_too_big() -> None:
    assert oversized(PACKAGE) == []


def test_the_public_modules_are_the_documented_ones_and_the_rest_is_private() -> None:
    assert public_entries(PACKAGE) == PUBLIC | PUBLIC_PACKAGES


def test_the_architecture_document_names_every_module() -> None:
    text = ARCHITECTURE.read_text()
    tree = text.split("```")[1]  # the first code block: the picture of src/amqp_worker
    for entry in sorted(PACKAGE.iterdir()):
        if entry.name in {"__pycache__", "py.typed"}:
            continue
        shown = entry.name + ("/" if entry.is_dir() else "")
        assert shown in tree, f"docs/architecture.md does not show {shown}"
    for package in ("_core", "_memory", "_rabbitmq", "dashboard", "testing"):
        for path in sorted((PACKAGE / package).glob("*.py")):
            if path.name != "__init__.py":
                assert re.search(rf"\b{re.escape(path.name)}", tree), (
                    f"docs/architecture.md does not name {package}/{path.name}"
                )
    for name in sorted((PUBLIC | PUBLIC_PACKAGES) - {"py.typed"}):
        assert re.search(rf"{re.escape(name)}/?\s.*public", tree), (
            f"docs/architecture.md does not say that {name} is public"
        )


# -- the rules find what they should: each on a broken example --------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_core_module_importing_the_transport_is_found(tmp_path: Path) -> None:
    src = write(
        tmp_path,
        {
            "amqp_worker/__init__.py": "",
            "amqp_worker/_core/__init__.py": "",
            "amqp_worker/_core/a.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .._rabbitmq.broker import Broker\n",
            "amqp_worker/_core/b.py": "def f():\n    import aio_pika\n",
            "amqp_worker/_core/c.py": "from amqp_worker._rabbitmq import topology\n",
            "amqp_worker/_core/d.py": "from . import a\nimport amqp_worker.errors\n",
        },
    )
    assert violations(src, "_core", FORBIDDEN["_core"]) == [
        "amqp_worker._core.a -> amqp_worker._rabbitmq.broker",
        "amqp_worker._core.a -> amqp_worker._rabbitmq.broker.Broker",
        "amqp_worker._core.b -> aio_pika",
        "amqp_worker._core.c -> amqp_worker._rabbitmq",
        "amqp_worker._core.c -> amqp_worker._rabbitmq.topology",
    ]


def test_an_import_cycle_is_found_type_checking_included(tmp_path: Path) -> None:
    src = write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            "pkg/a.py": "from .b import B\nA = 1\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .a import A\nB = 2\n",
            "pkg/c.py": "def f():\n    from . import a\n",  # a lazy import is no cycle
        },
    )
    assert cycles(src) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_module_or_class_too_big_is_found(tmp_path: Path) -> None:
    big_class = "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES
    src = write(
        tmp_path,
        {"ok.py": "x = 1\n", "long.py": "x = 1\n" * (MAX_MODULE_LINES + 1), "cls.py": big_class},
    )
    assert oversized(src) == [
        f"cls.py: class Big, {MAX_CLASS_LINES + 1} lines",
        f"long.py: {MAX_MODULE_LINES + 1} lines",
    ]


def test_a_public_module_left_out_is_found(tmp_path: Path) -> None:
    write(tmp_path, {"__init__.py": "", "_private.py": "", "leaked.py": "", "cli/x.py": ""})
    assert public_entries(tmp_path) == {"__init__.py", "leaked.py", "cli"}
