"""The local test bed's simplest form: two VM processes on this machine, over loopback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.engine_build import build_testbed_programs
from harness.migrate import Endpoint
from harness.runner import LocalRunner


def local_endpoints(workdir: Path | None = None) -> tuple[Endpoint, Endpoint]:
    """Source and destination endpoints on loopback, programs built if needed."""
    bindir = build_testbed_programs()
    base = Path(workdir or tempfile.mkdtemp(prefix="bhyvemig-"))
    src = LocalRunner("local-source", str(base / "source"))
    dst = LocalRunner("local-destination", str(base / "destination"))
    return (
        Endpoint(src, str(bindir), "127.0.0.1", "127.0.0.1", "local-source"),
        Endpoint(dst, str(bindir), "127.0.0.1", "127.0.0.1", "local-destination"),
    )
