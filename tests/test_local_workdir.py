"""`invoke migrate --local` removes the temporary directory it ran in (guest disk images,
reports, sockets, keys) when it ends; a --report path elsewhere stays.  The run gets a
TMPDIR of its own, so nothing else in /tmp is looked at.  (Interrupted runs:
test_harness_cleanup.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_completed_local_run_leaves_nothing_in_tmpdir(tmp_path: Path) -> None:
    # Control socket paths must fit sockaddr_un: pytest's tmp_path is too deep for TMPDIR.
    tmp = Path(tempfile.mkdtemp(prefix="bmw-"))
    report = tmp_path / "report.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "migrate", "--local", "--memory", "64M",
             "--disk", "8M", "--disks", "--plain", "--report", str(report)],
            cwd=REPO, env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "migration completed" in out, out
        assert sorted(p.name for p in tmp.iterdir()) == [], out
        assert report.is_file(), out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
