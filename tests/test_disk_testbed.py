"""Disk migration across the two namespace hosts, over real SSH, each host its own image.

Brings up its own test bed (own prefix, ranges and state directory).  Run it under the
test bed lock: `flock /tmp/bmig-testbed.lock python3 -m pytest tests/test_disk_testbed.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.config import Guest, MigrationPolicy, TestbedGuest, load_hosts
from harness.deploy import endpoints_for
from harness.migrate import FlowOptions, PingPong, quiet
from harness.netns import Testbed, TestbedSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the namespace test bed needs root")

DISK = 64 << 20
GUEST = Guest(name="dk", memory=128 << 20, vcpus=2,
              testbed=TestbedGuest(workload="hotset:16M@20000", fill="pattern", disk=DISK,
                                   disk_hot=2 << 20, disk_rate=4000))  # fmt: skip


@pytest.fixture(scope="module")
def hosts():
    spec = TestbedSpec(prefix="bmigd", ipv4_range="10.73.0.0/16",
                       ipv6_range="fd4d:6967:7264::/48",
                       state_dir=Path("/var/lib/bhyve-migration-testbed-pytest-disk"))  # fmt: skip
    testbed = Testbed(spec)
    config = load_hosts(testbed.up())
    endpoints = endpoints_for(config)
    yield endpoints
    for endpoint in endpoints:
        endpoint.runner.close()
    testbed.down()


def test_disk_moves_across_hosts_there_and_back(hosts) -> None:
    """There and back, each leg into a fresh empty image on the other host, the guest's
    disk written all the while: memory and every block check out after each leg."""
    src, dst = hosts
    reports = PingPong(src, dst, GUEST, MigrationPolicy(disks=True),
                       FlowOptions(run_after_s=0.5)).run(2, quiet())  # fmt: skip
    for rep in (r.as_json() for r in reports):
        assert rep["status"] == "completed", rep.get("error")
        assert rep["verification"]["ok"], rep["verification"]
        assert rep["rounds"][0]["disk_dirty_blocks"] == DISK // 4096
        assert rep["rounds"][-1]["disk_dirty_blocks"] > 0  # written up to the pause
        assert rep["disk_bytes"] > 0
    assert [r.hosts["source"] for r in reports] == [src.name, dst.name]
