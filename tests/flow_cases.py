"""Migration cases shared by both host drivers, and the recorder of their transcripts.

Each case runs for real on the test bed (two tbvm processes over loopback, tbctl as the
controller).  What the controller printed is the case's transcript,
tests/transcripts/<case>.jsonl: the FreeBSD driver's tests replay it as bhyvectl's output
(bhyvectl links the same control-plane code), so the FreeBSD flow is tested against
output the code produces, not against hand-written text.

Record (as root, builds the test bed's programs):  python3 tests/flow_cases.py
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.config import Guest, MigrationPolicy, TestbedGuest  # noqa: E402
from harness.flow import (  # noqa: E402
    FlowOptions,
    Report,
    describe_failure,
    run_check,
    run_migration,
)
from harness.migrate import (  # noqa: E402
    Endpoint,
    TestbedDriver,
    guest_summary,
    quiet,
    start_guest,
)
from harness.runner import Process  # noqa: E402

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


def make_guest(vcpus: int = 2) -> Guest:
    return Guest(name="t", memory=128 << 20, vcpus=vcpus,
                 testbed=TestbedGuest(workload="hotset:16M", fill="pattern"))  # fmt: skip


@dataclass(frozen=True)
class Expect:
    """What both drivers must report for a case."""

    status: str
    guest_runs_on: str
    side: str | None = None
    phase: str | None = None
    message: str = ""  # a word the error message contains
    resolution: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    expect: Expect
    destination_vcpus: int = 2  # differs from the source's: incompatible
    wrong_key: bool = False  # the destination gets another key
    destination_fault: str | None = None  # test-only fault of the receiver
    flow: dict = field(default_factory=dict)
    policy: dict = field(default_factory=dict)
    interrupt_after_s: float | None = None  # the user presses Ctrl-C this long in
    check: bool = False  # a dry run (tbctl check, bhyvectl --migrate-check)
    kill_destination_after_s: float | None = None  # the destination's VM dies this long in


CASES = [
    Case("completed", Expect("completed", "destination")),
    Case("incompatible", Expect("failed", "source", "destination", "compat", "vCPU"),
         destination_vcpus=3),  # fmt: skip
    Case("wrong-key", Expect("failed", "source", phase="auth", message="key"), wrong_key=True),
    # Past GO: RUNNING never reaches the source, which stays paused (indeterminate); the
    # harness asks the destination and keeps exactly one guest.
    Case("lose-running", Expect("indeterminate", "destination", phase="switchover",
                                resolution="destroyed-source"),
         destination_fault="lose-running", flow={"peer_timeout_ms": 2000}),
    Case("die-after-go", Expect("indeterminate", "source", phase="switchover",
                                resolution="resumed-source"),
         destination_fault="die-after-go", flow={"peer_timeout_ms": 2000}),
    # The destination's VM dies inside round 1: the source rolls back within seconds.
    Case("destination-killed", Expect("failed", "source", "destination", "precopy"),
         policy={"bandwidth": 20_000_000}, kill_destination_after_s=1.5),
    # Ctrl-C inside round 1 (128 MiB at 20 MB/s takes 6 s): the operator's cancel.
    Case("cancelled", Expect("cancelled", "source", "source", "precopy", "cancelled"),
         policy={"bandwidth": 20_000_000}, interrupt_after_s=1.5),
    # A switchover hook: paused, the harness runs it, then the go-ahead or the cancel.
    Case("switchover-hook", Expect("completed", "destination"),
         policy={"switchover_hook": "exit 0", "switchover_timeout": 10}),
    Case("switchover-hook-fails",
         Expect("cancelled", "source", "source", "stopcopy", "switchover hook"),
         policy={"switchover_hook": "exit 1", "switchover_timeout": 10}),
    # Dry runs: no memory moves, the guest keeps running on the source.
    Case("dry-run-compatible", Expect("compatible", "source"), check=True),
    Case("dry-run-incompatible", Expect("incompatible", "source", message="vCPU"),
         destination_vcpus=3, check=True),  # fmt: skip
]


@dataclass
class CtrlC:
    """A controller process whose first wait after `after_s` raises KeyboardInterrupt,
    as the user's Ctrl-C does in the harness."""

    proc: Process
    after_s: float
    started: float = field(default_factory=time.monotonic)
    pressed: bool = False

    def wait(self, timeout: float) -> int | None:
        if not self.pressed and time.monotonic() - self.started >= self.after_s:
            self.pressed = True
            raise KeyboardInterrupt
        return self.proc.wait(timeout)

    def __getattr__(self, name: str):
        return getattr(self.proc, name)


def assert_expected(report: Report, case: Case) -> None:
    """What every driver must report for case."""
    want = case.expect
    assert report.status == want.status, report.error
    assert report.guest_runs_on == want.guest_runs_on
    assert report.verification["ok"], report.verification
    assert report.verification["where"] == want.guest_runs_on
    if want.status in ("compatible", "incompatible"):
        assert report.rounds == [] and report.bytes_sent < 1 << 20  # no memory moved
        assert report.phases[:2] == ["connect", "handshake"]
        if want.message:
            assert any(want.message in r for r in report.reasons), report.reasons
        else:
            assert report.reasons == []
        return
    if case.policy.get("switchover_hook"):
        # The hook ran at the paused event; its exit status decided.
        assert report.switchover_hook is not None
        assert report.switchover_hook["outcome"] == (
            "continued" if want.status == "completed" else "failed")
    if want.status == "completed":
        assert report.error is None
        assert report.rounds and report.rounds[-1]["final"]
        assert report.downtime_ms is not None and report.bytes_sent > 0
        assert report.phases[-1] in ("switchover", "done")
    else:
        assert report.error is not None
        if want.side:
            assert report.error["side"] == want.side
        assert report.error["phase"] == want.phase
        assert want.message in report.error["message"]
        if want.status == "cancelled":
            hook = (report.switchover_hook or {}).get("detail")
            assert describe_failure(report) == (
                f"cancelled{f' ({hook})' if hook else ''}: the guest kept running on "
                f"{report.hosts['source']} (memory check ok)")  # fmt: skip
        else:
            assert want.phase in describe_failure(report)
    if want.status == "failed" and case.kill_destination_after_s is None:
        assert report.rounds == []  # refused before any memory moved
    if want.resolution:
        # Past GO: the source paused, then exactly one guest kept (checked above).
        assert report.rounds and report.rounds[-1]["final"]
        assert report.resolution is not None
        assert report.resolution["action"] == want.resolution
        assert want.resolution in describe_failure(report)
    else:
        assert report.resolution is None


class CaseDriver(TestbedDriver):
    """The test-bed driver with a case's deliberate mismatch, keeping the transcript."""

    case: Case
    controller_process: Process | None = None

    def write_keys(self, key_hex: str) -> None:
        super().write_keys(key_hex)
        if self.case.wrong_key:
            path = f"{self.destination.runner.workdir}/migration-{self.tag}.key"
            self.destination.runner.put_text(path, secrets.token_hex(32) + "\n")

    def start_destination(self) -> None:
        real = self.guest
        self.guest = dataclasses.replace(real, vcpus=self.case.destination_vcpus)
        try:
            super().start_destination()
        finally:
            self.guest = real

    def start_check(self) -> Process:
        self.controller_process = super().start_check()
        return self.controller_process

    def start_migration(self) -> Process:
        self.controller_process = super().start_migration()
        if self.case.kill_destination_after_s is not None and self.receiver is not None:
            threading.Timer(self.case.kill_destination_after_s, self.receiver.kill).start()
        if self.case.interrupt_after_s is not None:
            return CtrlC(self.controller_process, self.case.interrupt_after_s)  # type: ignore[return-value]
        return self.controller_process


def run_testbed_case(
    case: Case,
    endpoints: tuple[Endpoint, Endpoint],
    keep: Callable[[str], None] | None = None,
    keep_driver: Callable[[CaseDriver], None] | None = None,
) -> Report:
    """Run case on the test bed; keep(transcript) receives what the controller printed,
    keep_driver the driver (then the caller stops what is left running)."""
    guest = make_guest()
    flow = FlowOptions(warmup_s=0.3, run_after_s=0.3,
                       destination_fault=case.destination_fault, **case.flow)  # fmt: skip
    tag = secrets.token_hex(4)
    src = start_guest(endpoints[0], guest, flow, tag)
    time.sleep(flow.warmup_s)
    driver = CaseDriver(src, endpoints[1], guest, MigrationPolicy(**case.policy), flow, tag)
    driver.case = case
    try:
        run = run_check if case.check else run_migration
        report = run(driver, guest_summary(guest), flow, quiet())
    finally:
        if keep_driver is None:
            src.stop()
    if keep_driver is not None:
        keep_driver(driver)
    if keep is not None and driver.controller_process is not None:
        keep(driver.controller_process.output())
    return report


def record(names: list[str]) -> None:
    from harness.local import local_endpoints, local_workdir

    TRANSCRIPTS.mkdir(exist_ok=True)
    with local_workdir() as workdir:
        endpoints = local_endpoints(workdir.path)
        for case in CASES:
            if names and case.name not in names:
                continue
            path = TRANSCRIPTS / f"{case.name}.jsonl"
            report = run_testbed_case(case, endpoints, lambda text, p=path: p.write_text(
                "".join(ln + "\n" for ln in text.splitlines() if ln.startswith("{"))))  # fmt: skip
            print(f"{path}: {report.status}, the guest runs on the {report.guest_runs_on}")


if __name__ == "__main__":
    record(sys.argv[1:])
