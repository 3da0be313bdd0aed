"""Where harness commands run: the Runner protocol and its local implementation.

The migration flow drives a source and a destination through this protocol only,
so the same code runs two local processes, two test-bed namespace hosts over SSH,
or two FreeBSD machines.  harness.ssh provides the SSH implementation.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Protocol

from harness.errors import HarnessError


@dataclass
class CommandResult:
    """Outcome of a finished command."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


class CommandFailed(HarnessError):
    """A command exited non-zero; the message names the host and the command."""

    def __init__(self, host: str, result: CommandResult):
        self.host = host
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        detail = "\n  ".join(tail) if tail else "(no output)"
        super().__init__(
            f"{host}: `{shlex.join(result.argv)}` exited {result.returncode}:\n  {detail}"
        )


class Process(Protocol):
    """A command running in the background on some host."""

    def wait_line(self, prefix: str, timeout: float) -> str:
        """Return the first stdout line starting with prefix; HarnessError on timeout/exit."""
        ...

    def wait(self, timeout: float) -> int | None:
        """Wait for exit; the exit status, or None if still running after timeout."""
        ...

    def alive(self) -> bool: ...

    def kill(self) -> None: ...

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        ...


class Runner(Protocol):
    """A host that runs commands and holds files."""

    name: str
    workdir: str

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> CommandResult:
        """Run argv to completion; CommandFailed if check and it exits non-zero."""
        ...

    def spawn(self, argv: list[str]) -> Process:
        """Start argv in the background."""
        ...

    def put_text(self, path: str, text: str, mode: int = 0o600) -> None:
        """Write a small file on the host."""
        ...

    def read_text(self, path: str) -> str: ...


@dataclass
class _LineCollector:
    """Reads a stream in a thread, keeping every line for wait_line/output."""

    stream: IO[str]
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def start(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class LocalProcess:
    """A background process on this machine."""

    def __init__(self, host: str, argv: list[str]):
        self.host = host
        self.argv = argv
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._out = _LineCollector(self._proc.stdout)
        self._out.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._out.cond:
            while True:
                for line in self._out.lines[seen:]:
                    if line.startswith(prefix):
                        return line
                seen = len(self._out.lines)
                if self._out.closed:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"{self.host}: `{shlex.join(self.argv)}` printed no {prefix!r} "
                        f"within {timeout:.0f}s; output:\n{self.output()}"
                    )
                self._out.cond.wait(left)
        self._proc.wait()
        raise HarnessError(
            f"{self.host}: `{shlex.join(self.argv)}` exited {self._proc.returncode} "
            f"before printing {prefix!r}; output:\n{self.output()}"
        )

    def wait(self, timeout: float) -> int | None:
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        # Its last lines may still be in the pipe: let the reader drain it.
        with self._out.cond:
            self._out.cond.wait_for(lambda: self._out.closed, timeout=5.0)
        return code

    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self._proc.kill()
            self._proc.wait()

    def output(self) -> str:
        with self._out.cond:
            return "\n".join(self._out.lines)


class LocalRunner:
    """Runs commands as child processes of the harness."""

    def __init__(self, name: str = "local", workdir: str = "/tmp"):
        self.name = name
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> CommandResult:
        if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
            raise HarnessError(f"{self.name}: command not found: {argv[0]}")
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"{self.name}: `{shlex.join(argv)}` did not finish within {timeout:.0f}s"
            ) from exc
        result = CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandFailed(self.name, result)
        return result

    def spawn(self, argv: list[str]) -> LocalProcess:
        return LocalProcess(self.name, argv)

    def put_text(self, path: str, text: str, mode: int = 0o600) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)

    def read_text(self, path: str) -> str:
        with open(path) as handle:
            return handle.read()
