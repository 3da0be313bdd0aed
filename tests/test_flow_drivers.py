"""One flow, two host drivers: the same cases over the test bed (for real) and FreeBSD.

The FreeBSD driver runs against FakeHost, a Runner over a small model of a FreeBSD host
that answers the commands the driver uses (the VM-state probe, daemon(8) starts, cat of
a log, kill, bhyvectl --destroy / --migrate-status / --migrate-resume, ping).  Its
bhyvectl prints a transcript that the test bed's run of the same control-plane code
recorded (tests/flow_cases.py), so nothing here is output the code cannot produce.
Nothing here runs FreeBSD.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flow_cases import CASES, TRANSCRIPTS, Case, assert_expected, make_guest, run_testbed_case

from harness import freebsd
from harness.config import FreeBSDGuest, Guest, Host, HostsConfig, MigrationPolicy, SSHSettings
from harness.errors import MigrationError
from harness.events import RESULT_EXIT, EventLog
from harness.flow import FlowOptions, Report
from harness.freebsd_migrate import (
    EXIT_MARK,
    FreeBSDFlowOptions,
    check_freebsd,
    migrate_freebsd,
)
from harness.migrate import quiet
from harness.runner import CommandResult

VM = "t"
KEY = f"/var/tmp/bhyvemig/{VM}.migkey"
DST_LOG = f"/var/tmp/bhyvemig/{VM}.receive.log"


def transcript(name: str) -> tuple[list[str], int]:
    """A recorded controller run: its lines and the exit status its result implies."""
    path = TRANSCRIPTS / f"{name}.jsonl"
    lines = path.read_text().splitlines()
    log = EventLog(str(path))
    log.feed_text("\n".join(lines))
    assert log.result is not None, f"{path}: no result event"
    return lines, RESULT_EXIT[log.result.result]


@dataclass
class FakeProcess:
    """A scripted background command."""

    argv: list[str]
    lines: list[str]
    code: int | None = None  # None: runs until killed
    interrupt: bool = False  # wait() raises KeyboardInterrupt once (the user's Ctrl-C)
    killed: bool = False

    def wait_line(self, prefix: str, timeout: float) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line scripted")

    def wait(self, timeout: float) -> int | None:
        if self.interrupt:
            self.interrupt = False
            raise KeyboardInterrupt
        return -15 if self.killed else self.code

    def alive(self) -> bool:
        return self.code is None and not self.killed

    def kill(self) -> None:
        self.killed = True

    def output(self) -> str:
        return "\n".join(self.lines)


@dataclass
class FakeHost:
    """A Runner over a model of one FreeBSD host."""

    name: str
    events: list[tuple[str, str, str]]
    vm: bool = False
    pid: int | None = None
    state: str = "running"  # what --migrate-status reports while a bhyve serves the VM
    workdir: str = "/var/tmp/bhyvemig"
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    listen: bool = True  # bhyve -R manages to listen
    ping_ok: bool = True
    on_spawn: dict[str, FakeProcess] = field(default_factory=dict)
    spawned: list[FakeProcess] = field(default_factory=list)
    effects: list = field(default_factory=list)  # run when bhyvectl is spawned
    written: dict[str, tuple[str, int]] = field(default_factory=dict)
    next_pid: int = 1000

    def log(self, kind: str, text: str) -> None:
        self.events.append((self.name, kind, text))

    def append(self, path: str, text: str) -> None:
        self.files[path] = (self.files.get(path, ("", 0o644))[0] + text, 0o644)

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> CommandResult:
        self.log("run", shlex.join(argv))

        def ok(out: str = "", rc: int = 0) -> CommandResult:
            return CommandResult(argv, rc, out, "")

        if argv[:2] == ["sh", "-c"] and "/dev/vmm/" in argv[2]:
            return ok(f"vm={'yes' if self.vm else 'no'} bhyve={self.pid or 'none'}\n")
        if argv[0] == "daemon":
            log, bhyve = argv[3], argv[8:]
            self.next_pid += 1
            self.pid = self.next_pid
            if "-R" in bhyve:
                host, port = bhyve[bhyve.index("-R") + 1].rsplit(":", 1)
                self.state = "receiving"
                if self.listen:
                    self.append(log, f"Waiting for the migration source on {host} port {port}\n")
                else:
                    self.append(log, f"bhyve: cannot listen on {host} port {port}: Address "
                                     f"already in use\n{EXIT_MARK}71\n")  # fmt: skip
                    self.pid = None
            else:
                self.vm, self.state = True, "running"
            return ok()
        if argv[0] == "cat":
            return ok(self.files[argv[1]][0]) if argv[1] in self.files else ok("", 1)
        if argv[0] == "rm":
            for path in argv[2:]:
                self.files.pop(path, None)
            return ok()
        if argv[:2] == ["sh", "-c"] and argv[2].startswith("kill -TERM"):
            if int(argv[2].split()[2]) == self.pid:
                self.pid = None
                if DST_LOG in self.files:
                    self.append(DST_LOG, f"{EXIT_MARK}143\n")
            return ok()
        if argv[0] == "bhyvectl" and argv[-1] == "--destroy":
            self.vm, self.pid = False, None
            return ok()
        if argv[0] == "bhyvectl" and argv[-1] == "--migrate-status":
            if self.pid is None:
                return ok("", 1)
            status = {"state": self.state, "guest_runs_here": self.state == "running"}
            return ok(json.dumps(status) + "\n")
        if argv[0] == "bhyvectl" and argv[-1] == "--migrate-resume":
            self.state = "running"
            return ok()
        if argv[0] == "ping":
            return ok("", 0 if self.ping_ok else 2)
        return ok()

    def spawn(self, argv: list[str]) -> FakeProcess:
        self.log("spawn", shlex.join(argv))
        proc = self.on_spawn.get(argv[0]) or FakeProcess(argv, [])
        proc.argv = argv
        self.spawned.append(proc)
        if argv[0] == "bhyvectl":
            for effect in self.effects:
                effect()
        return proc

    def put_text(self, path: str, text: str, mode: int = 0o600) -> None:
        self.log("put_text", f"{path} {mode:o}")
        self.files[path] = self.written[path] = (text, mode)

    def read_text(self, path: str) -> str:
        return self.files[path][0]


def hosts_config() -> HostsConfig:
    return HostsConfig(path=Path("lab.yaml"), ssh=SSHSettings(known_hosts=Path("/dev/null")),
                       hosts={}, guests={}, migration=MigrationPolicy())  # fmt: skip


SOURCE = Host(name="alpha", address="alpha.lab", kind="freebsd",
              migration_addresses=["192.0.2.10"])  # fmt: skip
DEST = Host(name="beta", address="beta.lab", kind="freebsd", migration_addresses=["192.0.2.11"])
GUEST = Guest(
    name=VM, memory=128 << 20, vcpus=2,
    freebsd=FreeBSDGuest(
        devices=["0,hostbridge", "3,virtio-blk,/vm/t/disk.img", "31,lpc"],
        bootrom="/usr/local/share/uefi-firmware/BHYVE_UEFI.fd",
        config={"lpc.com1.path": "/dev/nmdm0A"},
    ),
)  # fmt: skip
FAST = {"sleep": lambda s: None, "boot_wait_s": 0, "settle_timeout_s": 1, "listen_timeout_s": 1,
        "poll_interval_s": 0.01}  # fmt: skip


@dataclass
class Bed:
    src: FakeHost
    dst: FakeHost
    events: list[tuple[str, str, str]]

    def index(self, host: str, kind: str, pattern: str) -> int:
        for i, (h, k, text) in enumerate(self.events):
            if h == host and k == kind and re.search(pattern, text):
                return i
        raise AssertionError(f"no {kind} on {host} matching {pattern!r}:\n{self.events}")

    def commands(self, host: str, kind: str = "run") -> list[str]:
        return [t for h, k, t in self.events if h == host and k == kind]


def bed(lines: list[str], code: int | None, *, after: str = "", running: bool = True,
        interrupt: bool = False) -> Bed:  # fmt: skip
    """Two fake hosts; bhyvectl prints lines and exits code.  after says what the
    destination does meanwhile: runs the guest, exits (a refusal), keeps listening, or
    (for an indeterminate result) runs it without telling / dies."""
    events: list[tuple[str, str, str]] = []
    src = FakeHost("alpha", events, vm=running, pid=500 if running else None)
    dst = FakeHost("beta", events)
    src.on_spawn["bhyvectl"] = FakeProcess([], lines, code, interrupt)

    def effect() -> None:
        if after in ("runs", "runs-silently"):
            if after == "runs":
                src.vm, src.pid = False, None
            else:
                src.state = "paused"
            dst.vm, dst.state = True, "running"
        elif after in ("exits", "dies"):
            dst.vm = after == "exits"  # bhyve -R had created the VM before refusing
            dst.pid = None
            dst.append(DST_LOG, f"bhyve: migration refused\n{EXIT_MARK}1\n")
            if after == "dies":
                src.state = "paused"

    src.effects.append(effect)
    return Bed(src, dst, events)


def run_freebsd(b: Bed, policy: MigrationPolicy | None = None, **opts) -> Report:
    return migrate_freebsd(hosts_config(), SOURCE, DEST, GUEST, policy or MigrationPolicy(),
                           (b.src, b.dst), quiet(), options=FreeBSDFlowOptions(**{**FAST, **opts}),
                           flow=FlowOptions(run_after_s=0, migrate_timeout_s=5))  # fmt: skip


# What the destination does in each case, on FreeBSD.
AFTER = {"completed": "runs", "incompatible": "exits", "wrong-key": "listens",
         "lose-running": "runs-silently", "die-after-go": "dies", "cancelled": "exits",
         "dry-run-compatible": "listens", "dry-run-incompatible": "listens",
         "destination-killed": "exits", "switchover-hook": "runs",
         "switchover-hook-fails": "exits"}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root")
    from harness.local import local_endpoints

    return local_endpoints(tmp_path_factory.mktemp("drivers"))


def _run_case(driver: str, case: Case, request) -> Report:
    if driver == "testbed":
        return run_testbed_case(case, request.getfixturevalue("local"))
    lines, code = transcript(case.name)
    if case.check:
        b = bed(lines, code, after=AFTER[case.name])
        report = check_freebsd(hosts_config(), SOURCE, DEST, GUEST, (b.src, b.dst), quiet(),
                               options=FreeBSDFlowOptions(**FAST))  # fmt: skip
        argv = shlex.split(b.events[b.index("alpha", "spawn", "^bhyvectl ")][2])
        assert argv == ["bhyvectl", f"--vm={VM}", "--migrate-json",
                        "--migrate-check=192.0.2.11:24981", f"--migrate-keyfile={KEY}"]  # fmt: skip
        assert b.src.vm and b.src.pid == 500 and b.dst.pid is None
        return report
    if case.interrupt_after_s is None:
        b = bed(lines, code, after=AFTER[case.name])
        report = run_freebsd(b, policy=MigrationPolicy(**case.policy))
        if case.policy.get("switchover_hook"):
            argv = b.events[b.index("alpha", "spawn", "^bhyvectl ")][2]
            assert "--migrate-switchover-wait=15000" in argv
            answer = "--migrate-continue" if code == 0 else "--migrate-cancel"
            assert f"bhyvectl --vm={VM} --migrate-json {answer}" in b.commands("alpha")
        return report
    # Ctrl-C while bhyvectl runs; after --migrate-cancel it prints the recorded run.
    b = bed([], None, after=AFTER[case.name], interrupt=True)
    bhyvectl = b.src.on_spawn["bhyvectl"]
    real_run = b.src.run

    def run(argv, timeout=60.0, check=True):
        if argv[-1] == "--migrate-cancel":
            bhyvectl.lines, bhyvectl.code = lines, code
        return real_run(argv, timeout, check)

    b.src.run = run  # type: ignore[method-assign]
    report = run_freebsd(b, policy=MigrationPolicy(**case.policy))
    assert f"bhyvectl --vm={VM} --migrate-json --migrate-cancel" in b.commands("alpha")
    return report


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("driver", ["testbed", "freebsd"])
def test_case_on_both_drivers(driver: str, case: Case, request) -> None:
    report = _run_case(driver, case, request)
    assert report.kind == driver
    assert_expected(report, case)


@pytest.mark.parametrize(("case", "where"), [("lose-running", "destination"),
                                             ("die-after-go", "source")])  # fmt: skip
def test_testbed_resolve_later_from_the_control_sockets(local, case: str, where: str) -> None:
    """--no-resolve leaves both copies alone; `invoke resolve` settles it afterwards."""
    from harness.migrate import guest_status

    spec = next(c for c in CASES if c.name == case)
    held: dict = {}
    report = run_testbed_case(
        dataclasses.replace(spec, flow={**spec.flow, "resolve": False}), local,
        keep_driver=lambda d: held.update(driver=d),
    )  # fmt: skip
    assert report.status == "indeterminate" and report.guest_runs_on == "undecided"
    assert report.resolution is None
    hint = next(n for n in report.notes if "invoke resolve" in n)
    driver = held["driver"]
    assert driver.source.control in hint and driver.dst_control in hint
    src_ep, dst_ep = local
    try:
        assert guest_status(src_ep, driver.source.control) == {
            "state": "paused", "guest_runs_here": False}  # fmt: skip
        # What an operator runs later, with the report's hint.
        done = subprocess.run(["invoke", "resolve", "--source-control", driver.source.control,
                               "--destination-control", driver.dst_control],
                              capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        action = "destroyed-source" if where == "destination" else "resumed-source"
        last = done.stdout.splitlines()[-1]
        assert last.startswith(f"{action}: ") and last.endswith(f"runs on the {where}")
        home = driver.dst_control if where == "destination" else driver.source.control
        other = driver.source.control if where == "destination" else driver.dst_control
        home_ep, other_ep = (dst_ep, src_ep) if where == "destination" else (src_ep, dst_ep)
        assert guest_status(home_ep, home)["guest_runs_here"] is True
        # Exactly one guest: the other copy answers no more (its process ended).
        for _ in range(50):
            if guest_status(other_ep, other) is None:
                break
            time.sleep(0.1)
        assert guest_status(other_ep, other) is None
    finally:
        for guest in (driver.source, driver.arrived):
            if guest is not None:
                guest.stop()
        if driver.receiver is not None:
            driver.receiver.kill()


# -- FreeBSD specifics ---------------------------------------------------------------


def test_freebsd_command_lines_and_order() -> None:
    b = bed(*transcript("completed"), after="runs")
    report = run_freebsd(b)
    keys = [e for e in b.events if e[1] == "put_text"]
    assert keys == [("alpha", "put_text", f"{KEY} 600"), ("beta", "put_text", f"{KEY} 600")]
    key_text = b.src.written[KEY][0]
    assert re.fullmatch(r"[0-9a-f]{64}\n", key_text) and b.dst.written[KEY][0] == key_text
    start = b.index("beta", "run", r"^daemon ")
    receiver = shlex.split(b.events[start][2])
    assert receiver[:4] == ["daemon", "-f", "-o", DST_LOG]
    assert receiver[8:] == freebsd.bhyve_argv(GUEST, receive="192.0.2.11:24981", keyfile=KEY)
    ctl = b.index("alpha", "spawn", r"^bhyvectl ")
    assert shlex.split(b.events[ctl][2]) == [
        "bhyvectl", f"--vm={VM}", "--migrate-json", "--migrate-live=192.0.2.11:24981",
        f"--migrate-keyfile={KEY}", "--migrate-downtime-limit=300", "--migrate-max-rounds=30",
    ]  # fmt: skip
    listening = max(i for i, (h, k, t) in enumerate(b.events[:ctl])
                    if h == "beta" and t.startswith("cat "))  # fmt: skip
    assert max(i for i, e in enumerate(b.events) if e[1] == "put_text") < start < listening < ctl
    assert not [c for c in b.commands("alpha") if c.startswith("daemon ")]  # it ran already
    assert f"rm -f {KEY}" in b.commands("alpha") and f"rm -f {KEY}" in b.commands("beta")
    assert not [c for _, _, c in b.events if c.endswith("--destroy")]
    names = [c["name"] for c in report.verification["checks"]]
    assert names == ["destination bhyve runs the guest", "source bhyve has exited",
                     f"/dev/vmm/{VM} gone on the source"]  # fmt: skip
    assert report.as_json()["hosts"] == {"source": "alpha", "destination": "beta"}


def test_freebsd_refusal_destroys_the_destination_copy_only() -> None:
    b = bed(*transcript("incompatible"), after="exits")
    report = run_freebsd(b)
    by = {c["name"]: c for c in report.verification["checks"]}
    assert by["destination bhyve ended"]["detail"] == "exit 1"
    assert by[f"/dev/vmm/{VM} gone on the destination"]["ok"]
    assert f"bhyvectl --vm={VM} --destroy" in b.commands("beta")
    assert not [c for c in b.commands("alpha") if "--destroy" in c or "kill" in c]
    assert b.src.vm and b.src.pid == 500
    assert "migration refused" in report.destination_output


def test_freebsd_listening_receiver_is_stopped_after_a_refusal() -> None:
    b = bed(*transcript("wrong-key"), after="listens")
    run_freebsd(b)
    assert any(c.startswith("sh -c 'kill -TERM") for c in b.commands("beta"))
    assert b.dst.pid is None


@pytest.mark.parametrize(
    ("case", "after", "action"),
    [("lose-running", "runs-silently", "--destroy"), ("die-after-go", "dies", "--migrate-resume")],
)
def test_freebsd_resolution_does_one_thing_to_the_source(case: str, after: str,
                                                        action: str) -> None:  # fmt: skip
    b = bed(*transcript(case), after=after)
    report = run_freebsd(b)
    on_source = [c for c in b.commands("alpha") if c.startswith("bhyvectl --vm=t ")]
    touched = [c for c in on_source if c.endswith(("--destroy", "--migrate-resume"))]
    assert touched == [f"bhyvectl --vm={VM} {action}" if action == "--destroy"
                       else f"bhyvectl --vm={VM} --migrate-json {action}"]  # fmt: skip
    # The destination was looked at first: asked if its bhyve runs, else found gone.
    spawned = b.index("alpha", "spawn", "^bhyvectl ")
    looked = next(i for i, (h, _, _) in enumerate(b.events) if h == "beta" and i > spawned)
    assert looked < b.index("alpha", "run", re.escape(action))
    asked = [c for c in b.commands("beta") if c.endswith("--migrate-status")]
    assert bool(asked) is (after == "runs-silently")
    assert report.resolution is not None and report.resolution["destination_runs_guest"] is (
        after == "runs-silently")  # fmt: skip


def test_freebsd_undecided_when_the_destination_does_not_answer() -> None:
    b = bed(*transcript("lose-running"), after="runs-silently")
    b.dst.state = "?"  # answers nothing readable
    real_run = b.dst.run

    def mute(argv, timeout=60.0, check=True):
        if argv[-1] == "--migrate-status":
            return CommandResult(argv, 0, "bhyvectl: no reply\n", "")
        return real_run(argv, timeout, check)

    b.dst.run = mute  # type: ignore[method-assign]
    report = run_freebsd(b)
    assert report.status == "indeterminate" and report.guest_runs_on == "undecided"
    assert report.resolution is not None and report.resolution["action"] == "none"
    assert not [c for c in b.commands("alpha") if c.endswith(("--destroy", "--migrate-resume"))]
    assert any("invoke resolve --hosts lab.yaml --guest t" in n for n in report.notes)


def test_an_unreadable_event_does_not_stop_the_flow() -> None:
    lines, code = transcript("completed")
    garbled = [lines[0], '{"event":"round","index":"one"}', *lines[1:]]
    report = run_freebsd(bed(garbled, code, after="runs"))
    assert report.status == "completed" and report.guest_runs_on == "destination"
    assert any("'index' should be a non-negative integer" in n for n in report.notes)


def test_a_result_that_contradicts_the_exit_status_is_resolved_by_asking() -> None:
    lines, _ = transcript("completed")  # says ok, but bhyvectl exits 1
    b = bed(lines, 1, after="runs-silently")
    report = run_freebsd(b)
    assert report.status == "indeterminate"
    assert any("but exit status 1" in n for n in report.notes)
    # The destination runs it: the paused source copy is destroyed, nothing resumed.
    assert report.resolution is not None and report.resolution["action"] == "destroyed-source"
    assert f"bhyvectl --vm={VM} --destroy" in b.commands("alpha")
    assert not [c for c in b.commands("alpha") if c.endswith("--migrate-resume")]


def test_freebsd_starts_the_guest_when_it_is_not_running() -> None:
    b = bed(*transcript("completed"), after="runs", running=False)
    run_freebsd(b)
    start = b.index("alpha", "run", r"^daemon ")
    argv = shlex.split(b.events[start][2])
    assert argv[8:] == freebsd.bhyve_argv(GUEST)
    assert start < b.index("beta", "run", r"^daemon ") < b.index("alpha", "spawn", "^bhyvectl")


def test_freebsd_receiver_that_cannot_listen_stops_the_flow() -> None:
    b = bed(*transcript("completed"), after="runs")
    b.dst.listen = False
    with pytest.raises(MigrationError, match="(?s)exited 71 before listening.*already in use"):
        run_freebsd(b)
    assert not b.src.spawned
    assert f"rm -f {KEY}" in b.commands("beta")


def test_freebsd_refuses_a_destination_that_already_runs_the_guest() -> None:
    b = bed(*transcript("completed"), after="runs")
    b.dst.vm, b.dst.pid = True, 777
    with pytest.raises(MigrationError, match="already runs there"):
        run_freebsd(b)
    assert not b.src.spawned


def test_freebsd_policy_options() -> None:
    b = bed(*transcript("completed"), after="runs")
    run_freebsd(b, MigrationPolicy(fixed_rounds=4, bandwidth=125_000_000, encrypt=True))
    argv = shlex.split(b.events[b.index("alpha", "spawn", "^bhyvectl")][2])
    assert "--migrate-fixed-rounds=4" in argv
    assert not [a for a in argv if a.startswith("--migrate-max-rounds")]
    assert "--migrate-bandwidth=125000000" in argv and "--migrate-encrypt" in argv


def test_freebsd_guest_probe_measures_the_outage() -> None:
    b = bed(*transcript("completed"), after="runs")
    b.src.on_spawn["ping"] = FakeProcess(
        [], [f"64 bytes from 192.0.2.50: icmp_seq={i} ttl=64 time=0.3 ms" for i in (0, 1, 2, 6, 7)]
    )
    report = run_freebsd(b, guest_address="192.0.2.50")
    pinger = next(p for p in b.src.spawned if p.argv[0] == "ping")
    assert pinger.killed and pinger.argv[:4] == ["ping", "-n", "-i", "0.1"]
    assert report.downtime_probe_ms == pytest.approx(400.0)
    assert "guest answers ping on the destination" in [
        c["name"] for c in report.verification["checks"]]  # fmt: skip


def test_freebsd_rejects_hosts_of_another_kind() -> None:
    b = bed(*transcript("completed"), after="runs")
    testbed = Host(name="ns1", address="10.77.0.2", kind="testbed")
    with pytest.raises(MigrationError, match="not freebsd"):
        migrate_freebsd(hosts_config(), testbed, DEST, GUEST, MigrationPolicy(), (b.src, b.dst))
    assert b.events == []


def test_the_recorded_transcripts_come_from_the_test_bed_guest() -> None:
    # The FreeBSD tests reuse them with a FreeBSD guest of the same size.
    assert make_guest().memory == GUEST.memory and make_guest().vcpus == GUEST.vcpus
