"""The network drills' nft rules, applied for real inside a throwaway network namespace.

Three namespaces stand for a member's host, one of its peers and a client (the machine that runs the flow):

    peer  198.19.250.2 ──veth── 198.19.250.1  host  198.19.250.5 ──veth── 198.19.250.6  client

The rules go in through :func:`dbtier.engines.postgres.network.install` and out through :func:`~dbtier.engines.postgres.network.remove`,
run as root "on the host" (inside its namespace, with a /run of its own), and real TCP connections say what is
cut. The fixture deletes the namespaces (which takes the veths with them) and stops every process it or the
rules' guard started, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbtier.drills import nft
from dbtier.engines.postgres import network
from dbtier.errors import CommandFailed, DbtierError
from dbtier.procs import stop_child
from dbtier.providers.base import Completed, RootRunner

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                                reason="needs root, nft and ip to make network namespaces")

HOST, PEER, CLIENT = "198.19.250.1", "198.19.250.2", "198.19.250.6"
HOST_TO_CLIENT = "198.19.250.5"
PG, OTHER = 15432, 15433  # two listeners on the host (and on the peer and the client)

LISTEN = ("import socket, sys\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n"
          "while True:\n    s.accept()[0].close()\n")
CONNECT = ("import socket, sys\n"
           "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()\n")
#: Inside the host's namespace, a mount namespace whose /run is the test's directory (the guard's pid file).
OWN_RUN = 'mount --bind "$0" /run && exec "$@"'


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=30)


@dataclass
class NetnsHost(RootRunner):
    """Root on a host that is one network namespace of this machine: what the drill's root runner does."""

    host: str
    netns: str
    run_dir: str

    def run_as_root(self, argv: Sequence[str], *, timeout: float = 900) -> Completed:
        full = ["ip", "netns", "exec", self.netns, "unshare", "--mount", "sh", "-c", OWN_RUN, self.run_dir, *argv]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise CommandFailed(argv, done.returncode, done.stdout, done.stderr)
        return Completed(list(argv), done.returncode, done.stdout, done.stderr)


@dataclass
class Wired:
    host: NetnsHost
    names: dict[str, str]  # role -> namespace

    def reaches(self, source: str, address: str, port: int, timeout: float = 2.0) -> bool:
        """A TCP connection from namespace ``source`` to ``address:port`` completes."""
        done = subprocess.run(["ip", "netns", "exec", self.names[source], sys.executable, "-c", CONNECT, address,
                               str(port), str(timeout)], capture_output=True, timeout=timeout + 20)
        return done.returncode == 0

    def table_listed(self) -> bool:
        try:
            self.host.run_as_root(nft.list_argv(), timeout=30)
        except CommandFailed:
            return False
        return True

    def guard_pid(self) -> int | None:
        pidfile = Path(self.host.run_dir) / Path(nft.GUARD_PIDFILE).name
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text.isdigit() else None


def wait_until(check: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes().find(b"dbtier-drill-guard") >= 0


@pytest.fixture(scope="module")
def host_peer_and_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wired]:
    """Three namespaces wired host-peer and host-client, each with a listener on two ports."""
    tag = f"dbt{os.getpid() % 100000}"
    names = {role: f"{tag}-{role}" for role in ("host", "peer", "client")}
    run_dir = str(tmp_path_factory.mktemp("host-run"))
    listeners: list[subprocess.Popen[bytes]] = []
    wired = Wired(NetnsHost(HOST, names["host"], run_dir), names)
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for other, near, far in (("peer", f"{HOST}/30", f"{PEER}/30"), ("client", f"{HOST_TO_CLIENT}/30", f"{CLIENT}/30")):
            sh("ip", "link", "add", "eth-" + other, "netns", names["host"], "type", "veth", "peer", "name", "eth-host",
               "netns", names[other])
            sh("ip", "-n", names["host"], "addr", "add", near, "dev", "eth-" + other)
            sh("ip", "-n", names[other], "addr", "add", far, "dev", "eth-host")
            sh("ip", "-n", names["host"], "link", "set", "eth-" + other, "up")
            sh("ip", "-n", names[other], "link", "set", "eth-host", "up")
            sh("ip", "-n", names[other], "route", "add", "default", "via", near.split("/")[0])
        for ns in names.values():
            for port in (PG, OTHER):
                listeners.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, str(port)],
                                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
        address = {"host": HOST, "peer": PEER, "client": CLIENT}
        for role in names:
            for port in (PG, OTHER):
                assert wait_until(lambda r=role, p=port: wired.reaches(r, address[r], p, 1.0)), f"{role}:{port} listens"
        yield wired
    finally:
        guard = wired.guard_pid()
        if guard is not None and _alive(guard):
            os.killpg(guard, signal.SIGKILL)
        for proc in listeners:
            stop_child(proc, 5)
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture
def wired(host_peer_and_client: Wired) -> Iterator[Wired]:
    """The namespaces with no drill table on the host, before and after the test."""
    network.remove(host_peer_and_client.host)
    yield host_peer_and_client
    network.remove(host_peer_and_client.host)


def test_a_partition_cuts_the_peer_both_ways_and_leaves_the_client(wired: Wired) -> None:
    said = network.install(wired.host, nft.partition([PEER]), guard_s=300)
    assert said.startswith(f"{HOST}: nft table inet dbtier_drill loaded; detached guard pid ")
    assert not wired.reaches("peer", HOST, PG)
    assert wired.reaches("client", HOST, PG)
    # the host's own connections: to the peer cut, to the client not
    assert not wired.reaches("host", PEER, OTHER)
    assert wired.reaches("host", CLIENT, OTHER)
    guard = wired.guard_pid()
    assert guard is not None and _alive(guard)

    said = network.remove(wired.host)
    assert said.startswith(f"{HOST}: nft table inet dbtier_drill deleted after dropping ")
    assert int(said.split("dropping ")[1].split()[0]) > 0
    assert wired.reaches("peer", HOST, PG) and wired.reaches("host", PEER, OTHER)
    assert not wired.table_listed()
    assert wait_until(lambda: not _alive(guard)), "removing the fault stops its guard"


def test_cut_ports_cuts_only_those_ports_of_the_peer(wired: Wired) -> None:
    network.install(wired.host, nft.cut_ports([PEER], [PG]), guard_s=300)
    assert not wired.reaches("peer", HOST, PG)
    assert wired.reaches("peer", HOST, OTHER)
    assert wired.reaches("client", HOST, PG)
    assert not wired.reaches("host", PEER, PG)
    assert wired.reaches("host", PEER, OTHER)


def test_packet_loss_drops_what_crosses_the_host_but_spares_the_drills_port(wired: Wired) -> None:
    network.install(wired.host, nft.packet_loss(100, spared_ports=(OTHER,)), guard_s=300)
    assert not wired.reaches("client", HOST, PG)
    assert wired.reaches("client", HOST, OTHER)
    # a share below 100 % loads too (numgen random works in a network namespace)
    network.install(wired.host, nft.packet_loss(network.LOSS_PERCENT), guard_s=300)
    listing = wired.host.run_as_root(["nft", "list", "table", "inet", "dbtier_drill"]).out
    assert f"numgen random mod 100 < {network.LOSS_PERCENT}" in listing
    assert listing.count("table inet dbtier_drill") == 1  # the second install replaced the first


def test_the_guard_on_the_host_ends_a_fault_the_drill_never_removed(wired: Wired) -> None:
    network.install(wired.host, nft.partition([PEER]), guard_s=1)
    assert wait_until(lambda: not wired.table_listed()), "the guard deletes the table"
    assert wired.reaches("peer", HOST, PG)
    assert network.remove(wired.host) == f"{HOST}: no drill table left to delete (its guard had deleted it)"


class NoNft(NetnsHost):
    """The same host, with no ``nft`` on its PATH."""

    def run_as_root(self, argv: Sequence[str], *, timeout: float = 900) -> Completed:
        return super().run_as_root(["env", "PATH=/nonexistent", "/bin/sh", *argv[1:]], timeout=timeout)


def test_a_host_without_nft_is_one_line(wired: Wired) -> None:
    with pytest.raises(DbtierError) as caught:
        network.install(NoNft(HOST, wired.host.netns, wired.host.run_dir), nft.partition([PEER]), guard_s=300)
    line = caught.value.one_line()
    assert line.startswith(f"{HOST}: loading the drill's nft rules failed (")
    assert "nft is not installed on this host" in line
    assert line.endswith("the host needs nftables (scripts/host-setup.sh installs it) and root in its own network "
                         "namespace")
    assert wired.reaches("peer", HOST, PG)
