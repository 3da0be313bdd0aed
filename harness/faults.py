"""The fault matrix: a fault injected at each phase of a migration on the namespace test bed,
and the invariant checked after each one.

A phase is reached exactly, not by timing: one end (`tbvm run|receive --stop-at POINT`,
test-only) stops itself with SIGSTOP at the phase's point and prints "STOPPED POINT pid=N":
the source as round 1, round 2 or the paused last round begins (before its pages leave),
the destination at the handshake and the switchover's steps.  With both ends held there
(the other end waits for the stopped one), the harness injects the fault, then continues
the stopped end unless the fault is to kill it; a hung destination is stopped and
continued only after the hang.  The migration then plays out through harness.flow as users run it,
including its resolution of an indeterminate outcome.

The invariant, checked after each cell:
  - never two copies of the guest; exactly one running, except where the fault killed
    the guest's only home (the source before GO, the destination after RUNNING): none;
  - the memory check passes where the guest runs;
  - a retry succeeds: the surviving guest migrates to the other host (a fresh guest when
    none survived), and is checked there;
  - nothing is left behind on either host: processes, key files, control sockets,
    the destination's report, listening ports.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.errors import HarnessError
from harness.flow import FlowOptions, Report, run_migration
from harness.migrate import (
    Endpoint,
    RunningGuest,
    TestbedDriver,
    guest_status,
    guest_summary,
    migrate_once,
    quiet,
    start_guest,
)
from harness.netns import MIG_IF
from harness.runner import Process

PEER_TIMEOUT_MS = 3000  # the source gives up on a silent destination after this long
MAX_PAUSE_MS = 4000  # and on a paused guest's switchover after this long
HANG_S = 6.0  # a hung destination stays stopped this long: past both deadlines
FLAP_S = 1.0  # link-flap: down this long, well within the peer timeout

# phase -> (the end that stops, its stop point, what holds there)
PHASES: dict[str, tuple[str, str, str]] = {
    "handshake": ("destination", "handshake",
                  "both proofs checked, compatibility not answered yet"),
    "round1": ("source", "round1", "round 1 begins: none of its pages sent"),
    "roundN": ("source", "round2", "round 2 of 3 live rounds begins"),
    "stopcopy": ("source", "stopcopy", "guest paused, the last round's pages not sent"),
    "after-ready": ("destination", "ready", "the destination sent READY, has not read GO"),
    "after-go": ("destination", "go", "the destination read GO, has not sent RUNNING"),
    "after-running": ("destination", "running", "the destination sent RUNNING"),
}  # fmt: skip

FAULTS: dict[str, str] = {
    "kill-destination": "SIGKILL the receiving tbvm",
    "kill-controller": "SIGKILL tbctl migrate on the source",
    "kill-source": "SIGKILL the source's tbvm (the guest's process)",
    "hang-destination": f"the destination stays stopped {HANG_S:.0f} s, past the "
    f"{PEER_TIMEOUT_MS} ms peer timeout and the {MAX_PAUSE_MS} ms pause bound",
    "link-down": f"`ip link set {MIG_IF} down` on the destination until the outcome",
    "link-flap": f"{MIG_IF} down for {FLAP_S:.0f} s, then up again",
    "black-hole": "blackhole routes to the peer's migration address on both hosts, "
    "until the outcome",
    "wrong-key": "the destination is given another key",
}

_WRONG_KEY_NA = (
    "the key is proven once, in the handshake; every later frame carries a tag from the "
    "session keys derived there, so a wrong key cannot show up later (forged or altered "
    "frames mid-stream are tests/test_protocol_peer.py's hostile-peer cases)"
)
_GUEST_DIES = "the fault kills the guest's only home, so no copy may run"

GUEST = Guest(name="fm", memory=64 << 20, vcpus=2,
              testbed=TestbedGuest(workload="hotset:8M", fill="pattern"))  # fmt: skip
# Three live rounds, so that round 2 is never the stop-and-copy round.
POLICY = MigrationPolicy(fixed_rounds=3)

# The subset the test suite runs: each fault once, each phase at least once.
CI_CELLS: tuple[tuple[str, str], ...] = (
    ("handshake", "wrong-key"),
    ("round1", "kill-destination"),
    ("roundN", "link-flap"),
    ("stopcopy", "hang-destination"),
    ("after-ready", "kill-controller"),
    ("after-go", "kill-source"),
    ("after-go", "black-hole"),
    ("after-running", "link-down"),
)


def not_applicable(phase: str, fault: str) -> str | None:
    """Why a cell is not meaningful, or None when it is."""
    if fault == "wrong-key" and phase != "handshake":
        return _WRONG_KEY_NA
    return None


def expected_guests(phase: str, fault: str) -> set[int]:
    """How many running guests the invariant allows after the cell."""
    before_go = ("handshake", "round1", "roundN", "stopcopy")
    if fault == "kill-source" and phase in before_go:
        return {0}
    if fault == "kill-source" and phase == "after-ready":
        # GO leaves right after READY arrives: the destination runs the guest, unless
        # the source died before GO left; never both.
        return {0, 1}
    if fault == "kill-destination" and phase == "after-running":
        return {0}
    return {1}


def _expectation(phase: str, fault: str) -> str:
    want = expected_guests(phase, fault)
    if want == {1}:
        return "exactly one running guest"
    if want == {0}:
        return f"no running guest ({_GUEST_DIES})"
    return "at most one running guest (one if GO left before the source died)"


@dataclass
class Cell:
    """One phase x fault cell's outcome."""

    phase: str
    fault: str
    verdict: str  # pass | fail | n/a
    detail: str = ""
    expected: str = ""
    status: str | None = None  # the faulted migration's Report.status
    guest_runs_on: str | None = None
    resolution: str | None = None
    guests_running: list[str] = field(default_factory=list)
    memory_check: bool | None = None
    retry: str | None = None  # the retry migration's status
    leftovers: list[str] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _kill(ep: Endpoint, pid: int | None, sig: str = "KILL") -> str:
    if pid is None:
        return f"{ep.name}: no pid to signal"
    res = ep.runner.run(["kill", f"-{sig}", str(pid)], check=False, timeout=15.0)
    return f"{ep.name}: kill -{sig} {pid}" + ("" if res.returncode == 0 else " (gone)")


@dataclass
class Injector:
    """Waits in a thread for the stopping end to reach its point, then injects the fault."""

    fault: str
    stopping: str  # the end that stops at the point: source | destination
    source: Endpoint
    destination: Endpoint
    driver: FaultDriver
    actions: list[str] = field(default_factory=list)
    error: str | None = None
    _undo: list[Callable[[], None]] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _stopped_pid: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault")
        self._thread.start()

    def _wait_stop(self, proc: Process) -> int | None:
        while not self._done.is_set():
            try:
                line = proc.wait_line("STOPPED", 0.5)
            except HarnessError:
                if not proc.alive():
                    return None
                continue
            return int(line.split("pid=")[1])
        return None

    def _ip(self, ep: Endpoint, *args: str) -> None:
        ep.runner.run(["ip", *args], timeout=15.0)
        self.actions.append(f"{ep.name}: ip {' '.join(args)}")

    @property
    def _stopped(self) -> tuple[Endpoint, Process | None]:
        if self.stopping == "source":
            return self.source, self.driver.source.process
        return self.destination, self.driver.receiver

    def _continue(self) -> None:
        self.actions.append(_kill(self._stopped[0], self._stopped_pid, "CONT"))

    def _run(self) -> None:
        ep, proc = self._stopped
        assert proc is not None
        try:
            pid = self._wait_stop(proc)
            if pid is None:
                self.error = f"the {self.stopping} never reached the phase's stop point"
                return
            self._stopped_pid = pid
            self.actions.append(f"{ep.name}: stopped at its point, pid {pid}")
            self._inject(pid)
        except HarnessError as exc:
            self.error = f"injecting {self.fault}: {exc}"

    def _inject(self, pid: int) -> None:
        src, dst = self.source, self.destination
        receiver = getattr(self.driver.receiver, "pid", None)
        guest = getattr(self.driver.source.process, "pid", None)
        if self.fault == "hang-destination":
            if self.stopping == "source":
                self.actions.append(_kill(dst, receiver, "STOP"))
                self._continue()
            self._done.wait(HANG_S)
            self.actions.append(_kill(dst, receiver, "CONT"))
            return
        if self.fault == "kill-destination":
            self.actions.append(_kill(dst, receiver))
            if self.stopping == "destination":
                return
        elif self.fault == "kill-source":
            self.actions.append(_kill(src, guest))
            if self.stopping == "source":
                return
        elif self.fault == "kill-controller":
            ctl = self.driver.controller_process
            self.actions.append(_kill(src, getattr(ctl, "pid", None)))
        elif self.fault in ("link-down", "link-flap"):
            self._ip(dst, "link", "set", MIG_IF, "down")
            self._undo.append(lambda: self._ip(dst, "link", "set", MIG_IF, "up"))
        elif self.fault == "black-hole":
            for here, peer in ((dst, src), (src, dst)):
                route = f"{peer.migration_address}/32"
                self._ip(here, "route", "add", "blackhole", route)
                self._undo.append(lambda h=here, r=route: self._ip(h, "route", "del",
                                                                    "blackhole", r))  # fmt: skip
        self._continue()
        if self.fault == "link-flap":
            time.sleep(FLAP_S)
            self._restore()

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def finish(self) -> None:
        """Stop waiting, undo the network fault, continue a destination still stopped."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(HANG_S + 30.0)
        try:
            self._restore()
        except HarnessError as exc:
            self.error = self.error or f"undoing {self.fault}: {exc}"
        proc = self._stopped[1]
        if self._stopped_pid is not None and proc is not None and proc.alive():
            self._continue()


class FaultDriver(TestbedDriver):
    """The test-bed driver with a fault cell: the destination's stop point, the fault."""

    injector: Injector | None = None
    wrong_key: bool = False
    controller_process: Process | None = None

    def write_keys(self, key_hex: str) -> None:
        super().write_keys(key_hex)
        if self.wrong_key:
            path = f"{self.destination.runner.workdir}/migration-{self.tag}.key"
            self.destination.runner.put_text(path, secrets.token_hex(32) + "\n")

    def start_migration(self) -> Process:
        self.controller_process = super().start_migration()
        if self.injector is not None:
            self.injector.start()
        return self.controller_process


def _cell_flow() -> FlowOptions:
    return FlowOptions(warmup_s=0.3, run_after_s=0.3, probe=False, migrate_timeout_s=90.0,
                       peer_timeout_ms=PEER_TIMEOUT_MS, max_pause_ms=MAX_PAUSE_MS,
                       keep_running=True)  # fmt: skip


@dataclass
class HostScan:
    """What runs and lies on one host: tbvm/tbctl processes, workdir files, TCP listeners."""

    processes: list[str]
    files: list[str]
    listening: list[str]


def scan(ep: Endpoint) -> HostScan:
    """One command per host (each SSH round trip costs)."""
    work = ep.runner.workdir
    script = (f"pgrep -a -x tbvm; pgrep -a -x tbctl; echo @@; ls -A {work}; echo @@; "
              "ss -Hltnp; true")  # fmt: skip
    parts = (ep.runner.run(["sh", "-c", script]).stdout.split("@@\n") + ["", ""])[:3]
    # The namespaces share one pid space: the workdir tells the hosts' processes apart.
    procs = [ln for ln in parts[0].splitlines() if f"{work}/" in ln]
    ports = [ln.split()[3] for ln in parts[2].splitlines()
             if len(ln.split()) > 3 and "sshd" not in ln]  # fmt: skip
    return HostScan(procs, parts[1].split(), ports)


def _cell_processes(ep: Endpoint, tag: str) -> list[str]:
    """This cell's tbvm/tbctl processes on ep (their command lines name the tag)."""
    return [line for line in scan(ep).processes if f"-{tag}" in line]


def leftovers(ep: Endpoint) -> list[str]:
    """What a finished migration must not leave on ep: tbvm/tbctl processes, control
    sockets, key files, the destination's report, listening TCP ports besides sshd's."""
    found = scan(ep)
    items = [f"process {line}" for line in found.processes]
    items += [f"file {ep.runner.workdir}/{f}" for f in found.files
              if f.endswith((".ctl", ".key", ".json"))]  # fmt: skip
    items += [f"listening {port}" for port in found.listening]
    return [f"{ep.name}: {item}" for item in items]


def _running(guests: list[tuple[Endpoint, str]]) -> list[str]:
    """Where a guest runs, asking each control socket (no answer: no process there)."""
    return [ep.name for ep, control in guests
            if (st := guest_status(ep, control)) is not None and st["guest_runs_here"]]  # fmt: skip


def _sweep(endpoints: tuple[Endpoint, Endpoint], tag: str) -> None:
    """Kill whatever of this cell still runs, so that one failed cell does not spoil the
    next; the cell has recorded it as left behind first."""
    for ep in endpoints:
        pids = " ".join(line.split()[0] for line in _cell_processes(ep, tag))
        script = f"kill -KILL {pids} 2>/dev/null; rm -f {ep.runner.workdir}/*-{tag}*; true"
        ep.runner.run(["sh", "-c", script], check=False)


def _retry(home: RunningGuest | None, endpoints: tuple[Endpoint, Endpoint], tag: str) -> Report:
    """Migrate the surviving guest to the other host, or a fresh one when none survived."""
    flow = FlowOptions(warmup_s=0.3, run_after_s=0.3, probe=False, migrate_timeout_s=90.0)
    src = home if home is not None else start_guest(endpoints[0], GUEST, flow, f"{tag}r0")
    other = endpoints[1] if src.endpoint.name == endpoints[0].name else endpoints[0]
    try:
        return migrate_once(src, other, GUEST, MigrationPolicy(), flow, f"{tag}r",
                            quiet()).report  # fmt: skip
    finally:
        src.stop()


def run_cell(endpoints: tuple[Endpoint, Endpoint], phase: str, fault: str) -> Cell:
    """One cell on the two test-bed hosts: inject, let the flow resolve, check the invariant."""
    cell = Cell(phase, fault, "pass", expected=_expectation(phase, fault))
    why = not_applicable(phase, fault)
    if why is not None:
        cell.verdict, cell.detail, cell.expected = "n/a", why, ""
        return cell
    started = time.monotonic()
    tag = f"f{secrets.token_hex(3)}"
    flow = _cell_flow()
    src_ep, dst_ep = endpoints
    side, point, _ = PHASES[phase]
    stop = ("--stop-at", point) if fault != "wrong-key" else ()
    src = start_guest(src_ep, GUEST, flow, tag, stop if side == "source" else ())
    time.sleep(flow.warmup_s)
    driver = FaultDriver(src, dst_ep, GUEST, POLICY, flow, tag)
    injector = None
    if fault == "wrong-key":
        driver.wrong_key = True
    else:
        if side == "destination":
            driver.receiver_args = list(stop)
        injector = driver.injector = Injector(fault, side, src_ep, dst_ep, driver)
    problems = cell.problems
    try:
        report = run_migration(driver, guest_summary(GUEST), flow, quiet())
    except HarnessError as exc:
        report = None
        problems.append(f"the flow failed: {exc}")
    finally:
        if injector is not None:
            injector.finish()
    if injector is not None:
        cell.injected = injector.actions
        if injector.error:
            problems.append(injector.error)
    if report is not None:
        cell.status, cell.guest_runs_on = report.status, report.guest_runs_on
        cell.resolution = (report.resolution or {}).get("action")
        cell.memory_check = bool(report.verification.get("ok"))
        cell.detail = (report.error or {}).get("message", "")[:200]
    time.sleep(0.5)  # a copy that is on its way out exits
    cell.guests_running = _running([(src_ep, src.control), (dst_ep, driver.dst_control)])
    alive = _cell_processes(src_ep, tag) + _cell_processes(dst_ep, tag)
    count = len(cell.guests_running)
    if count not in expected_guests(phase, fault):
        problems.append(f"{count} running guest(s) ({', '.join(cell.guests_running) or 'none'})"
                        f"; expected {cell.expected}")  # fmt: skip
    if len(alive) > count:
        problems.append(f"processes of this migration besides the running guest: {alive}")
    home = None
    if count == 0 and report is not None and report.guest_runs_on in ("source", "destination"):
        problems.append(f"the report says the guest runs on the {report.guest_runs_on}, "
                        "but no copy runs")  # fmt: skip
    if count == 1 and report is not None:
        where = "source" if cell.guests_running[0] == src_ep.name else "destination"
        if report.guest_runs_on != where:
            problems.append(f"the report says the guest runs on the {report.guest_runs_on}, "
                            f"but it runs on the {where}")  # fmt: skip
        if not cell.memory_check:
            problems.append(f"memory check failed: {report.verification}")
        home = driver.home(where)
    if count <= 1:
        try:
            retry = _retry(home, endpoints, tag)
            cell.retry = retry.status
            if retry.status != "completed" or not retry.verification.get("ok"):
                problems.append(f"the retry did not complete verified: {retry.status}, "
                                f"{retry.error}, {retry.verification}")  # fmt: skip
        except HarnessError as exc:
            problems.append(f"the retry failed: {exc}")
    cell.leftovers = leftovers(src_ep) + leftovers(dst_ep)
    if cell.leftovers:
        problems.append("left behind: " + "; ".join(cell.leftovers))
        _sweep(endpoints, tag)
    if problems:
        cell.verdict = "fail"
    cell.seconds = round(time.monotonic() - started, 1)
    return cell


def select(phase: str | None = None, fault: str | None = None) -> list[tuple[str, str]]:
    """The cells to run: every phase x fault, or those of one phase and/or one fault."""
    for name, known in ((phase, PHASES), (fault, FAULTS)):
        if name is not None and name not in known:
            raise HarnessError(f"unknown {'phase' if known is PHASES else 'fault'} {name!r}: "
                               f"one of {', '.join(known)}")  # fmt: skip
    return [(p, f) for p in PHASES for f in FAULTS
            if phase in (None, p) and fault in (None, f)]  # fmt: skip


def run_matrix(endpoints: tuple[Endpoint, Endpoint], cells: list[tuple[str, str]],
               on_cell: Callable[[Cell], None] | None = None) -> list[Cell]:  # fmt: skip
    results = []
    for phase, fault in cells:
        cell = run_cell(endpoints, phase, fault)
        results.append(cell)
        if on_cell is not None:
            on_cell(cell)
    return results


def cell_line(cell: Cell) -> str:
    """One line per cell, as it finishes."""
    text = f"{cell.phase:>13} x {cell.fault:<16} {cell.verdict:<4}"
    if cell.verdict == "n/a":
        return text
    text += (f" {cell.seconds:5.1f}s  {cell.status}, runs on {cell.guest_runs_on}"
             + (f", {cell.resolution}" if cell.resolution else "")
             + f", retry {cell.retry}")  # fmt: skip
    return text + ("".join(f"\n{'':22}! {p}" for p in cell.problems))


def table(cells: list[Cell]) -> str:
    """phase x fault -> pass/FAIL/n-a, then the counts."""
    faults = [f for f in FAULTS if any(c.fault == f for c in cells)]
    phases = [p for p in PHASES if any(c.phase == p for c in cells)]
    by = {(c.phase, c.fault): c for c in cells}
    width = max(len(f) for f in faults)
    head = f"{'':13} | " + " | ".join(f"{f:^{width}}" for f in faults)
    lines = [head, "-" * len(head)]
    for p in phases:
        marks = []
        for f in faults:
            c = by.get((p, f))
            mark = "" if c is None else {"pass": "pass", "fail": "FAIL"}.get(c.verdict, "n/a")
            marks.append(f"{mark:^{width}}")
        lines.append(f"{p:>13} | " + " | ".join(marks))
    counts = {v: sum(1 for c in cells if c.verdict == v) for v in ("pass", "fail", "n/a")}
    lines.append(f"{len(cells)} cells: {counts['pass']} pass, {counts['fail']} fail, "
                 f"{counts['n/a']} n/a")  # fmt: skip
    return "\n".join(lines)


def as_json(cells: list[Cell]) -> dict[str, Any]:
    return {
        "phases": {p: {"stops": side, "stop_point": sp, "meaning": m}
                   for p, (side, sp, m) in PHASES.items()},  # fmt: skip
        "faults": FAULTS,
        "settings": {"peer_timeout_ms": PEER_TIMEOUT_MS, "max_pause_ms": MAX_PAUSE_MS,
                     "hang_s": HANG_S, "flap_s": FLAP_S, "guest": guest_summary(GUEST),
                     "policy": dataclasses.asdict(POLICY)},  # fmt: skip
        "cells": [asdict(c) for c in cells],
        "counts": {v: sum(1 for c in cells if c.verdict == v) for v in ("pass", "fail", "n/a")},
    }
