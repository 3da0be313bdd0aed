"""Disk migration without shared storage (--disks), between two local VM processes.

The source guest's tb-disk is written by its device thread all through the migration;
the destination starts from an empty image of its own.  The destination's check walks
memory and every disk block; a failure before GO must leave the source's disk as the
guest wrote it, the guest running there, and the destination's image marked incomplete.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import pytest
from test_protocol_peer import GUEST, Receiver

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.migrate import FlowOptions, disk_image, last_json, migrate_once, quiet, start_guest
from tests.test_migration_local import MEMORY, assert_verified, endpoints

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

__all__ = ["endpoints"]  # the module-scoped fixture, shared

DISK = 32 << 20
BLOCK = 4096


def disk_guest(disk: int = DISK) -> Guest:
    return Guest(
        name="dm", memory=MEMORY, vcpus=2,
        testbed=TestbedGuest(workload="hotset:16M", disk=disk, disk_hot=1 << 20,
                             disk_rate=4000),
    )  # fmt: skip


def test_disk_moves_with_the_guest_into_an_empty_image(endpoints) -> None:
    guest, tag = disk_guest(), secrets.token_hex(4)
    flow = FlowOptions(warmup_s=0.5, run_after_s=0.5)
    target = Path(disk_image(endpoints[1], guest, tag))
    assert not target.exists()  # the destination creates it empty, sparse
    src = start_guest(endpoints[0], guest, flow, tag)
    time.sleep(flow.warmup_s)
    report = migrate_once(src, endpoints[1], guest, MigrationPolicy(disks=True), flow, tag,
                          quiet()).report.as_json()  # fmt: skip
    # The destination's check covers memory and every disk block.
    assert_verified(report)
    rounds = report["rounds"]
    assert rounds[0]["disk_dirty_blocks"] == DISK // BLOCK  # round 1: the whole disk
    # The writer ran until the pause: later rounds and the final one owed blocks.
    assert sum(r["disk_dirty_blocks"] for r in rounds[1:]) > 0
    assert rounds[-1]["final"] and rounds[-1]["disk_dirty_blocks"] > 0
    # Most of the disk was never written: zero ranges, not 4 KiB blocks.
    assert rounds[0]["disk_zero_blocks"] > DISK // BLOCK // 2
    assert 0 < report["disk_bytes"] < DISK
    assert report["disk_rounds"] == len(rounds)
    assert not Path(f"{target}.incomplete").exists()


def test_the_disk_sizes_must_agree(endpoints) -> None:
    """A destination configured with another disk is refused before anything moves."""
    key = secrets.token_bytes(32)
    tag = secrets.token_hex(4)
    small = f"{endpoints[1].runner.workdir}/{tag}-small.disk"
    rx = Receiver(endpoints, key, "--disk", str(8 << 20), "--disk-image", small)
    guest = Guest(name=GUEST.name, memory=GUEST.memory, vcpus=GUEST.vcpus,
                  testbed=TestbedGuest(workload=GUEST.testbed.workload, disk=16 << 20))  # fmt: skip
    src = start_guest(endpoints[0], guest, FlowOptions(), tag)
    key_path = f"{endpoints[0].runner.workdir}/{tag}.key"
    endpoints[0].runner.put_text(key_path, key.hex() + "\n")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{rx.port}", "--key-file", key_path,
                        "--disks", check=False)  # fmt: skip
        result = last_json(res.stdout, "tbctl migrate")
        assert res.returncode == 1, res.stdout
        assert result["guest_runs_on"] == "source"
        assert "disk 0 differs: source 16777216 bytes" in result["error"]["message"], result
        assert not Path(f"{small}.incomplete").exists()  # nothing was written
        assert src.verify()["ok"]
    finally:
        rx.proc.kill()
        src.stop()


def test_disks_asked_for_a_guest_without_one(endpoints) -> None:
    key = secrets.token_bytes(32)
    tag = secrets.token_hex(4)
    rx = Receiver(endpoints, key)
    src = start_guest(endpoints[0], GUEST, FlowOptions(), tag)
    key_path = f"{endpoints[0].runner.workdir}/{tag}.key"
    endpoints[0].runner.put_text(key_path, key.hex() + "\n")
    try:
        res = src.tbctl("migrate", "--to", f"127.0.0.1:{rx.port}", "--key-file", key_path,
                        "--disks", check=False)  # fmt: skip
        result = last_json(res.stdout, "tbctl migrate")
        assert res.returncode == 1, res.stdout
        assert "the guest has no disk" in result["error"]["message"], result
        assert result["guest_runs_on"] == "source"
    finally:
        rx.proc.kill()
        src.stop()


def _allocated(path: Path) -> int:
    return path.stat().st_blocks if path.exists() else 0


def test_failure_before_go_leaves_the_source_disk_untouched(endpoints) -> None:
    """The destination dies while it writes disk blocks: the source rolls back, its disk
    holds exactly what its guest wrote, and the destination's image stays marked."""
    key = secrets.token_bytes(32)
    tag = secrets.token_hex(4)
    guest = Guest(name=GUEST.name, memory=GUEST.memory, vcpus=GUEST.vcpus,
                  testbed=TestbedGuest(workload=GUEST.testbed.workload, disk=DISK,
                                       disk_hot=1 << 20, disk_rate=4000))  # fmt: skip
    target = Path(f"{endpoints[1].runner.workdir}/{tag}-in.disk")
    rx = Receiver(endpoints, key, "--disk", str(DISK), "--disk-hot", str(1 << 20),
                  "--disk-rate", "4000", "--disk-image", str(target))  # fmt: skip
    src = start_guest(endpoints[0], guest, FlowOptions(), tag)
    source_image = Path(disk_image(endpoints[0], guest, tag))
    key_path = f"{endpoints[0].runner.workdir}/{tag}.key"
    endpoints[0].runner.put_text(key_path, key.hex() + "\n")
    try:
        time.sleep(0.5)
        before = source_image.stat()
        # 64 MiB of memory and then the disk at 8 MB/s: round 1 takes seconds.
        proc = endpoints[0].runner.spawn([
            endpoints[0].tool("tbctl"), "--control", src.control, "migrate",
            "--to", f"127.0.0.1:{rx.port}", "--key-file", key_path, "--disks",
            "--bandwidth", "8M",
        ])  # fmt: skip
        deadline = time.monotonic() + 30
        while _allocated(target) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _allocated(target) > 0, "the destination never wrote a disk block"
        assert Path(f"{target}.incomplete").exists()  # marked before the first block
        os.kill(rx.proc.pid, signal.SIGKILL)
        code = proc.wait(60)
        result = last_json(proc.output(), "tbctl migrate")
        assert code == 1, proc.output()
        assert result["guest_runs_on"] == "source"
        assert result["error"]["phase"] == "precopy", result
        # The guest runs on and its disk is block for block what its device wrote:
        # a byte the migration had written there would fail this check.
        first = src.verify()
        assert first["ok"], first["errors"]
        time.sleep(0.3)
        assert src.verify()["iterations"] > first["iterations"]
        assert source_image.stat().st_size == before.st_size
        # The destination's image stays marked, and no guest starts on it.
        assert Path(f"{target}.incomplete").exists()
        run = endpoints[1].runner.run([
            endpoints[1].tool("tbvm"), "run", "--name", "x", "--memory", "16M",
            "--vcpus", "1", "--disk", str(DISK), "--disk-image", str(target),
            "--control", f"{endpoints[1].runner.workdir}/{tag}-x.ctl",
        ], check=False, timeout=30)  # fmt: skip
        assert run.returncode != 0
        assert "marked incomplete" in run.stderr + run.stdout
    finally:
        rx.proc.kill()
        src.stop()
