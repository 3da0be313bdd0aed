"""Throughput benchmark: the engine's stream against raw TCP, measured in one run.

Raw TCP is iperf3, single stream, on loopback: the ceiling for any protocol
over one connection on this machine.  Each engine case migrates a 1 GiB guest
between two local VM processes over loopback and takes round 1 (all of memory,
sent while the guest runs) as the stream's throughput.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.errors import HarnessError
from harness.migrate import Endpoint, FlowOptions, migrate_once, start_guest


@dataclass
class BenchCase:
    name: str
    workload: str
    fill: str


CASES = [
    BenchCase("idle", "idle", "zero"),
    BenchCase("full", "idle", "pattern"),
    BenchCase("hotset-64M", "hotset:64M", "pattern"),
    BenchCase("hotset-256M", "hotset:256M", "pattern"),
]


@dataclass
class BenchRow:
    case: str
    memory_mib: int
    status: str
    verified: bool
    rounds: int
    total_ms: float
    downtime_ms: float | None
    probe_downtime_ms: float | None
    mib_sent: float
    stream_mb_s: float  # round 1: bytes / duration
    ratio_to_tcp: float


def raw_tcp_mb_s(nbytes: int = 1 << 30, runs: int = 3) -> float:
    """Median single-stream TCP throughput on loopback with iperf3, in MB/s."""
    if shutil.which("iperf3") is None:
        raise HarnessError("the benchmark needs iperf3 for its raw TCP baseline (apt: iperf3)")
    rates = []
    for _ in range(runs):
        port = 30000 + secrets.randbelow(20000)
        server = subprocess.Popen(
            ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            out = subprocess.run(
                ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-n", str(nbytes), "-J"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            data = json.loads(out.stdout)
            if "error" in data:
                raise HarnessError(f"iperf3: {data['error']}")
            rates.append(data["end"]["sum_received"]["bits_per_second"] / 8e6)
        finally:
            server.kill()
            server.wait()
    return statistics.median(rates)


def run_case(
    case: BenchCase, memory: int, vcpus: int, endpoints: tuple[Endpoint, Endpoint], tcp: float
) -> BenchRow:
    guest = Guest(
        name=f"bench-{case.name}", memory=memory, vcpus=vcpus,
        testbed=TestbedGuest(workload=case.workload, fill=case.fill),
    )  # fmt: skip
    flow = FlowOptions(warmup_s=0.5, run_after_s=0.2)
    src = start_guest(endpoints[0], guest, flow, case.name)
    time.sleep(flow.warmup_s)
    outcome = migrate_once(src, endpoints[1], guest, MigrationPolicy(), flow, case.name,
                           on_progress=lambda _line: None)  # fmt: skip
    rep = outcome.report
    rounds = rep.get("rounds") or []
    first = rounds[0] if rounds else {}
    stream = first.get("bytes", 0) / (first.get("duration_ms") or 1) / 1000.0
    return BenchRow(
        case=case.name,
        memory_mib=memory >> 20,
        status=rep["status"],
        verified=bool(rep["verification"].get("ok")),
        rounds=len(rounds),
        total_ms=round(rep.get("total_time_ms") or 0.0, 1),
        downtime_ms=rep.get("downtime_ms"),
        probe_downtime_ms=rep.get("downtime_probe_ms"),
        mib_sent=round(rep.get("bytes_sent", 0) / (1 << 20), 1),
        stream_mb_s=round(stream, 1),
        ratio_to_tcp=round(stream / tcp, 3) if tcp else 0.0,
    )


def table(tcp: float, rows: list[BenchRow]) -> str:
    lines = [
        f"raw TCP (iperf3, 1 stream, loopback): {tcp:.0f} MB/s",
        f"{'case':12s} {'status':10s} {'ok':3s} {'rounds':>6s} {'total ms':>9s} "
        f"{'downtime':>9s} {'probe':>8s} {'MiB sent':>9s} {'MB/s':>7s} {'/ TCP':>6s}",
    ]
    for r in rows:
        lines.append(
            f"{r.case:12s} {r.status:10s} {'yes' if r.verified else 'NO':3s} {r.rounds:6d} "
            f"{r.total_ms:9.1f} {_ms(r.downtime_ms):>9s} {_ms(r.probe_downtime_ms):>8s} "
            f"{r.mib_sent:9.1f} {r.stream_mb_s:7.0f} {r.ratio_to_tcp:6.2f}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run_bench(endpoints: tuple[Endpoint, Endpoint], memory: int, vcpus: int) -> dict[str, Any]:
    tcp = raw_tcp_mb_s()
    rows = [run_case(case, memory, vcpus, endpoints, tcp) for case in CASES]
    return {"raw_tcp_mb_s": round(tcp, 1), "rows": [asdict(r) for r in rows],
            "table": table(tcp, rows)}  # fmt: skip
