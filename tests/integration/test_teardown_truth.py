"""Teardown tells the truth and looks before it destroys; a wipe takes the cluster's blocks along.

Runbook order, on one real one-member cluster with an encrypted filesystem repository: a teardown of a
cluster that never existed says so; a restore drill leaves none of its copy's blocks behind; a wipe of a
directory carrying another cluster's marker is refused before anything stops; a teardown without --wipe
keeps every block; --wipe --drop-backups deletes the stanza, the data, the blocks and variables, and the
cipher block last. Blocks and variables are listed through Prefect's client before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import prefect.settings
import pytest

from dbtier import bootstrap
from dbtier.backup.repos import fs_repo_path
from dbtier.backup.settings import FsRepository
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import etcd_members, pg_members
from tests.clusters import listening, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CIPHER = "truth-key"
PASSWORDS = {f"dbtier-truth-{role}-password" for role in ("superuser", "replication", "rewind", "app")}


def prefect_names() -> set[str]:
    """Every block document and variable name in the Prefect API."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        blocks = {b.name for b in client.read_block_documents() if b.name}
        variables = {v.name for v in client.read_variables()}
    return blocks | variables


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value())}
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout, check=False)


def ports_listening(spec: ClusterSpec) -> list[int]:
    ports = [p for m in pg_members(spec) for p in (m.pg_port, m.rest_port)]
    return [p for p in ports + [p for m in etcd_members(spec) for p in (m.client_port, m.peer_port)] if listening(p)]


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("truth", block=15, data_root=shared_tmpdir("dbtier-truth-"), members=1,
                          backup={"cipher_block": CIPHER})


@pytest.fixture(scope="module")
def cluster(prefect_harness: None, spec: ClusterSpec) -> Iterator[str]:
    """A healthy one-member cluster with one full backup in its encrypted fs repository."""
    from flows.backup import backup
    from flows.provision import provision

    with stopped_at_exit(spec):
        spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
        provision(spec_path=spec_file)
        backup(spec_path=spec_file, kind="full")
        yield spec_file
    if bootstrap.is_initialised(get_engine(spec), get_provider(spec), spec):
        bootstrap.wipe(get_engine(spec), get_provider(spec), spec)
    shutil.rmtree(spec.data_root, ignore_errors=True)


def stanza_dirs(spec: ClusterSpec) -> list[str]:
    repo = fs_repo_path(spec, FsRepository())
    return [d for d in (f"{repo}/archive/{spec.name}", f"{repo}/backup/{spec.name}") if os.path.isdir(d)]


def test_teardown_of_a_cluster_that_never_existed_says_there_was_nothing(prefect_harness: None) -> None:
    ghost = spec_for_tests("ghost", block=15, data_root=shared_tmpdir("dbtier-ghost-"))
    spec_file = write_spec(ghost, os.path.join(ghost.data_root, "spec.yaml"))
    before = sorted(os.listdir(ghost.data_root))

    done = cli("flows.teardown", "--spec", spec_file, "--wipe", "--drop-backups")

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines() == [
        f"cluster ghost: nothing to tear down (no process of it runs, no {ghost.cluster_dir}, "
        "no backups of ghost in any repository, no Secret block or variable of ghost)"
    ]
    assert sorted(os.listdir(ghost.data_root)) == before


def test_restore_drill_leaves_none_of_its_copys_blocks(cluster: str, spec: ClusterSpec) -> None:
    from flows.restore_drill import restore_drill

    before = prefect_names()
    assert PASSWORDS | {CIPHER} <= before and not {n for n in before if n.startswith("dbtier-truth-drill-")}

    result = restore_drill(spec_path=cluster)

    assert result["passed"], result
    after = prefect_names()
    assert not {n for n in after if n.startswith("dbtier-truth-drill-")}, after
    assert PASSWORDS | {CIPHER, "dbtier-truth-cipher"} <= after  # the source's, and the key to its backups


def test_wipe_of_a_directory_with_another_clusters_marker_is_refused_before_anything(
    cluster: str, spec: ClusterSpec
) -> None:
    engine, provider = get_engine(spec), get_provider(spec)
    marker = os.path.join(spec.cluster_dir, bootstrap.MARKER)
    original = open(marker).read()
    names, stanza = prefect_names(), stanza_dirs(spec)
    with open(marker, "w") as fh:
        json.dump({"name": "someone-else", "engine": "postgres"}, fh)
    try:
        done = cli("flows.teardown", "--spec", cluster, "--wipe", "--drop-backups")
    finally:
        with open(marker, "w") as fh:
            fh.write(original)

    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "carries cluster 'someone-else''s marker, not cluster truth's" in lines[0], done.stderr
    assert len(bootstrap.running_services(engine, provider, spec)) == 2  # nothing stopped
    assert stanza_dirs(spec) == stanza and len(stanza) == 2 and prefect_names() == names


def test_teardown_without_wipe_keeps_data_and_blocks(cluster: str, spec: ClusterSpec) -> None:
    names = prefect_names()

    done = cli("flows.teardown", "--spec", cluster)

    assert done.returncode == 0, done.stderr[-2000:]
    assert not ports_listening(spec) and os.path.isdir(spec.cluster_dir)
    assert "wiped" not in done.stdout and "deleted" not in done.stdout
    assert prefect_names() == names and len(stanza_dirs(spec)) == 2


def test_wipe_with_drop_backups_removes_stanza_data_blocks_and_the_cipher_block_last(
    cluster: str, spec: ClusterSpec
) -> None:
    from prefect.variables import Variable

    Variable.set("dbtier-truth-host-keys", {"[127.0.0.1]:22": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDbtier"},
                 overwrite=True)
    assert PASSWORDS | {CIPHER, "dbtier-truth-cipher", "dbtier-truth-host-keys"} <= prefect_names()

    done = cli("flows.teardown", "--spec", cluster, "--wipe", "--drop-backups")

    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    said = [next(i for i, line in enumerate(lines) if line.startswith(start)) for start in (
        "stanza truth deleted", "wiped ", "Secret blocks dbtier-truth-", "variables dbtier-truth-host-keys "
        "deleted; its lock dbtier-truth-lock goes when this run ends")]
    assert said == sorted(said), lines
    assert lines[-1] == (f"variable dbtier-truth-cipher deleted; cipher block {CIPHER} deleted, last: stanza truth "
                         "is gone and no other cluster used it")
    assert not os.path.exists(spec.cluster_dir) and not stanza_dirs(spec)
    left = prefect_names()
    assert not {n for n in left if n.startswith("dbtier-truth-")} and CIPHER not in left, left


def test_cipher_block_is_kept_while_another_cluster_may_need_it(prefect_harness: None) -> None:
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    from blocks.cleanup import drop_cipher_block, record_cipher_use

    owner = ClusterSpec(name="keep-a", backup={"cipher_block": "keep-key"})
    other = ClusterSpec(name="keep-b", backup={"cipher_block": "keep-key"})
    copy = ClusterSpec(name="keep-a-drill", hosts_of="keep-a", backup={"cipher_block": "keep-key"})
    Secret(value="passphrase").save("keep-key", overwrite=True)
    try:
        record_cipher_use(owner, created=True)
        record_cipher_use(other, created=False)
        assert drop_cipher_block(copy, []) == ("cipher block keep-key kept: it is cluster keep-a's (keep-a-drill is a "
                                                "copy of it); delete it with `prefect block delete secret/keep-key`")
        assert "dbtier-keep-a-cipher" in prefect_names()  # the copy's teardown leaves its source's record
        assert drop_cipher_block(owner, []) == ("variable dbtier-keep-a-cipher deleted; cipher block keep-key kept: "
                                                "other clusters may use it (keep-b); delete it with "
                                                "`prefect block delete secret/keep-key`")
        Variable.unset("dbtier-keep-b-cipher")
        record_cipher_use(owner, created=False)  # its record went with the drop; a later one did not create it
        assert "kept: other clusters may use it (dbtier did not create it for keep-a)" in drop_cipher_block(owner, [])
        record_cipher_use(owner, created=True)
        assert "(stanza keep-c in the same repositories)" in drop_cipher_block(owner, ["keep-c"])
        assert "keep-key" in prefect_names()
        record_cipher_use(owner, created=True)
        assert drop_cipher_block(owner, []).endswith("cipher block keep-key deleted, last: stanza keep-a is gone and "
                                                     "no other cluster used it")
        assert "keep-key" not in prefect_names()
    finally:
        for name in ("dbtier-keep-a-cipher", "dbtier-keep-b-cipher"):
            Variable.unset(name)
        if "keep-key" in prefect_names():
            Secret.delete("keep-key")
