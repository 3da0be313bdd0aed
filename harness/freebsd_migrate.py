"""The FreeBSD host driver: a bhyve guest moved between two FreeBSD hosts.

NOT YET RUN AGAINST FREEBSD.  harness.flow runs the migration; this module says how on
FreeBSD, following the project's own sources (bhyvectl's controller and bhyve's receive
side share the control plane of usr.sbin/bhyve/migration_ctl.c with the test bed, so
`bhyvectl --migrate-json` prints the same JSON event lines as tbctl, read by
harness.events) and FreeBSD 15's documented tools (daemon(8), sockstat(1), ps(1),
ping(8)).  It is tested against a fake host replaying transcripts that the test bed's
run of that same code recorded (tests/test_flow_drivers.py).

  - both bhyve processes run detached under daemon(8), their output in a log in the
    host's workdir, so that the guest outlives the SSH session that started it; a small
    sh wrapper records bhyve's pid and, when it ends, appends its exit status to the log
    (EXIT_MARK).  Consoles: nmdm(4) or none, not stdio;
  - the destination is `bhyve -R addr:port -o migration.keyfile=KEY ... NAME`; the flow
    waits for the line bhyve prints right after listen(2) succeeded;
  - the controller is `bhyvectl --vm=NAME --migrate-live=addr:port --migrate-json ...`;
    the operator commands are bhyvectl's --migrate-cancel, --migrate-resume and, on the
    destination, --migrate-status ("does the guest run here?");
  - checks: after a completed migration the destination bhyve runs the guest (and it
    answers ping, if `guest_address` is given), the source bhyve has exited and
    /dev/vmm/NAME is gone there; after a failed one the guest still runs on the source,
    the destination bhyve has exited and its VM (if any) is destroyed.

The guest's disk must be the same file on both hosts (shared storage such as NFS), unless
the policy sets `disks` (`bhyvectl --migrate-disks`): then each host has its own image at
the path the guest's configuration names, and the blocks move with the memory.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import freebsd
from harness.config import Guest, Host, HostsConfig, MigrationPolicy
from harness.errors import HarnessError, MigrationError
from harness.flow import FlowOptions, Report, run_check, run_migration
from harness.progress import Display, PlainDisplay
from harness.runner import Process, Runner

# What bhyve -R prints (stderr) once it listens (migration_receive.c).
LISTENING_LINE = "Waiting for the migration source on "
# The wrapper's last line in the log: bhyve's exit status.
EXIT_MARK = "@@bhyvemig: bhyve exited with status "
BHYVE_RUN_DIR = "/var/run/bhyve"


@dataclass
class FreeBSDFlowOptions:
    """Knobs of the FreeBSD driver beyond the engine's policy (all optional)."""

    guest_address: str | None = None  # the guest answers ping here (optional probe)
    live: bool = True  # --migrate-live (pre-copy) or --migrate (pause first)
    boot_wait_s: float = 60.0  # after starting the guest on the source
    listen_timeout_s: float = 60.0  # for the destination to listen
    settle_timeout_s: float = 60.0  # for a bhyve to exit / a guest to answer afterwards
    poll_interval_s: float = 0.5
    ping_interval_s: float = 0.1
    workload: str = "bhyve guest"  # shown as the report's guest.workload
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


@dataclass
class _Check:
    name: str
    ok: bool
    detail: str = ""


# --------------------------------------------------------------------------------------
# Remote helpers


def _files(host: Host, vm: str) -> dict[str, str]:
    base = f"{host.workdir}/{vm}"
    return {
        "key": freebsd.keyfile_path(host, vm),
        "src_log": f"{base}.source.log",
        "src_pid": f"{base}.source.pid",
        "dst_log": f"{base}.receive.log",
        "dst_pid": f"{base}.receive.pid",
    }


def detached_bhyve_argv(bhyve: list[str], log: str, pidfile: str) -> list[str]:
    """Run bhyve under daemon(8): output to log, pid to pidfile, exit status appended to
    the log as EXIT_MARK N when bhyve ends.  The command returns at once."""
    script = (
        f'"$@" & pid=$!; echo "$pid" > {shlex.quote(pidfile)}; wait "$pid"; echo "{EXIT_MARK}$?"'
    )
    # -f: no descriptor of the SSH session stays open in the daemon (else the session, and
    # the command starting it, would last as long as bhyve); -o then sends output to log.
    return ["daemon", "-f", "-o", log, "sh", "-c", script, "sh", *bhyve]


def _state_argv(vm: str, pidfile: str) -> list[str]:
    """Prints `vm=yes|no bhyve=PID|none`: does the VM exist in the kernel, and which bhyve
    process serves it (the one we started, else the owner of its control socket)."""
    ctl = f"{BHYVE_RUN_DIR}/{vm}"
    script = (
        f"vm=no; [ -e /dev/vmm/{shlex.quote(vm)} ] && vm=yes; "
        f"pid=$(cat {shlex.quote(pidfile)} 2>/dev/null); "
        'if [ -z "$pid" ] || [ "$(ps -o comm= -p "$pid" 2>/dev/null)" != bhyve ]; then '
        f"pid=$(sockstat -u 2>/dev/null | awk -v p={shlex.quote(ctl)} "
        "'$2 == \"bhyve\" && $6 == p {print $3; exit}'); fi; "
        'echo "vm=$vm bhyve=${pid:-none}"'
    )
    return ["sh", "-c", script]


@dataclass
class _VMState:
    vm_exists: bool
    bhyve_pid: int | None

    @property
    def running(self) -> bool:
        return self.vm_exists and self.bhyve_pid is not None


def _state(runner: Runner, vm: str, pidfile: str) -> _VMState:
    result = runner.run(_state_argv(vm, pidfile), timeout=30, check=False)
    match = re.search(r"vm=(yes|no) bhyve=(\d+|none)", result.stdout)
    if result.returncode != 0 or match is None:
        raise HarnessError(
            f"{runner.name}: cannot tell whether {vm} runs there "
            f"(exit {result.returncode}): {(result.stderr or result.stdout).strip()[-300:]}"
        )
    pid = None if match.group(2) == "none" else int(match.group(2))
    return _VMState(match.group(1) == "yes", pid)


def _read_log(runner: Runner, path: str) -> str:
    result = runner.run(["cat", path], timeout=30, check=False)
    return result.stdout if result.returncode == 0 else ""


def _exit_status(log: str) -> int | None:
    for line in reversed(log.splitlines()):
        if line.startswith(EXIT_MARK):
            try:
                return int(line[len(EXIT_MARK) :].strip())
            except ValueError:
                return None
    return None


def _tail(text: str, lines: int = 8) -> str:
    kept = [ln.rstrip("\r") for ln in text.strip().splitlines() if not ln.startswith(EXIT_MARK)]
    return "\n  ".join(kept[-lines:]) or "(no output)"


def _poll(opts: FreeBSDFlowOptions, timeout: float, probe: Callable[[], Any]) -> Any:
    """Call probe until it returns something truthy, at most timeout seconds; else None."""
    tries = max(1, math.ceil(timeout / opts.poll_interval_s))
    for attempt in range(tries + 1):
        value = probe()
        if value:
            return value
        if attempt < tries:
            opts.sleep(opts.poll_interval_s)
    return None


def _kill_pid(runner: Runner, pid: int) -> None:
    script = (
        f"kill -TERM {pid} 2>/dev/null || exit 0; i=0; "
        f"while kill -0 {pid} 2>/dev/null && [ $i -lt 25 ]; do sleep 0.2; i=$((i+1)); done; "
        f"kill -KILL {pid} 2>/dev/null; exit 0"
    )
    runner.run(["sh", "-c", script], timeout=30, check=False)


def _ping(runner: Runner, address: str, count: int = 3) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(count), "-t", str(count + 2), address]
    return runner.run(argv, timeout=count + 10, check=False).returncode == 0


def _ping_outage_ms(output: str, interval_s: float) -> float | None:
    """The longest run of unanswered pings, from `ping -i` output; None if the guest never
    answered both before and after the gap."""
    seqs = sorted({int(m) for m in re.findall(r"icmp_seq=(\d+)", output)})
    if len(seqs) < 2:
        return None
    gap = max(b - a for a, b in zip(seqs, seqs[1:], strict=False))
    return round(gap * interval_s * 1000.0, 3)


# --------------------------------------------------------------------------------------
# The driver


@dataclass
class FreeBSDDriver:
    """harness.flow.HostDriver for two FreeBSD hosts (runners: source, destination)."""

    config: HostsConfig
    source: Host
    destination: Host
    guest: Guest
    policy: MigrationPolicy
    src: Runner
    dst: Runner
    opts: FreeBSDFlowOptions
    say: Callable[[str], None]
    kind: str = "freebsd"
    controller: str = "bhyvectl"
    checks: list[_Check] = field(default_factory=list)
    pinger: Process | None = None

    def __post_init__(self) -> None:
        self.vm = self.guest.name
        self.sf = _files(self.source, self.vm)
        self.df = _files(self.destination, self.vm)
        self.target = freebsd.endpoint(self.destination.migration_address, self.policy.port)

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def destination_name(self) -> str:
        return self.destination.name

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(_Check(name, ok, detail))
        return ok

    def source_running(self) -> _VMState | None:
        state = _state(self.src, self.vm, self.sf["src_pid"])
        return state if state.running else None

    def receiver_log(self) -> str:
        return _read_log(self.dst, self.df["dst_log"])

    # -- keys ---------------------------------------------------------------------------

    def write_keys(self, key_hex: str) -> None:
        for runner, files in ((self.src, self.sf), (self.dst, self.df)):
            runner.run(["mkdir", "-p", runner.workdir], timeout=30)
            runner.put_text(files["key"], key_hex + "\n", mode=0o600)

    def remove_keys(self) -> None:
        for runner, files in ((self.src, self.sf), (self.dst, self.df)):
            try:
                runner.run(["rm", "-f", files["key"]], timeout=30, check=False)
            except HarnessError as exc:
                self.say(f"{runner.name}: could not remove the key file: {exc}")

    # -- start --------------------------------------------------------------------------

    def start_source(self) -> None:
        """The guest runs on the source: start it if no bhyve serves it."""
        state = _state(self.src, self.vm, self.sf["src_pid"])
        if state.running:
            self.say(f"[{self.source.name}] {self.vm} runs (bhyve pid {state.bhyve_pid})")
        else:
            self._boot_source(state)
        address = self.opts.guest_address
        if address and not _poll(self.opts, self.opts.settle_timeout_s,
                                 lambda: _ping(self.src, address)):  # fmt: skip
            raise MigrationError(
                f"{self.source.name}: the guest does not answer ping at {address}; "
                "fix its network or leave guest_address unset"
            )

    def _boot_source(self, state: _VMState) -> None:
        if state.vm_exists:
            self.say(f"[{self.source.name}] destroying a leftover {self.vm} with no bhyve")
            self.src.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)
        self.say(f"[{self.source.name}] starting {self.vm}")
        self.src.run(["rm", "-f", self.sf["src_log"], self.sf["src_pid"]], timeout=30)
        argv = freebsd.bhyve_argv(self.guest)
        self.src.run(detached_bhyve_argv(argv, self.sf["src_log"], self.sf["src_pid"]),
                     timeout=60)  # fmt: skip

        def up() -> bool:
            if _exit_status(_read_log(self.src, self.sf["src_log"])) is not None:
                raise MigrationError(
                    f"{self.source.name}: bhyve for {self.vm} exited while starting:\n  "
                    + _tail(_read_log(self.src, self.sf["src_log"]))
                )
            return _state(self.src, self.vm, self.sf["src_pid"]).running

        if not _poll(self.opts, self.opts.listen_timeout_s, up):
            raise MigrationError(
                f"{self.source.name}: {self.vm} did not start within "
                f"{self.opts.listen_timeout_s:.0f}s; bhyve's output:\n  "
                + _tail(_read_log(self.src, self.sf["src_log"]))
            )
        self.say(f"[{self.source.name}] {self.vm} started; letting it boot "
                 f"{self.opts.boot_wait_s:.0f}s")  # fmt: skip
        self.opts.sleep(self.opts.boot_wait_s)

    def _clear_destination(self) -> None:
        """Refuse if the guest already runs on the destination; remove our leftovers."""
        state = _state(self.dst, self.vm, self.df["dst_pid"])
        if state.running:
            raise MigrationError(
                f"{self.destination.name}: a guest named {self.vm} already runs there "
                f"(bhyve pid {state.bhyve_pid}); stop it or pick another destination"
            )
        if state.bhyve_pid is not None:  # a receiver of an earlier, interrupted run
            self.say(f"[{self.destination.name}] stopping a leftover receiving bhyve")
            _kill_pid(self.dst, state.bhyve_pid)
        if state.vm_exists:
            self.say(f"[{self.destination.name}] destroying a leftover {self.vm}")
            self.dst.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)

    def start_destination(self) -> None:
        """bhyve -R on the destination, detached; returns once it listens."""
        self._clear_destination()
        self.dst.run(["rm", "-f", self.df["dst_log"], self.df["dst_pid"]], timeout=30)
        argv = freebsd.bhyve_argv(self.guest, receive=self.target, keyfile=self.df["key"])
        self.say(f"[{self.destination.name}] {shlex.join(argv)}")
        self.dst.run(detached_bhyve_argv(argv, self.df["dst_log"], self.df["dst_pid"]),
                     timeout=60)  # fmt: skip

        def listening() -> str | None:
            log = self.receiver_log()
            if any(ln.startswith(LISTENING_LINE) for ln in log.splitlines()):
                return log
            status = _exit_status(log)
            if status is not None:
                raise MigrationError(
                    f"{self.destination.name}: bhyve -R exited {status} before listening "
                    f"on {self.target}:\n  {_tail(log)}"
                )
            return None

        if not _poll(self.opts, self.opts.listen_timeout_s, listening):
            self._stop_receiver()
            raise MigrationError(
                f"{self.destination.name}: bhyve -R did not listen on {self.target} within "
                f"{self.opts.listen_timeout_s:.0f}s; its output:\n  "
                + _tail(self.receiver_log())
            )
        self.say(f"[{self.destination.name}] listening on {self.target}")

    def _stop_receiver(self) -> None:
        state = _state(self.dst, self.vm, self.df["dst_pid"])
        if state.bhyve_pid is not None:
            _kill_pid(self.dst, state.bhyve_pid)

    def start_probe(self) -> None:
        if self.opts.guest_address:
            self.pinger = self.src.spawn(
                ["ping", "-n", "-i", str(self.opts.ping_interval_s), self.opts.guest_address]
            )

    def stop_probe(self, migrated: bool) -> float | None:
        if self.pinger is None:
            return None
        self.pinger.kill()
        return _ping_outage_ms(self.pinger.output(), self.opts.ping_interval_s)

    def start_migration(self) -> Process:
        argv = freebsd.bhyvectl_migrate_argv(self.vm, self.target, self.sf["key"], self.policy,
                                             self.opts.live)  # fmt: skip
        self.say(f"[{self.source.name}] {shlex.join(argv)}")
        return self.src.spawn(argv)

    def start_check(self) -> Process:
        argv = freebsd.bhyvectl_check_argv(self.vm, self.target, self.sf["key"])
        self.say(f"[{self.source.name}] {shlex.join(argv)}")
        return self.src.spawn(argv)

    # -- operator commands --------------------------------------------------------------

    def cancel(self) -> None:
        self.src.run(freebsd.bhyvectl_operator_argv(self.vm, "cancel"), timeout=30)

    def switchover_continue(self) -> None:
        self.src.run(freebsd.bhyvectl_operator_argv(self.vm, "continue"), timeout=30)

    def hook_environment(self) -> dict[str, str]:
        disk = self.guest.freebsd.disk if self.guest.freebsd else None
        return {
            "BMIG_KIND": self.kind, "BMIG_GUEST": self.vm,
            "BMIG_SOURCE": self.source.name, "BMIG_DESTINATION": self.destination.name,
            "BMIG_SOURCE_ADDRESS": self.source.address,
            "BMIG_DESTINATION_ADDRESS": self.destination.address,
            "BMIG_SOURCE_USER": self.source.user, "BMIG_DESTINATION_USER": self.destination.user,
            "BMIG_GUEST_DISK": disk or "",
        }  # fmt: skip

    def _destination_runs(self) -> bool | None:
        """The destination bhyve's answer to "does the guest run here?"; None if none."""
        result = self.dst.run(freebsd.bhyvectl_operator_argv(self.vm, "status"), timeout=30,
                              check=False)  # fmt: skip
        for line in reversed(result.stdout.splitlines()):
            if line.strip().startswith("{"):
                try:
                    runs = json.loads(line).get("guest_runs_here")
                except (json.JSONDecodeError, AttributeError):
                    return None
                return runs if isinstance(runs, bool) else None
        return None

    def destination_runs_guest(self) -> bool | None:
        if _state(self.dst, self.vm, self.df["dst_pid"]).bhyve_pid is None:
            return False
        runs = self._destination_runs()
        if runs is None:
            return None
        if runs:
            return True
        # Not running it: end the receiver so that it never can, before the source resumes.
        self._stop_receiver()
        self.dst.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)
        return False

    def resume_source(self) -> None:
        self.src.run(freebsd.bhyvectl_operator_argv(self.vm, "resume"), timeout=30)

    def destroy_source(self) -> None:
        state = _state(self.src, self.vm, self.sf["src_pid"])
        if state.bhyve_pid is not None:
            _kill_pid(self.src, state.bhyve_pid)
        self.src.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)

    # -- after the result ---------------------------------------------------------------

    def confirm_destination(self) -> str | None:
        def running() -> bool:
            if _exit_status(self.receiver_log()) is not None:
                raise _Exited
            return self._destination_runs() is True

        try:
            ok = bool(_poll(self.opts, self.opts.settle_timeout_s, running))
        except _Exited:
            ok = False
        log = self.receiver_log()
        self.check("destination bhyve runs the guest", ok,
                   "" if ok else f"bhyve -R: {_tail(log, 3)}")  # fmt: skip
        if ok:
            return None
        return ("the controller reported success but the destination bhyve does not run "
                f"the guest: {_tail(log, 3)}")  # fmt: skip

    def discard_destination(self) -> int | None:
        def exited() -> str | None:
            log = self.receiver_log()
            return log if _exit_status(log) is not None else None

        log = _poll(self.opts, self.opts.settle_timeout_s, exited)
        status = _exit_status(log) if log else None
        if status is None:
            # A receiver refuses an unauthenticated peer and keeps waiting for the source.
            self._stop_receiver()
            self.check("destination bhyve ended", True,
                       "it was still listening; the harness stopped it")  # fmt: skip
        else:
            self.check("destination bhyve ended", True, f"exit {status}")
        dst = _state(self.dst, self.vm, self.df["dst_pid"])
        if dst.vm_exists:
            self.dst.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)
            dst = _state(self.dst, self.vm, self.df["dst_pid"])
            self.say(f"[{self.destination.name}] destroyed the received {self.vm}")
        self.check(f"/dev/vmm/{self.vm} gone on the destination", not dst.vm_exists)
        return status

    def verify(self, where: str) -> dict[str, Any]:
        address = self.opts.guest_address
        if where == "destination":
            here, other, other_pid = self.dst, self.src, self.sf["src_pid"]
            gone = _poll(self.opts, self.opts.settle_timeout_s,
                         lambda: _state(other, self.vm, other_pid).bhyve_pid is None)  # fmt: skip
            self.check("source bhyve has exited", bool(gone), self.source.name)
            src = _state(other, self.vm, other_pid)
            if src.vm_exists and src.bhyve_pid is None:
                # The guest runs on the destination: the source's copy is a leftover.
                other.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)
                src = _state(other, self.vm, other_pid)
            self.check(f"/dev/vmm/{self.vm} gone on the source", not src.vm_exists)
        else:
            here = self.src
            running = _poll(self.opts, self.opts.settle_timeout_s, self.source_running)
            self.check("guest runs on the source", bool(running),
                       f"bhyve pid {running.bhyve_pid}" if running
                       else "no bhyve serves it on the source")  # fmt: skip
        if address:
            self.check(f"guest answers ping on the {where}",
                       bool(_poll(self.opts, self.opts.settle_timeout_s,
                                  lambda: _ping(here, address))),
                       f"{address} from {here.name}")  # fmt: skip
        return {
            "ok": all(c.ok for c in self.checks),
            "where": where,
            "pages_checked": 0,  # a real guest's memory is not inspected
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "errors": [f"{c.name}: {c.detail}" if c.detail else c.name
                       for c in self.checks if not c.ok],
        }  # fmt: skip

    def destination_report(self) -> dict[str, Any] | None:
        return None  # bhyve -R writes no report file; its log is in destination_output

    def finish(self, where: str, keep_running: bool) -> None:
        pass  # a FreeBSD guest keeps running where it is; nothing else was started

    def resolve_hint(self) -> str:
        return f"invoke resolve --hosts {self.config.path} --guest {self.vm}"


class _Exited(Exception):
    """The receiving bhyve exited while the flow waited for it to run the guest."""


def _driver(config: HostsConfig, source: Host, destination: Host, guest: Guest,
            policy: MigrationPolicy, runners: tuple[Runner, Runner], display: Display,
            options: FreeBSDFlowOptions | None) -> FreeBSDDriver:  # fmt: skip
    for host in (source, destination):
        if host.kind != "freebsd":
            raise MigrationError(
                f"{config.path}: host {host.name} is of kind {host.kind!r}, not freebsd"
            )
    if guest.freebsd is None:
        raise MigrationError(
            f"{config.path}: guest {guest.name} has no 'freebsd:' section (disk, devices)"
        )
    return FreeBSDDriver(config, source, destination, guest, policy, runners[0], runners[1],
                         options or FreeBSDFlowOptions(), display.say)  # fmt: skip


def check_freebsd(config: HostsConfig, source: Host, destination: Host, guest: Guest,
                  runners: tuple[Runner, Runner], display: Display | None = None, *,
                  options: FreeBSDFlowOptions | None = None) -> Report:  # fmt: skip
    """`bhyvectl --migrate-check` from source to destination (harness.flow.run_check)."""
    display = display or PlainDisplay()
    driver = _driver(config, source, destination, guest, config.migration, runners, display,
                     options)  # fmt: skip
    return run_check(driver, _summary(driver), FlowOptions(), display)


def _summary(driver: FreeBSDDriver) -> dict[str, Any]:
    guest = driver.guest
    return {"name": guest.name, "memory_bytes": guest.memory, "vcpus": guest.vcpus,
            "workload": driver.opts.workload}  # fmt: skip


def migrate_freebsd(
    config: HostsConfig,
    source: Host,
    destination: Host,
    guest: Guest,
    policy: MigrationPolicy,
    runners: tuple[Runner, Runner],
    display: Display | None = None,
    *,
    options: FreeBSDFlowOptions | None = None,
    flow: FlowOptions | None = None,
) -> Report:
    """Live-migrate `guest` from `source` to `destination` (both of kind freebsd) with
    harness.flow.  `runners` are (source, destination).  MigrationError when the flow
    cannot start (a host or the guest is not set up for it)."""
    display = display or PlainDisplay()
    driver = _driver(config, source, destination, guest, policy, runners, display, options)
    flow = flow or FlowOptions(migrate_timeout_s=policy.timeout + 60.0, run_after_s=0.0)
    report = run_migration(driver, _summary(driver), flow, display)
    if report.status != "completed":
        report.destination_output = driver.receiver_log()[-4000:]
    return report


def resolve_freebsd(config: HostsConfig, source: Host, destination: Host, guest: Guest,
                    runners: tuple[Runner, Runner], display: Display):  # fmt: skip
    """`invoke resolve` on FreeBSD hosts: settle an indeterminate outcome of an earlier run."""
    from harness.flow import resolve

    driver = _driver(config, source, destination, guest, config.migration, runners, display,
                     None)  # fmt: skip
    return resolve(driver, display)
