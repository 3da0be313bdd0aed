"""One live migration of a test-bed guest between two hosts, measured and verified.

The flow only talks to hosts through the Runner protocol, so the same code runs
two local processes or two namespace hosts over SSH:

  1. hand both ends a fresh per-migration key (a 0600 file on each host);
  2. start the guest on the source (`tbvm run`), let its workload warm up;
  3. start the receiver on the destination (`tbvm receive`), learn its port;
  4. probe the guest over UDP from outside while `tbctl migrate` runs on the
     source, printing progress as it comes;
  5. collect both ends' reports, let the guest run on at the destination,
     then check its memory and devices (`tbctl verify`).

A failed migration must leave the guest running on the source: the flow then
verifies the source instead, so a rollback that lost memory is caught too.
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
from harness.probe import Prober, ProbeTarget
from harness.runner import Process, Runner

# Exit statuses of tbctl migrate.
TBCTL_COMPLETED = 0
TBCTL_FAILED = 1
TBCTL_INDETERMINATE = 3


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
class FlowOptions:
    """Knobs of the flow itself, beyond the engine's policy."""

    warmup_s: float = 0.5  # workload runs this long before migrating
    run_after_s: float = 1.0  # guest runs on the destination before the check
    start_timeout_s: float = 60.0
    migrate_timeout_s: float = 600.0
    probe: bool = True
    fault: str | None = None  # test-only: drop-page | stale-device
    max_time_ms: int = 0
    keep_running: bool = False  # leave the guest running at the end (ping-pong)


@dataclass
class RunningGuest:
    """A guest process on some endpoint, with its control socket."""

    endpoint: Endpoint
    process: Process
    control: str
    probe_port: int

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


@dataclass
class MigrationOutcome:
    """Everything one migration produced: the report and the guest's new home."""

    report: dict[str, Any]
    guest: RunningGuest | None = None  # where the guest runs now, if kept running


def last_json(text: str, what: str) -> dict[str, Any]:
    """The last JSON object line a tool printed (tbctl's result); what names the tool."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError as exc:
                raise HarnessError(f"{what}: unreadable JSON: {exc}: {line[:200]}") from exc
    raise HarnessError(f"{what}: printed no JSON result; output:\n{text[-2000:]}")


def guest_args(guest: Guest) -> list[str]:
    """tbvm options describing the guest: both ends must be configured alike."""
    tb = guest.testbed or TestbedGuest()
    workload = tb.workload
    if tb.rate and "@" not in workload:
        workload = f"{workload}@{tb.rate}"
    return [
        "--name", guest.name,
        "--memory", str(guest.memory),
        "--vcpus", str(guest.vcpus),
        "--segments", str(tb.segments),
        "--workload", workload,
        "--fill", tb.fill,
    ]  # fmt: skip


def policy_args(policy: MigrationPolicy, flow: FlowOptions) -> list[str]:
    """tbctl migrate options for the engine's round policy."""
    args = [
        "--downtime-limit", str(policy.downtime_limit_ms),
        "--max-rounds", str(policy.max_rounds),
    ]  # fmt: skip
    if policy.fixed_rounds:
        args += ["--fixed-rounds", str(policy.fixed_rounds)]
    if policy.bandwidth:
        args += ["--bandwidth", str(policy.bandwidth)]
    if policy.encrypt:
        args.append("--encrypt")
    if not policy.auto_throttle:
        args.append("--no-throttle")
    if flow.max_time_ms:
        args += ["--max-time", str(flow.max_time_ms)]
    if flow.fault:
        args += ["--fault", flow.fault]
    return args


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _free_udp_port() -> int:
    # The probe port only has to be unique per run; the guest binds it.
    return 20000 + secrets.randbelow(20000)


def start_guest(endpoint: Endpoint, guest: Guest, flow: FlowOptions, tag: str) -> RunningGuest:
    """Start a fresh guest on endpoint with `tbvm run`."""
    control = f"{endpoint.runner.workdir}/{guest.name}-{tag}.ctl"
    port = _free_udp_port()
    argv = [
        endpoint.tool("tbvm"), "run", *guest_args(guest),
        "--control", control, "--probe", _addr(endpoint.probe_address, port),
    ]  # fmt: skip
    proc = endpoint.runner.spawn(argv)
    proc.wait_line("RUNNING", flow.start_timeout_s)
    return RunningGuest(endpoint, proc, control, port)


def _write_key(endpoint: Endpoint, key_hex: str, tag: str) -> str:
    path = f"{endpoint.runner.workdir}/migration-{tag}.key"
    endpoint.runner.put_text(path, key_hex + "\n", mode=0o600)
    return path


def migrate_once(
    source: RunningGuest,
    destination: Endpoint,
    guest: Guest,
    policy: MigrationPolicy,
    flow: FlowOptions,
    tag: str,
    on_progress: Callable[[str], None] = print,
) -> MigrationOutcome:
    """Move the guest running at `source` to `destination`; return the report.

    Raises MigrationError only when the flow itself cannot proceed; a migration
    that the engine refused or rolled back is reported with status "failed".
    """
    src_ep = source.endpoint
    key_hex = secrets.token_hex(32)
    src_key = _write_key(src_ep, key_hex, tag)
    dst_key = _write_key(destination, key_hex, tag)
    dst_control = f"{destination.runner.workdir}/{guest.name}-{tag}-in.ctl"
    dst_report = f"{destination.runner.workdir}/{guest.name}-{tag}-in.json"
    dst_probe = _free_udp_port()
    receiver = destination.runner.spawn([
        destination.tool("tbvm"), "receive", *guest_args(guest),
        "--listen", _addr(destination.migration_address, 0),
        "--key-file", dst_key, "--control", dst_control,
        "--probe", _addr(destination.probe_address, dst_probe),
        "--report", dst_report,
    ])  # fmt: skip
    try:
        port = int(receiver.wait_line("LISTENING", flow.start_timeout_s).split()[-1])
    except (ValueError, IndexError) as exc:
        receiver.kill()
        raise MigrationError(f"{destination.name}: tbvm receive printed no port") from exc

    prober = None
    if flow.probe:
        prober = Prober(
            ProbeTarget("source", src_ep.probe_address, source.probe_port),
            ProbeTarget("destination", destination.probe_address, dst_probe),
            max_seconds=flow.migrate_timeout_s + 30,
        )
        prober.start()
    started = time.monotonic()
    migrate = src_ep.runner.spawn([
        src_ep.tool("tbctl"), "--control", source.control, "migrate",
        "--to", _addr(destination.migration_address, port),
        "--key-file", src_key, *policy_args(policy, flow),
    ])  # fmt: skip
    try:
        status = _follow(migrate, flow.migrate_timeout_s, on_progress, src_ep.name)
    except KeyboardInterrupt:
        if prober:
            prober.stop()
        raise _cancel(source, receiver, migrate, on_progress) from None
    src_result = last_json(migrate.output(), f"{src_ep.name}: tbctl migrate")
    wall_ms = (time.monotonic() - started) * 1000.0

    dst_running = False
    if status == TBCTL_COMPLETED:
        try:
            receiver.wait_line("RUNNING", flow.start_timeout_s)
            dst_running = True
        except HarnessError as exc:
            src_result["status"] = "failed"
            src_result["error"] = {"side": "destination", "phase": "switchover",
                                   "message": str(exc)}  # fmt: skip
    else:
        # After authentication the destination discards and exits non-zero;
        # a connection refused before it leaves it listening for the source.
        if receiver.wait(5.0) is None:
            receiver.kill()
    if prober and dst_running:
        # RUNNING is printed as the vCPUs start: give the first answer time to arrive.
        prober.wait_for_answer(prober.destination.label, 2.0)
    probe = prober.stop() if prober else None
    time.sleep(flow.run_after_s if dst_running else 0.2)

    dst_result: dict[str, Any] | None = None
    if dst_running:
        dst_result = json.loads(destination.runner.read_text(dst_report))
    home = RunningGuest(destination, receiver, dst_control, dst_probe) if dst_running else source
    verification = _verify(home, source, dst_running)
    report = build_report(
        guest, src_ep, destination, src_result, dst_result, verification, probe, wall_ms
    )
    report["destination_exit"] = None if dst_running else receiver.wait(0)
    report["destination_output"] = receiver.output()[-4000:] if not dst_running else ""
    # The key is single-use; the destination's report is in ours now.
    src_ep.runner.run(["rm", "-f", src_key], check=False)
    destination.runner.run(["rm", "-f", dst_key, dst_report], check=False)
    if not flow.keep_running:
        home.stop()
        return MigrationOutcome(report)
    return MigrationOutcome(report, home)


def _cancel(
    source: RunningGuest, receiver: Process, migrate: Process, on_progress: Callable[[str], None]
) -> MigrationError:
    """Ctrl-C: end the destination so that the source rolls back, and say where the guest is."""
    if any(line.startswith("RUNNING") for line in receiver.output().splitlines()):
        return MigrationError("cancelled too late: the guest already runs on the destination")
    on_progress("cancelling: stopping the destination; the source resumes the guest")
    receiver.kill()
    code = migrate.wait(60.0)
    if code is None:
        migrate.kill()
    try:
        state = json.loads(source.tbctl("status", timeout=30.0).stdout).get("state")
        ok = source.verify().get("ok")
    except HarnessError as exc:
        return MigrationError(f"cancelled, but the source guest did not answer: {exc}")
    where = f"{source.endpoint.name}"
    if state == "running" and ok:
        return MigrationError(f"cancelled: the guest kept running on {where} (memory check ok)")
    return MigrationError(f"cancelled: the guest on {where} is {state}, memory check ok={ok}")


def _follow(proc: Process, timeout: float, on_progress: Callable[[str], None], host: str) -> int:
    """Relay progress lines until the process exits; its exit status."""
    deadline = time.monotonic() + timeout
    shown = 0
    while True:
        code = proc.wait(0.1)
        lines = proc.output().splitlines()
        for line in lines[shown:]:
            if not line.startswith("{"):
                on_progress(f"[{host}] {line}")
        shown = len(lines)
        if code is not None:
            return code
        if time.monotonic() > deadline:
            proc.kill()
            raise MigrationError(f"{host}: tbctl migrate did not finish within {timeout:.0f}s")


def _verify(home: RunningGuest, source: RunningGuest, migrated: bool) -> dict[str, Any]:
    if not migrated and not source.process.alive():
        return {"ok": False, "pages_checked": 0, "where": "source",
                "errors": ["the source guest is gone although the migration failed"]}  # fmt: skip
    result = home.verify()
    result["where"] = "destination" if migrated else "source"
    if migrated and source.process.wait(10.0) is None:
        result["ok"] = False
        result.setdefault("errors", []).append("the source VM still runs after a migration")
    return result


def build_report(
    guest: Guest,
    source: Endpoint,
    destination: Endpoint,
    src: dict[str, Any],
    dst: dict[str, Any] | None,
    verification: dict[str, Any],
    probe: Any,
    wall_ms: float,
) -> dict[str, Any]:
    """The JSON report: the source's engine stats plus what the harness saw."""
    total_ms = float(src.get("total_time_ms") or 0.0)
    bytes_sent = int(src.get("bytes_sent") or 0)
    report: dict[str, Any] = {
        "status": src.get("status", "failed"),
        "error": src.get("error"),
        "hosts": {"source": source.name, "destination": destination.name},
        "guest": {
            "name": guest.name,
            "memory_bytes": guest.memory,
            "vcpus": guest.vcpus,
            "workload": (guest.testbed or TestbedGuest()).workload,
        },
        "total_time_ms": total_ms,
        "wall_time_ms": round(wall_ms, 3),
        "downtime_ms": src.get("downtime_ms"),
        "downtime_probe_ms": (
            round(probe.outage_ms, 3) if probe and probe.outage_ms is not None else None
        ),
        "bytes_sent": bytes_sent,
        "throughput_mb_s": round(bytes_sent / total_ms / 1000.0, 1) if total_ms else 0.0,
        "stop_reason": src.get("stop_reason"),
        "encrypted": src.get("encrypted"),
        "protocol_version": src.get("protocol_version"),
        "rounds": src.get("rounds", []),
        "destination": dst,
        "verification": verification,
    }
    return report


def describe_failure(report: dict[str, Any]) -> str:
    err = report.get("error") or {}
    return (
        f"migration failed on the {err.get('side', '?')} side during "
        f"{err.get('phase', '?')}: {err.get('message', 'no message')}"
    )


@dataclass
class PingPong:
    """Migrate a guest back and forth between two endpoints count times."""

    a: Endpoint
    b: Endpoint
    guest: Guest
    policy: MigrationPolicy
    flow: FlowOptions = field(default_factory=FlowOptions)

    def run(self, count: int, on_progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        current = start_guest(self.a, self.guest, self.flow, "pp0")
        other = self.b
        time.sleep(self.flow.warmup_s)
        try:
            for i in range(count):
                keep = i < count - 1
                flow = dataclasses.replace(self.flow, keep_running=keep)
                outcome = migrate_once(
                    current, other, self.guest, self.policy, flow, f"pp{i + 1}", on_progress
                )
                reports.append(outcome.report)
                if outcome.report["status"] != "completed" or not keep:
                    if outcome.guest is not None:
                        outcome.guest.stop()
                    break
                assert outcome.guest is not None
                other = current.endpoint
                current = outcome.guest
        finally:
            current.stop()
        return reports
