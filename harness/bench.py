"""Throughput benchmark: the engine's stream against raw TCP, measured in one run.

Raw TCP is iperf3, single stream, on loopback: the ceiling for any protocol
over one connection on this machine.  The full case also runs over 2 and 4
streams (`--streams N`), beside iperf3 -P N.  Each engine case migrates a 1 GiB guest
between two local VM processes over loopback and takes round 1 (all of memory,
sent while the guest runs) as the stream's throughput: wire bytes per second,
and guest memory covered per second (zero pages travel as markers).

This machine is shared and noisy (raw TCP varies by 20 % from run to run), so
raw TCP is measured before and after the cases, each case runs `repeats`
times, and medians are compared; each engine run is also paired with an iperf3
run just before it (the same stream count), and the median of those pairs'
ratios is the figure least moved by drift.  iperf3 writes 128 KiB at a time;
the engine's frames are 1 MiB, and raw TCP with 1 MiB writes is printed too as
the higher ceiling it is on loopback.

The stream is authenticated, and on loopback both ends share this machine's
cores, so a tag computed by the sender and checked by the receiver costs the
stream directly.  tb_tagstream (testbed/) measures that ceiling: 1 MiB frames
with the engine's tags over loopback and nothing else, read from and written to
1 GiB of memory on each side as a guest's are (iperf3's buffers stay in cache),
beside the same frames untagged, and the tag alone on one core.  Each engine
run is paired with a tagged run just before it too, and a case's "/ tagd" is
the median of its stream over that ceiling: what the engine itself loses.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import Guest, MigrationPolicy, TestbedGuest
from harness.engine_build import build_testbed_programs
from harness.errors import HarnessError
from harness.migrate import Endpoint, FlowOptions, migrate_once, quiet, start_guest


@dataclass
class BenchCase:
    """One guest to migrate; scale: its memory is that many times the bench's, with lazy
    destination memory (it may exceed RAM) in segments of at most 4 GiB."""

    name: str
    workload: str  # "hotset:" alone: a hot set of memory / hot_share
    fill: str
    scale: int = 1
    hot_share: int = 0
    streams: int = 1  # connections the memory moves over

    def label(self, memory: int) -> str:
        name = f"hotset-{memory // self.hot_share >> 20}M" if self.hot_share else self.name
        return f"{name}-{self.streams}streams" if self.streams > 1 else name

    def workload_for(self, memory: int) -> str:
        return f"hotset:{memory // self.hot_share}" if self.hot_share else self.workload


SEGMENT_MAX = 4 << 30  # the test bed's largest segment

# The cases matched against QEMU (issue 11), then the scale cases.
CASES = [
    BenchCase("idle", "idle", "zero"),
    BenchCase("full", "idle", "pattern"),
    BenchCase("full", "idle", "pattern", streams=2),
    BenchCase("full", "idle", "pattern", streams=4),
    BenchCase("hotset-64M", "hotset:", "zero", hot_share=16),  # of 1 GiB
    BenchCase("hotset-256M", "hotset:", "zero", hot_share=4),
    BenchCase("rewrite-200MB/s", "full@51200", "pattern"),  # 51200 pages/s = 200 MB/s
    BenchCase("dirtier", "full", "pattern"),
    BenchCase("idle-x16", "idle", "zero", scale=16),
    BenchCase("idle-x64", "idle", "zero", scale=64),
]


@dataclass
class BenchRow:
    case: str
    memory_mib: int
    runs: int
    verified: bool  # every run completed and checked out
    rounds: int
    total_ms: float
    downtime_ms: float | None
    probe_downtime_ms: float | None
    mib_sent: float
    stream_mb_s: float  # round 1: wire bytes / duration
    memory_mb_s: float  # round 1: guest memory covered / duration
    ratio_to_tcp: float  # stream_mb_s / raw TCP
    # Peak resident memory beyond the guest's, the largest of the runs (None: not measured)
    source_extra_mib: float | None
    destination_extra_mib: float | None
    extra_share: float | None  # the larger side's, over the guest's size
    streams: int = 1
    ratio_to_tcp_parallel: float = 0.0  # stream_mb_s / iperf3 -P streams
    # Median over the runs of each run's stream over the iperf3 run just before it
    paired_ratio_to_tcp: float = 0.0
    # Median over the runs of each run's stream over a tb_tagstream run just before it
    ratio_to_tagged: float = 0.0
    failures: list[str] = field(default_factory=list)  # why each run not verified failed


def raw_tcp_mb_s(nbytes: int = 1 << 30, runs: int = 3, parallel: int = 1,
                 write_len: int | None = None) -> float:  # fmt: skip
    """Median TCP throughput on loopback with iperf3 over `parallel` streams, in MB/s;
    write_len: bytes per write (iperf3's default, 128 KiB, without)."""
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
                ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-n", str(nbytes), "-J",
                 "-P", str(parallel), *(["-l", str(write_len)] if write_len else [])],
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


@dataclass
class TaggedCeiling:
    """Medians of tb_tagstream's runs, MB/s: 1 MiB frames over loopback with the engine's
    tags computed and checked, the same frames without, and the tag alone on one core."""

    tagged_mb_s: float
    untagged_mb_s: float
    tag_mb_s: float
    suite: str

    def line(self, tcp: float) -> str:
        cost = 1 - self.tagged_mb_s / self.untagged_mb_s if self.untagged_mb_s else 0.0
        per_gib = (1 << 30) / (self.tag_mb_s * 1e6) if self.tag_mb_s else 0.0
        return (
            f"authenticated ceiling (tb_tagstream, 1 MiB frames from and to 1 GiB of memory, "
            f"{self.suite}): median {self.tagged_mb_s:.0f} MB/s, {self.tagged_mb_s / tcp:.2f} "
            f"of raw TCP; untagged {self.untagged_mb_s:.0f} MB/s ({self.untagged_mb_s / tcp:.2f}"
            f" of raw TCP, whose buffers stay in cache), so the tags cost {100 * cost:.0f} % "
            f"of the stream; the tag alone: {self.tag_mb_s:.0f} MB/s on one core, "
            f"{per_gib:.2f} s of a core per GiB on each side"
        )


def tagstream_program() -> Path:
    """tb_tagstream, built if out of date."""
    return build_testbed_programs(targets=("tb_tagstream",)) / "tb_tagstream"


def tagstream_run(program: Path, tagged: bool = True) -> dict[str, Any]:
    """One run of tb_tagstream over 1 GiB: its JSON line."""
    proc = subprocess.run([str(program), *([] if tagged else ["-u"])],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0:
        raise HarnessError(f"tb_tagstream failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def tagged_ceiling(program: Path, runs: int) -> TaggedCeiling:
    """tb_tagstream runs times tagged and untagged (see the module's docstring)."""
    tagged, untagged = [], []
    for _ in range(runs):
        tagged.append(tagstream_run(program))
        untagged.append(tagstream_run(program, tagged=False))
    return TaggedCeiling(
        tagged_mb_s=statistics.median(r["stream_mb_s"] for r in tagged),
        untagged_mb_s=statistics.median(r["stream_mb_s"] for r in untagged),
        tag_mb_s=statistics.median(r["tag_mb_s"] for r in tagged),
        suite=tagged[0]["suite"],
    )


def memory_scan_mb_s(nbytes: int, runs: int = 3) -> float:
    """Median rate of reading nbytes of resident memory to find a non-zero word, in MB/s:
    the ceiling of any scan of guest memory for zero pages."""
    import numpy as np  # with matplotlib; only the bench needs it

    words = np.empty(max(nbytes, 1 << 20) // 8, dtype=np.uint64)
    words.fill(0)  # resident, not the shared zero page
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        if words.any():
            raise HarnessError("memory scan: zeroed memory reads back non-zero")
        rates.append(words.nbytes / (time.perf_counter() - t0) / 1e6)
    del words
    return statistics.median(rates)


def _one_run(guest: Guest, endpoints: tuple[Endpoint, Endpoint], tag: str,
             streams: int) -> dict[str, Any]:  # fmt: skip
    flow = FlowOptions(warmup_s=0.5, run_after_s=0.2)
    src = start_guest(endpoints[0], guest, flow, tag)
    time.sleep(flow.warmup_s)
    outcome = migrate_once(src, endpoints[1], guest, MigrationPolicy(streams=streams), flow, tag,
                           quiet())  # fmt: skip
    return outcome.report.as_json()


def run_case(
    case: BenchCase, memory: int, vcpus: int, endpoints: tuple[Endpoint, Endpoint], repeats: int,
    tagstream: Path,
) -> BenchRow:  # fmt: skip
    name = case.label(memory)
    memory *= case.scale
    segments = max(4, -(-memory // SEGMENT_MAX)) if case.scale > 1 else 1
    tag = name.replace("/", "")
    guest = Guest(
        name=f"bench-{tag}", memory=memory, vcpus=vcpus,
        testbed=TestbedGuest(workload=case.workload_for(memory), fill=case.fill,
                             segments=segments, lazy_memory=case.scale > 1),
    )  # fmt: skip
    reports, tcp_before, tagged_before = [], [], []
    for i in range(repeats):
        tcp_before.append(raw_tcp_mb_s(runs=1, parallel=case.streams))
        tagged_before.append(tagstream_run(tagstream)["stream_mb_s"])
        reports.append(_one_run(guest, endpoints, f"{tag}{i}", case.streams))
    firsts = [(r.get("rounds") or [{}])[0] for r in reports]
    streams = [f.get("bytes", 0) / (f.get("duration_us") or 1) for f in firsts]
    stream = statistics.median(streams)
    covered = statistics.median(
        f.get("dirty_pages", 0) * 4096 / (f.get("duration_us") or 1) for f in firsts
    )
    mid = sorted(reports, key=lambda r: r.get("total_time_ms") or 0.0)[len(reports) // 2]
    extra = {side: _extra_mib(reports, side) for side in ("source", "destination")}
    measured = [v for v in extra.values() if v is not None]
    return BenchRow(
        case=name,
        memory_mib=memory >> 20,
        runs=repeats,
        verified=all(
            r["status"] == "completed" and r["verification"].get("ok") for r in reports
        ),  # fmt: skip
        rounds=len(mid.get("rounds") or []),
        total_ms=round(mid.get("total_time_ms") or 0.0, 1),
        downtime_ms=mid.get("downtime_ms"),
        probe_downtime_ms=mid.get("downtime_probe_ms"),
        mib_sent=round(mid.get("bytes_sent", 0) / (1 << 20), 1),
        stream_mb_s=round(stream, 1),
        memory_mb_s=round(covered, 1),
        ratio_to_tcp=0.0,  # set once raw TCP is measured after the cases too
        source_extra_mib=extra["source"],
        destination_extra_mib=extra["destination"],
        extra_share=round(max(measured) / (memory >> 20), 5) if measured else None,
        streams=case.streams,
        paired_ratio_to_tcp=round(statistics.median(
            s / t for s, t in zip(streams, tcp_before, strict=True) if t > 0), 3),
        ratio_to_tagged=round(statistics.median(
            s / t for s, t in zip(streams, tagged_before, strict=True) if t > 0), 3),
        failures=[_failure(i, r) for i, r in enumerate(reports)
                  if r["status"] != "completed" or not r["verification"].get("ok")],
    )  # fmt: skip


def _failure(index: int, report: dict[str, Any]) -> str:
    """Why run index of a case was not verified, in a line."""
    if report["status"] != "completed":
        return f"run {index + 1}: {report['status']}: {(report.get('error') or {}).get('message')}"
    errors = report["verification"].get("errors") or []
    return f"run {index + 1}: verification failed: {'; '.join(errors[:3])}"


def _extra_mib(reports: list[dict[str, Any]], side: str) -> float | None:
    """The largest peak memory beyond the guest's that side reported over the runs."""
    kib = [m["extra_peak_kib"] for r in reports
           if (m := (r.get("engine_memory") or {}).get(side))]  # fmt: skip
    return round(max(kib) / 1024, 1) if kib else None


def table(tcp: float, tcp_runs: list[float], rows: list[BenchRow],
          parallel: dict[int, float] | None = None, tcp_1mib: float = 0.0,
          ceiling: TaggedCeiling | None = None) -> str:  # fmt: skip
    spread = f"{min(tcp_runs):.0f}-{max(tcp_runs):.0f}"
    lines = [
        f"raw TCP (iperf3, 1 stream, loopback): median {tcp:.0f} MB/s of {len(tcp_runs)} runs "
        f"({spread}); with 1 MiB writes (the engine's frame size): median {tcp_1mib:.0f} MB/s",
    ]
    lines += [f"raw TCP (iperf3 -P {n}, loopback): median {rate:.0f} MB/s"
              for n, rate in sorted((parallel or {}).items())]  # fmt: skip
    if ceiling is not None:
        lines.append(ceiling.line(tcp))
    lines.append(
        f"{'case':16s} {'ok':3s} {'runs':>4s} {'rounds':>6s} {'total ms':>9s} {'downtime':>9s} "
        f"{'probe':>8s} {'MiB sent':>9s} {'wire MB/s':>9s} {'mem MB/s':>9s} {'/ TCP':>6s} "
        f"{'/ -P N':>6s} {'paired':>6s} {'/ tagd':>6s} {'src+MiB':>7s} {'dst+MiB':>7s} "
        f"{'+%':>5s}"
    )
    for r in rows:
        lines.append(
            f"{r.case:16s} {'yes' if r.verified else 'NO':3s} {r.runs:4d} {r.rounds:6d} "
            f"{r.total_ms:9.1f} {_ms(r.downtime_ms):>9s} {_ms(r.probe_downtime_ms):>8s} "
            f"{r.mib_sent:9.1f} {r.stream_mb_s:9.0f} {r.memory_mb_s:9.0f} {r.ratio_to_tcp:6.2f} "
            f"{r.ratio_to_tcp_parallel:6.2f} {r.paired_ratio_to_tcp:6.2f} {r.ratio_to_tagged:6.2f} "
            f"{_opt(r.source_extra_mib, '.1f'):>7s} {_opt(r.destination_extra_mib, '.1f'):>7s} "
            f"{_opt(None if r.extra_share is None else 100 * r.extra_share, '.2f'):>5s}"
        )
    lines += [f"{r.case}: {f}" for r in rows for f in r.failures]
    lines.append(
        "/ TCP, / -P N: median stream over the median raw TCP of the whole run; "
        "paired: median of each run's stream over the iperf3 run just before it; "
        "/ tagd: the same, over a tb_tagstream run (one stream) just before it"
    )
    lines.append("src+MiB, dst+MiB: peak resident memory beyond the guest's (VmHWM less the "
                 "guest mappings' Rss); +%: the larger over the guest's size")  # fmt: skip
    return "\n".join(lines)


def _opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _ms(value: float | None) -> str:
    return _opt(value, ".1f")


def select_cases(names: str, memory: int) -> list[BenchCase]:
    """The cases named (comma-separated labels), all of them for an empty string."""
    if not names:
        return list(CASES)
    labels = {c.label(memory): c for c in CASES}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in labels]
    if unknown:
        raise HarnessError(f"--cases: no case {', '.join(unknown)} (cases: {', '.join(labels)})")
    return [labels[n] for n in wanted]


def run_bench(
    endpoints: tuple[Endpoint, Endpoint], memory: int, vcpus: int, repeats: int = 3,
    cases: list[BenchCase] | None = None,
) -> dict[str, Any]:  # fmt: skip
    cases = list(CASES) if cases is None else cases
    counts = sorted({c.streams for c in cases if c.streams > 1})
    tcp_runs = [raw_tcp_mb_s(runs=1) for _ in range(repeats)]
    big_writes = [raw_tcp_mb_s(runs=1, write_len=1 << 20) for _ in range(repeats)]
    par_runs = {n: [raw_tcp_mb_s(runs=1, parallel=n) for _ in range(repeats)] for n in counts}
    tagstream = tagstream_program()
    ceiling = tagged_ceiling(tagstream, repeats)
    rows = [run_case(case, memory, vcpus, endpoints, repeats, tagstream) for case in cases]
    tcp_runs += [raw_tcp_mb_s(runs=1) for _ in range(repeats)]
    big_writes += [raw_tcp_mb_s(runs=1, write_len=1 << 20) for _ in range(repeats)]
    tcp_1mib = statistics.median(big_writes)
    for n in counts:
        par_runs[n] += [raw_tcp_mb_s(runs=1, parallel=n) for _ in range(repeats)]
    tcp = statistics.median(tcp_runs)
    parallel = {n: statistics.median(runs) for n, runs in par_runs.items()}
    parallel[1] = tcp
    for row in rows:
        row.ratio_to_tcp = round(row.stream_mb_s / tcp, 3) if tcp else 0.0
        base = parallel[row.streams]
        row.ratio_to_tcp_parallel = round(row.stream_mb_s / base, 3) if base else 0.0
    scan = memory_scan_mb_s(min(memory, 1 << 30))
    return {
        "raw_tcp_mb_s": round(tcp, 1),
        "memory_scan_mb_s": round(scan, 1),
        "raw_tcp_runs_mb_s": [round(t, 1) for t in tcp_runs],
        "raw_tcp_1mib_writes_mb_s": round(tcp_1mib, 1),
        "raw_tcp_parallel_mb_s": {str(n): round(parallel[n], 1) for n in counts},
        "authenticated_ceiling": asdict(ceiling),
        "rows": [asdict(r) for r in rows],
        "table": table(tcp, tcp_runs, rows, {n: parallel[n] for n in counts}, tcp_1mib, ceiling)
        + f"\nmemory scan (resident memory, read for a "
        f"non-zero word): {scan:.0f} MB/s; mem MB/s above it means memory was skipped, not read",
    }
