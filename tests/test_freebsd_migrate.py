"""The FreeBSD migration flow against scripted hosts (nothing here runs FreeBSD).

FakeHost is a Runner that records every command and answers the ones the flow uses
(the VM-state probe, daemon(8) starts, cat of a log, kill, bhyvectl --destroy, ping) from
a small model of the host; spawn() returns a scripted Process whose output is what
bhyvectl_migrate.c prints, line for line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import freebsd
from harness.config import (
    FreeBSDGuest,
    Guest,
    Host,
    HostsConfig,
    MigrationPolicy,
    SSHSettings,
)
from harness.errors import MigrationError
from harness.freebsd_migrate import (
    EXIT_MARK,
    FreeBSDFlowOptions,
    MigrationCancelled,
    migrate_freebsd,
    parse_bhyvectl_output,
)
from harness.runner import CommandResult

VM = "fbsd-guest"
KEY = f"/var/tmp/bhyvemig/{VM}.migkey"

# What bhyvectl_migrate.c prints (printf/fprintf formats filled in), stdout and stderr.
OUT_OK = """\
Connecting to 192.0.2.11 port 24981...
Live migration of fbsd-guest to 192.0.2.11 port 24981
Migration phase: handshake
Migration phase: authentication
Migration phase: compatibility
Migration phase: pre-copy
Round 1: 1048576 dirty pages, 1048576 sent, 1040000 zero; 33.6 MiB in 412 ms; \
estimated downtime 95 ms
Round 2: 2048 dirty pages, 2048 sent, 0 zero; 8.0 MiB in 70 ms; vCPUs slowed by 20%; \
estimated downtime 18 ms
Migration phase: stop-and-copy
Final round, guest paused: 310 dirty pages, 310 sent, 0 zero; 1.2 MiB in 9 ms
Migration phase: device
Migration phase: switchover
Moved 4096.0 MiB of guest memory in 3 rounds, 42.9 MiB on the wire (encrypted), in 0.533 s; \
guest downtime 21 ms
Migration complete: fbsd-guest runs on 192.0.2.11 now.
"""

OUT_FAILED = """\
Connecting to 192.0.2.11 port 24981...
Live migration of fbsd-guest to 192.0.2.11 port 24981
Migration phase: handshake
Migration phase: authentication
Migration phase: compatibility
Migration failed on the destination side during compatibility: the destination has \
virtio-net in slot 4, the source virtio-blk
fbsd-guest keeps running on this host.
"""

OUT_UNKNOWN = """\
Connecting to 192.0.2.11 port 24981...
Live migration of fbsd-guest to 192.0.2.11 port 24981
Migration phase: pre-copy
Round 1: 1024 dirty pages, 1024 sent, 0 zero; 4.0 MiB in 40 ms; estimated downtime 5 ms
Migration phase: stop-and-copy
Final round, guest paused: 3 dirty pages, 3 sent, 0 zero; 0.0 MiB in 1 ms
Migration phase: device
Migration phase: switchover
Moved 4096.0 MiB of guest memory in 2 rounds, 4.1 MiB on the wire, in 0.090 s; \
guest downtime 0 ms
Migration outcome unknown: the destination closed the connection while waiting for the \
destination to confirm that the guest runs (it exited or was killed); the guest stays \
paused on the source so that it cannot run twice
fbsd-guest is kept paused on this host so that it never runs twice.  Check whether it runs \
on 192.0.2.11; if it does, destroy it here (bhyvectl --vm=fbsd-guest --destroy).
"""

OUT_REFUSED = """\
bhyvectl: the migration key file /var/tmp/bhyvemig/fbsd-guest.migkey is accessible by other \
users; make it mode 0600
"""


@dataclass
class FakeProcess:
    """A scripted background command."""

    argv: list[str]
    lines: list[str]
    code: int | None = None  # None: runs until killed
    interrupt: bool = False  # wait() raises KeyboardInterrupt (the user's Ctrl-C)
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
        if self.killed:
            return -15
        return self.code

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
    workdir: str = "/var/tmp/bhyvemig"
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    listen: bool = True  # bhyve -R manages to listen
    ping_ok: bool = True
    on_spawn: dict[str, FakeProcess] = field(default_factory=dict)
    spawned: list[FakeProcess] = field(default_factory=list)
    effects: list = field(default_factory=list)  # run when bhyvectl is spawned
    written: dict[str, tuple[str, int]] = field(default_factory=dict)  # put_text, kept
    next_pid: int = 1000

    def log(self, kind: str, text: str) -> None:
        self.events.append((self.name, kind, text))

    def _ok(self, argv: list[str], out: str = "", rc: int = 0) -> CommandResult:
        return CommandResult(argv, rc, out, "")

    def append(self, path: str, text: str) -> None:
        old = self.files.get(path, ("", 0o644))[0]
        self.files[path] = (old + text, 0o644)

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> CommandResult:
        flat = shlex.join(argv)
        self.log("run", flat)
        if argv[:2] == ["sh", "-c"] and "/dev/vmm/" in argv[2]:
            return self._ok(argv, f"vm={'yes' if self.vm else 'no'} bhyve={self.pid or 'none'}\n")
        if argv[0] == "daemon":
            log, bhyve = argv[3], argv[8:]
            self.next_pid += 1
            self.pid = self.next_pid
            if "-R" in bhyve:
                where = bhyve[bhyve.index("-R") + 1].rsplit(":", 1)
                if self.listen:
                    self.append(log, f"Waiting for the migration source on {where[0]} port "
                                     f"{where[1]}\r\n")  # fmt: skip
                else:
                    self.append(log, "bhyve: cannot listen for a migration on 192.0.2.11 "
                                     "port 24981: Address already in use\n"
                                     f"{EXIT_MARK}71\n")  # fmt: skip
                    self.pid = None
            else:
                self.vm = True
            return self._ok(argv)
        if argv[0] == "cat":
            if argv[1] in self.files:
                return self._ok(argv, self.files[argv[1]][0])
            return self._ok(argv, "", 1)
        if argv[0] == "rm":
            for path in argv[2:]:
                self.files.pop(path, None)
            return self._ok(argv)
        if argv[:2] == ["sh", "-c"] and argv[2].startswith("kill -TERM"):
            pid = int(argv[2].split()[2])
            if pid == self.pid:
                self.pid = None
                for path in list(self.files):
                    if path.endswith(".receive.log"):
                        self.append(path, f"{EXIT_MARK}143\n")
            return self._ok(argv)
        if argv[0] == "bhyvectl" and argv[-1] == "--destroy":
            self.vm = False
            self.pid = None
            return self._ok(argv)
        if argv[0] == "ping":
            return self._ok(argv, "", 0 if self.ping_ok else 2)
        return self._ok(argv)

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
    return HostsConfig(
        path=Path("lab.yaml"),
        ssh=SSHSettings(known_hosts=Path("/dev/null")),
        hosts={},
        guests={},
        migration=MigrationPolicy(),
    )


SOURCE = Host(name="alpha", address="alpha.lab", kind="freebsd",
              migration_addresses=["192.0.2.10"])  # fmt: skip
DEST = Host(name="beta", address="beta.lab", kind="freebsd", migration_addresses=["192.0.2.11"])
GUEST = Guest(
    name=VM,
    memory=4 << 30,
    vcpus=2,
    freebsd=FreeBSDGuest(
        devices=["0,hostbridge", "3,virtio-blk,/vm/fbsd-guest/disk.img", "31,lpc"],
        bootrom="/usr/local/share/uefi-firmware/BHYVE_UEFI.fd",
        config={"lpc.com1.path": "/dev/nmdm0A"},
    ),
)
FAST = {"sleep": lambda s: None, "boot_wait_s": 0, "settle_timeout_s": 2, "listen_timeout_s": 2}


@dataclass
class Bed:
    src: FakeHost
    dst: FakeHost
    events: list[tuple[str, str, str]]
    progress: list[str]

    def index(self, host: str, kind: str, pattern: str) -> int:
        for i, (h, k, text) in enumerate(self.events):
            if h == host and k == kind and re.search(pattern, text):
                return i
        raise AssertionError(f"no {kind} on {host} matching {pattern!r}:\n{self.events}")

    def commands(self, host: str, kind: str = "run") -> list[str]:
        return [t for h, k, t in self.events if h == host and k == kind]


def bed(output: str, code: int | None, *, running: bool = True, interrupt: bool = False) -> Bed:
    events: list[tuple[str, str, str]] = []
    src = FakeHost("alpha", events, vm=running, pid=500 if running else None)
    dst = FakeHost("beta", events)
    src.on_spawn["bhyvectl"] = FakeProcess([], output.splitlines(), code, interrupt)
    dst_log = f"/var/tmp/bhyvemig/{VM}.receive.log"

    def migrated() -> None:
        src.vm, src.pid = False, None
        dst.vm = True
        dst.append(dst_log, "Receiving guest from 192.0.2.10:51234: 2 vCPUs, 4096 MiB\n"
                            "Migration from 192.0.2.10:51234 complete: 4096 MiB in 533 ms, "
                            "downtime 21 ms\n")  # fmt: skip

    def refused() -> None:
        dst.vm = True  # bhyve -R had created the VM before the refusal
        dst.pid = None
        dst.append(dst_log, "bhyve: migration from 192.0.2.10:51234 failed on the destination "
                            f"side during compatibility check: ...\n{EXIT_MARK}4\n")  # fmt: skip

    if code == 0:
        src.effects.append(migrated)
    elif code == 1 and "Migration failed" in output:
        src.effects.append(refused)
    elif code == 1:
        src.effects.append(lambda: None)  # bhyvectl refused alone; bhyve -R still waits
    return Bed(src, dst, events, [])


def run(b: Bed, policy: MigrationPolicy | None = None, **opts) -> dict:
    options = FreeBSDFlowOptions(**{**FAST, **opts})
    return migrate_freebsd(
        hosts_config(), SOURCE, DEST, GUEST, policy or MigrationPolicy(), (b.src, b.dst),
        b.progress.append, options=options,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Parsing


def test_parse_completed_output() -> None:
    parsed = parse_bhyvectl_output(OUT_OK, 0)
    assert parsed.status == "completed"
    assert parsed.error is None
    assert [r["index"] for r in parsed.rounds] == [1, 2, 3]
    assert [r["final"] for r in parsed.rounds] == [False, False, True]
    first, second, final = parsed.rounds
    assert first == {
        "index": 1, "final": False, "dirty_pages": 1048576, "pages_sent": 1048576,
        "zero_pages": 1040000, "bytes": round(33.6 * (1 << 20)), "duration_ms": 412.0,
        "throttle_pct": 0, "est_downtime_ms": 95,
    }  # fmt: skip
    assert second["throttle_pct"] == 20 and second["est_downtime_ms"] == 18
    assert final["dirty_pages"] == 310 and final["est_downtime_ms"] is None
    assert parsed.total_time_ms == 533.0
    assert parsed.downtime_ms == 21.0
    assert parsed.bytes_sent == round(42.9 * (1 << 20))
    assert parsed.memory_moved_bytes == 4096 << 20
    assert parsed.encrypted is True
    # bhyvectl cuts phase names at a space; the report uses the engine's names.
    assert "compatibility check" in parsed.phases and "device state" in parsed.phases


def test_parse_failed_output() -> None:
    parsed = parse_bhyvectl_output(OUT_FAILED, 1)
    assert parsed.status == "failed"
    assert parsed.error == {
        "side": "destination",
        "phase": "compatibility check",
        "message": "the destination has virtio-net in slot 4, the source virtio-blk",
    }
    assert parsed.rounds == [] and parsed.total_time_ms is None


def test_parse_indeterminate_output() -> None:
    parsed = parse_bhyvectl_output(OUT_UNKNOWN, 2)
    assert parsed.status == "indeterminate"
    assert parsed.error is not None
    assert parsed.error["phase"] == "switchover"
    assert parsed.error["message"].startswith("the destination closed the connection")
    assert parsed.encrypted is False and parsed.total_time_ms == 90.0
    assert parsed.rounds[-1]["final"] and parsed.rounds[-1]["index"] == 2


def test_parse_refusal_and_connect_failure() -> None:
    refused = parse_bhyvectl_output(OUT_REFUSED, 1)
    assert refused.status == "failed"
    assert refused.error is not None and refused.error["side"] == "source"
    assert "make it mode 0600" in refused.error["message"]
    lost = parse_bhyvectl_output(
        "Connecting to 192.0.2.11 port 24981...\n"
        "bhyvectl: cannot connect to 192.0.2.11 port 24981: Connection refused\n"
        "bhyvectl: is the destination bhyve started with -R and is the port open?\n",
        1,
    )
    assert lost.error is not None and lost.error["side"] == "link"
    assert "Connection refused" in lost.error["message"]
    assert parse_bhyvectl_output("", 7).error["message"] == "bhyvectl exited 7 without saying why"


# --------------------------------------------------------------------------------------
# The flow


def test_completed_migration_command_lines_and_order() -> None:
    b = bed(OUT_OK, 0)
    report = run(b)

    # One fresh key, 64 hex digits, the same on both hosts, written 0600.
    keys = [e for e in b.events if e[1] == "put_text"]
    assert keys == [("alpha", "put_text", f"{KEY} 600"), ("beta", "put_text", f"{KEY} 600")]
    key_text = b.src.written[KEY][0]
    assert re.fullmatch(r"[0-9a-f]{64}\n", key_text) and b.dst.written[KEY][0] == key_text
    # The receiver: bhyve_argv with -R on the destination's migration address.
    start = b.index("beta", "run", r"^daemon ")
    receiver = shlex.split(b.events[start][2])
    assert receiver[:4] == ["daemon", "-f", "-o", f"/var/tmp/bhyvemig/{VM}.receive.log"]
    bhyve = receiver[8:]
    assert bhyve == freebsd.bhyve_argv(GUEST, receive="192.0.2.11:24981", keyfile=KEY)
    assert bhyve[-3:] == ["-o", f"migration.keyfile={KEY}", VM]
    # bhyvectl on the source, with the policy's options.
    ctl = b.index("alpha", "spawn", r"^bhyvectl ")
    assert shlex.split(b.events[ctl][2]) == [
        "bhyvectl", f"--vm={VM}", "--migrate-live=192.0.2.11:24981", f"--migrate-keyfile={KEY}",
        "--migrate-downtime=300", "--migrate-max-rounds=30",
    ]  # fmt: skip
    # Order: keys on both hosts, then the receiver listening, then bhyvectl.
    listening = max(
        i for i, (h, k, t) in enumerate(b.events[:ctl]) if h == "beta" and t.startswith("cat ")
    )
    assert max(i for i, e in enumerate(b.events) if e[1] == "put_text") < start < listening < ctl
    # The guest was already running on the source: not started again.
    assert not [c for c in b.commands("alpha") if c.startswith("daemon ")]
    # Keys removed at the end.
    assert f"rm -f {KEY}" in b.commands("alpha")
    assert f"rm -f {KEY}" in b.commands("beta")
    # Nothing destroyed on a clean success.
    assert not [c for h, _, c in b.events if c.endswith("--destroy")]

    assert report["status"] == "completed" and report["error"] is None
    assert report["hosts"] == {"source": "alpha", "destination": "beta"}
    assert report["guest"]["memory_bytes"] == 4 << 30 and report["guest"]["vcpus"] == 2
    assert report["total_time_ms"] == 533.0 and report["downtime_ms"] == 21.0
    assert report["bytes_sent"] == round(42.9 * (1 << 20))
    assert [r["index"] for r in report["rounds"]] == [1, 2, 3]
    assert set(report["rounds"][0]) >= {
        "index", "dirty_pages", "pages_sent", "zero_pages", "bytes", "duration_ms", "final",
    }  # fmt: skip
    ver = report["verification"]
    assert ver["ok"] is True and ver["where"] == "destination"
    names = [c["name"] for c in ver["checks"]]
    assert names == [
        "destination bhyve runs the guest", "source bhyve has exited",
        f"/dev/vmm/{VM} gone on the source",
    ]  # fmt: skip
    assert report["encrypted"] is True and report["kind"] == "freebsd"
    assert any("Round 2:" in line for line in b.progress)


def test_report_has_the_test_bed_schema() -> None:
    from harness.migrate import Endpoint, build_report

    ep = Endpoint(FakeHost("x", []), "", "a", "a")
    reference = build_report(GUEST, ep, ep, {}, None, {"ok": True}, None, 0.0)
    report = run(bed(OUT_OK, 0))
    assert set(reference) <= set(report)


def test_starts_the_guest_on_the_source_when_it_is_not_running() -> None:
    b = bed(OUT_OK, 0, running=False)
    run(b)
    start = b.index("alpha", "run", r"^daemon ")
    argv = shlex.split(b.events[start][2])
    assert argv[:4] == ["daemon", "-f", "-o", f"/var/tmp/bhyvemig/{VM}.source.log"]
    assert argv[8:] == freebsd.bhyve_argv(GUEST)
    assert start < b.index("beta", "run", r"^daemon ") < b.index("alpha", "spawn", "^bhyvectl")


def test_failed_migration_leaves_the_guest_on_the_source() -> None:
    b = bed(OUT_FAILED, 1)
    report = run(b)
    assert report["status"] == "failed"
    assert report["error"] == {
        "side": "destination",
        "phase": "compatibility check",
        "message": "the destination has virtio-net in slot 4, the source virtio-blk",
    }
    ver = report["verification"]
    assert ver["where"] == "source" and ver["ok"] is True, ver
    by = {c["name"]: c for c in ver["checks"]}
    assert by["guest still runs on the source"]["ok"]
    assert by["destination bhyve exited non-zero"]["detail"] == "exit 4"
    assert by[f"/dev/vmm/{VM} gone on the destination"]["ok"]
    assert report["destination_exit"] == 4
    # The destination's leftover VM was destroyed; the source's guest was not touched.
    assert f"bhyvectl --vm={VM} --destroy" in b.commands("beta")
    assert not [c for c in b.commands("alpha") if "--destroy" in c or "kill" in c]
    assert b.src.vm and b.src.pid == 500
    assert "compatibility check" in report["destination_output"]


def test_bhyvectl_refusal_stops_the_waiting_receiver() -> None:
    b = bed(OUT_REFUSED, 1)
    report = run(b)
    assert report["status"] == "failed"
    assert report["error"]["side"] == "source"
    assert "mode 0600" in report["error"]["message"]
    by = {c["name"]: c for c in report["verification"]["checks"]}
    # bhyve -R was still listening: the harness stopped it, and says so.
    assert not by["destination bhyve exited non-zero"]["ok"]
    assert any(c.startswith("sh -c 'kill -TERM") for c in b.commands("beta"))
    assert b.dst.pid is None


def test_indeterminate_touches_nothing() -> None:
    b = bed(OUT_UNKNOWN, 2)
    report = run(b)
    assert report["status"] == "indeterminate"
    assert report["error"]["phase"] == "switchover"
    assert report["verification"]["where"] == "undecided"
    assert any("outcome unknown" in n for n in report["notes"])
    for host in ("alpha", "beta"):
        assert not [c for c in b.commands(host) if "--destroy" in c or "kill -TERM" in c]


def test_ctrl_c_kills_bhyvectl_and_the_receiver() -> None:
    b = bed(OUT_OK, None, interrupt=True)
    b.src.effects.clear()
    with pytest.raises(MigrationCancelled, match="keeps running on alpha"):
        run(b)
    bhyvectl = next(p for p in b.src.spawned if p.argv[0] == "bhyvectl")
    assert bhyvectl.killed
    assert any(c.startswith("sh -c 'kill -TERM") for c in b.commands("beta"))
    assert b.dst.pid is None
    assert f"rm -f {KEY}" in b.commands("alpha") and f"rm -f {KEY}" in b.commands("beta")


def test_receiver_that_cannot_listen_stops_the_flow() -> None:
    b = bed(OUT_OK, 0)
    b.dst.listen = False
    with pytest.raises(
        MigrationError, match="(?s)exited 71 before listening.*Address already in use"
    ):
        run(b)
    assert not b.src.spawned  # bhyvectl never ran
    assert f"rm -f {KEY}" in b.commands("beta")


def test_refuses_a_destination_that_already_runs_the_guest() -> None:
    b = bed(OUT_OK, 0)
    b.dst.vm, b.dst.pid = True, 777
    with pytest.raises(MigrationError, match="already runs there"):
        run(b)
    assert not b.src.spawned


def test_fixed_rounds_replace_max_rounds() -> None:
    b = bed(OUT_OK, 0)
    run(b, MigrationPolicy(fixed_rounds=4, bandwidth=125_000_000, encrypt=True))
    argv = shlex.split(b.events[b.index("alpha", "spawn", "^bhyvectl")][2])
    assert "--migrate-fixed-rounds=4" in argv
    assert not [a for a in argv if a.startswith("--migrate-max-rounds")]
    assert "--migrate-bandwidth=125000000" in argv and "--migrate-encrypt" in argv


def test_guest_probe_pings_before_during_and_after() -> None:
    b = bed(OUT_OK, 0)
    b.src.on_spawn["ping"] = FakeProcess(
        [], [f"64 bytes from 192.0.2.50: icmp_seq={i} ttl=64 time=0.3 ms" for i in (0, 1, 2, 6, 7)]
    )
    report = run(b, guest_address="192.0.2.50")
    assert any(c.startswith("ping ") and c.endswith("192.0.2.50") for c in b.commands("alpha"))
    assert any(c.startswith("ping ") for c in b.commands("beta"))
    pinger = next(p for p in b.src.spawned if p.argv[0] == "ping")
    assert pinger.killed and pinger.argv[:4] == ["ping", "-n", "-i", "0.1"]
    assert report["downtime_probe_ms"] == pytest.approx(400.0)
    assert "guest answers ping after the move" in [
        c["name"] for c in report["verification"]["checks"]
    ]


def test_rejects_hosts_of_another_kind() -> None:
    b = bed(OUT_OK, 0)
    testbed = Host(name="ns1", address="10.77.0.2", kind="testbed")
    with pytest.raises(MigrationError, match="not freebsd"):
        migrate_freebsd(hosts_config(), testbed, DEST, GUEST, MigrationPolicy(), (b.src, b.dst),
                        b.progress.append)  # fmt: skip
    assert b.events == []
