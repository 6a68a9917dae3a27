"""The oplog archiver as a supervised service: its argv and files for fs and S3 repositories (tables, no secret on
argv or in a repr), its options refused in one line (exit 2), and one in-process run of ``main`` against mockupdb
that writes a slice and exits 0 on SIGTERM."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import pytest
from bson import Timestamp
from mockupdb import MockupDB

from dbtier.backup.repos import S3Target
from dbtier.engines.mongodb.archiver import DirStore, main, member_of_uri, open_store, read_records
from dbtier.engines.mongodb.archiving import (
    FILE_MODE, archiver_files, archiver_service, member_uri, parse_options, parse_s3_credentials,
)
from dbtier.engines.mongodb.engine import members
from dbtier.engines.mongodb.oplog import decode_slice, slice_name
from dbtier.engines.mongodb.s3store import S3Store
from dbtier.errors import BackupError, SecretError
from dbtier.spec import ClusterSpec
from tests.unit.test_mongodb_archiver import FakeMember

PASSWORD = "r00t-p@ss/w:rd"
SECRET = "s3-s3cret/KEY+value"
S3 = S3Target(bucket="dbtier-bkp", endpoint="minio.lan", port=9000, region="eu-west-1", uri_style="path",
              access_key_id="AKIDEXAMPLE", secret_access_key=SECRET, ca_file="/etc/dbtier/minio-ca.crt")
AWS = S3Target(bucket="dbtier-aws", endpoint="s3.amazonaws.com", port=443, region="us-east-1", uri_style="host",
               access_key_id="AKIDAWS", secret_access_key=SECRET)
LAB = S3Target(bucket="lab", endpoint="10.0.0.1", port=9443, region="us-east-1", uri_style="path",
               access_key_id="AKIDLAB", secret_access_key=SECRET, verify_tls=False)


def spec(repositories: list[dict[str, object]] | None = None, tls: bool = True) -> ClusterSpec:
    backup = {"repositories": repositories} if repositories else {}
    return ClusterSpec(engine="mongodb", name="orders", members=3, data_root="/d", tls={"enabled": tls}, backup=backup)


FS = spec()
FS_SHARED = spec([{"type": "fs", "path": "/mnt/backups"}])
IN_S3 = spec([{"type": "s3", "block": "minio", "path": "/dbtier"}])
TWO = spec([{"type": "fs"}, {"type": "s3", "block": "aws", "path": "/"}])
ARCHIVER = "dbtier.engines.mongodb.archiver"


@pytest.mark.parametrize(
    ("cluster", "index", "s3", "repo", "name", "store"),
    [
        (FS, 0, None, 1, "mongo0-oplog-archiver", ["--repo-path=/d/backups"]),
        (FS_SHARED, 2, None, 1, "mongo2-oplog-archiver", ["--repo-path=/mnt/backups"]),
        (IN_S3, 1, S3, 1, "mongo1-oplog-archiver",
         ["--s3-bucket=dbtier-bkp", "--s3-endpoint=https://minio.lan:9000", "--s3-region=eu-west-1",
          "--s3-prefix=/dbtier", "--s3-credentials-file=/d/orders/mongo1/oplog-archiver/s3.credentials",
          "--s3-ca-file=/etc/dbtier/minio-ca.crt", "--s3-path-style"]),
        (TWO, 0, AWS, 2, "mongo0-oplog-archiver-repo2",
         ["--s3-bucket=dbtier-aws", "--s3-endpoint=https://s3.amazonaws.com:443", "--s3-region=us-east-1",
          "--s3-prefix=/", "--s3-credentials-file=/d/orders/mongo0/oplog-archiver/s3.credentials"]),
        (IN_S3, 0, LAB, 1, "mongo0-oplog-archiver",
         ["--s3-bucket=lab", "--s3-endpoint=https://10.0.0.1:9443", "--s3-region=us-east-1", "--s3-prefix=/dbtier",
          "--s3-credentials-file=/d/orders/mongo0/oplog-archiver/s3.credentials", "--s3-no-verify-tls",
          "--s3-path-style"]),
    ],
)
def test_the_service_argv_names_files_never_secrets(cluster: ClusterSpec, index: int, s3: S3Target | None, repo: int,
                                                     name: str, store: list[str]) -> None:
    member = members(cluster)[index]
    service = archiver_service(cluster, member, s3, repo=repo)
    uri = f"--uri-file=/d/orders/{member.name}/oplog-archiver/member.uri"
    assert service.argv == ["/opt/dbtier/venv/bin/python", "-m", ARCHIVER, uri, "--cluster=orders", f"--member={member.name}", *store,
                                "--slice-s=60"]
    assert (service.name, service.kind, service.host, service.marker, service.ports, service.env, service.as_root) == (
        name, "oplog-archiver", member.host, uri, [],
        {"PYTHONPATH": "/d/orders/runtime", "PYTHONDONTWRITEBYTECODE": "1"}, False)
    assert service.pidfile == f"/d/orders/{member.name}/oplog-archiver/oplog-archiver.pid"
    assert service.logfile == f"/d/orders/{member.name}/oplog-archiver/oplog-archiver.log"
    for secret in (PASSWORD, SECRET, "s3cret"):
        assert secret not in " ".join(service.argv) and secret not in repr(service)
    assert parse_options(service.argv[3:]).location == (  # the archiver accepts what the service runs
        f"/d/backups/oplog/orders/{member.name}/" if cluster is FS else
        f"/mnt/backups/oplog/orders/{member.name}/" if cluster is FS_SHARED else
        f"oplog/orders/{member.name}/" if cluster is TWO else f"dbtier/oplog/orders/{member.name}/")


def test_each_member_has_its_own_archiver_and_archive() -> None:
    services = [archiver_service(IN_S3, m, S3) for m in members(IN_S3)]
    assert [s.name for s in services] == ["mongo0-oplog-archiver", "mongo1-oplog-archiver", "mongo2-oplog-archiver"]
    assert len({parse_options(s.argv[3:]).location for s in services}) == 3 and len({s.marker for s in services}) == 3


def test_an_s3_repository_without_its_target_is_refused_in_one_line() -> None:
    with pytest.raises(BackupError, match=r"^oplog archiver: backup.repositories.0 is an s3 repository; load its "):
        archiver_service(IN_S3, members(IN_S3)[0])
    with pytest.raises(BackupError, match="repository 3 is not in backup.repositories"):
        archiver_service(TWO, members(TWO)[0], AWS, repo=3)


@pytest.mark.parametrize(
    ("cluster", "s3", "repo", "uri", "credentials"),
    [
        (spec(tls=False), None, 1, "mongodb://root:r00t-p%40ss%2Fw%3Ard@127.0.0.1:27018/?authSource=admin", None),
        (FS, S3, 1, "mongodb://root:r00t-p%40ss%2Fw%3Ard@127.0.0.1:27018/?authSource=admin&tls=true"
         "&tlsCAFile=%2Fd%2Forders%2Fmongo1%2Ftls%2Fca.crt", None),  # an fs repository: no keys written
        (IN_S3, S3, 1, None, "[s3]\naccess_key_id = AKIDEXAMPLE\nsecret_access_key = s3-s3cret/KEY+value\n"),
        (TWO, AWS, 1, None, None),
        (TWO, AWS, 2, None, "[s3]\naccess_key_id = AKIDAWS\nsecret_access_key = s3-s3cret/KEY+value\n"),
    ],
)
def test_the_files_hold_the_secrets(cluster: ClusterSpec, s3: S3Target | None, repo: int, uri: str | None,
                                    credentials: str | None) -> None:
    member = members(cluster)[1]
    files = archiver_files(cluster, member, PASSWORD, s3, repo=repo)
    uri_path, keys_path = "/d/orders/mongo1/oplog-archiver/member.uri", "/d/orders/mongo1/oplog-archiver/s3.credentials"
    assert set(files) == ({uri_path, keys_path} if credentials else {uri_path})
    text = files[uri_path].decode()
    assert text == (uri or member_uri(cluster, member, PASSWORD)) + "\n"
    got, user, password, ca = member_of_uri(text.strip(), member.name)  # what the archiver reads back
    assert (got.address, user, password, ca) == (member.address, "root", PASSWORD,
                                                 member.tls_ca if cluster.tls.enabled else None)
    if credentials:
        assert files[keys_path].decode() == credentials
        assert parse_s3_credentials(credentials, keys_path) == (s3.access_key_id if s3 else "", SECRET)
    assert FILE_MODE == 0o600


OK = ["--uri-file", "/u", "--cluster", "orders", "--member", "mongo0"]
S3_OK = [*OK, "--s3-bucket", "b", "--s3-endpoint", "https://e:9000", "--s3-credentials-file", "/k"]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (OK, "give the archive's repository: --repo-path DIR or --s3-bucket NAME (one of them)"),
        ([*OK, "--repo-path", "/b", "--s3-bucket", "b"], "give the archive's repository: --repo-path DIR or "),
        ([*OK, "--repo-path", "backups"], "--repo-path 'backups': give an absolute path"),
        ([*OK, "--repo-path", "/b", "--s3-endpoint", "https://e"], "the --s3-* options need --s3-bucket, not --repo-path"),
        ([*OK, "--s3-bucket", "b", "--s3-endpoint", "https://e"], "--s3-bucket needs --s3-endpoint URL and "
         "--s3-credentials-file FILE"),
        ([*S3_OK[:-4], "--s3-endpoint", "e:9000", "--s3-credentials-file", "/k"], "--s3-endpoint 'e:9000': give a URL"),
        ([*S3_OK, "--s3-prefix", "dbtier"], "--s3-prefix 'dbtier': start it with /, e.g. /dbtier"),
        ([*OK[:4], "--member", "../mongo0", "--repo-path", "/b"], "--member '../mongo0': a name of letters"),
        ([*OK, "--repo-path", "/b", "--slice-s", "0"], "--slice-s must be above 0 and --max-entries at least 1"),
        ([*OK, "--repo-path", "/b", "--slice-s", "soon"], "argument --slice-s: invalid float value: 'soon'"),
        (["--repo-path", "/b"], "the following arguments are required: --uri-file, --cluster, --member"),
        ([*OK, "--repo-path", "/b", "--s3-secret", SECRET], "unrecognized arguments: --s3-secret"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"dbtier-archiver: error: {line}") and err.count("\n") == 1


def test_a_run_time_error_is_one_line_naming_the_member(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--uri-file", str(tmp_path / "missing.uri"), "--cluster", "orders", "--member", "mongo2",
                 "--repo-path", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"dbtier-archiver: error: mongo2: URI file {tmp_path}/missing.uri: cannot "
                                       "read it (No such file or directory)\n")


def _private(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        (f"[s3]\naccess_key_id = AK\nsecret_access_key = {SECRET}\n", 0o640, "mode 640 lets others read it; chmod 600"),
        (f"AK\n{SECRET}\n", 0o600, "write [s3] with access_key_id = ... and secret_access_key = ..."),
        (f"[s3]\nsecret_access_key = {SECRET}\n", 0o600, "write [s3] with access_key_id"),
        ("[s3]\naccess_key_id = AK\nsecret_access_key =\n", 0o600, "write [s3] with access_key_id"),
    ],
)
def test_a_bad_credentials_file_is_refused_without_its_content(tmp_path: Path, text: str, mode: int,
                                                                words: str) -> None:
    keys = tmp_path / "s3.credentials"
    keys.write_text(text)
    keys.chmod(mode)
    with pytest.raises(SecretError, match=re.escape(words)) as info:
        open_store(parse_options([*S3_OK[:-1], str(keys)]))
    assert SECRET not in str(info.value) and "AK\n" not in str(info.value)


def test_the_s3_store_is_under_the_members_prefix(tmp_path: Path) -> None:
    keys = _private(tmp_path / "s3.credentials", f"[s3]\naccess_key_id = AK\nsecret_access_key = {SECRET}\n")
    store = open_store(parse_options([*S3_OK[:-1], keys, "--s3-prefix", "/dbtier", "--s3-path-style"]))
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("b", "dbtier/oplog/orders/mongo0")
    assert SECRET not in repr(store)


# -- one run of main, in this process, against a fake member --------------------------------------------------

T = 1795654900


def _stop_once_tailed(oplog: FakeMember, deadline_s: float) -> None:
    """SIGTERM this process once the archiver's tailable find got its entries (or at the deadline, so a broken run
    still ends)."""
    end = time.monotonic() + deadline_s
    while not oplog.tails and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.2)  # the entries of the find's first batch are read at once; the 30 s slice stays open
    signal.raise_signal(signal.SIGTERM)


def test_main_archives_into_the_repository_and_stops_on_sigterm(member_server: MockupDB, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    entries = [Timestamp(T, 1), Timestamp(T, 2), Timestamp(T + 1, 1)]
    oplog = FakeMember(member_server, entries, batch=5)
    uri = _private(tmp_path / "member.uri", f"mongodb://{member_server.host}:{member_server.port}/\n")
    archive = tmp_path / "oplog" / "orders" / "mongo1"

    def ignore(signum: int, frame: FrameType | None) -> None:  # a signal after main returned must not end pytest
        pass

    before = signal.signal(signal.SIGTERM, ignore)
    stopper = threading.Thread(target=_stop_once_tailed, args=(oplog, 2.0), daemon=True)
    try:
        stopper.start()
        rc = main(["--uri-file", uri, "--cluster", "orders", "--member", "mongo1", "--repo-path", str(tmp_path),
                   "--slice-s", "30"])
        stopper.join(3)
        assert signal.getsignal(signal.SIGTERM) is ignore  # main put back the handler it found
    finally:
        signal.signal(signal.SIGTERM, before)
    out, err = capsys.readouterr()
    assert (rc, err) == (0, "")
    assert out.splitlines() == [f"mongo1 (localhost:{member_server.port}): empty archive: tailing from the oldest entry",
                                f"slice {slice_name(entries[0], entries[-1])}: 3 entries",  # written by the stop
                                f"mongo1 (localhost:{member_server.port}): stopped after 1 slices archived"]
    store = DirStore(str(archive))
    assert [e["ts"] for r in read_records(store) for e in decode_slice(store.read_slice(r.name))] == entries
