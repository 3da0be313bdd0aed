"""SSHRunner against the test bed's namespace sshds: commands, files, errors, timeouts."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import netns
from harness.config import load_hosts
from harness.deploy import deploy_testbed_programs
from harness.runner import CommandFailed
from harness.ssh import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyError,
    HostUnreachable,
    OutputSink,
    ParallelError,
    SSHRunner,
    SSHTarget,
    run_parallel,
    runners_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")

SPEC = netns.TestbedSpec(
    prefix="bmigs",
    ipv4_range="10.79.0.0/16",
    ipv6_range="fd4d:6967:7273::/48",
    state_dir=Path("/var/lib/bhyve-migration-testbed-pytest-ssh"),
)


@pytest.fixture(scope="module")
def config():
    tb = netns.Testbed(SPEC)
    tb.down()
    tb.up()
    yield load_hosts(SPEC.hosts_file)
    tb.down()


@pytest.fixture
def a(config):
    with SSHRunner.from_config(config, "bmigs-a") as runner:
        yield runner


def target(config, **changes) -> SSHTarget:
    return dataclasses.replace(SSHTarget.from_config(config.host("bmigs-a"), config.ssh), **changes)


def test_run_output_and_exit_status(a: SSHRunner) -> None:
    result = a.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed) as info:
        a.run(["sh", "-c", "echo broken >&2; exit 2"])
    assert str(info.value).startswith("bmigs-a: `sh -c 'echo broken >&2; exit 2'` exited 2")
    assert "broken" in str(info.value)
    assert a.run(["echo", "it's a 'quoted' $HOME"]).stdout == "it's a 'quoted' $HOME\n"


def test_streamed_output_has_host_prefix(config) -> None:
    buf = io.StringIO()
    runner = SSHRunner.from_config(config, "bmigs-b", OutputSink(buf), stream=True)
    runner.run(["sh", "-c", "echo one; echo two"])
    runner.close()
    assert buf.getvalue() == " bmigs-b | one\n bmigs-b | two\n"


def test_spawn_wait_line_and_kill(a: SSHRunner) -> None:
    proc = a.spawn(["sh", "-c", "echo starting; echo listening on 1234; exec sleep 300"])
    assert proc.wait_line("listening", 10) == "listening on 1234"
    assert proc.alive() and proc.pid is not None
    pid = proc.pid
    proc.kill()
    assert not proc.alive()
    assert a.run(["sh", "-c", f"kill -0 {pid}"], check=False).returncode != 0  # really gone
    assert "starting" in proc.output()

    done = a.spawn(["sh", "-c", "echo bye; exit 4"])
    assert done.wait(10) == 4
    with pytest.raises(Exception, match="exited 4 before printing 'never'"):
        done.wait_line("never", 5)


def test_command_timeout_kills_the_command(a: SSHRunner) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"bmigs-a: `sleep 30` did not finish within 1s"):
        a.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 4
    script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f; echo; done 2>/dev/null"
    procs = a.run(["sh", "-c", script]).stdout.splitlines()
    assert "sleep 30 " not in procs


def test_put_get_text_and_progress(a: SSHRunner, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    local = tmp_path / "blob"
    local.write_bytes(data)
    local.chmod(0o640)
    remote = f"{a.workdir}/sub/blob"
    bar = io.StringIO()
    a.sink = OutputSink(bar, progress=True)
    a.put(local, remote)
    assert "100.0%" in bar.getvalue() and "blob" in bar.getvalue()
    assert a.run(["stat", "-c", "%a %s", remote]).stdout.split() == ["640", str(len(data))]
    back = tmp_path / "back" / "blob"
    quiet = io.StringIO()
    a.sink = OutputSink(quiet)  # not a terminal: no progress bar
    a.get(remote, back)
    assert back.read_bytes() == data
    assert quiet.getvalue() == ""
    a.put_text(f"{a.workdir}/note.txt", "hello\n", 0o600)
    assert a.read_text(f"{a.workdir}/note.txt") == "hello\n"
    with pytest.raises(Exception, match="bmigs-a: cannot read /nonexistent"):
        a.read_text("/nonexistent/file")


def test_parallel_on_both_hosts(config) -> None:
    runners = runners_for(config)
    names = run_parallel(runners, lambda r: r.run(["hostname"]).stdout.strip())
    assert names == {"bmigs-a": "bmigs-a", "bmigs-b": "bmigs-b"}
    with pytest.raises(ParallelError) as info:
        run_parallel(runners, lambda r: r.run(["sh", "-c", f"test {r.name} = bmigs-a"]))
    assert set(info.value.errors) == {"bmigs-b"} and set(info.value.results) == {"bmigs-a"}
    for r in runners:
        r.close()


def test_unreachable_host_times_out_clearly(config) -> None:
    # an unused address on the bridge subnet: nobody answers ARP
    runner = SSHRunner(target(config, address="10.79.0.99", connect_timeout=2))
    start = time.monotonic()
    with pytest.raises(HostUnreachable) as info:
        runner.run(["true"])
    elapsed = time.monotonic() - start
    assert elapsed < 2 + 2, elapsed
    assert str(info.value).startswith("bmigs-a: ")
    assert "root@10.79.0.99:22" in str(info.value)


def test_refused_and_unroutable(config) -> None:
    refused = SSHRunner(target(config, port=2222, connect_timeout=3))
    with pytest.raises(HostUnreachable, match="root@10.79.0.11:2222.*[Rr]efused"):
        refused.run(["true"])
    guarded = SSHRunner(target(config, address="10.79.1.2", connect_timeout=3))
    start = time.monotonic()
    with pytest.raises(HostUnreachable, match="root@10.79.1.2:22: No route to host"):
        guarded.run(["true"])
    assert time.monotonic() - start < 1  # the guard route answers at once


def test_wrong_key_is_an_authentication_error(config, tmp_path: Path) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    runner = SSHRunner(target(config, key_file=key, connect_timeout=5))
    start = time.monotonic()
    with pytest.raises(AuthenticationFailed) as info:
        runner.run(["true"])
    assert time.monotonic() - start < 5
    assert str(info.value) == (f"bmigs-a: root@10.79.0.11:22 refused authentication with key {key}")


def test_host_keys_are_pinned(config, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="is not in .*known_hosts_empty"):
        SSHRunner(target(config, known_hosts=empty)).run(["true"])
    # b's key listed for a's address: a presents another key
    b_key = SPEC.host_key("bmigs-b").with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"10.79.0.11 {b_key[0]} {b_key[1]}\n")
    with pytest.raises(HostKeyError, match="differs from the one in"):
        SSHRunner(target(config, known_hosts=wrong)).run(["true"])


def test_wait_until_back(a: SSHRunner) -> None:
    assert a.wait_until_back(10) < 5  # already up
    boot = a.boot_id()
    start = time.monotonic()
    with pytest.raises(HostUnreachable, match="not back within 2s.*has not rebooted yet"):
        a.wait_until_back(2, previous_boot_id=boot)
    assert time.monotonic() - start < 5


def test_deploy_testbed_programs(config, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tbvm").write_text("#!/bin/sh\necho 'tbvm 0.1'\n")
    (bin_dir / "tbctl").write_text(
        "#!/bin/sh\necho 'usage: tbctl --control PATH ...' >&2\nexit 2\n"
    )
    runners = runners_for(config, sink=OutputSink(io.StringIO()))
    where = run_parallel(runners, lambda r: deploy_testbed_programs(r, bin_dir))
    assert where["bmigs-b"] == f"{SPEC.workdir('bmigs-b')}/bin"
    (bin_dir / "tbvm").write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(ParallelError, match="tbvm does not run after upload"):
        run_parallel(runners, lambda r: deploy_testbed_programs(r, bin_dir))
    for r in runners:
        r.close()
