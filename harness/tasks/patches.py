"""invoke tasks for the FreeBSD patch series (Collection `patches`).

`patches.compile` compiles every project-written FreeBSD C file for FreeBSD 15.0 with
ziglang's clang and Debian's clang-19 (see harness.freebsd_compile).  `patches.export`
regenerates patches/ (the format-patch series, its cover letter, series and BASE) from
patches/hunks/ and the tree; `patches.check` and `patches.apply` try it on a FreeBSD
checkout (see harness.series).
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from harness import series as fseries
from harness import series_refresh, series_strict
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


def _patch_files(patches_dir: Path) -> list[Path]:
    try:
        return fseries.read_series_list(patches_dir)
    except fseries.SeriesError as exc:
        raise Exit(f"patches: {exc}", code=2) from exc


@task(help={"out": "write the series here instead of patches/ (e.g. to compare)"})
def export(c, out=None):
    """Regenerate patches/ from patches/hunks/ and the tree: NNNN-*.patch, the cover letter,
    series and BASE.  Fails, naming the file, if a project file under sys/, lib/ or
    usr.sbin/ is added by no patch or by two.  Running it twice changes nothing."""
    try:
        changed = fseries.export(ROOT, Path(out) if out else None)
    except fseries.SeriesError as exc:
        raise Exit(f"patches.export: {exc}", code=1) from exc
    where = Path(out) if out else ROOT / "patches"
    if changed:
        print(f"patches.export: {len(changed)} files changed in {where}:")
        for name in changed:
            print(f"  {name}")
    else:
        print(f"patches.export: {where} is up to date")


@task(
    help={
        "src": "a FreeBSD src tree (a git checkout or the gathered upstream files)",
        "allow_missing": "check what exists when the tree lacks some files the series patches",
    }
)
def check(c, src, allow_missing=False):
    """Apply the series strictly to a FreeBSD src tree: for each patch in order,
    `git apply --check` and `patch --dry-run -p1 -F0` on a scratch copy of the files it
    touches; any refusal, fuzz or offset fails.  The tree is not modified.  With a git
    checkout, also says where its HEAD stands relative to the series' base."""
    src_dir = Path(src).expanduser().resolve()
    patches = _patch_files(ROOT / "patches")
    try:
        if (src_dir / ".git").exists():
            print(f"{src_dir}: {fseries.check_base(src_dir).relation}")
        results = series_strict.strict_check(src_dir, patches, allow_missing)
    except fseries.SeriesError as exc:
        raise Exit(f"patches.check: {exc}", code=2) from exc
    for result in results:
        print(f"  {'ok    ' if result.ok else 'FAILED'} {result.name}: {result.detail}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise Exit(f"patches.check: {len(failed)} of {len(results)} patches fail", code=1)
    print(f"patches.check: all {len(results)} patches apply exactly (no fuzz, no offset)")


@task(
    help={
        "src": "a git checkout of freebsd-src with no uncommitted changes",
        "branch": f"the branch to create (default {fseries.BRANCH})",
        "start": "start the branch here instead of at the series' base commit",
        "force": "reset the branch if it exists",
    }
)
def apply(c, src, branch=fseries.BRANCH, start=None, force=False):
    """`git am` the series onto a new branch of a FreeBSD checkout, started at the series'
    base.  Refuses a dirty tree or an unfinished am/rebase; stops at the first patch that
    fails, naming it (the branch keeps the ones before it)."""
    src_dir = Path(src).expanduser().resolve()
    patches = _patch_files(ROOT / "patches")
    try:
        applied = fseries.apply_series(src_dir, patches, branch, start, force)
    except fseries.SeriesError as exc:
        raise Exit(f"patches.apply: {exc}", code=1) from exc
    print(f"patches.apply: {len(applied)} patches applied on branch {branch} in {src_dir}")


@task(help={"src": "the upstream files (FreeBSD src layout), e.g. /work/upstream/15.0"})
def refresh(c, src):
    """Rewrite patches/hunks/*/*.diff as `git diff -U3` of the real upstream files in SRC:
    each patch's hunks are applied (fuzz allowed, once) to the file as the patches before
    it left it, then replaced by git's diff.  Then run `invoke patches.export`."""
    try:
        results = series_refresh.refresh(ROOT, Path(src).expanduser())
    except fseries.SeriesError as exc:
        raise Exit(f"patches.refresh: {exc}", code=2) from exc
    for r in results:
        print(f"  {r.diff.parent.name}/{r.diff.name}: {r.status}")
    failed = [r for r in results if r.status.startswith("does not apply")]
    if failed:
        raise Exit(f"patches.refresh: {len(failed)} hunk files need a hand edit", code=1)


ns = Collection("patches")
ns.add_task(compile_)
ns.add_task(export)
ns.add_task(check)
ns.add_task(refresh)
ns.add_task(apply)
