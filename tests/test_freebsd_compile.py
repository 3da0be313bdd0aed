"""The FreeBSD 15.0 compile check: every project C file compiles, and it can fail.

Compiling with ziglang is required (it is in the dev extras); the clang-19 half is
skipped with a reason when /usr/bin/clang-19 is absent (CI installs it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import freebsd_compile as fc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> fc.Toolchain:
    return fc.prepare(ROOT, tmp_path_factory.mktemp("fbsd"), want_clang=True)


def _compiler(tc: fc.Toolchain, name: str) -> fc.Compiler:
    for comp in tc.compilers:
        if comp.name == name:
            return comp
    pytest.skip(tc.skipped.get(name, f"{name} is not available"))


def test_finds_project_sources() -> None:
    sources = fc.find_sources(ROOT)
    rel = {s.path.relative_to(ROOT).as_posix(): s.kernel for s in sources}
    assert rel["sys/amd64/vmm/vmm_dirty.c"] is True
    assert rel["sys/dev/vmm/vmm_dirty_log.c"] is True
    assert rel["lib/libvmmapi/vmmapi_dirty.c"] is False


def test_series_header_hunks_apply_to_installed_headers(toolchain: fc.Toolchain) -> None:
    patched = {p.as_posix() for p in toolchain.patched}
    assert "x86_64-freebsd-none/machine/vmm_dev.h" in patched
    assert "x86_64-freebsd-none/machine/pmap.h" in patched
    vmm_dev = (toolchain.overlay / "x86_64-freebsd-none/machine/vmm_dev.h").read_text()
    assert "IOCNUM_DIRTY_GET = 105" in vmm_dev


@pytest.mark.parametrize("name", ["zig", "clang-19"])
def test_every_project_file_compiles(toolchain: fc.Toolchain, name: str) -> None:
    comp = _compiler(toolchain, name)
    failures = []
    sources = fc.find_sources(ROOT)
    for src in sources:
        proc = fc.compile_one(
            comp, ROOT, src, toolchain.zig_root, toolchain.overlay, openssl=toolchain.openssl
        )
        if proc.returncode != 0:
            failures.append(f"{src.path.relative_to(ROOT)}:\n{proc.stderr}")
    print(f"{name}: {len(sources) - len(failures)} of {len(sources)} files compiled")
    assert not failures, "\n".join(failures)


BAD_USER = """\
#include <sys/types.h>
#include <stdint.h>
#include "vmmapi.h"
int
f(struct vmctx *ctx, uint64_t *bm)
{
	return (vm_dirty_get(ctx, 0, bm));	/* npages is missing */
}
"""

BAD_KERNEL = """\
#include <sys/param.h>
#include <sys/systm.h>
#include <dev/vmm/vmm_mem.h>
int
f(struct vm *vm)
{
	vm_paddr_t gpa = 0;

	return (vm_mmap_getnext(vm, &gpa, NULL, NULL, NULL));	/* 7 args */
}
"""

GOOD_KERNEL = BAD_KERNEL.replace("NULL, NULL, NULL)", "NULL, NULL, NULL, NULL, NULL)")


def _probe(tmp_path: Path, rel: str, text: str, kernel: bool) -> fc.Source:
    # Placed under a scratch copy of the layout so that stand-in lookup works.
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return fc.Source(path=path, kernel=kernel)


@pytest.mark.parametrize("name", ["zig", "clang-19"])
@pytest.mark.parametrize(
    ("rel", "text", "kernel", "message"),
    [
        ("lib/libvmmapi/bad.c", BAD_USER, False, "too few arguments"),
        ("sys/dev/vmm/bad.c", BAD_KERNEL, True, "too few arguments"),
    ],
)
def test_wrong_signature_fails(
    toolchain: fc.Toolchain,
    tmp_path: Path,
    name: str,
    rel: str,
    text: str,
    kernel: bool,
    message: str,
) -> None:
    comp = _compiler(toolchain, name)
    (tmp_path / "compat").symlink_to(ROOT / "compat")
    src = _probe(tmp_path, rel, text, kernel)
    proc = fc.compile_one(comp, tmp_path, src, toolchain.zig_root, toolchain.overlay)
    assert proc.returncode != 0, "a wrong call signature compiled against the stand-ins"
    assert message in proc.stderr


@pytest.mark.parametrize("name", ["zig", "clang-19"])
def test_right_signature_compiles(toolchain: fc.Toolchain, tmp_path: Path, name: str) -> None:
    comp = _compiler(toolchain, name)
    (tmp_path / "compat").symlink_to(ROOT / "compat")
    src = _probe(tmp_path, "sys/dev/vmm/good.c", GOOD_KERNEL, True)
    proc = fc.compile_one(comp, tmp_path, src, toolchain.zig_root, toolchain.overlay)
    assert proc.returncode == 0, proc.stderr


def test_hunk_with_wrong_context_is_refused() -> None:
    hunk = fc._Hunk(1, ["no such line"], ["replacement"])
    with pytest.raises(fc.HunkApplyError, match="context not found"):
        fc.apply_hunks("a\nb\n", [hunk], Path("x.diff"))


@pytest.fixture(scope="module")
def objects(toolchain: fc.Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zig's objects of the usr.sbin files, for the link check."""
    objdir = tmp_path_factory.mktemp("objects")
    comp = _compiler(toolchain, "zig")
    for src in fc.find_sources(ROOT):
        if not src.path.is_relative_to(ROOT / "usr.sbin"):
            continue
        out = fc.object_path(objdir, ROOT, src.path)
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = fc.compile_one(
            comp,
            ROOT,
            src,
            toolchain.zig_root,
            toolchain.overlay,
            openssl=toolchain.openssl,
            output=out,
        )
        assert proc.returncode == 0, proc.stderr
    return objdir


def test_programs_link_what_they_call(objects: Path) -> None:
    programs = fc.program_sources(ROOT)
    names = {prog: {p.name for p in srcs} for prog, srcs in programs.items()}
    assert {"migration_receive.c", "migration_bdisk.c"} <= names["bhyve"]
    assert {"bhyvectl_migrate.c", "migration_send.c"} <= names["bhyvectl"]
    failures = fc.link_check(ROOT, objects, programs)
    assert not failures, "\n".join(f"{f.path}: {f.output}" for f in failures)


def test_link_check_catches_a_missing_engine_file(objects: Path) -> None:
    programs = fc.program_sources(ROOT)
    programs["bhyvectl"] = [p for p in programs["bhyvectl"] if p.name != "migration_disk.c"]
    programs["bhyve"] = [p for p in programs["bhyve"] if p.name != "migration_receive.c"]
    out = [f"{f.path}: {f.output}" for f in fc.link_check(ROOT, objects, programs)]
    assert any(
        "migration_send.c: bhyvectl: uses mig_disk_send_begin, defined in "
        "usr.sbin/bhyve/migration_disk.c" in line
        for line in out
    ), out
    assert "usr.sbin/bhyve/migration_receive.c: bhyve: not in usr.sbin/bhyve/Makefile's SRCS" in out
