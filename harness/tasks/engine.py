"""invoke tasks: migrate (and ping-pong) on the local test bed or configured hosts."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task

from harness.config import Guest, MigrationPolicy, TestbedGuest, parse_rate
from harness.errors import HarnessError
from harness.migrate import FlowOptions, PingPong, describe_failure
from harness.report import plot_rounds, summary, write_json
from harness.units import parse_size


def _guest(memory: str, vcpus: int, workload: str, fill: str, segments: int) -> Guest:
    return Guest(
        name="tbguest",
        memory=parse_size(memory, "--memory"),
        vcpus=vcpus,
        testbed=TestbedGuest(workload=workload, fill=fill, segments=segments),
    )


def _policy(
    downtime_limit: int, max_rounds: int, fixed_rounds: int, bandwidth: str, encrypt: bool,
    no_throttle: bool,
) -> MigrationPolicy:  # fmt: skip
    return MigrationPolicy(
        downtime_limit_ms=downtime_limit,
        max_rounds=max_rounds,
        fixed_rounds=fixed_rounds or None,
        bandwidth=parse_rate(bandwidth, "--bandwidth") if bandwidth else None,
        encrypt=encrypt,
        auto_throttle=not no_throttle,
    )


@task(
    help={
        "memory": "guest memory, e.g. 256M or 1G",
        "vcpus": "vCPU threads",
        "workload": "idle | full | hotset:SIZE, optionally @RATE pages/s per vCPU",
        "fill": "initial memory: pattern (every page non-zero) or zero",
        "segments": "guest memory segments (like bhyve's NUMA domains)",
        "downtime_limit": "target downtime in ms (default 300)",
        "max_rounds": "upper bound of live rounds",
        "fixed_rounds": "the seed's fixed round count instead of the convergence policy",
        "bandwidth": "migration bandwidth limit, e.g. 100M (bytes/s)",
        "encrypt": "encrypt the stream (it is always authenticated)",
        "no_throttle": "never slow the vCPUs down to converge",
        "count": "number of migrations",
        "ping_pong": "migrate back and forth count times",
        "report": "write the JSON report here (and a PNG plot beside it)",
        "run_after": "seconds the guest runs on the destination before the check",
    }
)
def migrate(
    c, memory="256M", vcpus=2, workload="hotset:64M", fill="pattern", segments=1,
    downtime_limit=300, max_rounds=30, fixed_rounds=0, bandwidth="", encrypt=False,
    no_throttle=False, count=1, ping_pong=False, report="", run_after=1.0,
):  # fmt: skip
    """Live-migrate a test guest between two local VM processes and verify its memory."""
    from harness.local import local_endpoints

    try:
        guest = _guest(memory, vcpus, workload, fill, segments)
        policy = _policy(downtime_limit, max_rounds, fixed_rounds, bandwidth, encrypt, no_throttle)
        src, dst = local_endpoints()
        flow = FlowOptions(run_after_s=run_after)
        reports = PingPong(src, dst, guest, policy, flow).run(count if ping_pong else 1)
    except (HarnessError, ValueError) as exc:
        sys.exit(f"migrate: {exc}")
    for rep in reports:
        print(summary(rep))
    if report:
        path = Path(report)
        write_json(reports[0] if len(reports) == 1 else reports, path)
        plot_rounds(reports[-1], path.with_suffix(".png"))
        print(f"report: {path} (plot {path.with_suffix('.png')})")
    last = reports[-1]
    if last["status"] != "completed":
        sys.exit(describe_failure(last))
    if not all(r["verification"].get("ok") for r in reports):
        sys.exit("migration completed but the guest's memory check FAILED")


@task(
    help={
        "memory": "guest memory for every case (default 1G)",
        "vcpus": "vCPU threads",
        "report": "JSON output path",
    }
)
def bench(c, memory="1G", vcpus=2, report="reports/bench.json"):
    """Measure the engine's stream against raw TCP for idle, full and hot-set guests."""
    from harness.bench import run_bench
    from harness.local import local_endpoints

    try:
        result = run_bench(local_endpoints(), parse_size(memory, "--memory"), vcpus)
    except (HarnessError, ValueError) as exc:
        sys.exit(f"bench: {exc}")
    print(result["table"])
    write_json(result, Path(report))
    print(f"report: {report}")
