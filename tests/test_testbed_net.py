"""The local test bed's network: guard routes first, idempotent up, reachability, down.

Runs as root with its own prefix, ranges and state directory, so that it never touches a
test bed someone brought up with the defaults.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from harness import netns
from harness.config import load_hosts
from harness.ssh import SSHRunner, run_parallel, runners_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

SPEC = netns.TestbedSpec(
    prefix="bmigt",
    ipv4_range="10.78.0.0/16",
    ipv6_range="fd4d:6967:7274::/48",
    state_dir=Path("/var/lib/bhyve-migration-testbed-pytest-net"),
)


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


@pytest.fixture(scope="module")
def bed():
    tb = netns.Testbed(SPEC)
    tb.down()  # leftovers of an interrupted run
    tb.up()
    yield tb
    tb.down()


def test_guard_routes_come_before_any_address(bed: netns.Testbed) -> None:
    ops = [" ".join(op) for op in bed.ops]
    guards = [i for i, op in enumerate(ops) if "route add unreachable" in op]
    addrs = [i for i, op in enumerate(ops) if " addr " in f" {op} "]
    assert len(guards) == 2 and addrs
    assert max(guards) < min(addrs)
    assert "unreachable 10.78.0.0/16" in sh("ip", "-4", "route", "show", "type", "unreachable")
    assert "unreachable fd4d:6967:7274::/48" in sh("ip", "-6", "route", "show")


def test_root_namespace_reaches_only_the_bridge_subnet(bed: netns.Testbed) -> None:
    """The migration link is inside the namespaces only: from here it hits the guard."""
    for address in ("10.78.1.2", "10.78.200.1"):
        with socket.socket() as sock:
            sock.settimeout(2)
            code = sock.connect_ex((address, 22))
        assert code in (errno.ENETUNREACH, errno.EHOSTUNREACH), os.strerror(code)


def test_up_again_changes_nothing(bed: netns.Testbed) -> None:
    pids = [bed.sshd_pid(ns) for ns in SPEC.namespaces]
    again = netns.Testbed(SPEC)
    again.up()
    made = [op for op in again.ops if "add" in op or "ssh-keygen" in op or "unshare" in op]
    assert made == [], made
    assert [again.sshd_pid(ns) for ns in SPEC.namespaces] == pids
    pieces = again.status()
    assert all(p.ok for p in pieces), [p for p in pieces if not p.ok]


def test_hosts_reachable_over_ssh_with_pinned_keys(bed: netns.Testbed) -> None:
    config = load_hosts(SPEC.hosts_file)  # validates, key and known_hosts included
    assert set(config.hosts) == set(SPEC.namespaces)
    names = run_parallel(runners_for(config), lambda r: r.run(["hostname"]).stdout.strip())
    assert names == {"bmigt-a": "bmigt-a", "bmigt-b": "bmigt-b"}
    known = SPEC.known_hosts.read_text()
    assert "10.78.0.11 ssh-ed25519" in known and "10.78.0.12 ssh-ed25519" in known


def test_migration_link_ipv4_and_ipv6(bed: netns.Testbed) -> None:
    a, b = SPEC.namespaces
    for address in SPEC.mig_addrs(b):
        if shutil.which("ping"):
            out = subprocess.run(
                ["ip", "netns", "exec", a, "ping", "-c", "1", "-W", "2", address],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
        # a TCP round trip across the link as well (ping is not installed everywhere)
        family = "AF_INET6" if ":" in address else "AF_INET"
        server = subprocess.Popen(
            ["ip", "netns", "exec", b, "python3", "-c",
             "import socket,sys\n"
             f"s=socket.socket(socket.{family}); s.bind(({address!r}, 24999)); s.listen()\n"
             "print('ready', flush=True)\n"
             "c,_=s.accept(); c.sendall(c.recv(64).upper())\n"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = subprocess.run(
            ["ip", "netns", "exec", a, "python3", "-c",
             f"import socket; s=socket.create_connection(({address!r}, 24999), timeout=5);"
             "s.sendall(b'ping'); print(s.recv(64).decode())"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        server.wait(10)
        assert client.stdout.strip() == "PING", client.stderr


def test_shaped_link(bed: netns.Testbed) -> None:
    a, _ = SPEC.namespaces
    shaped = netns.Testbed(netns.TestbedSpec(**{**SPEC.__dict__, "bandwidth": "1gbit"}))
    shaped.up()
    assert "tbf" in sh("ip", "netns", "exec", a, "tc", "qdisc", "show", "dev", "mig0")
    netns.Testbed(SPEC).up()  # back to unshaped
    assert "tbf" not in sh("ip", "netns", "exec", a, "tc", "qdisc", "show", "dev", "mig0")


def test_status_json_and_hosts_file_location(bed: netns.Testbed) -> None:
    state = json.loads(SPEC.state_file.read_text())
    assert state["hosts_file"] == str(SPEC.hosts_file)
    assert netns.load_spec(SPEC.state_dir) == SPEC


def test_overlap_is_refused_before_any_change() -> None:
    bad = netns.TestbedSpec(
        prefix="bmigx", ipv4_range="127.77.0.0/16", ipv6_range="fd4d:6967:7275::/48",
        state_dir=Path("/var/lib/bhyve-migration-testbed-pytest-x"),
    )  # fmt: skip
    tb = netns.Testbed(bad)
    with pytest.raises(netns.TestbedError, match="overlap") as info:
        tb.up()
    assert "127.0.0.0/8" in str(info.value)
    assert tb.ops == []  # nothing was run
    assert "bmigx" not in sh("ip", "netns", "list")
    assert not bad.state_dir.exists()


def test_find_conflicts_pure() -> None:
    addrs = [
        {"ifname": "eth9", "addr_info": [{"local": "10.78.5.5", "prefixlen": 24}]},
        {"ifname": "bmigt-br", "addr_info": [{"local": "10.78.0.1", "prefixlen": 24}]},
        {"ifname": "eth8", "addr_info": [{"local": "fd4d:6967:7274:9::1", "prefixlen": 64}]},
    ]
    routes = [
        {"dst": "default", "dev": "eth0"},
        {"dst": "0.0.0.0/0", "dev": "eth0"},
        {"type": "unreachable", "dst": "10.78.0.0/16"},  # our own guard
        {"dst": "10.0.0.0/8", "dev": "tun0"},
        {"dst": "10.78.0.0/24", "dev": "bmigt-br"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
    ]
    found = netns.find_conflicts(SPEC, addrs, routes)
    assert found == [
        "address 10.78.5.5/24 on eth9 overlaps 10.78.0.0/16",
        "address fd4d:6967:7274:9::1/64 on eth8 overlaps fd4d:6967:7274::/48",
        "route 10.0.0.0/8 dev tun0 overlaps 10.78.0.0/16",
    ]


def test_bad_specs_are_refused() -> None:
    with pytest.raises(netns.TestbedError, match="too small"):
        netns.TestbedSpec(ipv4_range="10.78.0.0/24")
    with pytest.raises(netns.TestbedError, match="prefix"):
        netns.TestbedSpec(prefix="much-too-long-prefix")
    with pytest.raises(netns.TestbedError, match="not a rate"):
        netns.TestbedSpec(bandwidth="fast")


def test_down_leaves_nothing() -> None:
    """Runs last in this module: a separate bed, taken down and checked piece by piece."""
    spec = netns.TestbedSpec(
        prefix="bmigd", ipv4_range="10.76.0.0/16", ipv6_range="fd4d:6967:7276::/48",
        state_dir=Path("/var/lib/bhyve-migration-testbed-pytest-down"),
    )  # fmt: skip
    tb = netns.Testbed(spec)
    tb.up()
    pids = [tb.sshd_pid(ns) for ns in spec.namespaces]
    runner = SSHRunner.from_config(load_hosts(spec.hosts_file), "bmigd-a")
    proc = runner.spawn(["sh", "-c", "echo started; exec sleep 300"])  # goes down too
    proc.wait_line("started", 10)
    assert proc.pid is not None
    # What an interrupted migration can leave on a host: its key file and a control socket.
    work = spec.workdir("bmigd-a")
    runner.put_text(f"{work}/migration-left.key", "00\n")
    left_socket = socket.socket(socket.AF_UNIX)
    left_socket.bind(str(work / "left-in.ctl"))
    left_socket.close()
    assert (work / "migration-left.key").exists() and (work / "left-in.ctl").exists()
    removed = tb.down()
    assert any("namespace bmigd-a" in r for r in removed)
    assert "bmigd" not in sh("ip", "netns", "list")
    assert "bmigd" not in sh("ip", "link", "show")
    assert "10.76.0.0/16" not in sh("ip", "-4", "route", "show", "table", "all")
    assert "fd4d:6967:7276" not in sh("ip", "-6", "route", "show", "table", "all")
    for pid in [*pids, proc.pid]:
        assert pid is not None and not netns._alive(pid)  # gone (or a zombie being reaped)
    assert not spec.state_dir.exists()  # with the key files and sockets in the workdirs
    assert netns.Testbed(spec).down() == []  # twice is fine
    runner.close()
