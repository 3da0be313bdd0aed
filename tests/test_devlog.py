"""The device write log (usr.sbin/bhyve/migration_devlog.c), exercised by a C program."""

from __future__ import annotations

import subprocess

from harness.engine_build import build_testbed_programs


def test_every_devlog_case_passes() -> None:
    out = build_testbed_programs(targets=("devlog_test",), sanitize=True)
    proc = subprocess.run([str(out / "devlog_test")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if line.startswith("FAIL")]
    assert lines[-1] == "10 passed, 0 failed"
