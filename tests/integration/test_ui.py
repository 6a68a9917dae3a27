"""What a person sees in the Prefect UI, against a real `prefect server start` on a port of its own (test block 16):
the UI talks to that server's API, dbtier's block types can be created there, flow runs carry the cluster's name
and tags, the backup catalog artifact reads the restorable window, and a browser (headless Chromium) shows the
backup history picture on the artifact's page.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from blocks.register import BLOCK_TYPES
from dbtier import bootstrap
from dbtier.engines.base import get_engine
from dbtier.procs import stop_child
from dbtier.providers.base import get_provider
from dbtier.spec import ClusterSpec
from tests.conftest import QUIET_SERVER
from tests.clusters import TEST_PORT_BASE, listening, shared_tmpdir, spec_for_tests, stopped_at_exit, write_spec

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
BLOCK = 16
SERVER_PORT = TEST_PORT_BASE + 100 * BLOCK + 90  # servers sit at +90 and up in a test block
DBTIER_SLUGS = {b.get_block_type_slug() for b in BLOCK_TYPES}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`prefect server start --port 21690` with a fresh home, PREFECT_API_URL in its own environment (as the README
    says); stopped by its pid."""
    assert not listening(SERVER_PORT), f"port {SERVER_PORT} is taken"
    home = tempfile.mkdtemp(prefix="dbtier-ui-prefect-")
    url = f"http://127.0.0.1:{SERVER_PORT}/api"
    env = {**{k: v for k, v in os.environ.items() if k not in QUIET_SERVER}, "PREFECT_HOME": home, "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with open(os.path.join(home, "server.log"), "wb") as log:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(SERVER_PORT)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, Path(home, "server.log").read_text()[-2000:]
            time.sleep(0.5)
        yield url
    finally:
        stop_child(proc)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).ok
    except requests.RequestException:
        return False


def dbtier(server: str, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBTIER_")}
    env["PREFECT_API_URL"] = server  # the session's temporary PREFECT_HOME (conftest) is inherited
    return subprocess.run([str(BIN / "dbtier"), *argv], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)


@contextmanager
def client_of(server: str) -> Iterator[Any]:
    """A Prefect client of ``server`` (not of the session's test harness)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server}), get_client(sync_client=True) as client:
        yield client


def test_the_ui_on_another_port_talks_to_its_own_api(server: str) -> None:
    settings = requests.get(server.removesuffix("/api") + "/ui-settings", timeout=5).json()
    assert settings["api_url"] == server


def test_blocks_register_makes_dbtier_block_types_creatable(server: str) -> None:
    with client_of(server) as client:
        before = {t.slug for t in client.read_block_types()}
    assert DBTIER_SLUGS & before == set()  # a fresh server knows only Prefect's own types
    done = dbtier(server, "blocks", "register")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(" registered\n") == len(DBTIER_SLUGS) and server in done.stdout
    with client_of(server) as client:
        after = {t.slug: t for t in client.read_block_types()}
        schemas = {s.block_type.slug for s in client.read_block_schemas()}
    assert set(after) >= DBTIER_SLUGS and schemas >= DBTIER_SLUGS
    assert after["dbtier-ssh-credentials"].name == "dbtier SSH Credentials"
    again = dbtier(server, "blocks", "register")
    assert (again.returncode, again.stdout) == (0, done.stdout)


def test_blocks_register_against_no_api_is_one_line() -> None:
    port = SERVER_PORT + 1
    assert not listening(port)
    done = dbtier(f"http://127.0.0.1:{port}/api", "blocks", "register", timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"dbtier: error: prefect api: the Prefect API at http://127.0.0.1:{port}/api does not answer "
                           "(ConnectError"), line
    assert "point PREFECT_API_URL at the API" in line


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return spec_for_tests("uiruns", block=BLOCK, data_root=shared_tmpdir("dbtier-ui-"), members=1)


@pytest.fixture(scope="module")
def backed_up(server: str, spec: ClusterSpec) -> Iterator[str]:
    """A one-member cluster provisioned and backed up through `dbtier <verb>`; stopped by pid and wiped after."""
    spec_file = write_spec(spec, os.path.join(spec.data_root, "spec.yaml"))
    with stopped_at_exit(spec):
        done = dbtier(server, "provision", "--spec", spec_file)
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        done = dbtier(server, "backup", "--spec", spec_file, "--kind", "full")
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        yield spec_file
    bootstrap.wipe(get_engine(spec), get_provider(spec), spec)


def test_flow_runs_carry_the_cluster_name_and_tags(server: str, spec: ClusterSpec, backed_up: str) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with client_of(server) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"cluster:{spec.name}"])))
    assert sorted(r.name for r in runs) == ["backup uiruns (full)", "provision uiruns"]
    assert all(set(r.tags) >= {"dbtier", "cluster:uiruns"} for r in runs)
    assert {r.state_type.value for r in runs if r.state_type} == {"COMPLETED"}


def test_the_backup_catalog_artifact_reads_the_restorable_window(server: str, spec: ClusterSpec, backed_up: str) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with client_of(server) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{spec.name}-backups", f"{spec.name}-backups-wal"])))
    by_key = {a.key: a for a in found}
    catalog, wal = by_key[f"{spec.name}-backups"], by_key[f"{spec.name}-backups-wal"]
    rows = json.loads(catalog.data) if isinstance(catalog.data, str) else catalog.data
    assert [list(r) for r in rows] == [["label", "type", "repo", "started", "took", "size", "stored", "verified"]]
    assert (rows[0]["type"], rows[0]["repo"], rows[0]["verified"]) == ("full", "repo1", "yes")
    assert catalog.description.startswith(f"**{spec.name}**: restorable from ")
    # The window ends at the last archived WAL when pg_stat_archiver's time of it is at or after pgBackRest's stop
    # time (whole seconds), else at least at the backup's end: the stop segment is archived within that second, so
    # either may be read on an idle cluster (archive_timeout 60 s); both are true sentences, and only those two.
    window = re.search(r"restorable from (\S+ \S+) \(end of (\S+)\) to (at least )?(\S+ \S+) "
                       r"\((last archived WAL|end of the newest backup)\)", catalog.description)
    assert window is not None, catalog.description
    assert window[2] == rows[0]["label"] and (window[3] is None) == (window[5] == "last archived WAL")
    assert window[4] >= window[1], "the window ends no earlier than the backup's end"
    assert "_s" not in catalog.description and "None" not in catalog.description
    wal_rows = json.loads(wal.data) if isinstance(wal.data, str) else wal.data
    assert wal_rows[0]["label"] == rows[0]["label"] and wal_rows[0]["WAL from"].startswith("0000000")


def test_a_deployment_run_is_named_and_tagged_like_a_command_line_run(server: str, spec: ClusterSpec,
                                                                       backed_up: str) -> None:
    """`dbtier serve --spec FILE` serves the cluster's deployments; a run of one carries the cluster's name and tags."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("DBTIER_")}
    env["PREFECT_API_URL"] = server
    log_path = os.path.join(spec.data_root, "serve.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BIN / "dbtier"), "serve", "--spec", backed_up], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        name = f"archive-health/{spec.name}-archive-health"
        deadline = time.monotonic() + 90
        with client_of(server) as client:
            while True:
                try:
                    deployment = client.read_deployment_by_name(name)
                    break
                except ObjectNotFound:
                    assert proc.poll() is None and time.monotonic() < deadline, Path(log_path).read_text()[-2000:]
                    time.sleep(0.5)
        assert set(deployment.tags) == {"dbtier", f"cluster:{spec.name}"}
        with temporary_settings({PREFECT_API_URL: server}):
            run = cast(FlowRun, run_deployment(name, timeout=180))
    finally:
        stop_child(proc)
    assert run.state is not None and run.state.is_completed(), Path(log_path).read_text()[-2000:]
    assert run.name == f"archive-health {spec.name}"
    assert set(run.tags) >= {"dbtier", f"cluster:{spec.name}"}
    assert Path(log_path).read_text().startswith(f"cluster {spec.name} from {backed_up}:")


@contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium driven by ChromeDriver (both from setup's Debian packages), its profile in a fresh
    directory and nothing reaching out; ChromeDriver (and its browser) stopped by ``quit`` after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="dbtier-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def test_the_ui_shows_the_backup_history_picture(server: str, spec: ClusterSpec, backed_up: str) -> None:
    """In a real browser, the backup's artifact page shows the picture, decoded at its full size."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with client_of(server) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{spec.name}-backup-history"])))
    headline = str(artifact.data).split("\n", 1)[0]
    assert headline.startswith(f"**{spec.name}**: size and duration of each of the 1 backup(s) (saved as /")
    saved = Path(headline.rsplit("(saved as ", 1)[1].removesuffix(")")).read_bytes()
    with browser() as driver:
        driver.get(server.removesuffix("/api") + f"/artifacts/artifact/{artifact.id}")
        images = WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "img.markdown-renderer__image"))
        shown = WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "const i = arguments[0]; return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight, i.src] : null",
            images[0]))
        assert "Artifact: " in driver.title
    width, height, src = shown
    assert (width, height) == (900, 450)  # the PNG decoded in the browser: drawn, not a broken-image icon
    assert src.split(",", 1)[1] == base64.b64encode(saved).decode()  # the picture saved beside the catalog
