"""One migration flow for every kind of host, over a HostDriver; one report type.

The flow is the same for the test bed (tbvm/tbctl) and for FreeBSD (bhyve/bhyvectl):

  1. hand both ends a fresh per-migration key;
  2. the guest runs on the source; the destination listens;
  3. the controller runs on the source and streams the control plane's events
     (harness.events), shown live as they come; with a switchover hook, the `paused`
     event runs it (harness.switchover) and its exit status sends the go-ahead or the
     cancel;
  4. by the result: after "ok" the destination must run the guest; after "failed" or
     "cancelled" the destination discards; after "indeterminate" the harness asks the
     destination whether the guest runs there and destroys or resumes the source
     accordingly (resolve(): one of the two, never both);
  5. the guest is checked where it runs now, and a Report is built.

Ctrl-C during step 3 sends the operator's cancel command; the source rolls back.  SIGTERM
and SIGHUP do the same under interrupt_on_terminate(), so a harness stopped that way still
removes the single-use key files and the receiver's control socket from the hosts.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from harness.config import MigrationPolicy
from harness.errors import HarnessError, MigrationError
from harness.events import (
    ErrorInfo,
    EstimateMissedEvent,
    EventError,
    EventLog,
    PausedEvent,
    ResultEvent,
)
from harness.progress import Display, PlainDisplay
from harness.runner import Process
from harness.switchover import HookRun, hook_environment, run_hook

# How often the controller's output is read: a `paused` event waits this long at most
# for the harness to see it, with the guest paused.
FOLLOW_POLL_S = 0.02

# Report.status for each control-plane result of a migration.
STATUS_OF_RESULT = {
    "ok": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "indeterminate": "indeterminate",
    "compatible": "compatible",
    "incompatible": "incompatible",
}


class Resolvable(Protocol):
    """What resolving an indeterminate outcome needs: the destination's answer, and the
    two things that can be done with the paused source."""

    source_name: str
    destination_name: str

    def destination_runs_guest(self) -> bool | None:
        """Ask the destination over its control socket: True, False (also when its
        process is gone; a receiver that does not run the guest is ended first, so that
        it never will), or None when it cannot tell."""
        ...

    def resume_source(self) -> None: ...

    def destroy_source(self) -> None: ...


class HostDriver(Resolvable, Protocol):
    """What the flow needs from a pair of hosts of one kind."""

    kind: str
    controller: str  # the controller program's name, for messages
    policy: MigrationPolicy  # the engine's; also the switchover hook, if any

    def write_keys(self, key_hex: str) -> None: ...

    # Best effort, from a finally clause: a host that cannot be reached is skipped.
    def remove_keys(self) -> None: ...

    def start_source(self) -> None:
        """Make sure the guest runs on the source."""
        ...

    def start_destination(self) -> None:
        """Start the receiver; return once it listens."""
        ...

    def start_probe(self) -> None: ...

    def stop_probe(self, migrated: bool) -> float | None:
        """Stop probing the guest from outside; the outage seen, in ms, if measured."""
        ...

    def start_migration(self) -> Process:
        """Start the controller on the source; its stdout carries the events."""
        ...

    def start_check(self) -> Process:
        """Start the controller's dry run (handshake, authentication, compatibility)."""
        ...

    def cancel(self) -> None:
        """The operator's cancel: the source rolls back, the destination discards."""
        ...

    def switchover_continue(self) -> None:
        """The switchover hook's go-ahead: the source finishes the migration."""
        ...

    def hook_environment(self) -> dict[str, str]:
        """BMIG_* variables naming the hosts and the guest, for the switchover hook."""
        ...

    def confirm_destination(self) -> str | None:
        """After "ok": None when the guest runs on the destination, else why not."""
        ...

    def discard_destination(self) -> int | None:
        """After a failure: make sure the destination discarded; its exit status."""
        ...

    def verify(self, where: str) -> dict[str, Any]:
        """Check the guest where it runs now ("source" or "destination")."""
        ...

    def destination_report(self) -> dict[str, Any] | None: ...

    def engine_memory(self) -> dict[str, Any] | None:
        """After a completed migration: each side's resident memory beyond the guest's,
        as the hosts measured it ({"source": {...}, "destination": {...}}), or None."""
        ...

    def finish(self, where: str, keep_running: bool) -> None:
        """Stop what the flow started (keep the guest at `where` if keep_running)."""
        ...

    def resolve_hint(self) -> str:
        """The command an operator runs to resolve an indeterminate outcome later."""
        ...


@dataclass
class FlowOptions:
    """Knobs of the flow itself, beyond the engine's policy."""

    warmup_s: float = 0.5  # workload runs this long before migrating
    run_after_s: float = 1.0  # guest runs on the destination before the check
    start_timeout_s: float = 60.0
    migrate_timeout_s: float = 600.0
    cancel_timeout_s: float = 30.0  # for the source to roll back after a cancel
    probe: bool = True
    resolve: bool = True  # resolve an indeterminate outcome automatically
    fault: str | None = None  # test-only engine fault (migration.h enum mig_fault)
    destination_fault: str | None = None  # test-only fault of the receiver
    max_time_ms: int = 0
    max_pause_ms: int = 0  # resume on the source past this pause, before GO (0: the engine's)
    peer_timeout_ms: int = 0  # give up on a silent peer after this long (0: the engine's)
    keep_running: bool = False  # leave the guest running at the end (ping-pong)


@dataclass
class Resolution:
    """What the harness did about an indeterminate outcome."""

    destination_runs_guest: bool | None
    action: str  # destroyed-source | resumed-source | none
    guest_runs_on: str  # destination | source | undecided
    detail: str


@dataclass
class Report:
    """One migration as the harness saw it; as_json() is the file format."""

    kind: str
    status: str  # completed | failed | cancelled | indeterminate
    hosts: dict[str, str]
    guest: dict[str, Any]
    guest_runs_on: str  # where it runs now: source | destination | undecided | nowhere
    error: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    total_time_ms: float = 0.0
    wall_time_ms: float = 0.0
    downtime_ms: float | None = None
    # The downtime's parts (engine): the last memory sent with the guest paused, the
    # switchover hook's wait, and the rest (state, READY/GO/RUNNING).
    downtime_memory_ms: float | None = None
    downtime_hook_ms: float | None = None
    downtime_state_ms: float | None = None
    downtime_probe_ms: float | None = None
    # The estimate-missed event: {"phase", "est_downtime_ms", "paused_ms"}, or None.
    estimate_missed: dict[str, Any] | None = None
    bytes_sent: int = 0
    throughput_mb_s: float = 0.0
    disk_bytes: int = 0  # of bytes_sent: disk blocks and zero ranges (--disks)
    disk_rounds: int = 0  # rounds that carried disk blocks
    disk_mb_s: float = 0.0  # disk_bytes over the total time
    stop_reason: str | None = None
    encrypted: bool | None = None
    protocol_version: int | None = None
    streams: int | None = None  # connections the memory moved over
    rounds: list[dict[str, Any]] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    resolution: dict[str, Any] | None = None
    switchover_hook: dict[str, Any] | None = None  # harness.switchover.HookRun
    destination: dict[str, Any] | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    engine_memory: dict[str, Any] | None = None  # per side, beyond guest memory
    controller_exit: int | None = None
    controller_messages: list[str] = field(default_factory=list)  # its lines for people
    destination_exit: int | None = None
    destination_output: str = ""
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _ms(us: int | None) -> float | None:
    return None if us is None else us / 1000.0


def _estimate_missed(ev: EstimateMissedEvent | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {
        "phase": ev.phase,
        "est_downtime_ms": ev.est_downtime_us / 1000.0,
        "paused_ms": ev.paused_us / 1000.0,
    }


def build_report(
    driver: HostDriver,
    guest: dict[str, Any],
    log: EventLog,
    result: ResultEvent,
    wall_ms: float,
) -> Report:
    """The report's engine part, from the controller's events."""
    stats = result.stats
    total_ms = _ms(stats.total_time_us) or 0.0
    sent = stats.bytes_sent or 0
    disk = sum(r.disk_bytes for r in log.rounds)
    return Report(
        kind=driver.kind,
        status=STATUS_OF_RESULT.get(result.result, "failed"),
        hosts={"source": driver.source_name, "destination": driver.destination_name},
        guest=guest,
        guest_runs_on=result.guest_runs_on or "undecided",
        error=asdict(result.error) if result.error else None,
        reasons=list(result.reasons),
        total_time_ms=total_ms,
        wall_time_ms=round(wall_ms, 3),
        downtime_ms=_ms(stats.downtime_us),
        estimate_missed=_estimate_missed(log.estimate_missed),
        downtime_memory_ms=_ms(stats.downtime_memory_us),
        downtime_hook_ms=_ms(stats.downtime_hook_us),
        downtime_state_ms=_ms(stats.downtime_state_us),
        bytes_sent=sent,
        throughput_mb_s=round(sent / total_ms / 1000.0, 1) if total_ms else 0.0,
        disk_bytes=disk,
        disk_rounds=sum(1 for r in log.rounds if r.disk_dirty_blocks),
        disk_mb_s=round(disk / total_ms / 1000.0, 1) if total_ms else 0.0,
        stop_reason=stats.stop_reason,
        encrypted=stats.encrypted,
        protocol_version=stats.protocol_version,
        streams=stats.streams,
        rounds=[asdict(r) for r in log.rounds],
        phases=list(log.phases),
    )


@contextmanager
def interrupt_on_terminate() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so that the flow
    cancels the migration and its finally clauses clean the hosts up (by default Python
    dies on them at once).  Main thread only, as signal handlers are."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def follow(
    proc: Process, log: EventLog, display: Display, host: str, timeout: float,
    on_paused: Callable[[PausedEvent], None] | None = None,
) -> int | None:
    """Read the controller's events until it exits; its exit status, None on timeout.
    on_paused runs for a `paused` event (the switchover hook), the controller waiting."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        code = proc.wait(FOLLOW_POLL_S)
        lines = proc.output().splitlines()
        for line in lines[seen:]:
            # The controller's words for people repeat the events; the report keeps them.
            try:
                event = log.feed(line)
            except EventError as exc:
                # A line the harness cannot read must not stop it from following the
                # run: the exit status still says where the guest is.
                log.unreadable.append(str(exc))
                display.say(f"[{host}] {exc}")
                continue
            if event is not None:
                display.event(host, event)
            if isinstance(event, PausedEvent) and on_paused is not None:
                on_paused(event)
        seen = len(lines)
        if code is not None:
            return code
        if time.monotonic() > deadline:
            return None


def resolve(driver: Resolvable, display: Display) -> Resolution:
    """After "indeterminate": keep exactly one guest, by asking the destination."""
    runs = driver.destination_runs_guest()
    if runs is True:
        display.say(f"resolving: the guest runs on {driver.destination_name}; "
                    f"destroying the paused copy on {driver.source_name}")  # fmt: skip
        driver.destroy_source()
        return Resolution(True, "destroyed-source", "destination",
                          f"{driver.destination_name} runs the guest")  # fmt: skip
    if runs is False:
        display.say(f"resolving: the guest does not run on {driver.destination_name}; "
                    f"resuming it on {driver.source_name}")  # fmt: skip
        try:
            driver.resume_source()
        except HarnessError as exc:
            # The source's process died meanwhile (killed with its host): no copy is left
            # to resume, and the destination's was ended above.
            return Resolution(False, "none", "undecided",
                              f"{driver.destination_name} does not run the guest, and "
                              f"resuming it on {driver.source_name} failed: {exc}")  # fmt: skip
        return Resolution(False, "resumed-source", "source",
                          f"{driver.destination_name} does not run the guest")  # fmt: skip
    return Resolution(
        None, "none", "undecided",
        f"{driver.destination_name} did not say whether it runs the guest; both copies "
        "left as they are",
    )  # fmt: skip


def _cancel(driver: HostDriver, proc: Process, log: EventLog, display: Display,
            opts: FlowOptions) -> int | None:  # fmt: skip
    """Ctrl-C: the operator's cancel command, then the controller's result."""
    display.say(f"cancelling: the source rolls back; {driver.destination_name} discards")
    try:
        driver.cancel()
    except HarnessError as exc:
        display.say(f"cancel command failed ({exc}); stopping the destination instead")
        driver.discard_destination()
    code = follow(proc, log, display, driver.source_name, opts.cancel_timeout_s)
    if code is None:
        proc.kill()
    return code


def _switchover(driver: HostDriver, display: Display,
                runs: list[HookRun]) -> Callable[[PausedEvent], None]:  # fmt: skip
    """The `paused` handler: run the hook, then send the go-ahead or the cancel."""
    command, limit = driver.policy.switchover_hook, driver.policy.switchover_timeout

    def on_paused(event: PausedEvent) -> None:
        if not command:
            display.say(f"[{driver.source_name}] paused for a switchover hook the harness "
                        "was not given: cancelling")  # fmt: skip
            driver.cancel()
            return
        display.say(f"[harness] guest paused, {event.dirty_pages} dirty pages left: "
                    f"running the switchover hook (limit {limit:g} s)")  # fmt: skip
        env = hook_environment(driver.hook_environment(), event, limit)
        run = run_hook(command, env, event, limit)
        runs.append(run)
        try:
            if run.outcome == "continued":
                display.say(f"[harness] switchover hook done in {run.duration_ms:.0f} ms: "
                            "go-ahead")  # fmt: skip
                driver.switchover_continue()
            else:
                display.say(f"[harness] {run.detail}: cancelling; the source resumes the "
                            "guest")  # fmt: skip
                driver.cancel()
        except HarnessError as exc:
            # The engine's own wait ends soon and rolls back.
            run.outcome = "not-answered"
            run.detail = f"{run.detail + '; ' if run.detail else ''}telling the source " \
                f"failed ({exc}): it rolls back when its wait ends"
            display.say(f"[harness] {run.detail}")

    return on_paused


def _finish(log: EventLog, code: int | None, notes: list[str]) -> ResultEvent:
    """The run's result.  When the result and the exit status disagree, the harness
    cannot know where the guest is: it treats the outcome as indeterminate, so that the
    destination is asked before anything is resumed or destroyed."""
    notes += log.unreadable
    try:
        return log.finish(code)
    except EventError as exc:
        notes.append(f"{exc}: treated as indeterminate")
        log.result = ResultEvent("indeterminate", "paused_on_source",
                                 ErrorInfo("source", log.last_phase, 0, str(exc)))  # fmt: skip
        return log.result


def run_migration(
    driver: HostDriver,
    guest: dict[str, Any],
    opts: FlowOptions,
    display: Display | None = None,
) -> Report:
    """Migrate once over driver and report.  A migration the engine refused, rolled back
    or left undecided is a Report, not an exception; MigrationError when the flow
    itself cannot proceed."""
    display = display or PlainDisplay()
    try:
        # Inside: a host that cannot be reached must not leave the other's key behind.
        driver.write_keys(secrets.token_hex(32))
        driver.start_source()
        driver.start_destination()
        if opts.probe:
            driver.start_probe()
        started = time.monotonic()
        proc = driver.start_migration()
        log = EventLog(f"{driver.source_name}: {driver.controller}")
        notes: list[str] = []
        hook_runs: list[HookRun] = []
        cancelled = False
        try:
            code = follow(proc, log, display, driver.source_name, opts.migrate_timeout_s,
                          _switchover(driver, display, hook_runs))  # fmt: skip
        except KeyboardInterrupt:
            code = _cancel(driver, proc, log, display, opts)
            cancelled = True
            notes.append("cancelled by the user (Ctrl-C)")
        if code is None and log.result is None:
            proc.kill()
            notes.append(f"{driver.controller} gave no result within "
                         f"{opts.migrate_timeout_s:.0f}s; the harness stopped it")  # fmt: skip
        result = _finish(log, code, notes)
        wall_ms = (time.monotonic() - started) * 1000.0
        report = build_report(driver, guest, log, result, wall_ms)
        report.controller_exit = code
        report.controller_messages = log.text[-20:]
        report.notes += notes
        if hook_runs:
            report.switchover_hook = asdict(hook_runs[-1])
            if hook_runs[-1].detail:
                report.notes.append(f"switchover hook: {hook_runs[-1].detail}")
        if cancelled and report.status == "failed":
            # Rolled back by the fallback (the destination was stopped): still a cancel.
            report.status = "cancelled"
        _settle(driver, report, opts, display)
        report.downtime_probe_ms = driver.stop_probe(report.guest_runs_on == "destination")
        if report.guest_runs_on == "destination":
            time.sleep(opts.run_after_s)
            report.destination = driver.destination_report()
        home = report.guest_runs_on
        if home in ("source", "destination"):
            report.verification = driver.verify(home)
            if report.status == "completed":
                report.engine_memory = driver.engine_memory()
            if report.verification.get("gone"):
                # Its process died (killed with the host, say): no copy runs anywhere.
                report.guest_runs_on = "nowhere"
        else:
            report.verification = {
                "ok": False, "where": "undecided", "pages_checked": 0,
                "errors": ["the outcome is undecided: nothing checked"],
            }  # fmt: skip
            report.notes.append(f"resolve it with: {driver.resolve_hint()}")
        driver.finish(home, opts.keep_running)
        return report
    finally:
        driver.remove_keys()


def run_check(
    driver: HostDriver, guest: dict[str, Any], opts: FlowOptions, display: Display | None = None
) -> Report:
    """A dry run: handshake, authentication and the full compatibility check, no memory
    moved.  Report.status is compatible, incompatible (reasons says why) or failed."""
    display = display or PlainDisplay()
    try:
        driver.write_keys(secrets.token_hex(32))
        driver.start_source()
        driver.start_destination()
        started = time.monotonic()
        proc = driver.start_check()
        log = EventLog(f"{driver.source_name}: {driver.controller} check")
        code = follow(proc, log, display, driver.source_name, opts.start_timeout_s)
        if code is None:
            proc.kill()
        notes: list[str] = []
        result = _finish(log, code, notes)
        report = build_report(driver, guest, log, result, (time.monotonic() - started) * 1000)
        report.notes += notes
        report.controller_exit = code
        report.controller_messages = log.text[-20:]
        # The destination keeps listening after a check: end it.
        report.destination_exit = driver.discard_destination()
        report.guest_runs_on = "source"
        report.verification = driver.verify("source")
        driver.finish("source", opts.keep_running)
        return report
    finally:
        driver.remove_keys()


def _settle(driver: HostDriver, report: Report, opts: FlowOptions, display: Display) -> None:
    """Bring both hosts in line with the result; set where the guest runs now."""
    if report.status == "completed":
        late = driver.confirm_destination()
        if late is None:
            report.guest_runs_on = "destination"
            return
        # The controller said ok but the destination does not run it: the worst case.
        report.status = "failed"
        report.error = {"side": "destination", "phase": "switchover", "code": 0,
                        "message": late, "peer_message": None}  # fmt: skip
        report.guest_runs_on = "undecided"
        return
    if report.status in ("failed", "cancelled"):
        report.destination_exit = driver.discard_destination()
        report.guest_runs_on = "source"
        return
    if not opts.resolve:
        report.guest_runs_on = "undecided"
        return
    resolution = resolve(driver, display)
    report.resolution = asdict(resolution)
    report.guest_runs_on = resolution.guest_runs_on


def describe_failure(report: Report) -> str:
    """One sentence for a report whose status is not "completed"."""
    err = report.error or {}
    where = report.guest_runs_on
    if report.status == "cancelled":
        ok = report.verification.get("ok")
        host = report.hosts["source"]
        hook = (report.switchover_hook or {}).get("detail")
        why = f"cancelled ({hook})" if hook else "cancelled"
        if where == "source" and ok:
            return f"{why}: the guest kept running on {host} (memory check ok)"
        return f"{why}: the guest is on the {where} ({host}), memory check ok={ok}"
    text = (
        f"migration {report.status} on the {err.get('side', '?')} side during "
        f"{err.get('phase', '?')}: {err.get('message', 'no message')}"
    )
    if report.resolution:
        text += f"; resolved: {report.resolution['action']} ({report.resolution['detail']})"
    return text + f"; the guest runs on the {where}"


def require_ok(report: Report) -> None:
    """MigrationError unless the report is a completed (or compatible), verified run."""
    if report.status == "incompatible":
        raise MigrationError("incompatible: " + "; ".join(report.reasons or ["no reason given"]))
    if report.status not in ("completed", "compatible"):
        raise MigrationError(describe_failure(report))
    if not report.verification.get("ok"):
        raise MigrationError("migration completed but the guest's check FAILED")
