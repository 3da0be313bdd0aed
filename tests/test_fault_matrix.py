"""The fault matrix (harness/faults.py): its representative subset on a namespace test bed of
its own (each fault once, each phase at least once), and the matrix's bookkeeping.

`invoke faults` runs every cell; this runs CI_CELLS.  Like the suite's other test-bed
tests it brings up its own prefix, ranges and state directory, so it never touches a test
bed a developer has up.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import faults
from harness.config import load_hosts
from harness.deploy import endpoints_for
from harness.errors import HarnessError
from harness.flow import resolve
from harness.migrate import quiet
from harness.netns import Testbed, TestbedSpec

STATE = Path("/var/lib/bhyve-migration-testbed-pytest-faults")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the namespace test bed needs root")


@pytest.fixture(scope="module")
def endpoints():
    spec = TestbedSpec(prefix="bmigf", ipv4_range="10.73.0.0/16",
                       ipv6_range="fd4d:6967:7273::/48", state_dir=STATE)  # fmt: skip
    testbed = Testbed(spec)
    eps = endpoints_for(load_hosts(testbed.up()))
    yield eps
    for ep in eps:
        ep.runner.close()
    testbed.down()


@needs_root
@pytest.mark.parametrize(("phase", "fault"), faults.CI_CELLS)
def test_cell_holds_the_invariant(endpoints, phase: str, fault: str) -> None:
    cell = faults.run_cell(endpoints, phase, fault)
    assert cell.verdict == "pass", faults.cell_line(cell)
    if fault != "wrong-key":
        # The fault hit the phase: the destination stopped at its point first.
        assert cell.injected and "stopped at its point" in cell.injected[0], cell.injected
    assert cell.retry == "completed"
    assert cell.leftovers == []


def test_the_subset_covers_each_fault_and_each_phase() -> None:
    assert {f for _, f in faults.CI_CELLS} == set(faults.FAULTS)
    assert {p for p, _ in faults.CI_CELLS} == set(faults.PHASES)
    assert all(faults.not_applicable(p, f) is None for p, f in faults.CI_CELLS)


def test_selection_and_not_applicable_cells() -> None:
    assert len(faults.select()) == len(faults.PHASES) * len(faults.FAULTS)
    assert faults.select("after-go", "link-down") == [("after-go", "link-down")]
    assert [f for _, f in faults.select(phase="round1")] == list(faults.FAULTS)
    with pytest.raises(HarnessError, match="unknown phase 'round9'"):
        faults.select("round9")
    with pytest.raises(HarnessError, match="unknown fault 'unplug'"):
        faults.select(fault="unplug")
    assert faults.not_applicable("handshake", "wrong-key") is None
    assert "handshake" in (faults.not_applicable("after-go", "wrong-key") or "")
    na = faults.run_cell(None, "round1", "wrong-key")  # type: ignore[arg-type]
    assert na.verdict == "n/a" and na.detail


def test_the_invariant_allows_no_guest_only_where_the_fault_killed_its_home() -> None:
    assert faults.expected_guests("round1", "kill-source") == {0}
    assert faults.expected_guests("after-running", "kill-destination") == {0}
    assert faults.expected_guests("after-go", "kill-source") == {1}
    assert faults.expected_guests("after-ready", "kill-destination") == {1}
    assert all(2 not in faults.expected_guests(p, f) for p, f in faults.select())


def test_table_counts() -> None:
    cells = [faults.Cell("handshake", "wrong-key", "pass"),
             faults.Cell("round1", "wrong-key", "n/a"),
             faults.Cell("handshake", "link-down", "fail"),
             faults.Cell("round1", "link-down", "pass")]  # fmt: skip
    text = faults.table(cells)
    assert text.splitlines()[-1] == "4 cells: 2 pass, 1 fail, 1 n/a"
    row = next(line for line in text.splitlines() if line.strip().startswith("handshake"))
    assert "FAIL" in row and "pass" in row
    assert faults.as_json(cells)["counts"] == {"pass": 2, "fail": 1, "n/a": 1}


class _SourceDiedMeanwhile:
    """A Resolvable whose destination does not run the guest and whose source's process
    is gone (roundN x kill-source: the controller saw the switchover, then the VM died)."""

    source_name = "a"
    destination_name = "b"

    def destination_runs_guest(self) -> bool:
        return False

    def resume_source(self) -> None:
        raise HarnessError("a: tbctl resume: Connection refused (is tbvm running?)")

    def destroy_source(self) -> None:
        raise AssertionError("a guest the destination does not run is never destroyed")


def test_resolving_with_the_source_gone_reports_it_instead_of_failing() -> None:
    res = resolve(_SourceDiedMeanwhile(), quiet())
    assert (res.action, res.guest_runs_on) == ("none", "undecided")
    assert "Connection refused" in res.detail
