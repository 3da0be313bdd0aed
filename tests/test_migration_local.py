"""Live migrations between two real test-bed VM processes over loopback.

Each test runs the real engine (tbvm, tbctl) and checks the guest with the
memory check of DESIGN.md section 2: a lost page, lost vCPU state or stale
device state fails it.  Needs root (userfaultfd for kernel-mode faults).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

import pytest

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.events import EventLog, ResultEvent
from harness.local import local_endpoints
from harness.migrate import (
    Endpoint,
    FlowOptions,
    guest_args,
    migrate_once,
    quiet,
    start_guest,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

MEMORY = 256 << 20


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory) -> tuple[Endpoint, Endpoint]:
    return local_endpoints(tmp_path_factory.mktemp("local"))


def make_guest(workload: str = "hotset:64M", fill: str = "pattern", vcpus: int = 2,
               segments: int = 1, memory: int = MEMORY) -> Guest:  # fmt: skip
    return Guest(
        name="t", memory=memory, vcpus=vcpus,
        testbed=TestbedGuest(workload=workload, fill=fill, segments=segments),
    )  # fmt: skip


def migrate(endpoints, guest: Guest, policy: MigrationPolicy | None = None,
            fault: str | None = None) -> dict:  # fmt: skip
    flow = FlowOptions(warmup_s=0.3, run_after_s=0.5, fault=fault)
    tag = secrets.token_hex(4)
    src = start_guest(endpoints[0], guest, flow, tag)
    time.sleep(flow.warmup_s)
    return migrate_once(src, endpoints[1], guest, policy or MigrationPolicy(), flow, tag,
                        quiet()).report.as_json()  # fmt: skip


def assert_verified(report: dict, memory: int = MEMORY) -> None:
    assert report["status"] == "completed", report.get("error")
    ver = report["verification"]
    assert ver["ok"], ver.get("errors")
    assert ver["where"] == "destination"
    assert ver["pages_checked"] == memory // 4096


def test_engine_memory_is_measured_beyond_the_guest(endpoints) -> None:
    # A filled guest is resident on both sides: its mappings' Rss is the guest's size,
    # and what is left of each side's peak is the engine's (buffers, bitmaps, threads).
    report = migrate(endpoints, make_guest("idle", "pattern", vcpus=1))
    assert_verified(report)
    for side in ("source", "destination"):
        mem = report["engine_memory"][side]
        assert mem is not None, side
        assert mem["guest_size_kib"] == MEMORY >> 10
        assert mem["guest_kib"] >= 0.99 * (MEMORY >> 10), (side, mem)
        assert mem["resident_kib"] >= mem["guest_kib"], (side, mem)
        peak = max(mem["peak_kib"], mem["resident_kib"])
        assert 0 < mem["extra_peak_kib"] == peak - mem["guest_kib"], (side, mem)


@pytest.mark.parametrize(
    ("workload", "fill"), [("idle", "zero"), ("hotset:64M", "pattern"), ("full", "pattern")]
)
def test_migration_is_page_exact(endpoints, workload: str, fill: str) -> None:
    report = migrate(endpoints, make_guest(workload, fill))
    assert_verified(report)
    rounds = report["rounds"]
    assert len(rounds) >= 2 and rounds[-1]["final"]
    assert rounds[0]["dirty_pages"] == MEMORY // 4096  # round 1 covers all memory
    if fill == "zero":
        # An idle zero guest travels as markers, not 4 KiB pages.
        assert rounds[0]["zero_pages"] >= 0.99 * MEMORY // 4096
        assert report["bytes_sent"] < MEMORY // 50
        # Never touched: skipped unread, as zero ranges.
        assert rounds[0]["unpopulated_pages"] >= 0.99 * MEMORY // 4096
    else:
        # Every page holds the pattern: none may be skipped.
        assert rounds[0]["unpopulated_pages"] == 0
    if workload != "idle":
        assert sum(r["dirty_pages"] for r in rounds[1:]) > 0
    assert report["downtime_ms"] is not None and report["downtime_ms"] > 0


def test_touched_pages_move_untouched_are_skipped_lazily(endpoints) -> None:
    # A 64 MiB hot set in zero memory, on four segments, into a destination that faults
    # nothing in up front: only what the guest touched is read and sent.
    guest = make_guest("hotset:64M", "zero", segments=4)
    assert guest.testbed is not None
    guest.testbed.lazy_memory = True
    report = migrate(endpoints, guest)
    assert_verified(report)
    first = report["rounds"][0]
    hot = (64 << 20) // 4096
    # Pages written again before their turn wait for the next round.
    assert (first["pages_sent"] + first["zero_pages"] + first["rewritten_pages"]
            == MEMORY // 4096)  # fmt: skip
    assert first["unpopulated_pages"] >= MEMORY // 4096 - hot - 64
    assert first["pages_sent"] <= hot + 64


def test_encrypted_two_segment_migration(endpoints) -> None:
    report = migrate(endpoints, make_guest(segments=2), MigrationPolicy(encrypt=True))
    assert_verified(report)
    assert report["encrypted"] is True


def test_fixed_rounds_mode(endpoints) -> None:
    report = migrate(endpoints, make_guest(), MigrationPolicy(fixed_rounds=4))
    assert_verified(report)
    assert [r["final"] for r in report["rounds"]] == [False] * 4 + [True]
    assert report["stop_reason"] == "fixed-rounds"


def test_dropped_dirty_page_is_caught(endpoints) -> None:
    report = migrate(endpoints, make_guest(), fault="drop-page")
    assert report["status"] == "completed"
    assert report["verification"]["ok"] is False
    assert report["verification"]["errors"]


def test_device_state_saved_before_pause_is_caught(endpoints) -> None:
    report = migrate(endpoints, make_guest(), fault="stale-device")
    assert report["status"] == "completed"
    assert report["verification"]["ok"] is False
    assert any("counter" in e for e in report["verification"]["errors"])


def test_a_live_frame_that_fails_its_tag_is_owed_and_sent_again(endpoints) -> None:
    # Live rounds tag pages straight from the running guest (MIG_CAP_OWED). Round 1's
    # first frame leaves with a spoilt tag, as when the guest writes a page of it on the
    # way: the destination owes its 256 pages, says so after the round, and the source
    # sends them again; the guest arrives page-exact.
    report = migrate(endpoints, make_guest("idle"), fault="bad-tag")
    assert_verified(report)
    rounds = report["rounds"]
    assert rounds[0]["owed_pages"] == 256
    assert all(r["owed_pages"] == 0 for r in rounds[1:])
    assert sum(r["dirty_pages"] for r in rounds[1:]) >= 256


# -- failures: the guest stays on the source ---------------------------------------


def _receiver(ep: Endpoint, guest: Guest, key_path: str, tag: str):
    proc = ep.runner.spawn([
        ep.tool("tbvm"), "receive", *guest_args(guest), "--listen", "127.0.0.1:0",
        "--key-file", key_path, "--control", f"{ep.runner.workdir}/{tag}-in.ctl",
    ])  # fmt: skip
    port = int(proc.wait_line("LISTENING", 30).split()[-1])
    return proc, port


def _key(ep: Endpoint, tag: str) -> str:
    path = f"{ep.runner.workdir}/{tag}.key"
    ep.runner.put_text(path, secrets.token_hex(32) + "\n")
    return path


def _tbctl_migrate(src, port: int, key: str, *extra: str):
    return src.tbctl("migrate", "--to", f"127.0.0.1:{port}", "--key-file", key, *extra,
                     timeout=120, check=False)  # fmt: skip


def _verify_received(ep: Endpoint, tag: str) -> dict:
    """The memory check of the guest `_receiver(..., tag)` runs now; then stop it."""
    ctl = f"{ep.runner.workdir}/{tag}-in.ctl"
    ver = json.loads(ep.runner.run([ep.tool("tbctl"), "--control", ctl, "verify"],
                                   timeout=60).stdout)  # fmt: skip
    ep.runner.run([ep.tool("tbctl"), "--control", ctl, "stop"], check=False)
    return ver


def _result(stdout: str, code: int) -> ResultEvent:
    log = EventLog("tbctl migrate")
    log.feed_text(stdout)
    return log.finish(code)


@pytest.mark.parametrize(("fault", "phase", "message"), [
    # The debt of a frame whose data failed, never paid (as if the source did not see it).
    ("bad-tag-ignored", "stopcopy",
     "256 pages of memory came only in frames that failed their integrity check"),
    # An index altered on the way: index frames must pass, so data cannot move elsewhere.
    ("bad-index-tag", "precopy", "PAGES_INDEX message 2 failed its integrity check"),
])  # fmt: skip
def test_a_bad_tag_that_is_not_owed_keeps_the_guest_on_the_source(
        endpoints, fault: str, phase: str, message: str) -> None:  # fmt: skip
    src_ep, dst_ep = endpoints
    guest = make_guest("idle")
    tag = secrets.token_hex(4)
    key = _key(src_ep, tag)
    src = start_guest(src_ep, guest, FlowOptions(), tag)
    try:
        receiver, port = _receiver(dst_ep, guest, key, tag)
        res = _tbctl_migrate(src, port, key, "--fault", fault)
        assert res.returncode == 1, res.stdout + res.stderr
        result = _result(res.stdout, 1)
        assert result.result == "failed" and result.guest_runs_on == "source"
        assert result.error is not None and result.error.phase == phase
        # The destination names it; the source, still writing, may see only the close.
        assert receiver.wait(30) != 0
        out = receiver.output()
        assert message in out and "RUNNING" not in out, out
        status = json.loads(src.tbctl("status").stdout)
        assert status["state"] == "running"
        assert src.verify()["ok"]
    finally:
        src.stop()


def test_destination_killed_mid_round_then_retry(endpoints) -> None:
    src_ep, dst_ep = endpoints
    guest = make_guest()
    tag = secrets.token_hex(4)
    key = _key(src_ep, tag)
    dst_key = f"{dst_ep.runner.workdir}/{tag}.key"
    Path(dst_key).write_text(Path(key).read_text())
    src = start_guest(src_ep, guest, FlowOptions(), tag)
    try:
        receiver, port = _receiver(dst_ep, guest, dst_key, tag)
        # 20 MB/s: round 1 of 256 MiB takes ~13 s, plenty of time to kill it.
        migrate_proc = src_ep.runner.spawn([
            src_ep.tool("tbctl"), "--control", src.control, "migrate",
            "--to", f"127.0.0.1:{port}", "--key-file", key, "--bandwidth", "20M",
        ])  # fmt: skip
        time.sleep(1.5)
        receiver.kill()
        t0 = time.monotonic()
        assert migrate_proc.wait(30) == 1
        rollback_s = time.monotonic() - t0
        result = _result(migrate_proc.output(), 1)
        assert result.result == "failed" and result.guest_runs_on == "source"
        assert result.error is not None and result.error.side == "destination"
        assert result.error.phase == "precopy"
        assert rollback_s < 5, f"source took {rollback_s:.1f}s to notice"
        before = json.loads(src.tbctl("status").stdout)["iterations"]
        time.sleep(0.3)
        status = json.loads(src.tbctl("status").stdout)
        assert status["state"] == "running" and status["iterations"] > before
        assert src.verify()["ok"]

        # A retry after the rollback is complete and exact.  It goes to a new
        # destination that holds nothing, so its round 1 covers all memory again: no
        # dirty log survives the failed attempt (the series has no put-back ioctl).
        receiver2, port2 = _receiver(dst_ep, guest, dst_key, tag + "b")
        res = _tbctl_migrate(src, port2, key)
        assert res.returncode == 0, res.stdout + res.stderr
        log = EventLog("tbctl migrate")
        log.feed_text(res.stdout)
        first = log.rounds[0]
        assert first.index == 1 and first.dirty_pages == MEMORY // 4096
        assert (first.pages_sent + first.zero_pages + first.rewritten_pages
                == MEMORY // 4096)  # fmt: skip
        receiver2.wait_line("RUNNING", 30)
        time.sleep(0.3)
        ver = _verify_received(dst_ep, tag + "b")
        assert ver["ok"], ver
    finally:
        src.stop()


def _local_vms() -> set[str]:
    """tbvm processes started by `invoke migrate --local` (their workdir is bhyvemig-*)."""
    import subprocess

    out = subprocess.run(["pgrep", "-a", "-x", "tbvm"], capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if "/bhyvemig-" in line}


def test_ctrl_c_cancels_and_the_guest_stays_on_the_source() -> None:
    import signal
    import subprocess
    import tempfile

    before = _local_vms()
    # Its own TMPDIR: the migration has started once its key files are there.
    tmp = Path(tempfile.mkdtemp(prefix="bmc-"))
    proc = subprocess.Popen(
        ["invoke", "migrate", "--local", "--memory", "256M", "--bandwidth", "20M"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp.rglob("migration-*.key")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # inside round 1 (13 s at 20 MB/s)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert "cancelled: the guest kept running on local-source (memory check ok)" in out, out
    time.sleep(0.5)
    assert _local_vms() <= before  # the harness stops what it started
    assert not list(tmp.rglob("*.key")), out
    shutil.rmtree(tmp, ignore_errors=True)


def test_invoke_migrate_check_is_a_dry_run() -> None:
    import subprocess

    out = subprocess.run(
        ["invoke", "migrate", "--local", "--check", "--memory", "64M"],
        capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "result: compatible, guest runs on the source" in out.stdout
    assert "verification (source): ok, 16384 pages checked" in out.stdout
