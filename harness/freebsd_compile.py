"""Compile-check the project's FreeBSD C files without FreeBSD.

Every C file the project wrote under sys/, lib/ and usr.sbin/ is compiled for
x86_64-freebsd15.0 with two compilers: ziglang's bundled clang (`python -m ziglang cc
-target x86_64-freebsd.15.0`) and Debian's clang-19 with the same FreeBSD 15.0 headers
as a sysroot.  Files under sys/ compile as kernel code (-D_KERNEL -DKLD_MODULE
-ffreestanding -nostdinc), the rest as userland.  The machine-independent kernel files
(sys/dev/vmm/) also compile for aarch64-freebsd and riscv64-freebsd, since vmm.ko on
arm64 and riscv builds them too.

Headers come from three places, searched in this order:
1. the project's own trees (sys/, and the directory of the file being compiled);
2. stand-ins under compat/freebsd-standins/ for headers FreeBSD does not install
   (vmmapi.h, dev/vmm/*, bhyve's private headers...);
3. ziglang's copy of the installed FreeBSD 15.0 headers, with the series' hunks
   against installed headers (patches/hunks/*/sys__amd64__include__*.diff,
   sys__vm__*.diff, ...) applied to a temporary copy, so that the new ioctls and
   prototypes are seen exactly as the patched headers will declare them.  A hunk that
   does not apply is an error: it would not apply to 15.0 either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError

TARGET = "x86_64-freebsd.15.0"
CLANG_TARGET = "x86_64-unknown-freebsd15.0"
FREEBSD_VERSION = "1500068"
CLANG19 = Path("/usr/bin/clang-19")
SOURCE_TREES = ("sys", "lib", "usr.sbin")
WARNINGS = ("-Wall", "-Wextra", "-Werror")
ARCH_DIR = "x86_64-freebsd-none"
# FreeBSD base ships OpenSSL headers in /usr/include/openssl; ziglang does not.  The
# Debian ones (same 3.x API) stand in for them, assembled into one directory.
OPENSSL_DIRS = (Path("/usr/include/openssl"), Path("/usr/include/x86_64-linux-gnu/openssl"))
# bhyve and bhyvectl build with WITH_BHYVE_SNAPSHOT (migration needs device state);
# bhyvectl also includes bhyve's headers, as its Makefile's -I${.CURDIR}/../bhyve does.
SNAPSHOT_TREES = ("usr.sbin/bhyve", "usr.sbin/bhyvectl")
GENERIC_DIR = "generic-freebsd"

# Upstream source directory -> (installed-headers directory, path inside it).
_INSTALLED = (
    ("sys/amd64/include/", ARCH_DIR, "machine/"),
    ("sys/x86/include/", ARCH_DIR, "x86/"),
    ("sys/sys/", GENERIC_DIR, "sys/"),
    ("sys/vm/", GENERIC_DIR, "vm/"),
)


class CompileCheckError(HarnessError):
    """The compile check could not run (missing tool, hunk that does not apply)."""


class HunkApplyError(CompileCheckError):
    """A hunk's context was not found in the header it targets."""


@dataclass(frozen=True)
class Source:
    """One project C file and how it compiles."""

    path: Path
    kernel: bool


@dataclass(frozen=True)
class Compiler:
    """A compiler invocation prefix; `name` is what reports count by."""

    name: str
    argv: tuple[str, ...]
    sysroot: Path | None = None


@dataclass
class Failure:
    compiler: str
    path: Path
    output: str


@dataclass
class Report:
    """Per-compiler counts of files compiled, and what failed."""

    compiled: dict[str, int] = field(default_factory=dict)
    kernel: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # Program -> how many project files its SRCS list, for programs link-checked.
    linked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = []
        for name, count in self.compiled.items():
            lines.append(
                f"{name}: {count} files compiled "
                f"({count - self.kernel.get(name, 0)} userland, {self.kernel.get(name, 0)} kernel)"
            )
        for prog, count in self.linked.items():
            lines.append(f"link check: {prog}: the {count} project files of its SRCS")
        for name, why in self.skipped.items():
            lines.append(f"{name}: skipped: {why}")
        for f in self.failures:
            lines.append(f"FAILED {f.compiler}: {f.path}\n{f.output.rstrip()}")
        return "\n".join(lines)


def zig_include_root() -> Path:
    """Where ziglang keeps its libc headers (…/lib/libc/include)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ziglang", "env"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileCheckError(
            "cannot run `python -m ziglang env`: install the dev extras "
            f"(pip install -e '.[dev]'): {exc}"
        ) from exc
    match = re.search(r'\.lib_dir\s*=\s*"([^"]+)"', proc.stdout)
    if match is None:
        raise CompileCheckError(f"`python -m ziglang env` printed no lib_dir:\n{proc.stdout}")
    root = Path(match.group(1)) / "libc" / "include"
    for sub in (ARCH_DIR, GENERIC_DIR):
        if not (root / sub).is_dir():
            raise CompileCheckError(f"ziglang has no FreeBSD headers at {root / sub}")
    return root


def find_sources(repo: Path) -> list[Source]:
    """Every project-written C file under sys/, lib/ and usr.sbin/."""
    found = []
    for tree in SOURCE_TREES:
        base = repo / tree
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.c")):
            found.append(Source(path=path, kernel=(tree == "sys")))
    return found


def installed_target(upstream: str) -> tuple[str, str] | None:
    """(headers subdirectory, relative path) for an installed upstream header."""
    for prefix, subdir, dest in _INSTALLED:
        if upstream.startswith(prefix) and upstream.endswith(".h"):
            return subdir, dest + upstream[len(prefix) :]
    return None


@dataclass
class _Hunk:
    start: int
    old: list[str]
    new: list[str]


def _parse_diff(text: str, origin: Path) -> tuple[str, list[_Hunk]]:
    upstream = None
    hunks: list[_Hunk] = []
    cur: _Hunk | None = None
    for line in text.splitlines():
        if cur is None and line.startswith("#"):
            continue
        if line.startswith("--- "):
            continue
        if line.startswith("+++ "):
            upstream = line[4:].split("\t")[0].removeprefix("b/")
            continue
        match = re.match(r"@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@", line)
        if match:
            cur = _Hunk(int(match.group(1)), [], [])
            hunks.append(cur)
            continue
        if cur is None:
            continue
        tag, body = line[:1], line[1:]
        if tag in (" ", ""):
            cur.old.append(body)
            cur.new.append(body)
        elif tag == "-":
            cur.old.append(body)
        elif tag == "+":
            cur.new.append(body)
        elif tag == "\\":
            continue
        else:
            raise HunkApplyError(f"{origin}: unexpected diff line {line!r}")
    if upstream is None or not hunks:
        raise HunkApplyError(f"{origin}: not a unified diff with a +++ line and hunks")
    return upstream, hunks


def apply_hunks(text: str, hunks: Sequence[_Hunk], origin: Path) -> str:
    """Apply hunks exactly (no fuzz); the context must occur once."""
    lines = text.split("\n")
    for hunk in reversed(hunks):
        n = len(hunk.old)
        at = [i for i in range(len(lines) - n + 1) if lines[i : i + n] == hunk.old]
        if len(at) != 1:
            what = "not found" if not at else f"found {len(at)} times"
            raise HunkApplyError(f"{origin}: hunk at line {hunk.start}: context {what}")
        lines[at[0] : at[0] + n] = hunk.new
    return "\n".join(lines)


def header_hunks(repo: Path) -> list[Path]:
    """Hunk files of the series that target installed headers."""
    out = []
    for diff in sorted((repo / "patches" / "hunks").glob("*/*.diff")):
        upstream = diff.name.removesuffix(".diff").replace("__", "/")
        if installed_target(upstream) is not None:
            out.append(diff)
    return out


def build_overlay(repo: Path, zig_root: Path, dest: Path) -> list[Path]:
    """Copy each installed header the series patches into dest and patch it."""
    patched: dict[Path, str] = {}
    for diff in header_hunks(repo):
        upstream, hunks = _parse_diff(diff.read_text(), diff)
        target = installed_target(upstream)
        assert target is not None
        rel = Path(target[0]) / target[1]
        if rel not in patched:
            src = zig_root / rel
            if not src.is_file():
                raise HunkApplyError(f"{diff}: {upstream} is not among the installed headers")
            patched[rel] = src.read_text()
        patched[rel] = apply_hunks(patched[rel], hunks, diff)
    for rel, text in patched.items():
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return sorted(patched)


def build_sysroot(zig_root: Path, overlay: Path, dest: Path) -> Path:
    """A FreeBSD-like sysroot (usr/include) from the installed and patched headers."""
    inc = dest / "usr" / "include"
    for sub in (GENERIC_DIR, ARCH_DIR):
        shutil.copytree(zig_root / sub, inc, dirs_exist_ok=True)
    for sub in (GENERIC_DIR, ARCH_DIR):
        if (overlay / sub).is_dir():
            shutil.copytree(overlay / sub, inc, dirs_exist_ok=True)
    return dest


def standin_dirs(repo: Path, source: Source) -> list[Path]:
    """Stand-in include directories for a source file."""
    root = repo / "compat" / "freebsd-standins"
    rel = source.path.relative_to(repo)
    dirs = []
    # Stand-ins for the file's own upstream directory (bhyve's private headers...).
    mirror = root / rel.parent
    while mirror != root and mirror.is_relative_to(root):
        if mirror.is_dir():
            dirs.append(mirror)
        mirror = mirror.parent
    if source.kernel:
        dirs.append(root / "sys")
    else:
        if rel.as_posix().startswith("usr.sbin/bhyvectl/"):
            dirs += [repo / "usr.sbin" / "bhyve", root / "usr.sbin" / "bhyve"]
        dirs += [root / "lib" / "libvmmapi", root / "include"]
    return [d for d in dirs if d.is_dir()]


def openssl_dir(workdir: Path) -> Path | None:
    """One include directory holding openssl/ headers, or None if not installed."""
    if not (OPENSSL_DIRS[0] / "crypto.h").is_file():
        return None
    dest = workdir / "openssl-include" / "openssl"
    if not dest.is_dir():
        for src in OPENSSL_DIRS:
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest.parent


def include_flags(repo: Path, source: Source, overlay: Path, system: Iterable[Path]) -> list[str]:
    flags = [f"-I{source.path.parent}"]
    if source.kernel:
        flags.append(f"-I{repo / 'sys'}")
    flags += [f"-I{d}" for d in standin_dirs(repo, source)]
    flags += [f"-I{overlay / sub}" for sub in (ARCH_DIR, GENERIC_DIR) if (overlay / sub).is_dir()]
    if source.kernel:
        flags += [f"-isystem{d}" for d in system]
    return flags


def mode_flags(repo: Path, source: Source) -> list[str]:
    if source.kernel:
        return ["-D_KERNEL", "-DKLD_MODULE", "-ffreestanding", "-nostdinc", "-fno-builtin"]
    rel = source.path.relative_to(repo).as_posix()
    if any(rel.startswith(tree + "/") for tree in SNAPSHOT_TREES):
        return ["-DBHYVE_SNAPSHOT"]
    return []


def compilers(zig_root: Path, sysroot: Path | None) -> list[Compiler]:
    out = [Compiler("zig", (sys.executable, "-m", "ziglang", "cc", "-target", TARGET))]
    if sysroot is not None:
        out.append(
            Compiler(
                "clang-19",
                (
                    str(CLANG19),
                    f"--target={CLANG_TARGET}",
                    f"--sysroot={sysroot}",
                    f"-D__FreeBSD_version={FREEBSD_VERSION}",
                ),
                sysroot,
            )
        )
    return out


def compile_one(
    compiler: Compiler,
    repo: Path,
    source: Source,
    zig_root: Path,
    overlay: Path,
    extra: Sequence[str] = (),
    openssl: Path | None = None,
    output: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Compile one file; the object is kept at output if given."""
    if compiler.sysroot is not None:
        system = [compiler.sysroot / "usr" / "include"]
    else:
        system = [zig_root / ARCH_DIR, zig_root / GENERIC_DIR]
    with tempfile.TemporaryDirectory(prefix="fbsdcc-") as tmp:
        argv = [
            *compiler.argv,
            "-std=gnu11",
            *WARNINGS,
            *mode_flags(repo, source),
            *include_flags(repo, source, overlay, system),
            *([f"-idirafter{openssl}"] if openssl is not None and not source.kernel else []),
            *extra,
            "-c",
            str(source.path),
            "-o",
            str(output) if output is not None else os.path.join(tmp, "out.o"),
        ]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CompileCheckError(f"{compiler.name}: cannot run {argv[0]}: {exc}") from exc


# The programs the series builds from project files: each program's directory, and the
# directories its Makefile's .PATH adds (bhyvectl links engine files from bhyve's).
PROGRAMS = {
    "bhyve": ("usr.sbin/bhyve",),
    "bhyvectl": ("usr.sbin/bhyvectl", "usr.sbin/bhyve"),
}
NM = "nm"


def program_sources(repo: Path) -> dict[str, list[Path]]:
    """Each program's project C files, as its Makefile hunks add them to SRCS."""
    out: dict[str, list[Path]] = {}
    for prog, dirs in PROGRAMS.items():
        added: list[str] = []
        pattern = "*/" + dirs[0].replace("/", "__") + "__Makefile.diff"
        for diff in sorted((repo / "patches" / "hunks").glob(pattern)):
            text = "\n".join(
                line[1:]
                for line in diff.read_text().splitlines()
                if line.startswith("+") and not line.startswith("+++")
            )
            for stmt in text.replace("\\\n", " ").splitlines():
                if re.match(r"\s*SRCS\s*\+?=", stmt):
                    added += [w for w in stmt.split("=", 1)[1].split() if w.endswith(".c")]
        found = []
        for name in added:
            for d in dirs:
                if (repo / d / name).is_file():
                    found.append(repo / d / name)
                    break
        out[prog] = found
    return out


def object_path(objdir: Path, repo: Path, source: Path) -> Path:
    return objdir / source.relative_to(repo).with_suffix(".o")


def _symbols(obj: Path) -> tuple[set[str], set[str]]:
    """(defined, undefined) external symbols of an object file."""
    try:
        proc = subprocess.run(
            [NM, "-g", "-P", str(obj)], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileCheckError(f"cannot list the symbols of {obj} with {NM}: {exc}") from exc
    defined, undefined = set(), set()
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            (undefined if fields[1] in ("U", "w", "v") else defined).add(fields[0])
    return defined, undefined


def link_check(repo: Path, objdir: Path, programs: dict[str, list[Path]]) -> list[Failure]:
    """Each program's SRCS define every project symbol its SRCS use, once; and every
    project C file of a program's directory is in its SRCS.  A symbol counts as the
    project's when some project object under usr.sbin/ defines it."""
    sources = [s.path for s in find_sources(repo) if s.path.is_relative_to(repo / "usr.sbin")]
    syms = {p: _symbols(object_path(objdir, repo, p)) for p in sources}
    owner: dict[str, Path] = {}
    for path, (defined, _) in syms.items():
        for name in defined:
            owner.setdefault(name, path)
    failures = []
    for prog, srcs in programs.items():
        makefile = f"{PROGRAMS[prog][0]}/Makefile"
        home = repo / PROGRAMS[prog][0]
        for path in sources:
            if path.parent == home and path not in srcs:
                failures.append(
                    Failure("link", path.relative_to(repo), f"{prog}: not in {makefile}'s SRCS")
                )
        defined_by: dict[str, Path] = {}
        for path in srcs:
            for name in syms[path][0]:
                if name in defined_by:
                    failures.append(
                        Failure(
                            "link",
                            path.relative_to(repo),
                            f"{prog}: {name} is also defined by "
                            f"{defined_by[name].relative_to(repo)}",
                        )
                    )
                defined_by[name] = path
        for path in srcs:
            missing = sorted(n for n in syms[path][1] if n in owner and n not in defined_by)
            for name in missing:
                failures.append(
                    Failure(
                        "link",
                        path.relative_to(repo),
                        f"{prog}: uses {name}, defined in "
                        f"{owner[name].relative_to(repo)}, which {makefile}'s SRCS "
                        "does not list",
                    )
                )
    return failures


# Machine-independent kernel files (sys/dev/vmm/) build into vmm.ko on arm64 and riscv
# too: compile them for those targets, against ziglang's headers for each.
MI_KERNEL_TREE = "sys/dev/"
# (name, zig target, ziglang header directory, the kernel's own flags from kern.mk)
OTHER_ARCHES = (
    # kern.mk reserves x18 (-ffixed-x18); zig cc spells it as a CPU feature.
    ("aarch64", "aarch64-freebsd.15.0", "aarch64-freebsd-none", ("-mcpu=generic+reserve_x18",)),
    ("riscv64", "riscv64-freebsd.15.0", "riscv64-freebsd-none", ("-mno-relax",)),
)


def mi_kernel_sources(repo: Path) -> list[Source]:
    """The machine-independent kernel files, headers included: a header is compiled
    on its own (after sys/param.h, as kernel files include it first), which checks the
    declarations and inline stubs other architectures see."""
    base = repo / MI_KERNEL_TREE
    found = sorted(base.rglob("*.c")) + sorted(base.rglob("*.h"))
    return [Source(path=p, kernel=True) for p in found]


def compile_other_arch(
    repo: Path, source: Source, zig_root: Path, target: str, arch_dir: str, flags: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """Compile one machine-independent kernel file for another architecture."""
    header = (
        ["-x", "c", "-include", "sys/param.h", "-Wno-unused-function"]
        if source.path.suffix == ".h"
        else []
    )
    with tempfile.TemporaryDirectory(prefix="fbsdcc-") as tmp:
        argv = [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "-target",
            target,
            "-std=gnu11",
            *WARNINGS,
            *mode_flags(repo, source),
            f"-I{source.path.parent}",
            f"-I{repo / 'sys'}",
            *[f"-I{d}" for d in standin_dirs(repo, source)],
            f"-isystem{zig_root / arch_dir}",
            f"-isystem{zig_root / GENERIC_DIR}",
            *flags,
            *header,
            "-c",
            str(source.path),
            "-o",
            os.path.join(tmp, "out.o"),
        ]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CompileCheckError(f"zig {target}: cannot run: {exc}") from exc


@dataclass
class Toolchain:
    """Everything a compile needs; build once with prepare()."""

    repo: Path
    zig_root: Path
    overlay: Path
    compilers: list[Compiler]
    skipped: dict[str, str]
    patched: list[Path]
    openssl: Path | None


def prepare(repo: Path, workdir: Path, want_clang: bool = True) -> Toolchain:
    zig_root = zig_include_root()
    overlay = workdir / "overlay"
    patched = build_overlay(repo, zig_root, overlay)
    skipped: dict[str, str] = {}
    sysroot = None
    if want_clang and CLANG19.exists():
        sysroot = build_sysroot(zig_root, overlay, workdir / "sysroot")
    elif want_clang:
        skipped["clang-19"] = f"{CLANG19} is not installed (apt-get install clang-19)"
    ssl = openssl_dir(workdir)
    return Toolchain(repo, zig_root, overlay, compilers(zig_root, sysroot), skipped, patched, ssl)


def compile_all(repo: Path, workdir: Path | None = None, want_clang: bool = True) -> Report:
    """Compile every project FreeBSD C file with every available compiler."""
    sources = find_sources(repo)
    if not sources:
        raise CompileCheckError(f"no C files under {', '.join(SOURCE_TREES)} in {repo}")
    with tempfile.TemporaryDirectory(prefix="fbsd-compile-") as tmp:
        tc = prepare(repo, Path(workdir or tmp), want_clang)
        report = Report(skipped=dict(tc.skipped))
        objdir = Path(tmp) / "objects"
        for compiler in tc.compilers:
            report.compiled[compiler.name] = 0
            report.kernel[compiler.name] = 0
            for source in sources:
                # The first compiler's userland objects feed the link check.
                keep = None
                if compiler is tc.compilers[0] and not source.kernel:
                    keep = object_path(objdir, repo, source.path)
                    keep.parent.mkdir(parents=True, exist_ok=True)
                proc = compile_one(
                    compiler,
                    repo,
                    source,
                    tc.zig_root,
                    tc.overlay,
                    openssl=tc.openssl,
                    output=keep,
                )
                if proc.returncode != 0:
                    report.failures.append(
                        Failure(compiler.name, source.path.relative_to(repo), proc.stderr)
                    )
                    continue
                report.compiled[compiler.name] += 1
                if source.kernel:
                    report.kernel[compiler.name] += 1
        if not report.failures:
            programs = program_sources(repo)
            report.failures += link_check(repo, objdir, programs)
            report.linked = {prog: len(srcs) for prog, srcs in programs.items()}
        mi = mi_kernel_sources(repo)
        for arch, target, arch_dir, flags in OTHER_ARCHES:
            name = f"zig-{arch}"
            report.compiled[name] = 0
            report.kernel[name] = 0
            for source in mi:
                proc = compile_other_arch(repo, source, tc.zig_root, target, arch_dir, flags)
                if proc.returncode != 0:
                    report.failures.append(
                        Failure(name, source.path.relative_to(repo), proc.stderr)
                    )
                    continue
                report.compiled[name] += 1
                report.kernel[name] += 1
    return report
