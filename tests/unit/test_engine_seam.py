"""The engine seam holds: code every engine shares reaches an engine only through dbtier.engines.base.

Flows, tasks, blocks, deployments and the library outside dbtier/engines/ import no engine's module (a PostgreSQL
helper in a shared task runs pgBackRest against a MongoDB cluster, as teardown --drop-backups once did).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = [p for top in ("flows", "tasks", "blocks", "deployments", "dbtier") for p in sorted((ROOT / top).rglob("*.py"))
          if "engines" not in p.relative_to(ROOT).parts]
ENGINES = ("dbtier.engines.postgres", "dbtier.engines.mongodb")


def engine_imports(path: Path) -> list[str]:
    """Every engine module ``path`` imports, at module level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [n for n in names if n.startswith(ENGINES)]
    return found


def test_the_walk_sees_the_shared_code() -> None:
    assert {"flows/restore.py", "tasks/teardown.py", "dbtier/bootstrap.py", "dbtier/backup/catalog.py"} <= \
        {p.relative_to(ROOT).as_posix() for p in SHARED}
    assert "dbtier.engines.postgres.walscan" in engine_imports(ROOT / "dbtier/engines/postgres/pg_restore.py")


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shared_code_imports_no_engine_module(path: Path) -> None:
    assert engine_imports(path) == [], "reach the engine through dbtier.engines.base.get_engine(spec)"


#: The spec's engine sections and their typed accessors: only an engine's own code reads them. The spec module itself
#: lays out each engine's ports (its one branch on the engine), and bench scripts are PostgreSQL's own.
SECTIONS = {"pg", "mongo", "postgres", "mongodb"}
SPEC_MODULE = ROOT / "dbtier/spec.py"


def section_reads(path: Path) -> list[str]:
    """Every ``<name>.pg``/``.mongo``/``.postgres``/``.mongodb`` attribute read in ``path`` (outside docstrings)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in SECTIONS:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_the_section_walk_sees_engine_reads() -> None:
    assert section_reads(ROOT / "dbtier/engines/postgres/topology.py"), "PostgreSQL's topology reads spec.pg"
    assert section_reads(ROOT / "dbtier/engines/mongodb/engine.py"), "MongoDB's engine reads spec.mongo"


@pytest.mark.parametrize("path", [p for p in SHARED if p != SPEC_MODULE], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shared_code_reads_no_engine_section(path: Path) -> None:
    assert section_reads(path) == [], "ask the engine (dbtier.engines.base.get_engine(spec)) instead"
