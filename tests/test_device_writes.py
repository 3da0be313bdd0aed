"""Device writes to guest memory that no page table sees (DMA) must reach the destination.

The tb-dma device writes guest memory through a second mapping the dirty tracker does not
watch, as a disk controller's DMA or a kernel mapping would on a FreeBSD host, and reports
each write in the backend's device write log on completion.  The memory check counts, page
by page, the device's sweeps: a write the engine missed fails it.  The test-only
--dma-unlogged switch leaves writes out of the log, so that the check is shown to catch the
loss at two moments: while rounds run, and the write a pause drains in stop-and-copy.
"""

from __future__ import annotations

import os

import pytest

from harness.config import Guest, MigrationPolicy, TestbedGuest
from tests.test_migration_local import MEMORY, assert_verified, endpoints, migrate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

__all__ = ["endpoints"]  # the module-scoped fixture, shared

DMA_RATE = 2000  # writes/s: a sweep of 65536 pages never wraps during a test


def dma_guest(unlogged: str | None = None, segments: int = 1) -> Guest:
    return Guest(
        name="t", memory=MEMORY, vcpus=2,
        testbed=TestbedGuest(workload="hotset:16M", fill="pattern", segments=segments,
                             dma_rate=DMA_RATE, dma_unlogged=unlogged),
    )  # fmt: skip


def lost_writes(report: dict) -> list[str]:
    return [e for e in report["verification"]["errors"] if "tb-dma" in e]


@pytest.mark.parametrize("segments", [1, 2])
def test_logged_device_writes_arrive(endpoints, segments: int) -> None:
    """With two segments the device's pages lie in the second: the log's segment offsets."""
    report = migrate(endpoints, dma_guest(segments=segments), MigrationPolicy(fixed_rounds=3))
    assert_verified(report)


def test_unlogged_writes_while_running_are_caught(endpoints) -> None:
    report = migrate(endpoints, dma_guest("running"), MigrationPolicy(fixed_rounds=3))
    assert report["status"] == "completed", report.get("error")
    assert report["verification"]["ok"] is False
    assert lost_writes(report)


def test_unlogged_write_drained_by_the_pause_is_caught(endpoints) -> None:
    """Only the request in flight when stop-and-copy pauses the guest goes unlogged."""
    report = migrate(endpoints, dma_guest("drain"), MigrationPolicy(fixed_rounds=3))
    assert report["status"] == "completed", report.get("error")
    assert report["verification"]["ok"] is False
    lost = lost_writes(report)
    assert len(lost) == 1, lost


def test_pages_only_a_device_wrote_are_not_taken_for_untouched(endpoints) -> None:
    """An idle guest that never touches its memory: the only pages holding data are those
    tb-dma wrote through its own mapping, before and during the migration.  The
    populated-pages query must count them (they are in the guest's memory object though
    not in the tracked mapping's page tables), or round 1 sends them as never-populated
    zero ranges and the destination's copies stay zero."""
    guest = Guest(
        name="t", memory=MEMORY, vcpus=1,
        testbed=TestbedGuest(workload="idle", fill="zero", dma_rate=DMA_RATE),
    )  # fmt: skip
    report = migrate(endpoints, guest, MigrationPolicy(fixed_rounds=2))
    assert_verified(report)
