"""The test-bed host driver: a test-bed guest moved between two hosts with tbvm and tbctl.

harness.flow runs the migration; this module says how, on test-bed hosts, over the
Runner protocol only (two local processes, or two namespace hosts over SSH):

  - the guest runs on the source (`tbvm run`), the destination listens
    (`tbvm receive`, which prints "LISTENING <port>", then "RUNNING");
  - `tbctl migrate` is the controller (the same control-plane code as bhyvectl),
    `tbctl check` its dry run, `tbctl cancel | resume | guest-status | stop` the
    operator commands;
  - the guest is probed over UDP from outside, and checked page by page
    (`tbctl verify`) where it runs afterwards: after a rollback that is the source,
    so a rollback that lost memory is caught too.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.errors import HarnessError, MigrationError
from harness.flow import FlowOptions, Report, run_check, run_migration
from harness.probe import Prober, ProbeTarget
from harness.progress import Display, PlainDisplay
from harness.runner import Process, Runner
from harness.switchover import engine_wait_ms

__all__ = [
    "Endpoint",
    "FlowOptions",
    "MigrationOutcome",
    "PingPong",
    "RunningGuest",
    "TestbedDriver",
    "guest_args",
    "last_json",
    "migrate_once",
    "start_guest",
]


@dataclass
class Endpoint:
    """A host taking part: how to reach it and where the programs are."""

    runner: Runner
    bindir: str
    migration_address: str  # the destination listens here; the source connects
    probe_address: str  # where the harness sends UDP probes
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.runner.name

    def tool(self, name: str) -> str:
        return f"{self.bindir.rstrip('/')}/{name}"


@dataclass
class RunningGuest:
    """A guest process on some endpoint, with its control socket."""

    endpoint: Endpoint
    process: Process
    control: str
    probe_port: int
    tag: str = ""  # names its disk image (disk_image())

    def tbctl(self, *args: str, timeout: float = 60.0, check: bool = True):
        argv = [self.endpoint.tool("tbctl"), "--control", self.control, *args]
        return self.endpoint.runner.run(argv, timeout=timeout, check=check)

    def verify(self) -> dict[str, Any]:
        # Exit 1 means "checked, and the check failed": the JSON says how.
        result = self.tbctl("verify", timeout=120.0, check=False)
        return last_json(result.stdout, f"{self.endpoint.name}: tbctl verify")

    def stop(self) -> None:
        if self.process.alive():
            self.tbctl("stop", check=False, timeout=30.0)
            if self.process.wait(10.0) is None:
                self.process.kill()
        # A guest process that was killed cannot remove its control socket.
        self.endpoint.runner.run(["rm", "-f", self.control], check=False)


@dataclass
class MigrationOutcome:
    """Everything one migration produced: the report and the guest's new home."""

    report: Report
    guest: RunningGuest | None = None  # where the guest runs now, if kept running


def last_json(text: str, what: str) -> dict[str, Any]:
    """The last JSON object line a tool printed (tbctl verify/status); what names the tool."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError as exc:
                raise HarnessError(f"{what}: unreadable JSON: {exc}: {line[:200]}") from exc
    raise HarnessError(f"{what}: printed no JSON result; output:\n{text[-2000:]}")


def engine_memory_line(output: str) -> dict[str, Any] | None:
    """tbvm's ENGINE_MEMORY line (printed when its side of a migration ends): peak and
    resident memory and the guest's resident part, in KiB, with extra_peak_kib (the peak
    beyond guest memory; the kernel updates VmHWM lazily, so the resident figure can be
    the larger) and extra_share (that over the guest's size); None without."""
    for line in reversed(output.splitlines()):
        if line.startswith("ENGINE_MEMORY "):
            try:
                mem = json.loads(line.split(" ", 1)[1])
                extra = max(0, max(mem["peak_kib"], mem["resident_kib"]) - mem["guest_kib"])
                size = mem["guest_size_kib"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise HarnessError(f"tbvm: unreadable ENGINE_MEMORY line: {line!r}") from exc
            mem["extra_peak_kib"] = extra
            mem["extra_share"] = round(extra / size, 5) if size else None
            return mem
    return None


def guest_args(guest: Guest) -> list[str]:
    """tbvm options describing the guest: both ends must be configured alike."""
    tb = guest.testbed or TestbedGuest()
    workload = tb.workload
    if tb.rate and "@" not in workload:
        workload = f"{workload}@{tb.rate}"
    args = [
        "--name", guest.name,
        "--memory", str(guest.memory),
        "--vcpus", str(guest.vcpus),
        "--segments", str(tb.segments),
        "--workload", workload,
        "--fill", tb.fill,
    ]  # fmt: skip
    if tb.dma_rate:
        args += ["--dma", str(tb.dma_rate)]
    if tb.dma_unlogged:
        args += ["--dma-unlogged", tb.dma_unlogged]
    return args


def disk_image(endpoint: Endpoint, guest: Guest, tag: str) -> str:
    """Where the guest's tb-disk image lives on endpoint: the shared image if the guest
    names one, else the host's own."""
    shared = (guest.testbed or TestbedGuest()).disk_image
    return shared or f"{endpoint.runner.workdir}/{guest.name}-{tag}.disk"


def disk_args(endpoint: Endpoint, guest: Guest, tag: str) -> list[str]:
    """tbvm options for the guest's disk on endpoint, if it has one."""
    tb = guest.testbed or TestbedGuest()
    if not tb.disk:
        return []
    args = ["--disk", str(tb.disk), "--disk-image", disk_image(endpoint, guest, tag)]
    if tb.disk_hot:
        args += ["--disk-hot", str(tb.disk_hot)]
    if tb.disk_rate:
        args += ["--disk-rate", str(tb.disk_rate)]
    if tb.disk_prefill:
        args.append("--disk-prefill")  # the destination ignores it: its image is received
    return args


def guest_summary(guest: Guest) -> dict[str, Any]:
    """The report's description of a test-bed guest."""
    return {"name": guest.name, "memory_bytes": guest.memory, "vcpus": guest.vcpus,
            "workload": (guest.testbed or TestbedGuest()).workload}  # fmt: skip


def policy_args(policy: MigrationPolicy, flow: FlowOptions) -> list[str]:
    """tbctl migrate options for the engine's round policy."""
    args = ["--downtime-limit", str(policy.downtime_limit_ms)]
    # The two exclude each other: fixed rounds replace the bound.
    if policy.fixed_rounds:
        args += ["--fixed-rounds", str(policy.fixed_rounds)]
    else:
        args += ["--max-rounds", str(policy.max_rounds)]
    if policy.bandwidth:
        args += ["--bandwidth", str(policy.bandwidth)]
    if policy.encrypt:
        args.append("--encrypt")
    if not policy.auto_throttle:
        args.append("--no-throttle")
    if policy.switchover_hook:
        args += ["--switchover-wait", str(engine_wait_ms(policy.switchover_timeout))]
    if policy.disks:
        args.append("--disks")
    if policy.streams > 1:
        args += ["--streams", str(policy.streams)]
    if flow.max_time_ms:
        args += ["--max-time", str(flow.max_time_ms)]
    if flow.peer_timeout_ms:
        args += ["--timeout", str(flow.peer_timeout_ms)]
    if flow.max_pause_ms:
        args += ["--max-pause", str(flow.max_pause_ms)]
    if flow.fault:
        args += ["--fault", flow.fault]
    return args


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _free_udp_port() -> int:
    # The probe port only has to be unique per run; the guest binds it.
    return 20000 + secrets.randbelow(20000)


def start_guest(endpoint: Endpoint, guest: Guest, flow: FlowOptions, tag: str,
                extra: tuple[str, ...] = ()) -> RunningGuest:  # fmt: skip
    """Start a fresh guest on endpoint with `tbvm run` (extra: test-only options)."""
    control = f"{endpoint.runner.workdir}/{guest.name}-{tag}.ctl"
    port = _free_udp_port()
    argv = [
        endpoint.tool("tbvm"), "run", *guest_args(guest), *disk_args(endpoint, guest, tag),
        "--control", control, "--probe", _addr(endpoint.probe_address, port), *extra,
    ]  # fmt: skip
    proc = endpoint.runner.spawn(argv)
    try:
        proc.wait_line("RUNNING", flow.start_timeout_s)
    except BaseException:
        # A guest that did not come up, or an interrupt while it did: nobody else
        # knows of this process, so it must not outlive the harness.
        proc.kill()
        raise
    return RunningGuest(endpoint, proc, control, port, tag)


@dataclass
class TestbedDriver:
    """harness.flow.HostDriver for test-bed hosts: the guest at `source` moves to
    `destination`."""

    source: RunningGuest
    destination: Endpoint
    guest: Guest
    policy: MigrationPolicy
    flow: FlowOptions
    tag: str
    kind: str = "testbed"
    controller: str = "tbctl"
    receiver: Process | None = None
    arrived: RunningGuest | None = None  # the guest on the destination, once it runs
    receiver_args: list[str] = field(default_factory=list)  # test-only tbvm receive options
    _keys: list[tuple[Runner, str]] = field(default_factory=list)
    _prober: Prober | None = None
    _port: int = 0

    __test__ = False  # not a pytest class, despite the name

    def __post_init__(self) -> None:
        work = self.destination.runner.workdir
        self.dst_control = f"{work}/{self.guest.name}-{self.tag}-in.ctl"
        self.dst_report = f"{work}/{self.guest.name}-{self.tag}-in.json"
        self.dst_probe = _free_udp_port()

    @property
    def source_name(self) -> str:
        return self.source.endpoint.name

    @property
    def destination_name(self) -> str:
        return self.destination.name

    def write_keys(self, key_hex: str) -> None:
        for ep in (self.source.endpoint, self.destination):
            path = f"{ep.runner.workdir}/migration-{self.tag}.key"
            ep.runner.put_text(path, key_hex + "\n", mode=0o600)
            self._keys.append((ep.runner, path))

    def remove_keys(self) -> None:
        # The key is single-use; the destination's report is in ours by now.  Only the
        # files written are removed, and an unreachable host does not stop the others.
        files = [*self._keys, (self.destination.runner, self.dst_report)]
        self._keys = []
        for runner, path in files:
            try:
                runner.run(["rm", "-f", path], check=False)
            except HarnessError:
                continue

    def _key(self, ep: Endpoint) -> str:
        return f"{ep.runner.workdir}/migration-{self.tag}.key"

    def start_source(self) -> None:
        if not self.source.process.alive():
            raise MigrationError(f"{self.source_name}: the guest to migrate is not running")

    def start_destination(self) -> None:
        dst = self.destination
        argv = [
            dst.tool("tbvm"), "receive", *guest_args(self.guest),
            *disk_args(dst, self.guest, self.tag),
            "--listen", _addr(dst.migration_address, 0),
            "--key-file", self._key(dst), "--control", self.dst_control,
            "--probe", _addr(dst.probe_address, self.dst_probe),
            "--report", self.dst_report,
        ]  # fmt: skip
        if (self.guest.testbed or TestbedGuest()).lazy_memory:
            argv.append("--lazy-memory")
        if self.flow.destination_fault:
            argv += ["--fault", self.flow.destination_fault]
        argv += self.receiver_args
        self.receiver = dst.runner.spawn(argv)
        try:
            line = self.receiver.wait_line("LISTENING", self.flow.start_timeout_s)
            self._port = int(line.split()[-1])
        except (ValueError, IndexError) as exc:
            self.receiver.kill()
            raise MigrationError(f"{dst.name}: tbvm receive printed no port") from exc

    def start_probe(self) -> None:
        self._prober = Prober(
            ProbeTarget("source", self.source.endpoint.probe_address, self.source.probe_port),
            ProbeTarget("destination", self.destination.probe_address, self.dst_probe),
            max_seconds=self.flow.migrate_timeout_s + 30,
        )
        self._prober.start()

    def stop_probe(self, migrated: bool) -> float | None:
        if self._prober is None:
            return None
        if migrated:
            # RUNNING is printed as the vCPUs start: give the first answer time to arrive.
            self._prober.wait_for_answer(self._prober.destination.label, 2.0)
        outage = self._prober.stop().outage_ms
        self._prober = None
        return round(outage, 3) if outage is not None else None

    def start_migration(self) -> Process:
        ep = self.source.endpoint
        return ep.runner.spawn([
            ep.tool("tbctl"), "--control", self.source.control, "migrate",
            "--to", _addr(self.destination.migration_address, self._port),
            "--key-file", self._key(ep), *policy_args(self.policy, self.flow),
        ])  # fmt: skip

    def start_check(self) -> Process:
        ep = self.source.endpoint
        return ep.runner.spawn([
            ep.tool("tbctl"), "--control", self.source.control, "check",
            "--to", _addr(self.destination.migration_address, self._port),
            "--key-file", self._key(ep),
        ])  # fmt: skip

    def cancel(self) -> None:
        self.source.tbctl("cancel", timeout=30.0)

    def switchover_continue(self) -> None:
        self.source.tbctl("switchover-continue", timeout=30.0)

    def hook_environment(self) -> dict[str, str]:
        src, dst = self.source.endpoint, self.destination
        env = {
            "BMIG_KIND": self.kind, "BMIG_GUEST": self.guest.name,
            "BMIG_SOURCE": src.name, "BMIG_DESTINATION": dst.name,
            "BMIG_SOURCE_ADDRESS": src.migration_address,
            "BMIG_DESTINATION_ADDRESS": dst.migration_address,
            "BMIG_SOURCE_CONTROL": self.source.control,
            "BMIG_DESTINATION_CONTROL": self.dst_control,
            "BMIG_TBCTL": src.tool("tbctl"),
        }  # fmt: skip
        if (self.guest.testbed or TestbedGuest()).disk:
            env["BMIG_SOURCE_DISK"] = disk_image(src, self.guest, self.source.tag)
            env["BMIG_DESTINATION_DISK"] = disk_image(dst, self.guest, self.tag)
        return env

    def _receiver_alive(self) -> bool:
        return self.receiver is not None and self.receiver.alive()

    def destination_runs_guest(self) -> bool | None:
        # Ask only once the source's side is over: a receiver that has GO may be about
        # to run the guest while the source still waits for its RUNNING; ended now, the
        # guest would run nowhere once the RUNNING arrives.
        settled_source(self.source.endpoint, self.source.control)
        if not self._receiver_alive():
            return False
        status = guest_status(self.destination, self.dst_control)
        if status is None:
            # Nobody answers: a receiver that is ending may not show its exit yet (over
            # SSH the exit status comes after the process is gone). A moment for it.
            assert self.receiver is not None
            return None if self.receiver.wait(3.0) is None else False
        if status["guest_runs_here"]:
            return True
        # Not running yet: end it so that it never can, before the source resumes.
        assert self.receiver is not None
        self.receiver.kill()
        return False

    def resume_source(self) -> None:
        resume_paused(self.source.endpoint, self.source.control)

    def destroy_source(self) -> None:
        self.source.stop()

    def _arrive(self) -> None:
        assert self.receiver is not None
        self.arrived = RunningGuest(self.destination, self.receiver, self.dst_control,
                                    self.dst_probe, self.tag)  # fmt: skip

    def confirm_destination(self) -> str | None:
        assert self.receiver is not None
        try:
            self.receiver.wait_line("RUNNING", self.flow.start_timeout_s)
        except HarnessError as exc:
            return str(exc)
        self._arrive()
        return None

    def discard_destination(self) -> int | None:
        # After authentication the destination discards and exits non-zero; a
        # connection refused before it leaves it listening for the source.
        if self.receiver is None:
            return None
        code = self.receiver.wait(5.0)
        if code is None:
            self.receiver.kill()
        return code

    def verify(self, where: str) -> dict[str, Any]:
        if where == "destination" and self.arrived is None:
            self._arrive()
        home = self.arrived if where == "destination" else self.source
        assert home is not None
        if not home.process.alive():
            return {"ok": False, "pages_checked": 0, "where": where, "gone": True,
                    "errors": [f"the guest is gone from the {where}"]}  # fmt: skip
        result = home.verify()
        result["where"] = where
        other = self.source.process if where == "destination" else self.receiver
        if other is not None and other.wait(10.0) is None:
            result["ok"] = False
            gone = "source" if where == "destination" else "destination"
            result.setdefault("errors", []).append(f"the guest still runs on the {gone}")
        return result

    def engine_memory(self) -> dict[str, Any] | None:
        procs = {"source": self.source.process, "destination": self.receiver}
        return {side: engine_memory_line(p.output() if p else "") for side, p in procs.items()}

    def destination_report(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.destination.runner.read_text(self.dst_report))
        except (OSError, HarnessError, json.JSONDecodeError):
            return None

    def home(self, where: str) -> RunningGuest | None:
        return {"destination": self.arrived, "source": self.source}.get(where)

    def finish(self, where: str, keep_running: bool) -> None:
        if where == "undecided":
            # Both copies stay as they are, for an operator to resolve; what a dead
            # process left (its control socket) goes.
            if not self.source.process.alive():
                self.source.stop()
            if self.receiver is not None and not self.receiver.alive():
                self.destination.runner.run(["rm", "-f", self.dst_control], check=False)
            return
        kept = self.home(where) if keep_running else None
        if kept is not None and not kept.process.alive():
            kept = None  # its process died: stop() removes what it left
        for guest in (self.source, self.arrived):
            if guest is not None and guest is not kept:
                guest.stop()
        receiver_kept = kept is not None and kept is self.arrived
        if self.receiver is not None and not receiver_kept:
            if self.receiver.wait(0) is None:
                self.receiver.kill()
            # A receiver that died (or was killed) cannot remove its control socket.
            self.destination.runner.run(["rm", "-f", self.dst_control], check=False)

    def resolve_hint(self) -> str:
        return (f"invoke resolve [--hosts FILE] --source-control {self.source.control} "
                f"--destination-control {self.dst_control}")  # fmt: skip


def guest_status(ep: Endpoint, control: str) -> dict[str, Any] | None:
    """`tbctl guest-status`: {"state": ..., "guest_runs_here": bool}; None when nobody
    answers on that control socket (no process serves it)."""
    result = ep.runner.run([ep.tool("tbctl"), "--control", control, "guest-status"],
                           timeout=30.0, check=False)  # fmt: skip
    if result.returncode != 0:
        return None
    status = last_json(result.stdout, f"{ep.name}: tbctl guest-status")
    if not isinstance(status.get("guest_runs_here"), bool):
        raise HarnessError(f"{ep.name}: tbctl guest-status gave no guest_runs_here: {status}")
    return status


def settled_source(ep: Endpoint, control: str, settle_s: float = 30.0) -> dict[str, Any] | None:
    """The source's guest-status once it has left "migrating" (its side of the migration
    is over: migrated, rolled back, or paused by an indeterminate outcome); None when no
    process serves control (it migrated and exited, or died)."""
    deadline = time.monotonic() + settle_s
    while True:
        status = guest_status(ep, control)
        if status is None or status["state"] != "migrating" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def resume_paused(ep: Endpoint, control: str) -> None:
    """Resume the source's guest if an indeterminate migration left it paused; a source
    that rolled back by itself (its controller died) is left running.  MigrationError when
    its process is gone: no copy is left to resume."""
    status = settled_source(ep, control)
    if status is None:
        raise MigrationError(f"{ep.name}: no process serves {control}: the source's "
                             "copy of the guest is gone")  # fmt: skip
    if status["state"] == "running":
        return
    ep.runner.run([ep.tool("tbctl"), "--control", control, "resume"], timeout=30.0)


@dataclass
class ControlSockets:
    """harness.flow.Resolvable from two control sockets alone (`invoke resolve`), for an
    indeterminate migration whose harness run has ended."""

    source: Endpoint
    source_control: str
    destination: Endpoint
    destination_control: str

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def destination_name(self) -> str:
        return self.destination.name

    def _tbctl(self, ep: Endpoint, control: str, command: str) -> None:
        ep.runner.run([ep.tool("tbctl"), "--control", control, command], timeout=30.0)

    def destination_runs_guest(self) -> bool | None:
        settled_source(self.source, self.source_control)  # as TestbedDriver's
        status = guest_status(self.destination, self.destination_control)
        if status is not None and status["guest_runs_here"]:
            return True
        if status is not None:
            # It answers but does not run the guest: stop it so that it never will.
            self._tbctl(self.destination, self.destination_control, "stop")
        # No answer: no process serves that socket, so the guest cannot run there.
        return False

    def resume_source(self) -> None:
        resume_paused(self.source, self.source_control)

    def destroy_source(self) -> None:
        self._tbctl(self.source, self.source_control, "stop")


def resolve_testbed(hosts: str | None, source_control: str, destination_control: str):
    """`invoke resolve` on the test bed: the migration pair of the hosts file (or the two
    local endpoints), and the two control sockets the indeterminate report named."""
    from harness.config import load_hosts
    from harness.deploy import endpoints_for
    from harness.flow import resolve
    from harness.local import local_endpoints, local_workdir

    if not source_control or not destination_control:
        raise HarnessError("give both --source-control and --destination-control")
    if hosts:
        src, dst = endpoints_for(load_hosts(hosts))
        return resolve(ControlSockets(src, source_control, dst, destination_control),
                       PlainDisplay())  # fmt: skip
    with local_workdir() as workdir:
        src, dst = local_endpoints(workdir.path)
        return resolve(ControlSockets(src, source_control, dst, destination_control),
                       PlainDisplay())  # fmt: skip


def check_once(source: RunningGuest, destination: Endpoint, guest: Guest, flow: FlowOptions,
               tag: str, display: Display | None = None) -> Report:  # fmt: skip
    """Dry-run a migration of the guest at `source` to `destination`
    (harness.flow.run_check); the guest keeps running on the source."""
    driver = TestbedDriver(source, destination, guest, MigrationPolicy(), flow, tag)
    return run_check(driver, guest_summary(guest), dataclasses.replace(flow, keep_running=True),
                     display)  # fmt: skip


def migrate_once(
    source: RunningGuest,
    destination: Endpoint,
    guest: Guest,
    policy: MigrationPolicy,
    flow: FlowOptions,
    tag: str,
    display: Display | None = None,
) -> MigrationOutcome:
    """Move the guest running at `source` to `destination` (harness.flow.run_migration)."""
    driver = TestbedDriver(source, destination, guest, policy, flow, tag)
    report = run_migration(driver, guest_summary(guest), flow, display)
    home = driver.home(report.guest_runs_on) if flow.keep_running else None
    return MigrationOutcome(report, home)


def quiet() -> Display:
    """A display that shows nothing (tests, benchmarks)."""
    import io

    return PlainDisplay(io.StringIO())


def _status_kib(status: dict[str, str], key: str) -> int:
    return int(status.get(key, "0 kB").split()[0])


def process_usage(guest: RunningGuest) -> dict[str, Any]:
    """A guest process's open descriptors, threads and memory (VmRSS; VmHWM, its peak),
    read from /proc on its host (Linux hosts: the test bed); {} when it cannot be read."""
    pid = getattr(guest.process, "pid", None)
    if pid is None:
        return {}
    res = guest.endpoint.runner.run(
        ["sh", "-c", f"ls /proc/{pid}/fd | wc -l && cat /proc/{pid}/status"], check=False)
    lines = res.stdout.splitlines()
    if res.returncode != 0 or not lines:
        return {}
    status = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    return {"host": guest.endpoint.name, "pid": pid, "fds": int(lines[0]),
            "threads": int(status.get("Threads", "0")),
            "rss_kib": _status_kib(status, "VmRSS"),
            "peak_rss_kib": _status_kib(status, "VmHWM")}  # fmt: skip


def harness_usage() -> dict[str, Any]:
    """The harness's own descriptors, threads and memory: it lives across every hop."""
    import os
    import threading

    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    return {"pid": os.getpid(), "fds": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(), "rss_kib": _status_kib(status, "VmRSS"),
            "peak_rss_kib": _status_kib(status, "VmHWM")}  # fmt: skip


@dataclass
class PingPong:
    """Migrate a guest back and forth between two endpoints count times.

    usage gets one entry a hop: the source process before it sends, the destination
    process once the guest runs there (each hop's guest is a new process, which then
    sends the next hop), and the harness, which lives across all of them."""

    a: Endpoint
    b: Endpoint
    guest: Guest
    policy: MigrationPolicy
    flow: FlowOptions = field(default_factory=FlowOptions)
    usage: list[dict[str, Any]] = field(default_factory=list)

    def run(self, count: int, display: Display | None = None,
            on_report: Callable[[Report], None] | None = None) -> list[Report]:  # fmt: skip
        reports: list[Report] = []
        current = start_guest(self.a, self.guest, self.flow, "pp0")
        other = self.b
        try:
            time.sleep(self.flow.warmup_s)
            for i in range(count):
                keep = i < count - 1
                flow = dataclasses.replace(self.flow, keep_running=keep)
                before = process_usage(current)
                outcome = migrate_once(current, other, self.guest, self.policy, flow,
                                       f"pp{i + 1}", display)  # fmt: skip
                reports.append(outcome.report)
                self.usage.append({
                    "hop": i + 1, "source": before,
                    "destination": process_usage(outcome.guest) if outcome.guest else {},
                    "harness": harness_usage()})  # fmt: skip
                if on_report is not None:
                    on_report(outcome.report)
                if outcome.report.status != "completed" or not keep:
                    if outcome.guest is not None:
                        outcome.guest.stop()
                    break
                assert outcome.guest is not None
                other = current.endpoint
                current = outcome.guest
        finally:
            current.stop()
        return reports
