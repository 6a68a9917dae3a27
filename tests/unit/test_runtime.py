"""dbtier's code as shipped to a host for the archivers (dbtier/runtime.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from dbtier.runtime import package_archive


def test_the_package_archive_is_the_whole_package_and_the_same_bytes_for_the_same_code(tmp_path: Path) -> None:
    archive = package_archive()
    assert package_archive() == archive, "no time or owner in it: the same code ships the same bytes"
    assert archive[:2] == b"\x1f\x8b" and archive[4:8] == bytes(4), "gzip's own MTIME is 0 too (RFC 1952)"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    assert {"dbtier/__init__.py", "dbtier/engines/mongodb/archiver.py", "dbtier/engines/mongodb/s3store.py",
            "dbtier/spec.py"} <= names
    assert not [n for n in names if "__pycache__" in n or not n.startswith("dbtier/")]
    assert {(m.mode, m.mtime, m.uid) for m in members} == {(0o600, 0, 0)}
    source = Path(__file__).resolve().parents[2] / "dbtier"
    assert names == {f"dbtier/{p.relative_to(source).as_posix()}" for p in source.rglob("*.py")
                     if "__pycache__" not in p.parts} | ({"dbtier/py.typed"} if (source / "py.typed").exists() else set())
