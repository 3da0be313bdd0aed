"""Running commands and moving files on hosts over SSH (paramiko).

SSHRunner implements harness.runner.Runner, so the migration flow drives a remote host the
same way as a local one.  What it guarantees:

- host keys are always checked against a known_hosts file (paramiko's RejectPolicy); a host
  that is missing there or presents another key is refused, never added;
- connect, command and transfer each have a timeout, and the transport sends keepalives, so
  a dead host or a black-holed link gives an error, not a hang;
- every error names the host and, where there is one, the command: HostUnreachable,
  AuthenticationFailed, HostKeyError, CommandTimeout, TransferError (all HarnessErrors);
- output can be streamed live with a per-host prefix; SFTP transfers draw a progress bar on
  a terminal and stay quiet otherwise;
- run_parallel() does the same work on several hosts at once.

Remote commands go through the user's login shell (bash or sh on Linux; sh for root on
FreeBSD 14+) as `sh -c` that first prints the command's pid, a first stdout line that the
runner strips, so that a timed-out or killed command is ended on the remote side too.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import select
import shlex
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import paramiko

from harness.config import Host, HostsConfig, SSHSettings
from harness.errors import HarnessError
from harness.runner import CommandFailed, CommandResult

_PID_MARK = "@@bhyvemig-pid "
_WRAPPER = f'echo "{_PID_MARK}$$"; exec "$@"'


class SSHError(HarnessError):
    """Something went wrong talking to a host over SSH."""


class HostUnreachable(SSHError):
    """No SSH connection could be made: refused, no route, or no answer in time."""


class AuthenticationFailed(SSHError):
    """The host did not accept the key."""


class HostKeyError(SSHError):
    """The host's key is unknown or differs from the pinned one."""


class CommandTimeout(SSHError):
    """A remote command did not finish in time; it was killed."""


class TransferError(SSHError):
    """An SFTP upload or download failed or timed out."""


@dataclass
class SSHTarget:
    """Everything needed to reach one host."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    key_file: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    transfer_timeout: float = 600.0
    keepalive: int = 15
    workdir: str = "/var/tmp/bhyvemig"

    @classmethod
    def from_config(cls, host: Host, ssh: SSHSettings) -> SSHTarget:
        return cls(
            name=host.name,
            address=host.address,
            user=host.user,
            port=host.port,
            key_file=host.key_file,
            known_hosts=ssh.known_hosts,
            connect_timeout=ssh.connect_timeout,
            command_timeout=ssh.command_timeout,
            transfer_timeout=ssh.transfer_timeout,
            keepalive=ssh.keepalive,
            workdir=host.workdir,
        )

    @property
    def where(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{addr}:{self.port}"


class OutputSink:
    """Writes lines from several hosts to one stream, each prefixed with its host name.

    Progress bars are drawn only when the stream is a terminal.
    """

    def __init__(self, stream: IO[str] | None = None, progress: bool | None = None):
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.show_progress = isatty() if progress is None else progress
        self._lock = threading.Lock()
        self._bar_open = False

    def line(self, host: str, text: str) -> None:
        with self._lock:
            if self._bar_open:
                self.stream.write("\n")
                self._bar_open = False
            self.stream.write(f"{host:>8} | {text}\n")
            self.stream.flush()

    def progress(self, host: str, label: str, done: int, total: int, elapsed: float) -> None:
        if not self.show_progress:
            return
        frac = done / total if total else 1.0
        width = 30
        bar = "#" * int(frac * width)
        rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
        text = (
            f"\r{host:>8} | {label} [{bar:<{width}}] {frac * 100:5.1f}% "
            f"{done / 1e6:8.1f} MB {rate:6.1f} MB/s"
        )
        with self._lock:
            self.stream.write(text)
            self._bar_open = done < total
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()


class _LineBuffer:
    """Splits a byte stream into text lines and hands each to a callback."""

    def __init__(self, on_line: Callable[[str], None]):
        self._partial = b""
        self._on_line = on_line

    def feed(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            self._on_line(raw.decode("utf-8", "replace").rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            self._on_line(self._partial.decode("utf-8", "replace"))
            self._partial = b""


def _wrap(argv: list[str]) -> str:
    """The remote command line: sh reports its pid, then execs argv."""
    if not argv:
        raise HarnessError("empty command")
    return shlex.join(["sh", "-c", _WRAPPER, "sh", *argv])


class SSHProcess:
    """A command running in the background on a remote host (harness.runner.Process)."""

    def __init__(self, runner: SSHRunner, argv: list[str], stream: bool):
        self.runner = runner
        self.host = runner.name
        self.argv = argv
        self.pid: int | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._status: int | None = None
        self._stream = stream
        self._chan = runner._open_channel(argv)
        self._chan.set_combine_stderr(True)
        self._chan.exec_command(_wrap(argv))
        threading.Thread(target=self._pump, daemon=True, name=f"ssh-{self.host}").start()

    def _on_line(self, line: str) -> None:
        if self.pid is None and line.startswith(_PID_MARK):
            with self._cond:
                self.pid = int(line[len(_PID_MARK) :])
                self._cond.notify_all()
            return
        if self._stream:
            self.runner.sink.line(self.host, line)
        with self._cond:
            self._lines.append(line)
            self._cond.notify_all()

    def _pump(self) -> None:
        buf = _LineBuffer(self._on_line)
        try:
            while True:
                data = self._chan.recv(65536)
                if not data:
                    break
                buf.feed(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        buf.close()
        # The exit status may trail the end of output; this waits for it and
        # gives -1 if the channel closes without one (killed by a signal).
        status = self._chan.recv_exit_status()
        with self._cond:
            self._status = status
            self._closed = True
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if line.startswith(prefix):
                        return line
                seen = len(self._lines)
                if self._closed:
                    raise HarnessError(
                        f"{self.host}: `{shlex.join(self.argv)}` exited {self._status} "
                        f"before printing {prefix!r}; output:\n{self.output()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"{self.host}: `{shlex.join(self.argv)}` printed no {prefix!r} "
                        f"within {timeout:.0f}s; output:\n{self.output()}"
                    )
                self._cond.wait(left)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._status

    def alive(self) -> bool:
        with self._cond:
            return not self._closed

    def kill(self) -> None:
        """End the remote command (TERM, then KILL) and close its channel."""
        with self._cond:  # the pid is the first line; it may not have arrived yet
            self._cond.wait_for(lambda: self.pid is not None or self._closed, timeout=5.0)
        if self.alive() and self.pid is not None:
            self.runner._kill_remote(self.pid)
        self._chan.close()
        self.wait(5.0)

    def output(self) -> str:
        with self._cond:
            return "\n".join(self._lines)


class SSHRunner:
    """A Runner for one host over SSH.  Connects lazily; reconnects when the link dropped."""

    def __init__(self, target: SSHTarget, sink: OutputSink | None = None, stream: bool = False):
        self.target = target
        self.name = target.name
        self.workdir = target.workdir
        self.sink = sink or OutputSink()
        self.stream = stream
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, config: HostsConfig, name: str, sink: OutputSink | None = None, stream: bool = False
    ) -> SSHRunner:
        return cls(SSHTarget.from_config(config.host(name), config.ssh), sink, stream)

    def __enter__(self) -> SSHRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SSHRunner({self.name}, {self.target.where})"

    # -- connection ---------------------------------------------------------------------

    def _load_key(self) -> paramiko.PKey | None:
        t = self.target
        if t.key_file is None:
            return None
        try:
            return paramiko.PKey.from_path(str(t.key_file))
        except FileNotFoundError:
            raise SSHError(f"{self.name}: key file {t.key_file} does not exist") from None
        except PermissionError:
            raise SSHError(f"{self.name}: key file {t.key_file} is not readable") from None
        except paramiko.PasswordRequiredException:
            raise SSHError(
                f"{self.name}: key file {t.key_file} is encrypted; use a key without a "
                "passphrase for the harness"
            ) from None
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise SSHError(f"{self.name}: cannot load key file {t.key_file}: {exc}") from None

    def connect(self) -> paramiko.SSHClient:
        """The connected client; HarnessError subclasses say why a connection failed."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return self._client
                self._client.close()
                self._client = None
            self._client = self._connect(self.target.connect_timeout)
            return self._client

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        t = self.target
        if t.known_hosts is None:
            raise HostKeyError(f"{self.name}: no known_hosts file given; host keys are required")
        client = paramiko.SSHClient()
        try:
            client.get_host_keys().load(str(t.known_hosts))
        except OSError as exc:
            raise HostKeyError(
                f"{self.name}: cannot read known_hosts {t.known_hosts}: {exc.strerror}"
            ) from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = self._load_key()
        try:
            client.connect(
                hostname=t.address,
                port=t.port,
                username=t.user,
                pkey=pkey,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise HostKeyError(
                f"{self.name}: {t.where} presented a host key that differs from the one in "
                f"{t.known_hosts}; refusing to connect (reinstalled host, or someone in between)"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise AuthenticationFailed(
                f"{self.name}: {t.where} refused authentication with key {t.key_file}"
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            reasons = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
            raise HostUnreachable(f"{self.name}: cannot connect to {t.where}: {reasons}") from None
        except TimeoutError:
            client.close()
            raise HostUnreachable(
                f"{self.name}: {t.where} did not answer within {timeout:.0f}s"
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"{self.name}: {t.where} is not in {t.known_hosts}; add its host key "
                    "there (the harness never accepts unknown keys)"
                ) from None
            raise SSHError(f"{self.name}: SSH to {t.where} failed: {exc}") from None
        except OSError as exc:
            client.close()
            raise HostUnreachable(
                f"{self.name}: cannot reach {t.where}: {exc.strerror or exc}"
            ) from None
        transport = client.get_transport()
        if transport is not None and t.keepalive:
            transport.set_keepalive(t.keepalive)
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _open_channel(self, argv: list[str]) -> paramiko.Channel:
        client = self.connect()
        transport = client.get_transport()
        assert transport is not None
        try:
            return transport.open_session(timeout=self.target.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise SSHError(
                f"{self.name}: cannot start `{shlex.join(argv)}`: SSH session failed: {exc}"
            ) from None

    # -- commands -----------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        check: bool = True,
        *,
        stream: bool | None = None,
    ) -> CommandResult:
        """Run argv to completion; CommandFailed on non-zero exit if check, CommandTimeout
        (the remote command is killed) when it runs past timeout (default: the host's
        command timeout).  With stream, lines are printed live with the host's prefix."""
        timeout = self.target.command_timeout if timeout is None else timeout
        stream = self.stream if stream is None else stream
        chan = self._open_channel(argv)
        pid: list[int] = []
        out_lines: list[str] = []
        err_lines: list[str] = []

        def on_out(line: str) -> None:
            if not pid and line.startswith(_PID_MARK):
                pid.append(int(line[len(_PID_MARK) :]))
                return
            out_lines.append(line)
            if stream:
                self.sink.line(self.name, line)

        def on_err(line: str) -> None:
            err_lines.append(line)
            if stream:
                self.sink.line(self.name, line)

        out, err = _LineBuffer(on_out), _LineBuffer(on_err)
        deadline = time.monotonic() + timeout
        try:
            chan.exec_command(_wrap(argv))
            while True:
                busy = False
                while chan.recv_ready():
                    out.feed(chan.recv(65536))
                    busy = True
                while chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                    busy = True
                # sshd may send the exit status before the last output: done once EOF
                # (after which no data comes) or the close has arrived too.
                if (chan.exit_status_ready() and (chan.eof_received or chan.closed)
                        and not (chan.recv_ready() or chan.recv_stderr_ready())):
                    break
                if time.monotonic() > deadline:
                    if pid:
                        self._kill_remote(pid[0])
                    raise CommandTimeout(
                        f"{self.name}: `{shlex.join(argv)}` did not finish within "
                        f"{timeout:.0f}s; it was killed"
                    )
                transport = chan.get_transport()
                if chan.closed or transport is None or not transport.is_active():
                    if chan.exit_status_ready():
                        continue
                    raise SSHError(
                        f"{self.name}: connection lost while running `{shlex.join(argv)}`"
                    )
                if not busy:
                    select.select([chan], [], [], min(0.2, max(deadline - time.monotonic(), 0)))
            status = chan.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise SSHError(
                f"{self.name}: connection failed while running `{shlex.join(argv)}`: {exc}"
            ) from None
        finally:
            chan.close()
        out.close()
        err.close()
        stdout = "".join(f"{line}\n" for line in out_lines)
        stderr = "".join(f"{line}\n" for line in err_lines)
        result = CommandResult(argv, status, stdout, stderr)
        if check and status != 0:
            raise CommandFailed(self.name, result)
        return result

    def spawn(self, argv: list[str], *, stream: bool | None = None) -> SSHProcess:
        """Start argv in the background; its stdout and stderr are collected together."""
        return SSHProcess(self, argv, self.stream if stream is None else stream)

    def _kill_remote(self, pid: int) -> None:
        script = (
            f"kill -TERM {pid} 2>/dev/null || exit 0; i=0; "
            f"while kill -0 {pid} 2>/dev/null && [ $i -lt 10 ]; do sleep 0.2; i=$((i+1)); done; "
            f"kill -KILL {pid} 2>/dev/null; exit 0"
        )
        with contextlib.suppress(HarnessError):
            self.run(["sh", "-c", script], timeout=10, check=False, stream=False)

    # -- files --------------------------------------------------------------------------

    def _sftp(self, timeout: float) -> paramiko.SFTPClient:
        client = self.connect()
        try:
            sftp = client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransferError(f"{self.name}: cannot open SFTP: {exc}") from None
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(timeout)
        return sftp

    def _progress(self, label: str, timeout: float, action: str) -> Callable[[int, int], None]:
        start = time.monotonic()
        last = [0.0]

        def callback(done: int, total: int) -> None:
            now = time.monotonic()
            if now - start > timeout:
                raise TransferError(f"{self.name}: {action} did not finish within {timeout:.0f}s")
            if done >= total or now - last[0] > 0.1:
                last[0] = now
                self.sink.progress(self.name, label, done, total, now - start)

        return callback

    def put(
        self,
        local: str | os.PathLike[str],
        remote: str,
        mode: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Upload a file (creating the remote directory); keeps the local mode unless given."""
        local = Path(local)
        timeout = self.target.transfer_timeout if timeout is None else timeout
        action = f"upload of {local} to {remote}"
        if not local.is_file():
            raise TransferError(f"{self.name}: {action}: {local} is not a file")
        parent = os.path.dirname(remote)
        if parent:
            self.run(["mkdir", "-p", parent], timeout=timeout, stream=False)
        with self._sftp_session(timeout, f"{action} failed") as sftp:
            sftp.put(str(local), remote, callback=self._progress(local.name, timeout, action))
            sftp.chmod(remote, mode if mode is not None else stat.S_IMODE(local.stat().st_mode))

    def get(self, remote: str, local: str | os.PathLike[str], timeout: float | None = None) -> None:
        """Download a file."""
        local = Path(local)
        timeout = self.target.transfer_timeout if timeout is None else timeout
        action = f"download of {remote} to {local}"
        with self._sftp_session(timeout, f"{action} failed") as sftp:
            local.parent.mkdir(parents=True, exist_ok=True)
            sftp.get(remote, str(local), callback=self._progress(local.name, timeout, action))

    def put_text(self, path: str, text: str, mode: int = 0o600) -> None:
        with (
            self._sftp_session(self.target.transfer_timeout, f"cannot write {path}") as sftp,
            sftp.open(path, "w") as handle,
        ):
            handle.chmod(mode)
            handle.write(text.encode())

    def read_text(self, path: str) -> str:
        with (
            self._sftp_session(self.target.transfer_timeout, f"cannot read {path}") as sftp,
            sftp.open(path, "r") as handle,
        ):
            return handle.read().decode("utf-8", "replace")

    @contextlib.contextmanager
    def _sftp_session(self, timeout: float, failure: str) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session whose transport errors become TransferError(failure: why)."""
        sftp = self._sftp(timeout)
        try:
            yield sftp
        except TransferError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TransferError(f"{self.name}: {failure}: {_why(exc)}") from None
        finally:
            sftp.close()

    # -- reboots ------------------------------------------------------------------------

    def boot_id(self) -> str:
        """Something that changes on every boot (Linux boot_id, FreeBSD kern.boottime)."""
        script = "cat /proc/sys/kernel/random/boot_id 2>/dev/null || sysctl -n kern.boottime"
        return self.run(["sh", "-c", script], timeout=30, stream=False).stdout.strip()

    def wait_until_back(self, timeout: float, previous_boot_id: str | None = None) -> float:
        """After a reboot: wait until SSH answers again (and, given the boot id from before,
        until it is a new boot).  Returns the seconds waited; HostUnreachable on timeout."""
        return wait_until_back(self, timeout, previous_boot_id)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def wait_until_back(
    runner: SSHRunner, timeout: float, previous_boot_id: str | None = None, poll: float = 2.0
) -> float:
    """Poll until the host takes SSH connections again (after a reboot).

    Connection failures while it is down are expected; an authentication or host-key error
    is not and is raised at once.  With previous_boot_id, a host that still answers with the
    old boot id has not rebooted yet and is waited for too.
    """
    start = time.monotonic()
    deadline = start + timeout
    runner.close()
    last_error = "no attempt"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HostUnreachable(
                f"{runner.name}: not back within {timeout:.0f}s after reboot ({last_error})"
            )
        try:
            runner._client = runner._connect(min(runner.target.connect_timeout, max(left, 1)))
            if previous_boot_id is None or runner.boot_id() != previous_boot_id:
                return time.monotonic() - start
            last_error = "it has not rebooted yet (same boot id)"
            runner.close()
        except (HostUnreachable, SSHError) as exc:
            if isinstance(exc, (AuthenticationFailed, HostKeyError)):
                raise
            last_error = str(exc)
            runner.close()
        time.sleep(min(poll, max(deadline - time.monotonic(), 0)))


T = TypeVar("T")


class ParallelError(HarnessError):
    """Work failed on one or more hosts; the message lists each host's error."""

    def __init__(self, errors: dict[str, BaseException], results: dict[str, object]):
        self.errors = errors
        self.results = results
        lines = [f"failed on {len(errors)} host(s):"]
        lines += [f"  {str(err)}" for err in errors.values()]
        super().__init__("\n".join(lines))


def run_parallel(runners: Iterable[SSHRunner], work: Callable[[SSHRunner], T]) -> dict[str, T]:
    """Call work(runner) for every runner at once; results by host name.

    Every host finishes (or fails) before this returns; ParallelError carries all failures.
    """
    runners = list(runners)
    results: dict[str, T] = {}
    errors: dict[str, BaseException] = {}
    if not runners:
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(runners)) as pool:
        futures = {pool.submit(work, r): r for r in runners}
        for future in concurrent.futures.as_completed(futures):
            name = futures[future].name
            try:
                results[name] = future.result()
            except HarnessError as exc:
                errors[name] = exc
            except Exception as exc:  # noqa: BLE001 - reported per host, not lost
                errors[name] = HarnessError(f"{name}: {type(exc).__name__}: {exc}")
    if errors:
        raise ParallelError(errors, dict(results))
    return results


def runners_for(
    config: HostsConfig,
    names: Iterable[str] | None = None,
    sink: OutputSink | None = None,
    stream: bool = False,
) -> list[SSHRunner]:
    """SSHRunners for the named hosts (all hosts if None), sharing one output sink."""
    sink = sink or OutputSink()
    chosen = list(names) if names is not None else list(config.hosts)
    return [SSHRunner.from_config(config, name, sink, stream) for name in chosen]
