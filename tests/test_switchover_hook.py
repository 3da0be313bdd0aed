"""The pause-before-switchover hook and the disks' hand-over, end to end on two local
test-bed VM processes.

The guest has a disk that is not shared: each host has its own image, and nothing but the
hook copies it.  A hook that copies the source's image to the destination's while the
guest is paused stands in for `zfs send -i | zfs recv`: the destination's block-by-block
disk check passes only if the copy landed before the guest ran there (without the hook
the same check fails: test_without_the_hook_the_disk_is_stale).  A hook that fails or
hangs, or no go-ahead at all, rolls the migration back: the guest runs on the source and
its memory and disk check pass there.  Needs root (userfaultfd for kernel-mode faults).
"""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.events import EventLog, PausedEvent
from harness.local import local_endpoints
from harness.migrate import (
    Endpoint,
    FlowOptions,
    disk_args,
    guest_args,
    migrate_once,
    quiet,
    start_guest,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

# A small hot set: the sweep soon passes it, so blocks written before the hand-over stay
# wrong on a destination that did not get them, whatever the destination writes later.
GUEST = Guest(
    name="hk", memory=32 << 20, vcpus=1,
    testbed=TestbedGuest(workload="hotset:8M", fill="pattern", segments=1, disk=8 << 20,
                         disk_hot=64 << 10, disk_rate=2000),
)  # fmt: skip
# The hook's "disk transfer" (the zfs send of a real host), and what the destination
# said about itself meanwhile.
COPY_DISK = 'cp "$BMIG_SOURCE_DISK" "$BMIG_DESTINATION_DISK"'
DEST_STATUS = '"$BMIG_TBCTL" --control "$BMIG_DESTINATION_CONTROL" guest-status'


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory) -> tuple[Endpoint, Endpoint]:
    return local_endpoints(tmp_path_factory.mktemp("hook"))


def migrate(endpoints, hook: str | None, timeout_s: float = 10.0, streams: int = 1,
            **flow) -> dict:  # fmt: skip
    opts = FlowOptions(warmup_s=0.5, run_after_s=0.5, **flow)
    policy = MigrationPolicy(switchover_hook=hook, switchover_timeout=timeout_s,
                             streams=streams)  # fmt: skip
    tag = secrets.token_hex(4)
    src = start_guest(endpoints[0], GUEST, opts, tag)
    time.sleep(opts.warmup_s)
    return migrate_once(src, endpoints[1], GUEST, policy, opts, tag, quiet()).report.as_json()


def assert_rolled_back(report: dict) -> None:
    assert report["status"] == "cancelled", report.get("error")
    assert report["guest_runs_on"] == "source"
    assert report["error"]["side"] == "source" and report["error"]["phase"] == "stopcopy"
    ver = report["verification"]
    assert ver["where"] == "source" and ver["ok"], ver.get("errors")
    assert report["destination_exit"] not in (0, None), report["destination_exit"]


def test_the_hooks_work_is_on_the_destination_before_the_guest_runs_there(endpoints) -> None:
    report = migrate(endpoints, f"{COPY_DISK} && {DEST_STATUS} && sleep 0.3")
    assert report["status"] == "completed", report.get("error")
    ver = report["verification"]
    # Memory, and every block of the destination's own image, as the workload wrote it.
    assert ver["where"] == "destination" and ver["ok"], ver.get("errors")
    hook = report["switchover_hook"]
    assert hook["outcome"] == "continued" and hook["exit_status"] == 0
    assert hook["dirty_pages"] > 0  # reported before the final round was sent
    # While the hook ran, the destination had the guest but did not run it.
    status = json.loads(hook["output"].strip().splitlines()[-1])
    assert status == {"state": "receiving", "guest_runs_here": False}
    # The downtime splits into its parts, the hook's wait among them.
    parts = (report["downtime_memory_ms"], report["downtime_hook_ms"],
             report["downtime_state_ms"])  # fmt: skip
    assert report["downtime_hook_ms"] >= hook["duration_ms"] >= 300
    assert sum(parts) == pytest.approx(report["downtime_ms"], abs=0.01)
    print(f"downtime {report['downtime_ms']:.1f} ms = memory {parts[0]:.1f} + hook "
          f"{parts[1]:.1f} + state {parts[2]:.1f}; the hook itself ran "
          f"{hook['duration_ms']:.1f} ms")  # fmt: skip


def test_an_image_renamed_into_place_is_the_disk_the_destination_runs(endpoints) -> None:
    """The destination opened its image at start-up; a hook that writes a new file and
    renames it over that path (as rsync does) is seen only because the destination
    reopens its images before READY (migration_storage.c)."""
    report = migrate(endpoints, 'cp "$BMIG_SOURCE_DISK" "$BMIG_DESTINATION_DISK.new" && '
                                'mv "$BMIG_DESTINATION_DISK.new" "$BMIG_DESTINATION_DISK"')
    assert report["status"] == "completed", report.get("error")
    ver = report["verification"]
    assert ver["where"] == "destination" and ver["ok"], ver.get("errors")


def test_without_the_hook_the_disk_is_stale(endpoints) -> None:
    """The check above can fail: the same guest without the copy fails it."""
    report = migrate(endpoints, None)
    assert report["status"] == "completed", report.get("error")
    ver = report["verification"]
    assert not ver["ok"] and any("tb-disk block" in e for e in ver["errors"]), ver


def test_a_failing_hook_rolls_back(endpoints) -> None:
    report = migrate(endpoints, "echo no snapshot today; exit 3")
    hook = report["switchover_hook"]
    assert hook["outcome"] == "failed" and hook["exit_status"] == 3
    assert "no snapshot today" in hook["output"]
    assert_rolled_back(report)


def test_a_hook_past_its_limit_is_killed_and_rolls_back(endpoints) -> None:
    started = time.monotonic()
    report = migrate(endpoints, "sleep 60", timeout_s=1.5)
    assert time.monotonic() - started < 30
    hook = report["switchover_hook"]
    assert hook["outcome"] == "timed-out" and 1500 <= hook["duration_ms"] < 5000
    assert_rolled_back(report)


def test_hook_time_is_not_counted_against_max_pause(endpoints) -> None:
    """max_pause_ms bounds the engine's part of the pause; the hook has its own limit."""
    report = migrate(endpoints, f"{COPY_DISK} && sleep 2", max_pause_ms=1000)
    assert report["status"] == "completed", report.get("error")
    assert report["verification"]["ok"], report["verification"].get("errors")
    assert report["downtime_ms"] > 2000 > report["downtime_ms"] - report["downtime_hook_ms"]


class Bare:
    """tbctl against a source and a receiver with no harness flow: the engine alone."""

    def __init__(self, endpoints, tag: str):
        self.src_ep, self.dst_ep = endpoints
        key = secrets.token_hex(32) + "\n"
        keys = [f"{ep.runner.workdir}/{tag}.key" for ep in endpoints]
        for ep, path in zip(endpoints, keys, strict=True):
            ep.runner.put_text(path, key, mode=0o600)
        self.key = keys[0]
        self.src = start_guest(self.src_ep, GUEST, FlowOptions(), tag)
        self.rx = self.dst_ep.runner.spawn([
            self.dst_ep.tool("tbvm"), "receive", *guest_args(GUEST),
            *disk_args(self.dst_ep, GUEST, tag), "--listen", "127.0.0.1:0",
            "--key-file", keys[1], "--control", f"{self.dst_ep.runner.workdir}/{tag}-in.ctl",
        ])  # fmt: skip
        self.port = int(self.rx.wait_line("LISTENING", 30).split()[-1])

    def migrate(self, wait_ms: int):
        return self.src_ep.runner.spawn([
            self.src_ep.tool("tbctl"), "--control", self.src.control, "migrate",
            "--to", f"127.0.0.1:{self.port}", "--key-file", self.key,
            "--switchover-wait", str(wait_ms),
        ])  # fmt: skip

    def close(self) -> None:
        self.rx.kill()
        self.src.stop()


def read_events(text: str) -> EventLog:
    log = EventLog("tbctl migrate")
    log.feed_text(text)
    return log


def test_no_go_ahead_rolls_back_when_the_engine_wait_ends(endpoints) -> None:
    bare = Bare(endpoints, "nogo-" + secrets.token_hex(3))
    try:
        refused = bare.src.tbctl("switchover-continue", check=False)
        assert refused.returncode == 1 and "no migration is running" in refused.stdout
        proc = bare.migrate(1500)
        code = proc.wait(60)
        log = read_events(proc.output())
        assert isinstance(log.paused, PausedEvent) and log.paused.timeout_ms == 1500
        assert code == 1 and log.result is not None, proc.output()
        assert log.result.result == "failed" and log.result.guest_runs_on == "source"
        assert log.result.error is not None
        assert "gave no go-ahead within 1500 ms" in log.result.error.message
        # Told at once and why, the receiver discards rather than wait out its timeout.
        assert bare.rx.wait(5) not in (0, None)
        assert "gave no go-ahead" in bare.rx.output(), bare.rx.output()
        assert bare.src.verify()["ok"]
    finally:
        bare.close()


def test_a_controller_gone_at_the_hook_rolls_back(endpoints) -> None:
    bare = Bare(endpoints, "gone-" + secrets.token_hex(3))
    try:
        proc = bare.migrate(30000)
        proc.wait_line('{"event":"paused"', 30)
        status = bare.src.tbctl("guest-status")
        assert json.loads(status.stdout.strip().splitlines()[-1])["state"] == "migrating"
        # The controller dies while the engine waits: that is a cancel.
        proc.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = bare.src.tbctl("guest-status").stdout.strip().splitlines()[-1]
            if json.loads(line)["state"] == "running":
                break
            time.sleep(0.1)
        assert json.loads(line)["state"] == "running", line
        assert bare.rx.wait(5) not in (0, None)
        assert bare.src.verify()["ok"]
    finally:
        bare.close()


def test_a_hook_longer_than_the_io_timeout_with_several_streams_completes(endpoints) -> None:
    """The further streams idle through the hold: they wait for the next round, not time out."""
    # Longer than the destination's I/O timeout (the engine's default, 10 s).
    report = migrate(endpoints, f"{COPY_DISK} && sleep 11", timeout_s=30, streams=3)
    assert report["status"] == "completed", report.get("error")
    assert report["streams"] == 3
    assert report["switchover_hook"]["outcome"] == "continued"
    ver = report["verification"]
    assert ver["where"] == "destination" and ver["ok"], ver.get("errors")
