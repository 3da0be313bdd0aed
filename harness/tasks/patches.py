"""invoke tasks for the FreeBSD patch series (Collection `patches`).

`patches.compile` compiles every project-written FreeBSD C file for FreeBSD 15.0 with
ziglang's clang and Debian's clang-19 (see harness.freebsd_compile).  Later tasks of the
series (export, check, apply) join this Collection.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from harness.freebsd_compile import CompileCheckError, compile_all

ROOT = Path(__file__).resolve().parent.parent.parent


@task(
    name="compile",
    help={
        "no_clang": "only use ziglang's compiler, not /usr/bin/clang-19",
        "workdir": "keep the patched headers and sysroot here (default: a temporary directory)",
    },
)
def compile_(c, no_clang=False, workdir=None):
    """Compile the project's FreeBSD C files (userland and kernel) for FreeBSD 15.0."""
    work = Path(workdir) if workdir else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    try:
        report = compile_all(ROOT, work, want_clang=not no_clang)
    except CompileCheckError as exc:
        raise Exit(f"patches.compile: {exc}", code=2) from exc
    print(report.summary())
    if not report.ok:
        raise Exit(f"patches.compile: {len(report.failures)} compile failures", code=1)


ns = Collection("patches")
ns.add_task(compile_)
