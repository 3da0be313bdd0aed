"""The harness stopped by a signal mid-migration leaves nothing on the hosts: no single-use
key files, no control sockets, no receiver report, no VM processes.  Nor does a host that
cannot be reached while the keys are handed out.

`invoke migrate --local` runs in its own temporary directory (TMPDIR); SIGTERM or SIGHUP
arrives during pre-copy, and the migration is cancelled as on Ctrl-C; TMPDIR is empty after.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_protocol_peer import GUEST

from harness.config import MigrationPolicy
from harness.errors import HarnessError
from harness.flow import run_migration
from harness.local import local_endpoints
from harness.migrate import Endpoint, FlowOptions, TestbedDriver, quiet, start_guest
from harness.ssh import SSHRunner, SSHTarget

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")


def _leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix in (".key", ".ctl") or p.name.endswith("-in.json")
    )


def _vm_processes(root: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "tbvm|tbctl"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if str(root) in ln]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Control socket paths must fit sockaddr_un: pytest's tmp_path is too deep.
    path = Path(tempfile.mkdtemp(prefix="bmc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_migration_leaves_nothing_behind(short_tmp: Path, sig: signal.Signals) -> None:
    tmp_path = short_tmp
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "migrate", "--local", "--memory", "64M",
         "--bandwidth", "4M", "--plain"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.rglob("migration-*.key")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no migration started"
            time.sleep(0.2)
        time.sleep(2.0)  # into pre-copy: 64 MiB at 4 MB/s takes 16 s
        assert proc.poll() is None
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    assert "cancel" in out.lower(), out
    assert _leftovers(tmp_path) == [], out
    assert _vm_processes(tmp_path) == [], out
    # Nor the local run's own temporary directory (its images, reports, sockets).
    assert sorted(p.name for p in tmp_path.iterdir()) == [], out


def test_unreachable_destination_leaves_no_key_on_the_source() -> None:
    """The destination's SSH connect fails while keys are handed out: the source's goes."""
    src_ep, _ = local_endpoints(Path(tempfile.mkdtemp(prefix="bmc-")))
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    target = SSHTarget("unreachable", "127.0.0.1", port=port, connect_timeout=2.0,
                       workdir="/var/tmp/bhyvemig-unreachable")  # fmt: skip
    dst_ep = Endpoint(SSHRunner(target), "/nonexistent", "127.0.0.1", "127.0.0.1")
    src = start_guest(src_ep, GUEST, FlowOptions(), "unreach")
    try:
        driver = TestbedDriver(src, dst_ep, GUEST, MigrationPolicy(), FlowOptions(), "unreach")
        with pytest.raises(HarnessError):
            run_migration(driver, {}, FlowOptions(probe=False), quiet())
        assert list(Path(src_ep.runner.workdir).glob("*.key")) == []
    finally:
        src.stop()
        shutil.rmtree(Path(src_ep.runner.workdir).parent, ignore_errors=True)


def test_a_guest_that_does_not_come_up_in_time_is_not_left_running(short_tmp: Path) -> None:
    # The start-up wait ends before the guest prints RUNNING (as an interrupt would end
    # it): the process the harness spawned must not outlive the failed start.
    src, _ = local_endpoints(short_tmp)
    with pytest.raises(HarnessError):
        start_guest(src, GUEST, FlowOptions(start_timeout_s=0.001), "slow")
    assert _vm_processes(short_tmp) == []
