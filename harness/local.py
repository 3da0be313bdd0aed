"""The local test bed's simplest form: two VM processes on this machine, over loopback."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.engine_build import build_testbed_programs
from harness.migrate import Endpoint
from harness.runner import LocalRunner


def local_endpoints(workdir: Path) -> tuple[Endpoint, Endpoint]:
    """Source and destination endpoints on loopback in workdir, programs built if needed."""
    bindir = build_testbed_programs()
    src = LocalRunner("local-source", str(workdir / "source"))
    dst = LocalRunner("local-destination", str(workdir / "destination"))
    return (
        Endpoint(src, str(bindir), "127.0.0.1", "127.0.0.1", "local-source"),
        Endpoint(dst, str(bindir), "127.0.0.1", "127.0.0.1", "local-destination"),
    )


@dataclass
class LocalWorkdir:
    """A temporary directory of a local run: guest disk images, reports, sockets, keys."""

    path: Path
    kept_because: str = ""  # set: the directory stays, and why

    def keep(self, why: str) -> None:
        self.kept_because = why


@contextmanager
def local_workdir() -> Iterator[LocalWorkdir]:
    """A fresh bhyvemig-* directory under TMPDIR, removed on the way out (success, failure,
    Ctrl-C) unless keep() was called; only what this run created goes."""
    workdir = LocalWorkdir(Path(tempfile.mkdtemp(prefix="bhyvemig-")))
    try:
        yield workdir
    finally:
        if workdir.kept_because:
            print(f"kept {workdir.path}: {workdir.kept_because}")
        else:
            shutil.rmtree(workdir.path, ignore_errors=True)
