"""The control plane's codec (migration_ctl.c) in C: tests/c/ctl_test.c under ASan and UBSan."""

from __future__ import annotations

import subprocess

import pytest

from harness.engine_build import build_testbed_programs


@pytest.fixture(scope="module")
def ctl_test_output() -> list[str]:
    out = build_testbed_programs(targets=("ctl_test",), sanitize=True)
    proc = subprocess.run(
        [str(out / "ctl_test")], capture_output=True, text=True, errors="replace", timeout=60
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.splitlines()


def test_every_case_passes(ctl_test_output: list[str]) -> None:
    failed = [line for line in ctl_test_output if line.startswith("FAIL")]
    assert not failed, "\n".join(failed)
    assert ctl_test_output[-1].endswith(" 0 failed")


@pytest.mark.parametrize(
    "case",
    [
        "the old spelling is refused by name",
        "the old key=value format is refused",
        "phase identifiers have no spaces",
        "result event round trip, message escaped",
        "estimate-missed event round trip",
        "a phase name with a dash is no identifier",
        "words name phases whole and say what to do",
        "paused event round trip",
        "result carries the downtime's parts",
        "a result without the downtime's parts still decodes",
        "a paused event without its timeout is refused",
        "switchover wait travels in the request",
        "a go-ahead with nobody waiting is refused",
        "the go-ahead releases a waiting hook once",
    ],
)
def test_named_case_ran_and_passed(ctl_test_output: list[str], case: str) -> None:
    assert any(line.startswith(f"PASS {case}") for line in ctl_test_output), case
