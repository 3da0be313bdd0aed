"""invoke faults: the fault matrix on the namespace test bed (harness.faults)."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task

from harness.errors import HarnessError
from harness.report import write_json


@task(
    help={
        "phase": "only this phase (handshake, round1, roundN, stopcopy, after-ready, "
        "after-go, after-running)",
        "fault": "only this fault (kill-destination, kill-controller, kill-source, "
        "hang-destination, link-down, link-flap, black-hole, wrong-key)",
        "hosts": "a test-bed hosts file (default: the local test bed, brought up if needed)",
        "report": "JSON output path",
    }
)
def faults(c, phase=None, fault=None, hosts=None, report="reports/faults.json"):
    """Inject each fault at each phase of a migration and check the invariant: one
    running guest, memory check, a retry succeeds, nothing left behind."""
    from harness import faults as matrix
    from harness.deploy import endpoints_for, load_or_testbed

    try:
        cells = matrix.select(phase, fault)
        endpoints = endpoints_for(load_or_testbed(hosts))
        results = matrix.run_matrix(endpoints, cells,
                                    lambda cell: print(matrix.cell_line(cell), flush=True))
    except HarnessError as exc:
        sys.exit(f"faults: {exc}")
    print()
    print(matrix.table(results))
    write_json(matrix.as_json(results), Path(report))
    print(f"report: {report}")
    if any(cell.verdict == "fail" for cell in results):
        sys.exit(1)
