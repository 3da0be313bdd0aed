"""One live migration of a bhyve guest between two FreeBSD hosts, measured and verified.

NOT YET RUN AGAINST FREEBSD.  Every command line and every line of output parsed here
follows the project's own sources (usr.sbin/bhyvectl/bhyvectl_migrate.c for bhyvectl's
progress, result and exit statuses; usr.sbin/bhyve/migration_receive.c and
migration_ipc.c for what bhyve -R and the source bhyve print and how they exit) and
FreeBSD 15's documented tools (daemon(8), sockstat(1), ps(1), ping(8)).  The flow is
unit-tested with a scripted Runner (tests/test_freebsd_migrate.py) only.

The flow, over two Runners (SSH in practice):

  1. a fresh 32-byte key, written 0600 to both hosts (64 hex digits, the form both
     bhyvectl and bhyve -R read);
  2. the guest runs on the source: if no bhyve serves it there, it is started
     (freebsd.bhyve_argv) and given `boot_wait_s` to boot;
  3. the destination `bhyve -R addr:port -o migration.keyfile=KEY ... NAME` is started
     and the flow waits for its "Waiting for the migration source" line, which bhyve
     prints right after listen(2) succeeded;
  4. `bhyvectl --vm=NAME --migrate-live=addr:port --migrate-keyfile=KEY ...` runs on the
     source; its progress lines are relayed as they come and its output is parsed into
     the report harness.migrate.build_report makes (the same schema as the test bed's);
  5. verification: after a completed migration the destination bhyve runs (and the guest
     answers ping, if `guest_address` is given), the source bhyve has exited and
     /dev/vmm/NAME is gone there; after a failed one the guest still runs on the source,
     the destination bhyve has exited non-zero, and its VM (if any) is destroyed.

Both bhyve processes run detached under daemon(8), their output in a log in the host's
workdir, so that the guest outlives the SSH session that started it (a bhyve on an SSH
channel would lose its stdout, and may die, when the harness exits).  A small sh wrapper
records bhyve's pid and, when it ends, appends its exit status to the log (EXIT_MARK).
Consoles: use nmdm(4) or no console in the guest's config, not stdio.

Cancelling (Ctrl-C, or the policy's timeout): killing bhyvectl alone does NOT stop the
migration: bhyvectl hands the connected socket to the source bhyve and only reads
progress (migration_ipc.c drops progress lines nobody reads).  So the flow kills
bhyvectl and then the receiving bhyve, unless the destination already reported the guest
running.  The source's engine sees the connection close before GO and rolls back: the
guest keeps running on the source.  A cancel that lands during switchover (after GO) can
leave the outcome unknown, exactly as a lost link would; the message then says so.

The guest's disk must be the same file on both hosts (shared storage such as NFS): the
migration moves memory and device state, not disks.

Byte counts come from bhyvectl's MiB figures (one decimal), so they are exact only to
about 0.05 MiB; times are exact to the millisecond.  bhyvectl prints no stop reason and
no protocol version: those report fields are null.
"""

from __future__ import annotations

import math
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from harness import freebsd
from harness.config import Guest, Host, HostsConfig, MigrationPolicy
from harness.errors import HarnessError, MigrationError
from harness.migrate import Endpoint, build_report
from harness.runner import Process, Runner

# bhyvectl --migrate exit statuses (bhyvectl_migrate.c).
BHYVECTL_MIGRATED = 0
BHYVECTL_FAILED = 1
BHYVECTL_INDETERMINATE = 2

# What bhyve -R prints (stderr) once it listens (migration_receive.c).
LISTENING_LINE = "Waiting for the migration source on "
# What bhyve -R prints once the guest runs on it (migration_receive_finish).
RECEIVED_RE = re.compile(r"^Migration from \S+ complete")
# The wrapper's last line in the log: bhyve's exit status.
EXIT_MARK = "@@bhyvemig: bhyve exited with status "
BHYVE_RUN_DIR = "/var/run/bhyve"

# bhyvectl cuts a phase name at its first space (migrate_field); the engine's names.
_PHASE_WORDS = {"compatibility": "compatibility check", "device": "device state"}

_MIB = 1 << 20
_ROUND_RE = re.compile(
    r"^(?:Round (?P<index>\d+)|Final round, guest paused): (?P<dirty>\d+) dirty pages, "
    r"(?P<sent>\d+) sent, (?P<zero>\d+) zero; (?P<mib>[\d.]+) MiB in (?P<ms>\d+) ms"
    r"(?:; vCPUs slowed by (?P<throttle>\d+)%)?"
    r"(?:; estimated downtime (?P<est>\d+) ms)?$"
)
_STATS_RE = re.compile(
    r"^Moved (?P<memory>[\d.]+) MiB of guest memory in (?P<rounds>\d+) rounds, "
    r"(?P<wire>[\d.]+) MiB on the wire(?P<enc> \(encrypted\))?, "
    r"in (?P<secs>\d+)\.(?P<msecs>\d{3}) s; guest downtime (?P<downtime>\d+) ms$"
)
_FAILED_RE = re.compile(
    r"^Migration failed on the (?P<side>\S+) side during (?P<phase>\S+): (?P<msg>.*)$"
)
_UNKNOWN_RE = re.compile(r"^Migration outcome unknown: (?P<msg>.*)$")
_PHASE_RE = re.compile(r"^Migration phase: (?P<phase>\S+)$")
_COMPLETE_RE = re.compile(r"^Migration complete: ")


class MigrationCancelled(MigrationError):
    """The user interrupted the migration; the message says where the guest is now."""


@dataclass
class FreeBSDFlowOptions:
    """Knobs of the FreeBSD flow beyond the engine's policy (all optional)."""

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
class ParsedBhyvectl:
    """What bhyvectl --migrate printed, in the engine's terms."""

    status: str  # completed | failed | indeterminate
    rounds: list[dict[str, Any]] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    total_time_ms: float | None = None
    downtime_ms: float | None = None
    bytes_sent: int = 0
    memory_moved_bytes: int | None = None
    encrypted: bool | None = None
    error: dict[str, str] | None = None

    @property
    def last_phase(self) -> str:
        return self.phases[-1] if self.phases else "set-up"


@dataclass
class _Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class _ProbeOutage:
    outage_ms: float | None


# --------------------------------------------------------------------------------------
# Parsing bhyvectl's output


def _phase(word: str) -> str:
    return _PHASE_WORDS.get(word, word)


def parse_bhyvectl_output(text: str, exit_status: int | None) -> ParsedBhyvectl:
    """Turn bhyvectl --migrate's printed lines and exit status into the engine's terms.

    exit_status None means bhyvectl was stopped by the harness before it finished."""
    if exit_status == BHYVECTL_MIGRATED:
        status = "completed"
    elif exit_status == BHYVECTL_INDETERMINATE:
        status = "indeterminate"
    else:
        status = "failed"
    out = ParsedBhyvectl(status)
    other: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r").strip()
        if not line:
            continue
        if m := _ROUND_RE.match(line):
            final = m.group("index") is None
            index = int(m.group("index")) if not final else len(out.rounds) + 1
            if final and out.rounds:
                index = out.rounds[-1]["index"] + 1
            out.rounds.append(
                {
                    "index": index,
                    "final": final,
                    "dirty_pages": int(m.group("dirty")),
                    "pages_sent": int(m.group("sent")),
                    "zero_pages": int(m.group("zero")),
                    "bytes": round(float(m.group("mib")) * _MIB),
                    "duration_ms": float(m.group("ms")),
                    "throttle_pct": int(m.group("throttle") or 0),
                    "est_downtime_ms": int(m.group("est")) if m.group("est") else None,
                }
            )
        elif m := _STATS_RE.match(line):
            out.memory_moved_bytes = round(float(m.group("memory")) * _MIB)
            out.bytes_sent = round(float(m.group("wire")) * _MIB)
            out.encrypted = m.group("enc") is not None
            out.total_time_ms = float(int(m.group("secs")) * 1000 + int(m.group("msecs")))
            out.downtime_ms = float(m.group("downtime"))
        elif m := _PHASE_RE.match(line):
            out.phases.append(_phase(m.group("phase")))
        elif m := _FAILED_RE.match(line):
            out.error = {
                "side": m.group("side"),
                "phase": _phase(m.group("phase")),
                "message": m.group("msg"),
            }
        elif m := _UNKNOWN_RE.match(line):
            out.error = {"side": "link", "phase": "switchover", "message": m.group("msg")}
        elif not _COMPLETE_RE.match(line):
            other.append(line)
    if status != "completed" and out.error is None:
        # bhyvectl refused before bhyve took over (its warnx lines), or it was stopped.
        detail = [ln for ln in other if not ln.startswith(("Connecting to ", "Live migration",
                                                           "Non-live migration"))]  # fmt: skip
        if exit_status is None:
            message = "the harness stopped bhyvectl before it printed a result"
        elif detail:
            message = "; ".join(detail[-3:])
        else:
            message = f"bhyvectl exited {exit_status} without saying why"
        side = "link" if any("cannot connect" in ln for ln in other) else "source"
        out.error = {"side": side, "phase": out.last_phase, "message": message}
    return out


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
# The flow


@dataclass
class _Flow:
    config: HostsConfig
    source: Host
    destination: Host
    guest: Guest
    policy: MigrationPolicy
    src: Runner
    dst: Runner
    on_progress: Callable[[str], None]
    opts: FreeBSDFlowOptions
    checks: list[_Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bhyvectl: Process | None = None

    def __post_init__(self) -> None:
        self.vm = self.guest.name
        self.sf = _files(self.source, self.vm)
        self.df = _files(self.destination, self.vm)
        self.target = freebsd.endpoint(self.destination.migration_address, self.policy.port)

    def source_running(self) -> _VMState | None:
        state = _state(self.src, self.vm, self.sf["src_pid"])
        return state if state.running else None

    def receiver_exited(self) -> str | None:
        """The receiver's log once it shows bhyve's exit status, else None."""
        log = self.receiver_log()
        return log if _exit_status(log) is not None else None

    def say(self, text: str) -> None:
        self.on_progress(text)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(_Check(name, ok, detail))
        return ok

    # -- preparation ------------------------------------------------------------------

    def write_keys(self) -> None:
        key_hex = secrets.token_hex(32)
        for runner, files in ((self.src, self.sf), (self.dst, self.df)):
            runner.run(["mkdir", "-p", runner.workdir], timeout=30)
            runner.put_text(files["key"], key_hex + "\n", mode=0o600)

    def remove_keys(self) -> None:
        for runner, files in ((self.src, self.sf), (self.dst, self.df)):
            try:
                runner.run(["rm", "-f", files["key"]], timeout=30, check=False)
            except HarnessError as exc:
                self.notes.append(f"{runner.name}: could not remove the key file: {exc}")

    def ensure_source_running(self) -> bool:
        """The guest runs on the source; start it if no bhyve serves it.  True if started."""
        state = _state(self.src, self.vm, self.sf["src_pid"])
        if state.running:
            self.say(f"[{self.source.name}] {self.vm} runs (bhyve pid {state.bhyve_pid})")
            return False
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
        return True

    def clear_destination(self) -> None:
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

    def start_receiver(self) -> None:
        """bhyve -R on the destination, detached; returns once it listens."""
        self.dst.run(["rm", "-f", self.df["dst_log"], self.df["dst_pid"]], timeout=30)
        argv = freebsd.bhyve_argv(self.guest, receive=self.target, keyfile=self.df["key"])
        self.say(f"[{self.destination.name}] {shlex.join(argv)}")
        self.dst.run(detached_bhyve_argv(argv, self.df["dst_log"], self.df["dst_pid"]),
                     timeout=60)  # fmt: skip

        def listening() -> str | None:
            log = _read_log(self.dst, self.df["dst_log"])
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
            self.stop_receiver()
            raise MigrationError(
                f"{self.destination.name}: bhyve -R did not listen on {self.target} within "
                f"{self.opts.listen_timeout_s:.0f}s; its output:\n  "
                + _tail(_read_log(self.dst, self.df["dst_log"]))
            )
        self.say(f"[{self.destination.name}] listening on {self.target}")

    def stop_receiver(self) -> None:
        state = _state(self.dst, self.vm, self.df["dst_pid"])
        if state.bhyve_pid is not None:
            _kill_pid(self.dst, state.bhyve_pid)

    def receiver_log(self) -> str:
        return _read_log(self.dst, self.df["dst_log"])

    # -- the migration ----------------------------------------------------------------

    def run_bhyvectl(self, argv: list[str]) -> tuple[Process, int | None]:
        """Run bhyvectl on the source, relaying its lines; (process, exit status or None
        when the policy's timeout stopped it).  KeyboardInterrupt propagates."""
        proc = self.bhyvectl = self.src.spawn(argv)
        shown = 0
        tries = max(1, math.ceil((self.policy.timeout + 60.0) / 0.2))
        code: int | None = None
        for _ in range(tries):
            code = proc.wait(0.2)
            lines = proc.output().splitlines()
            for line in lines[shown:]:
                self.say(f"[{self.source.name}] {line.rstrip()}")
            shown = len(lines)
            if code is not None:
                return proc, code
        proc.kill()
        self.notes.append(
            f"bhyvectl did not finish within the policy's timeout ({self.policy.timeout:.0f}s "
            "plus 60s); the harness stopped it and the receiving bhyve"
        )
        return proc, None

    def abort_receiver(self) -> bool:
        """Stop the receiving bhyve unless the guest already runs there.  True if the
        destination reported the guest running (so it was left alone)."""
        log = self.receiver_log()
        if any(RECEIVED_RE.match(ln) for ln in log.splitlines()):
            return True
        self.stop_receiver()
        return False

    # -- verification -----------------------------------------------------------------

    def verify_completed(self) -> dict[str, Any] | None:
        """After bhyvectl exit 0; the error to report if the guest is not running on the
        destination after all, else None."""
        error = None

        def received() -> str | None:
            log = self.receiver_log()
            if (
                any(RECEIVED_RE.match(ln) for ln in log.splitlines())
                or _exit_status(log) is not None
            ):
                return log
            return None

        log = _poll(self.opts, self.opts.settle_timeout_s, received) or self.receiver_log()
        dst = _state(self.dst, self.vm, self.df["dst_pid"])
        status = _exit_status(log)
        ok = self.check(
            "destination bhyve runs the guest",
            dst.running and status is None,
            f"bhyve pid {dst.bhyve_pid}" if dst.running and status is None
            else f"bhyve -R exited {status}: {_tail(log, 3)}",
        )  # fmt: skip
        if not ok:
            error = {"side": "destination", "phase": "switchover",
                     "message": f"bhyvectl reported success but the destination bhyve is not "
                                f"running the guest: {_tail(log, 3)}"}  # fmt: skip
        if self.opts.guest_address:
            answers = _poll(self.opts, self.opts.settle_timeout_s,
                            lambda: _ping(self.dst, self.opts.guest_address or ""))  # fmt: skip
            self.check(
                "guest answers ping after the move",
                bool(answers),
                f"{self.opts.guest_address} from {self.destination.name}",
            )
        src_exited = _poll(
            self.opts,
            self.opts.settle_timeout_s,
            lambda: _state(self.src, self.vm, self.sf["src_pid"]).bhyve_pid is None,
        )
        self.check("source bhyve has exited", bool(src_exited), self.source.name)
        src = _state(self.src, self.vm, self.sf["src_pid"])
        gone = self.check(f"/dev/vmm/{self.vm} gone on the source", not src.vm_exists)
        if not gone and src.bhyve_pid is None and ok:
            # The guest runs on the destination: the source's copy is a leftover.
            self.src.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)
            self.notes.append(f"{self.source.name}: destroyed the leftover {self.vm}")
        return error

    def verify_failed(self) -> int | None:
        """After a failed migration: the guest runs on the source, the destination bhyve
        exited non-zero and left nothing behind.  The destination's exit status."""
        src = _poll(self.opts, self.opts.settle_timeout_s, self.source_running)
        self.check(
            "guest still runs on the source",
            bool(src),
            f"bhyve pid {src.bhyve_pid}" if src else "no bhyve serves it on the source",
        )
        if src and self.opts.guest_address:
            self.check(
                "guest answers ping on the source",
                bool(_poll(self.opts, self.opts.settle_timeout_s,
                           lambda: _ping(self.src, self.opts.guest_address or ""))),
                f"{self.opts.guest_address} from {self.source.name}",
            )  # fmt: skip
        log = _poll(self.opts, self.opts.settle_timeout_s, self.receiver_exited)
        status = _exit_status(log) if log else None
        if status is None:
            self.stop_receiver()
            log = self.receiver_log()
            self.check("destination bhyve exited non-zero", False,
                       "it was still running; the harness stopped it")  # fmt: skip
        else:
            self.check("destination bhyve exited non-zero", status != 0, f"exit {status}")
        dst = _state(self.dst, self.vm, self.df["dst_pid"])
        if dst.vm_exists:
            self.dst.run(freebsd.destroy_vm_argv(self.vm), timeout=60, check=False)
            dst = _state(self.dst, self.vm, self.df["dst_pid"])
            self.notes.append(f"{self.destination.name}: destroyed the received {self.vm}")
        self.check(f"/dev/vmm/{self.vm} gone on the destination", not dst.vm_exists)
        return status

    def verification(self, where: str) -> dict[str, Any]:
        return {
            "ok": all(c.ok for c in self.checks),
            "where": where,
            "pages_checked": 0,  # a real guest's memory is not inspected
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "errors": [f"{c.name}: {c.detail}" if c.detail else c.name
                       for c in self.checks if not c.ok],
        }  # fmt: skip


def migrate_freebsd(
    config: HostsConfig,
    source: Host,
    destination: Host,
    guest: Guest,
    policy: MigrationPolicy,
    runners: tuple[Runner, Runner],
    on_progress: Callable[[str], None] = print,
    *,
    options: FreeBSDFlowOptions | None = None,
) -> dict[str, Any]:
    """Live-migrate `guest` from `source` to `destination` (both of kind freebsd) and return
    the report (harness.migrate.build_report's schema; status completed, failed or
    indeterminate).  `runners` are (source, destination).

    MigrationError when the flow cannot start (a host or the guest is not set up for it);
    MigrationCancelled on Ctrl-C, after the guest is back on the source (or, if the
    cancel came too late, with where it runs now).  A migration the engine refused or
    rolled back is not an exception: it is reported with status "failed"."""
    opts = options or FreeBSDFlowOptions()
    for host in (source, destination):
        if host.kind != "freebsd":
            raise MigrationError(
                f"{config.path}: host {host.name} is of kind {host.kind!r}, not freebsd"
            )
    if guest.freebsd is None:
        raise MigrationError(
            f"{config.path}: guest {guest.name} has no 'freebsd:' section (disk, devices)"
        )
    flow = _Flow(config, source, destination, guest, policy, runners[0], runners[1],
                 on_progress, opts)  # fmt: skip
    argv = freebsd.bhyvectl_migrate_argv(guest.name, flow.target, flow.sf["key"], policy, opts.live)

    flow.write_keys()
    try:
        return _migrate(flow, argv)
    finally:
        flow.remove_keys()


def _migrate(flow: _Flow, argv: list[str]) -> dict[str, Any]:
    opts = flow.opts
    flow.ensure_source_running()
    if opts.guest_address and not _poll(
        opts, opts.settle_timeout_s, lambda: _ping(flow.src, opts.guest_address or "")
    ):
        raise MigrationError(
            f"{flow.source.name}: the guest does not answer ping at {opts.guest_address}; "
            "fix its network or leave guest_address unset"
        )
    flow.clear_destination()
    flow.start_receiver()

    pinger = None
    started = time.monotonic()
    try:
        if opts.guest_address:
            pinger = flow.src.spawn(
                ["ping", "-n", "-i", str(opts.ping_interval_s), opts.guest_address]
            )
        flow.say(f"[{flow.source.name}] {shlex.join(argv)}")
        proc, code = flow.run_bhyvectl(argv)
    except KeyboardInterrupt:
        _cancel(flow, pinger)
    except HarnessError:
        # Lost a host before bhyvectl reported: do not leave a receiver listening.
        if pinger is not None:
            pinger.kill()
        if flow.bhyvectl is None:
            flow.stop_receiver()
        raise
    wall_ms = (time.monotonic() - started) * 1000.0
    outage = None
    if pinger is not None:
        pinger.kill()
        outage = _ping_outage_ms(pinger.output(), opts.ping_interval_s)

    parsed = parse_bhyvectl_output(proc.output(), code)
    error = parsed.error
    status = parsed.status
    dst_exit: int | None = None
    if code is None:  # timed out: stop the receiver unless the guest runs there now
        status = "indeterminate" if flow.abort_receiver() else "failed"
        if error is not None:
            error["message"] += f" (no result within {flow.policy.timeout:.0f}s + 60s)"
    if status == "completed":
        late = flow.verify_completed()
        if late is not None:
            status, error = "failed", late
        where = "destination"
    elif status == "failed":
        dst_exit = flow.verify_failed()
        where = "source"
    else:
        # Outcome unknown: the source keeps the guest paused.  Touch nothing; say where
        # things stand so that an operator can decide.
        src = _state(flow.src, flow.vm, flow.sf["src_pid"])
        dst = _state(flow.dst, flow.vm, flow.df["dst_pid"])
        flow.check("source keeps its (paused) copy", src.vm_exists,
                   f"vm={'yes' if src.vm_exists else 'no'} bhyve={src.bhyve_pid}")  # fmt: skip
        flow.check("destination bhyve state", True,
                   f"vm={'yes' if dst.vm_exists else 'no'} bhyve={dst.bhyve_pid}")  # fmt: skip
        flow.notes.append(
            f"outcome unknown: check whether {flow.vm} runs on {flow.destination.name}; if it "
            f"does, destroy the paused copy on {flow.source.name} "
            f"(bhyvectl --vm={flow.vm} --destroy), else destroy the destination's"
        )
        where = "undecided"

    engine = {
        "status": status,
        "error": error if status != "completed" else None,
        "total_time_ms": parsed.total_time_ms,
        "downtime_ms": parsed.downtime_ms,
        "bytes_sent": parsed.bytes_sent,
        "stop_reason": None,  # bhyvectl does not print it
        "encrypted": parsed.encrypted,
        "protocol_version": None,
        "rounds": parsed.rounds,
    }
    endpoints = [
        Endpoint(runner, "", host.migration_address, host.address, host.name)
        for runner, host in ((flow.src, flow.source), (flow.dst, flow.destination))
    ]
    report = build_report(
        flow.guest, endpoints[0], endpoints[1], engine, None,
        flow.verification(where), _ProbeOutage(outage), wall_ms,
    )  # fmt: skip
    report["guest"]["workload"] = opts.workload
    report["kind"] = "freebsd"
    report["memory_moved_bytes"] = parsed.memory_moved_bytes
    report["phases"] = parsed.phases
    report["bhyvectl_exit"] = code
    report["bhyvectl_output"] = proc.output()[-4000:]
    report["destination_exit"] = dst_exit
    report["destination_output"] = "" if status == "completed" else flow.receiver_log()[-4000:]
    report["notes"] = [
        "byte counts are from bhyvectl's MiB figures (to about 0.05 MiB)",
        *flow.notes,
    ]
    return report


def _cancel(flow: _Flow, pinger: Process | None) -> NoReturn:
    """Ctrl-C during bhyvectl: stop it and the receiving bhyve (that is what makes the
    source roll back), then check that the guest runs on the source."""
    flow.say("cancelling: stopping bhyvectl and the receiving bhyve")
    for proc in (pinger, flow.bhyvectl):
        if proc is not None:
            proc.kill()
    if flow.abort_receiver():
        raise MigrationCancelled(
            f"cancelled too late: {flow.vm} already runs on {flow.destination.name}; the "
            f"source bhyve exits by itself once it has the confirmation; otherwise destroy "
            f"its paused copy there (bhyvectl --vm={flow.vm} --destroy) once sure"
        ) from None
    src = _poll(flow.opts, flow.opts.settle_timeout_s, flow.source_running)
    dst = _state(flow.dst, flow.vm, flow.df["dst_pid"])
    if dst.vm_exists:
        flow.dst.run(freebsd.destroy_vm_argv(flow.vm), timeout=60, check=False)
    if src:
        raise MigrationCancelled(
            f"cancelled: {flow.vm} keeps running on {flow.source.name}; the receiving bhyve "
            f"on {flow.destination.name} was stopped"
        ) from None
    raise MigrationCancelled(
        f"cancelled, and no bhyve serves {flow.vm} on {flow.source.name} any more; check "
        f"both hosts (`ls /dev/vmm`, {flow.df['dst_log']} on {flow.destination.name})"
    ) from None


__all__ = [
    "BHYVECTL_FAILED",
    "BHYVECTL_INDETERMINATE",
    "BHYVECTL_MIGRATED",
    "FreeBSDFlowOptions",
    "MigrationCancelled",
    "ParsedBhyvectl",
    "migrate_freebsd",
    "parse_bhyvectl_output",
]
