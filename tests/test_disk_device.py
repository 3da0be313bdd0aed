"""The test guest's disk (tb-disk): written while the guest runs, checked block by block.

tb-disk writes its image file from a device thread, alternating between a hot set and a
sweep; each block holds its write count and a pattern derived from it, so the check knows
every block's content from the device's position alone.  An image may start empty: a
block never written is zeros.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.migrate import FlowOptions, disk_image, start_guest
from tests.test_migration_local import MEMORY, assert_verified, endpoints, migrate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

__all__ = ["endpoints"]  # the module-scoped fixture, shared

DISK = 16 << 20
BLOCK = 4096


def disk_guest() -> Guest:
    return Guest(
        name="d", memory=MEMORY, vcpus=2,
        testbed=TestbedGuest(workload="hotset:16M", disk=DISK, disk_hot=1 << 20,
                             disk_rate=2000),
    )  # fmt: skip


def written_blocks(image: Path) -> int:
    data = image.read_bytes()
    return sum(1 for off in range(0, len(data), BLOCK) if data[off:off + 8] != bytes(8))


def test_disk_is_written_and_checked_block_by_block(endpoints) -> None:
    guest, tag = disk_guest(), secrets.token_hex(4)
    running = start_guest(endpoints[0], guest, FlowOptions(), tag)
    try:
        image = Path(disk_image(endpoints[0], guest, tag))
        # The hot set (256 blocks) and the sweep's first blocks: at 2000 writes/s about a
        # second, longer on a loaded machine.
        deadline = time.monotonic() + 30.0
        while written_blocks(image) <= 256 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running.verify()["ok"] is True
        assert image.stat().st_size == DISK
        assert 256 < written_blocks(image) < DISK // BLOCK
        # The last block is far ahead of the sweep: a write there is not the device's.
        with image.open("r+b") as f:
            f.seek(DISK - BLOCK)
            f.write((7).to_bytes(8, "little"))
        result = running.verify()
        assert result["ok"] is False
        assert any(f"tb-disk block {DISK // BLOCK - 1}:" in e for e in result["errors"])
    finally:
        running.stop()


def test_shared_storage_hands_the_disk_over(endpoints, tmp_path) -> None:
    """Both hosts open one image: the source's writes end at its pause (drained, flushed)
    and the destination's device goes on from the migrated position, block for block."""
    guest = disk_guest()
    guest.testbed.disk_image = str(tmp_path / "shared.disk")
    report = migrate(endpoints, guest)
    assert_verified(report)
    assert written_blocks(Path(guest.testbed.disk_image)) > 256


def test_the_disk_check_catches_a_disk_left_behind(endpoints) -> None:
    """Without --disks the engine assumes shared storage and moves no disk blocks: with
    separate images the destination's empty one fails the check (the check is real; with
    --disks tests/test_disk_migration.py passes it)."""
    report = migrate(endpoints, disk_guest())
    assert report["status"] == "completed", report.get("error")
    assert report["disk_bytes"] == 0
    assert report["verification"]["ok"] is False
    assert any("tb-disk block" in e for e in report["verification"]["errors"])


def test_the_same_guest_with_its_disk_moved_passes(endpoints) -> None:
    report = migrate(endpoints, disk_guest(), MigrationPolicy(disks=True))
    assert_verified(report)
    assert report["disk_bytes"] > 0
