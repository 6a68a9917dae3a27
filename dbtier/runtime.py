"""dbtier's own code on a cluster host, for the processes that run a dbtier module there (MongoDB's oplog archiver).

Such a process runs as the database OS user with the host's runtime venv (``binaries.python``, which
``scripts/host-setup.sh`` builds from Debian's python3 so that user can read it, with the libraries the module
needs); the ``dbtier`` package itself is shipped by the provider into :func:`runtime_dir` (a tarball of its
Python files, unpacked there) and found through ``PYTHONPATH`` (:func:`runtime_env`). A provision ships it again,
so a host never runs older code than the machine that provisions it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from dbtier.providers.base import Runner
from dbtier.spec import ClusterSpec

#: The package shipped: this one.
PACKAGE_DIR = Path(__file__).resolve().parent
ARCHIVE = "dbtier.tar.gz"


def runtime_dir(spec: ClusterSpec) -> str:
    """
    >>> runtime_dir(ClusterSpec(name="orders", data_root="/d"))
    '/d/orders/runtime'
    """
    return f"{spec.cluster_dir}/runtime"


def runtime_env(spec: ClusterSpec) -> dict[str, str]:
    """The environment a shipped module runs with: the shipped package first on the path, no bytecode written
    beside it (the directory is replaced on the next provision).

    >>> runtime_env(ClusterSpec(name="orders", data_root="/d"))
    {'PYTHONPATH': '/d/orders/runtime', 'PYTHONDONTWRITEBYTECODE': '1'}
    """
    return {"PYTHONPATH": runtime_dir(spec), "PYTHONDONTWRITEBYTECODE": "1"}


def package_files(root: Path = PACKAGE_DIR) -> list[Path]:
    """The package's Python files (and typed marker), sorted; no bytecode caches."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix in (".py", ".typed"))


def package_archive(root: Path = PACKAGE_DIR) -> bytes:
    """A gzipped tar of the package under ``dbtier/``, the same bytes for the same code (no times, no owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in package_files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"dbtier/{path.relative_to(root).as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)  # tarfile's "w:gz" stamps the time


def ship(runner: Runner, spec: ClusterSpec, host: str, archive: bytes) -> str:
    """Replace the host's copy of the package with ``archive`` (:func:`package_archive`); one sentence."""
    where, incoming = runtime_dir(spec), f"{runtime_dir(spec)}/incoming"
    runner.make_dirs(incoming, 0o700)
    runner.remove_tree(f"{where}/dbtier")
    runner.write_file(f"{incoming}/{ARCHIVE}", archive, 0o600)
    runner.run(["tar", "-xzf", f"{incoming}/{ARCHIVE}", "-C", where, "--no-same-owner"], timeout=120)
    runner.remove_tree(incoming)
    digest = hashlib.sha256(archive).hexdigest()[:12]
    return f"{host}: dbtier's code shipped to {where} ({len(archive) // 1024} KiB, sha256 {digest})"
