"""Migrations across the two namespace hosts, over real SSH: the harness as users run it.

Brings up its own test bed (own prefix, ranges and state directory, so it never
touches one a developer has up), deploys the programs over SFTP and migrates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from flow_cases import CASES, assert_expected, run_testbed_case

from harness.config import Guest, MigrationPolicy, TestbedGuest, load_hosts
from harness.deploy import endpoints_for
from harness.migrate import (
    Endpoint,
    FlowOptions,
    PingPong,
    quiet,
)
from harness.netns import Testbed, TestbedSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the namespace test bed needs root")

GUEST = Guest(name="pp", memory=128 << 20, vcpus=2,
              testbed=TestbedGuest(workload="hotset:16M@20000", fill="pattern"))  # fmt: skip


@pytest.fixture(scope="module")
def hosts():
    spec = TestbedSpec(prefix="bmigm", ipv4_range="10.75.0.0/16",
                       ipv6_range="fd4d:6967:7275::/48",
                       state_dir=Path("/var/lib/bhyve-migration-testbed-pytest-mig"))  # fmt: skip
    testbed = Testbed(spec)
    config = load_hosts(testbed.up())
    endpoints = endpoints_for(config)
    yield config, endpoints
    for endpoint in endpoints:
        endpoint.runner.close()
    testbed.down()


def _leftovers(ep: Endpoint) -> tuple[list[str], list[str]]:
    """This host's tbvm/tbctl processes (those using its workdir), control sockets, keys."""
    listing = ep.runner.run(["sh", "-c", "pgrep -a -x tbvm; pgrep -a -x tbctl; true"]).stdout
    procs = [line for line in listing.splitlines() if ep.runner.workdir in line]
    files = ep.runner.run(["sh", "-c", f"ls {ep.runner.workdir}"]).stdout.split()
    return procs, [f for f in files if f.endswith((".ctl", ".key"))]


def test_migration_across_hosts_is_verified(hosts) -> None:
    config, (src, dst) = hosts
    reports = PingPong(src, dst, GUEST, MigrationPolicy(), FlowOptions(run_after_s=0.5)).run(
        1, quiet())
    report = reports[0].as_json()
    assert report["status"] == "completed", report.get("error")
    assert report["hosts"] == {"source": src.name, "destination": dst.name}
    assert report["verification"]["ok"], report["verification"]
    assert report["verification"]["pages_checked"] == GUEST.memory // 4096
    assert report["downtime_probe_ms"] is not None  # the guest answered from both hosts
    assert report["guest_runs_on"] == "destination"


def test_ipv6_migration_link(hosts) -> None:
    config, (src, dst) = hosts
    v6 = [a for a in config.host(dst.name).migration_addresses if ":" in a][0]
    dst6 = Endpoint(dst.runner, dst.bindir, v6, dst.probe_address, dst.name)
    report = PingPong(src, dst6, GUEST, MigrationPolicy(encrypt=True), FlowOptions()).run(
        1, quiet())[0]
    assert report.status == "completed", report.error
    assert report.encrypted is True
    assert report.verification["ok"]


@pytest.mark.parametrize("name", ["destination-killed", "lose-running", "die-after-go"])
def test_failure_cases_across_hosts(hosts, name: str) -> None:
    """tests/test_flow_drivers.py's cases over SSH between the namespace hosts: the
    destination dies mid-round, or RUNNING never arrives after GO (a real source past
    GO, resolved by the harness to exactly one guest)."""
    config, endpoints = hosts
    case = next(c for c in CASES if c.name == name)
    assert_expected(run_testbed_case(case, endpoints), case)


def test_ten_ping_pong_migrations_leak_nothing(hosts) -> None:
    config, (src, dst) = hosts
    reports = PingPong(src, dst, GUEST, MigrationPolicy(),
                       FlowOptions(warmup_s=0.2, run_after_s=0.2)).run(10, quiet())  # fmt: skip
    assert [r.status for r in reports] == ["completed"] * 10
    assert all(r.verification["ok"] for r in reports)
    assert [r.hosts["source"] for r in reports[:2]] == [src.name, dst.name]
    time.sleep(0.5)
    for ep in (src, dst):
        procs, files = _leftovers(ep)
        assert procs == [], f"{ep.name}: processes left: {procs}"
        assert files == [], f"{ep.name}: files left: {files}"
