"""The control plane as the FreeBSD userland runs it, on loopback test-bed processes.

tbvm serves bhyve's command handler (migration_source_cmd.c) and receive loop
(migration_dest_listen.c); tbctl runs bhyvectl's controller (bhyvectl_migrate.c).
These tests drive them directly: migrate, check, cancel, resume, guest-status,
checkpoint refusal, a killed controller, and both outcomes after GO.

With BMIG_RECORD_TRANSCRIPTS=DIR each tbctl run's stdout is written to DIR/NAME.jsonl
and its exit status to DIR/NAME.exit (tests/transcripts/ holds the recorded set).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.engine_build import build_testbed_programs

GUEST = ["--name", "g", "--memory", "64M", "--vcpus", "2", "--workload", "hotset:8M"]
EXIT_OK, EXIT_FAILED, EXIT_INDETERMINATE, EXIT_INCOMPATIBLE, EXIT_USAGE = 0, 1, 3, 4, 64


@pytest.fixture(scope="module")
def bindir() -> Path:
    # scripts/coverage.sh points this at a gcov build of the same programs.
    prebuilt = os.environ.get("BMIG_TESTBED_BIN")
    return Path(prebuilt) if prebuilt else build_testbed_programs()


@dataclass
class Run:
    rc: int
    events: list[dict]
    stderr: str

    @property
    def result(self) -> dict:
        assert self.events, f"no events; stderr: {self.stderr}"
        assert self.events[-1]["event"] == "result"
        return self.events[-1]


class Bed:
    """A source and destinations on loopback, all started by this test."""

    def __init__(self, bindir: Path, tmp: Path) -> None:
        self.bin = bindir
        self.tmp = tmp
        self.key = tmp / "key"
        self.key.write_text(os.urandom(32).hex() + "\n")
        self.key.chmod(0o600)
        self.procs: list[subprocess.Popen] = []

    def _start(self, argv: list[str], ready: str) -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        assert line.startswith(ready), f"{argv[1]}: {line!r} {p.stderr.read() if p.poll() else ''}"
        return p, line

    def source(self, name: str = "src", *extra: str) -> str:
        ctl = str(self.tmp / f"{name}.sock")
        argv = [str(self.bin / "tbvm"), "run", *GUEST, "--control", ctl, *extra]
        self._start(argv, "RUNNING")
        return ctl

    def dest(self, name: str = "dst", guest: list[str] = GUEST, fault: str | None = None,
             host: str = "127.0.0.1"):  # fmt: skip
        ctl = str(self.tmp / f"{name}.sock")
        listen = f"[{host}]:0" if ":" in host else f"{host}:0"
        argv = [str(self.bin / "tbvm"), "receive", *guest, "--listen", listen,
                "--key-file", str(self.key), "--control", ctl]  # fmt: skip
        if fault:
            argv += ["--fault", fault]
        p, line = self._start(argv, "LISTENING")
        port = line.split()[2]
        return ctl, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), p

    def tbctl(self, ctl: str, *args: str, record: str | None = None) -> Run:
        proc = subprocess.run([str(self.bin / "tbctl"), "--control", ctl, *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        save_transcript(record, proc.stdout, proc.returncode)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return Run(proc.returncode, events, proc.stderr)

    def migrate(self, src: str, to: str, *opts: str, record: str | None = None) -> Run:
        return self.tbctl(src, "migrate", "--to", to, "--key-file", str(self.key), *opts,
                          record=record)  # fmt: skip

    def popen_migrate(self, src: str, to: str, *opts: str) -> subprocess.Popen:
        argv = [str(self.bin / "tbctl"), "--control", src, "migrate", "--to", to,
                "--key-file", str(self.key), *opts]  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self, ctl: str) -> dict:
        run = self.tbctl(ctl, "guest-status")
        assert run.rc == 0, run.stderr
        return run.events[0]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def save_transcript(name: str | None, stdout: str, rc: int) -> None:
    where = os.environ.get("BMIG_RECORD_TRANSCRIPTS")
    if not (where and name):
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.jsonl").write_text(stdout)
    (out / f"{name}.exit").write_text(f"{rc}\n")


@pytest.fixture
def bed(bindir: Path, tmp_path: Path):
    b = Bed(bindir, tmp_path)
    yield b
    b.close()


def wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_migration_streams_the_contract_and_the_guest_runs_on_the_destination(bed: Bed) -> None:
    src = bed.source()
    dst, addr, _ = bed.dest()
    assert bed.status(dst) == {"state": "listening", "guest_runs_here": False}
    run = bed.migrate(src, addr, "--downtime-limit", "300", record="migrate-ok")
    assert run.rc == EXIT_OK, run.stderr
    phases = [e["phase"] for e in run.events if e["event"] == "phase"]
    assert phases[:4] == ["connect", "handshake", "compat", "precopy"]
    assert phases[-1] == "done" and "switchover" in phases
    rounds = [e for e in run.events if e["event"] == "round"]
    assert rounds and rounds[-1]["final"] is True and rounds[0]["pages_sent"] > 0
    res = run.result
    assert res["result"] == "ok" and res["guest_runs_on"] == "destination"
    assert res["stats"]["nrounds"] == len(rounds) and "error" not in res
    # Human words on stderr, phase names whole.
    assert "Migration phase: compatibility check" in run.stderr
    assert bed.status(dst) == {"state": "running", "guest_runs_here": True}
    verify = bed.tbctl(dst, "verify")
    assert verify.rc == 0 and verify.events[0]["ok"] is True


def test_check_answers_compatible_then_the_destination_still_takes_the_guest(bed: Bed) -> None:
    src = bed.source()
    dst, addr, _ = bed.dest()
    run = bed.tbctl(src, "check", "--to", addr, "--key-file", str(bed.key),
                    record="check-compatible")  # fmt: skip
    assert run.rc == EXIT_OK and run.result["result"] == "compatible"
    assert run.result["guest_runs_on"] == "source"
    assert bed.status(src)["state"] == "running"
    assert bed.status(dst)["state"] == "listening"
    assert bed.migrate(src, addr).rc == EXIT_OK


@pytest.mark.parametrize(
    ("case", "guest", "reason"),
    [
        ("memory", ["--name", "g", "--memory", "32M", "--vcpus", "2"], "memory segment 0"),
        ("vcpus", ["--name", "g", "--memory", "64M", "--vcpus", "1"], "vCPU"),
    ],
)
def test_check_refusals_name_the_reason(bed: Bed, case: str, guest: list[str], reason: str) -> None:
    src = bed.source()
    dst, addr, _ = bed.dest(guest=guest)
    run = bed.tbctl(src, "check", "--to", addr, "--key-file", str(bed.key),
                    record=f"check-incompatible-{case}")  # fmt: skip
    assert run.rc == EXIT_INCOMPATIBLE, run.stderr
    res = run.result
    assert res["result"] == "incompatible" and res["guest_runs_on"] == "source"
    assert any(reason in r for r in res["reasons"]), res
    assert bed.status(src)["state"] == "running"
    assert bed.status(dst)["state"] == "listening"


def test_check_with_a_wrong_key_fails_and_is_not_incompatible(bed: Bed, tmp_path: Path) -> None:
    src = bed.source()
    _, addr, _ = bed.dest()
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    run = bed.tbctl(src, "check", "--to", addr, "--key-file", str(other))
    assert run.rc == EXIT_FAILED and run.result["result"] == "failed"


def test_cancel_rolls_back_and_the_destination_discards(bed: Bed) -> None:
    src = bed.source()
    dst, addr, dproc = bed.dest()
    mig = bed.popen_migrate(src, addr, "--bandwidth", "16M")
    assert wait_for(lambda: bed.status(src)["state"] == "migrating")
    cancel = bed.tbctl(src, "cancel")
    assert cancel.rc == 0 and cancel.events[0]["ok"] is True
    out, err = mig.communicate(timeout=30)
    save_transcript("cancel", out, mig.returncode)
    res = json.loads(out.splitlines()[-1])
    assert mig.returncode == EXIT_FAILED, err
    assert res["result"] == "cancelled" and res["guest_runs_on"] == "source"
    assert bed.status(src) == {"state": "running", "guest_runs_here": True}
    assert dproc.wait(timeout=20) != 0
    assert bed.tbctl(src, "verify").rc == 0
    again = bed.tbctl(src, "cancel")
    assert again.rc == EXIT_FAILED and "no migration" in again.events[0]["message"]


def test_killing_the_controller_cancels_the_migration(bed: Bed) -> None:
    src = bed.source()
    _, addr, dproc = bed.dest()
    mig = bed.popen_migrate(src, addr, "--bandwidth", "16M")
    assert wait_for(lambda: bed.status(src)["state"] == "migrating")
    mig.kill()
    mig.wait()
    assert wait_for(lambda: bed.status(src)["state"] == "running", timeout=20)
    assert dproc.wait(timeout=20) != 0
    assert bed.tbctl(src, "verify").rc == 0


def test_checkpoint_is_refused_while_a_migration_runs(bed: Bed) -> None:
    src = bed.source()
    assert bed.tbctl(src, "checkpoint").rc == 0
    _, addr, _ = bed.dest()
    mig = bed.popen_migrate(src, addr, "--bandwidth", "16M")
    assert wait_for(lambda: bed.status(src)["state"] == "migrating")
    ck = bed.tbctl(src, "checkpoint")
    assert ck.rc == 1 and "a migration is running" in ck.events[0]["error"]
    assert bed.tbctl(src, "cancel").rc == 0
    mig.communicate(timeout=30)
    assert wait_for(lambda: bed.tbctl(src, "checkpoint").rc == 0)


def test_running_lost_after_go_is_indeterminate_and_the_destination_runs(bed: Bed) -> None:
    src = bed.source()
    dst, addr, _ = bed.dest(fault="lose-running")
    run = bed.migrate(src, addr, "--timeout", "2000", record="indeterminate-dest-runs")
    assert run.rc == EXIT_INDETERMINATE, run.stderr
    assert run.result["result"] == "indeterminate"
    assert run.result["guest_runs_on"] == "paused_on_source"
    assert run.result["error"]["phase"] == "switchover"
    assert bed.status(src) == {"state": "paused", "guest_runs_here": False}
    assert bed.status(dst) == {"state": "running", "guest_runs_here": True}
    # The destination runs it: a checkpoint of the source is refused, the copy is destroyed.
    assert bed.tbctl(src, "checkpoint").rc == 1
    assert bed.tbctl(dst, "verify").rc == 0
    assert bed.tbctl(src, "stop").rc == 0


def test_destination_dead_after_go_is_resolved_by_resuming_the_source(bed: Bed) -> None:
    src = bed.source()
    dst, addr, dproc = bed.dest(fault="die-after-go")
    run = bed.migrate(src, addr, "--timeout", "2000", record="indeterminate-dest-died")
    assert run.rc == EXIT_INDETERMINATE, run.stderr
    assert dproc.wait(timeout=10) != 0
    assert bed.tbctl(dst, "guest-status").rc == EXIT_FAILED  # nobody answers there
    resume = bed.tbctl(src, "resume")
    assert resume.rc == 0 and resume.events[0]["ok"] is True
    assert bed.status(src) == {"state": "running", "guest_runs_here": True}
    assert bed.tbctl(src, "verify").rc == 0


def test_resume_is_refused_unless_the_migration_is_indeterminate(bed: Bed) -> None:
    src = bed.source()
    run = bed.tbctl(src, "resume")
    assert run.rc == EXIT_FAILED
    assert "only a guest paused by an indeterminate migration" in run.events[0]["message"]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--downtime-limit", "0"], "--downtime-limit: '0' is not a number from 1"),
        (["--bandwidth", "10q"], "--bandwidth: '10q'"),
        (["--fixed-rounds", "3", "--max-rounds", "5"], "exclude each other"),
        (["--no-live", "--max-rounds", "5"], "live migration only"),
    ],
)
def test_bad_options_exit_ex_usage(bed: Bed, args: list[str], text: str) -> None:
    run = bed.tbctl(str(bed.tmp / "none.sock"), "migrate", "--to", "127.0.0.1:1",
                    "--key-file", str(bed.key), *args)  # fmt: skip
    assert run.rc == EXIT_USAGE and text in run.stderr


def test_controller_refuses_what_it_cannot_start_and_says_why(bed: Bed, tmp_path: Path) -> None:
    src = bed.source()
    loose = tmp_path / "loose.key"
    loose.write_text(os.urandom(32).hex())
    loose.chmod(0o644)
    cases = [
        (["migrate", "--to", "127.0.0.1:1"], EXIT_USAGE, "needs --migrate-keyfile"),
        (["migrate", "--to", "[::1", "--key-file", str(bed.key)], EXIT_USAGE, "missing ']'"),
        (["migrate", "--to", "127.0.0.1:1", "--key-file", str(loose)], EXIT_FAILED, "key file"),
        (["migrate", "--to", "127.0.0.1:1", "--key-file", str(bed.key)], EXIT_FAILED,
         "cannot connect to 127.0.0.1 port 1"),
        (["cancel", "--to", "x"], EXIT_USAGE, "takes no options"),
        (["bogus"], EXIT_USAGE, "unknown command"),
    ]  # fmt: skip
    for args, rc, text in cases:
        run = bed.tbctl(src, *args)
        assert run.rc == rc and text in run.stderr, (args, run.rc, run.stderr)
    _, addr, _ = bed.dest()
    gone = bed.tbctl(str(tmp_path / "none.sock"), "migrate", "--to", addr,
                     "--key-file", str(bed.key))  # fmt: skip
    assert gone.rc == EXIT_FAILED and "none.sock" in gone.stderr
    assert bed.tbctl(str(tmp_path / "none.sock"), "guest-status").rc == EXIT_FAILED


def test_one_migration_at_a_time_and_none_from_a_paused_guest(bed: Bed) -> None:
    src = bed.source()
    _, addr, _ = bed.dest()
    _, addr2, _ = bed.dest("dst2")
    mig = bed.popen_migrate(src, addr, "--bandwidth", "16M")
    assert wait_for(lambda: bed.status(src)["state"] == "migrating")
    second = bed.migrate(src, addr2)
    assert second.rc == EXIT_FAILED
    assert "one migration at a time" in second.result["error"]["message"]
    assert bed.tbctl(src, "cancel").rc == 0
    mig.communicate(timeout=30)
    # A guest left paused by an indeterminate migration goes nowhere else.
    _, addr3, _ = bed.dest("dst3", fault="lose-running")
    assert bed.migrate(src, addr3, "--timeout", "2000").rc == EXIT_INDETERMINATE
    again = bed.migrate(src, addr2)
    assert again.rc == EXIT_FAILED and "indeterminate" in again.result["error"]["message"]


def test_a_stranger_is_refused_and_the_destination_keeps_listening(bed: Bed, tmp_path) -> None:
    src = bed.source()
    dst, addr, _ = bed.dest()
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    assert bed.tbctl(src, "check", "--to", addr, "--key-file", str(other)).rc == EXIT_FAILED
    assert bed.status(dst)["state"] == "listening"
    assert bed.migrate(src, addr).rc == EXIT_OK


def test_receive_names_a_bad_listen_address(bindir: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    proc = subprocess.run([str(bindir / "tbvm"), "receive", *GUEST, "--listen", "[::1",
                           "--key-file", str(key), "--control", str(tmp_path / "c.sock")],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode != 0 and "--listen [::1" in proc.stderr
    proc = subprocess.run([str(bindir / "tbvm"), "receive", *GUEST, "--listen",
                           "nonexistent.invalid:0", "--key-file", str(key),
                           "--control", str(tmp_path / "d.sock")],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode != 0 and "nonexistent.invalid" in proc.stderr


def test_bhyvectl_command_lines_run_word_for_word(bed: Bed) -> None:
    """tbctl takes bhyvectl's --migrate* options: the same parser, words or JSON."""
    src = bed.source()
    dst, addr, _ = bed.dest()
    key = f"--migrate-keyfile={bed.key}"
    check = bed.tbctl(src, f"--migrate-check={addr}", key, "--migrate-json",
                      record="bhyvectl-check-json")  # fmt: skip
    assert check.rc == EXIT_OK and check.result["result"] == "compatible"
    proc = subprocess.run([str(bed.bin / "tbctl"), "--control", src, f"--migrate-live={addr}", key,
                           "--migrate-downtime-limit=250"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    # Words on stdout, as bhyvectl prints them; phase names whole.
    assert "Migration phase: compatibility check" in proc.stdout
    assert "Migration phase: stop-and-copy" in proc.stdout
    assert "Migration complete" in proc.stdout
    status = bed.tbctl(dst, "--migrate-status", "--migrate-json")
    assert status.rc == 0 and status.events[0]["state"] == "running"
    both = bed.tbctl(dst, "--migrate-cancel", "--migrate-resume")
    assert both.rc == EXIT_USAGE and "give one of" in both.stderr
    bad = bed.tbctl(dst, f"--migrate={addr}", key, "--migrate-max-rounds=5")
    assert bad.rc == EXIT_USAGE and "live migration only" in bad.stderr


def test_ipv6_destination(bed: Bed) -> None:
    src = bed.source()
    dst, addr, _ = bed.dest(host="::1")
    assert addr.startswith("[::1]:")
    assert bed.migrate(src, addr).rc == EXIT_OK
    assert bed.status(dst)["state"] == "running"


def test_non_live_migration(bed: Bed) -> None:
    src = bed.source()
    _, addr, _ = bed.dest()
    run = bed.migrate(src, addr, "--no-live", record="migrate-non-live")
    assert run.rc == EXIT_OK
    rounds = [e for e in run.events if e["event"] == "round"]
    assert len(rounds) == 1 and rounds[0]["final"] is True


def test_a_device_without_a_snapshot_routine_is_refused_by_name_before_memory_moves(
    bed: Bed,
) -> None:
    src = bed.source("src", "--stateless-device", "hostbridge")
    dst, addr, dproc = bed.dest()
    run = bed.tbctl(src, "check", "--to", addr, "--key-file", str(bed.key),
                    record="check-incompatible-stateless-device")  # fmt: skip
    assert run.rc == EXIT_INCOMPATIBLE, run.stderr
    res = run.result
    assert res["error"]["side"] == "source" and res["error"]["phase"] == "compat"
    assert any("hostbridge has no snapshot routine" in r for r in res["reasons"])
    # A dry run costs the destination nothing: it keeps listening.
    assert bed.status(dst)["state"] == "listening"
    mig = bed.migrate(src, addr)
    assert mig.rc == EXIT_FAILED and mig.result["error"]["phase"] == "compat"
    assert not [e for e in mig.events if e["event"] == "round"]
    assert bed.status(src) == {"state": "running", "guest_runs_here": True}
    assert dproc.wait(timeout=20) != 0


def test_receive_names_a_port_in_use(bed: Bed, tmp_path: Path) -> None:
    _, addr, _ = bed.dest()
    proc = subprocess.run([str(bed.bin / "tbvm"), "receive", *GUEST, "--listen", addr,
                           "--key-file", str(bed.key), "--control", str(tmp_path / "e.sock")],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode != 0 and "in use" in proc.stderr and addr.split(":")[1] in proc.stderr
