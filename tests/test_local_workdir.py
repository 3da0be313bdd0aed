"""`invoke migrate --local` removes the temporary directory it ran in (guest disk images,
reports, sockets, keys) when it ends, completed or interrupted; a --report path elsewhere
stays.  Each run gets a TMPDIR of its own, so nothing else in /tmp is looked at."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tmpdir_env() -> Iterator[tuple[Path, dict[str, str]]]:
    # Control socket paths must fit sockaddr_un: pytest's tmp_path is too deep.
    path = Path(tempfile.mkdtemp(prefix="bmw-"))
    yield path, {**os.environ, "TMPDIR": str(path), "PYTHONPATH": str(REPO)}
    shutil.rmtree(path, ignore_errors=True)


def _migrate(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "migrate", "--local", "--memory", "64M",
            "--disk", "8M", "--disks", "--plain", *args]  # fmt: skip


def test_a_completed_local_run_leaves_nothing_in_tmpdir(
    tmpdir_env: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    tmp, env = tmpdir_env
    report = tmp_path / "report.json"
    proc = subprocess.run(_migrate("--report", str(report)), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "completed" in out, out
    assert sorted(p.name for p in tmp.iterdir()) == [], out
    assert report.is_file(), out


def test_an_interrupted_local_run_leaves_nothing_in_tmpdir(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    tmp, env = tmpdir_env
    proc = subprocess.Popen(
        _migrate("--bandwidth", "4M"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(tmp.rglob("migration-*.key")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no migration started"
            time.sleep(0.2)
        assert list(tmp.rglob("*.img")) or list(tmp.rglob("*disk*")), "no disk image made"
        time.sleep(2.0)  # into pre-copy: 64 MiB at 4 MB/s takes 16 s
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    assert sorted(p.name for p in tmp.iterdir()) == [], out
