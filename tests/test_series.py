"""The FreeBSD patch series (harness/series.py, patches/).

- every generated patch parses, with FreeBSD-style subjects and bodies wrapped at 72;
- the committed patches/ equal a fresh export (no drift from patches/hunks/ or the tree);
- the new files the series adds equal the tree's, byte for byte, and every project file
  is added by exactly one patch;
- the series applies with `git apply`, patch by patch, to upstream files rebuilt from the
  hunks' own preimages (context and '-' lines at their line numbers, the gaps filled with
  unique placeholder lines), and the result is exactly the simulated postimage;
- `mandoc -Tlint` finds nothing in the man page additions.  The pages are rebuilt the same
  way, with the gaps filled by a minimal mdoc scaffold (prologue, and the lists or blocks
  the hunks' context is inside of).  Only messages on added lines, or of a kind the
  unpatched page does not have, count; "referenced manual not found" (STYLE, about
  cross references to pages this Linux machine lacks) is ignored.

No FreeBSD source is stored here: the preimages exist only in temporary directories.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import freebsd
from harness import series as fseries

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "patches"
GIT_ID = ["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def patch_files() -> list[Path]:
    return fseries.read_series_list(PATCHES)


@pytest.fixture(scope="module")
def parsed(patch_files) -> list[fseries.ParsedPatch]:
    return [fseries.parse_patch_file(p) for p in patch_files]


@pytest.fixture(scope="module")
def loaded() -> fseries.Series:
    return fseries.load_series(ROOT)


# ---------------------------------------------------------------------------- format


def test_every_patch_parses(parsed) -> None:
    total = len(parsed)
    assert total >= 2
    for number, patch in enumerate(parsed, 1):
        where = patch.path.name
        assert (patch.number, patch.total) == (number, total), where
        assert patch.from_line.startswith("From "), where
        assert patch.author == fseries.AUTHOR, where
        assert patch.date, where
        assert patch.stat and patch.diffs, where
        assert patch.subject.startswith(fseries.SUBJECT_PREFIXES), f"{where}: {patch.subject}"
        assert len(patch.subject) <= 72, f"{where}: subject longer than 72"
        assert patch.body and patch.body[0], f"{where}: empty body"
        long = [line for line in patch.body if len(line) > 72]
        assert not long, f"{where}: body lines over 72 columns: {long}"
        assert not any(line.startswith("Files:") for line in patch.body), where


def test_patch_names_and_order_follow_the_hunk_directories(patch_files, loaded) -> None:
    assert [p.name for p in patch_files] == [p.file_name() for p in loaded.patches]
    assert [p.name[:4] for p in patch_files] == [f"{n:04d}" for n in range(1, len(patch_files) + 1)]


def test_cover_letter(parsed) -> None:
    cover = fseries.parse_patch_file(PATCHES / "0000-cover-letter.patch")
    assert (cover.number, cover.total) == (0, len(parsed))
    assert cover.subject == "bhyve live migration"
    text = "\n".join(cover.body)
    long = [line for line in cover.body if len(line) > 72]
    assert not long, f"cover letter lines over 72 columns: {long}"
    for patch in parsed:
        assert patch.subject in text  # the shortlog
    assert f"base-commit: {fseries.BASE.commit}" in text
    assert "{size:" not in text
    for heading in (
        "Dirty page tracking",
        "Testing",
        "Upstream files touched",
        "D30954",
        "Compatibility",
    ):
        assert heading in text


def test_diffstat_agrees_with_git(patch_files) -> None:
    for path in patch_files:
        numstat = subprocess.run(
            ["git", "apply", "--numstat", str(path)], capture_output=True, text=True, check=True
        ).stdout
        ours = fseries.parse_patch_file(path).stat
        summary = ours[[i for i, s in enumerate(ours) if "changed" in s][0]]
        adds = sum(int(line.split()[0]) for line in numstat.splitlines())
        rems = sum(int(line.split()[1]) for line in numstat.splitlines())
        files = len(numstat.splitlines())
        assert summary.startswith(f" {files} file"), path.name
        assert f"{adds} insertion" in summary or adds == 0, path.name
        assert f"{rems} deletion" in summary or rems == 0, path.name


def test_harness_finds_the_series(patch_files) -> None:
    """harness.freebsd.find_series() (the build step) reads the same patches and base."""
    found = freebsd.find_series(PATCHES)
    assert found.base_commit == fseries.BASE.commit
    assert [p.name for p in found.patches] == [p.name for p in patch_files]


def test_base_file_records_the_commit_and_every_hunk_source(loaded) -> None:
    base = (PATCHES / "BASE").read_text()
    assert fseries.BASE.commit in base and "releng/15.0" in base
    for patch in loaded.patches:
        for diff in patch.upstream:
            assert f"{patch.number:02d}     {diff.path}" in base


# ---------------------------------------------------------------------------- drift


def test_committed_patches_equal_a_fresh_export(tmp_path) -> None:
    fseries.export(ROOT, tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {
        p.name: p.read_text()
        for p in PATCHES.iterdir()
        if p.is_file() and (p.suffix == ".patch" or p.name in ("series", "BASE"))
    }
    stale = sorted(n for n in set(fresh) | set(committed) if fresh.get(n) != committed.get(n))
    assert not stale, f"patches/ is stale, run `invoke patches.export`: {stale}"


def test_export_is_idempotent(tmp_path) -> None:
    assert fseries.export(ROOT, tmp_path)
    assert fseries.export(ROOT, tmp_path) == []


def _added_content(diff: str) -> bytes:
    lines = diff.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("@@"))
    out, no_eol = [], False
    for line in lines[start + 1 :]:
        if line.startswith("+"):
            out.append(line[1:])
        elif line.startswith("\\"):
            no_eol = True
    text = "\n".join(out) + ("" if no_eol else "\n")
    return text.encode()


def test_new_files_equal_the_tree(parsed) -> None:
    for patch in parsed:
        for path, diff in patch.diffs.items():
            if "\nnew file mode 100644\n" not in diff:
                continue
            tree = (ROOT / path).read_bytes()
            assert _added_content(diff) == tree, f"{patch.path.name}: {path} differs from the tree"
            blob = re.search(r"^index 0000000\.\.([0-9a-f]{40})$", diff, re.M)
            assert blob, f"{path}: no index line"
            want = subprocess.run(
                ["git", "hash-object", str(ROOT / path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert blob.group(1) == want, path


def test_every_project_file_is_added_by_exactly_one_patch(parsed) -> None:
    added = Counter(
        path
        for patch in parsed
        for path, diff in patch.diffs.items()
        if "\nnew file mode 100644\n" in diff
    )
    assert [p for p, n in added.items() if n > 1] == []
    assert sorted(added) == fseries.project_files(ROOT)


def _toy_repo(tmp_path: Path, files_line: str, second: str | None = None) -> Path:
    root = tmp_path / "repo"
    (root / "sys" / "dev").mkdir(parents=True)
    (root / "sys" / "dev" / "a.c").write_text("int a;\n")
    (root / "sys" / "dev" / "b.h").write_text("int b;\n")
    first = root / "patches" / "hunks" / "01-first"
    first.mkdir(parents=True)
    (first / "PATCH.txt").write_text(f"vmm: first\n\nBody.\n\n{files_line}\n")
    if second is not None:
        d = root / "patches" / "hunks" / "02-second"
        d.mkdir()
        (d / "PATCH.txt").write_text(f"vmm: second\n\nBody.\n\n{second}\n")
    (root / "patches" / "cover-letter.txt").write_text("Cover.\n")
    return root


def test_a_file_no_patch_adds_is_named(tmp_path) -> None:
    root = _toy_repo(tmp_path, "Files: sys/dev/a.c")
    with pytest.raises(fseries.SeriesError, match=r"sys/dev/b\.h is added by no patch"):
        fseries.load_series(root)


def test_a_file_two_patches_add_is_named(tmp_path) -> None:
    root = _toy_repo(tmp_path, "Files: sys/dev/a.c sys/dev/b.h", second="Files: sys/dev/b.h")
    with pytest.raises(fseries.SeriesError, match=r"sys/dev/b\.h is added by more than one"):
        fseries.load_series(root)


def test_files_globs_expand_and_missing_files_are_errors(tmp_path) -> None:
    root = _toy_repo(tmp_path, "Files: sys/dev/a.[ch]\n sys/dev/b.h")
    series = fseries.load_series(root)
    assert series.patches[0].files == ["sys/dev/a.c", "sys/dev/b.h"]
    root2 = _toy_repo(tmp_path / "x", "Files: sys/dev/a.c sys/dev/b.h sys/dev/nope.c")
    with pytest.raises(fseries.SeriesError, match=r"nope\.c does not exist"):
        fseries.load_series(root2)


def test_wrong_hunk_line_counts_are_errors(tmp_path) -> None:
    bad = tmp_path / "sys__x.c.diff"
    bad.write_text(
        "# Context from: nowhere\n--- a/sys/x.c\n+++ b/sys/x.c\n@@ -1,3 +1,4 @@\n a\n+b\n c\n"
    )
    with pytest.raises(fseries.SeriesError, match="header says 3 and 4"):
        fseries.read_hunk_file(bad)


# ---------------------------------------------------------------------------- applying


@dataclass
class Slot:
    """A line of a simulated file: its text (None while unknown) and where it came from."""

    text: str | None
    orig: int | None = None  # its line number in the upstream preimage
    added: bool = False  # a '+' line of the series


@dataclass
class SimFile:
    path: str
    preimage: dict[int, str] = field(default_factory=dict)
    length: int = 0
    no_eol: bool = False
    state: list[Slot] = field(default_factory=list)
    pre_slots: list[Slot] = field(default_factory=list)

    def grow(self, n: int) -> None:
        while self.length < n:
            self.length += 1
            slot = Slot(None, self.length)
            self.state.append(slot)
            self.pre_slots.append(slot)


def _matches(state: list[Slot], pos: int, old: list[str]) -> bool:
    if pos < 0 or pos + len(old) > len(state):
        return False
    return all(s.text is None or s.text == line for s, line in zip(state[pos:], old, strict=False))


def _simulate(sim: SimFile, hunks: list[fseries.Hunk], where: str) -> None:
    delta = 0
    for hunk in hunks:
        old = [x[1:] for x in hunk.lines if x[:1] in (" ", "-")]
        want = hunk.old_start - 1 + delta
        sim.grow(want + len(old) + (0 if sim.no_eol else 3))
        pos = next(
            (
                want + d
                for d in sorted(range(-200, 201), key=abs)
                if _matches(sim.state, want + d, old)
            ),
            None,
        )
        assert pos is not None, f"{where}: {hunk.header()} matches nowhere in the simulation"
        new: list[Slot] = []
        i = pos
        for n, line in enumerate(hunk.lines):
            tag, text = line[:1], line[1:]
            if tag == "\\":
                if hunk.lines[n - 1][:1] in (" ", "-"):
                    sim.no_eol = True
                    # The preimage ends at the previous old line.
                    end = i
                    assert all(s.text is None for s in sim.state[end:]), where
                    for s in sim.state[end:]:
                        sim.pre_slots.remove(s)
                    del sim.state[end:]
                    sim.length = sim.state[end - 1].orig or sim.length
                continue
            if tag in (" ", "-"):
                slot = sim.state[i]
                if slot.text is None:
                    slot.text = text
                    sim.preimage[slot.orig] = text  # type: ignore[index]
                if tag == " ":
                    new.append(slot)
                i += 1
            else:
                new.append(Slot(text, added=True))
        sim.state[pos:i] = new
        delta += hunk.new_count - hunk.old_count


def _placeholder(path: str, n: int) -> str:
    if re.search(r"\.\d$", path):
        return f'.\\" placeholder {n} of {path}'
    return f"placeholder {n} of {path}"


def _text(sim: SimFile, slots: list[Slot]) -> str:
    lines = [s.text if s.text is not None else _placeholder(sim.path, s.orig or 0) for s in slots]
    return "\n".join(lines) + ("" if sim.no_eol else "\n")


@pytest.fixture(scope="module")
def simulation(loaded) -> dict[str, SimFile]:
    sims: dict[str, SimFile] = {}
    for patch in loaded.patches:
        for diff in patch.upstream:
            sim = sims.setdefault(diff.path, SimFile(diff.path))
            _simulate(sim, diff.hunks, f"{patch.directory.name}/{diff.source.name}")
    return sims


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(repo), *GIT_ID, *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def upstream_repo(tmp_path, simulation) -> Path:
    """A git repository holding only the rebuilt preimages of the upstream files."""
    repo = tmp_path / "src"
    repo.mkdir()
    assert _git(repo, "init", "-q").returncode == 0
    for sim in simulation.values():
        dest = repo / sim.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_text(sim, sim.pre_slots))
    assert _git(repo, "add", "-A").returncode == 0
    assert _git(repo, "commit", "-q", "-m", "rebuilt preimages").returncode == 0
    return repo


def test_series_applies_patch_by_patch(upstream_repo, simulation, patch_files) -> None:
    for patch in patch_files:
        check = _git(upstream_repo, "apply", "--check", "--index", str(patch))
        assert check.returncode == 0, f"{patch.name}: {check.stderr}"
        assert _git(upstream_repo, "apply", "--index", str(patch)).returncode == 0
    for sim in simulation.values():
        got = (upstream_repo / sim.path).read_text()
        assert got == _text(sim, sim.state), f"{sim.path}: result differs from the simulation"
        for slot in sim.state:
            if slot.added:
                assert slot.text in got.split("\n")
    for path in fseries.project_files(ROOT):
        assert (upstream_repo / path).read_bytes() == (ROOT / path).read_bytes(), path


def test_check_task_reports_each_patch(upstream_repo, patch_files) -> None:
    results = fseries.check_apply(upstream_repo, patch_files)
    assert [r.name for r in results] == [p.name for p in patch_files]
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert _git(upstream_repo, "status", "--porcelain").stdout == ""  # untouched
    base = fseries.check_base(upstream_repo)
    assert not base.ok and "not in this clone" in base.relation


def test_apply_task_ams_the_series_and_refuses_a_dirty_tree(upstream_repo, patch_files) -> None:
    (upstream_repo / "sys" / "amd64" / "include" / "pmap.h").write_text("dirty\n")
    with pytest.raises(fseries.SeriesError, match="uncommitted changes"):
        fseries.apply_series(upstream_repo, patch_files, start="HEAD")
    assert _git(upstream_repo, "checkout", "--", ".").returncode == 0
    applied = fseries.apply_series(upstream_repo, patch_files, branch="mig", start="HEAD")
    assert applied == [p.name for p in patch_files]
    log = _git(upstream_repo, "log", "--format=%s", "-n", str(len(patch_files))).stdout
    subjects = [fseries.parse_patch_file(p).subject for p in patch_files]
    assert log.split("\n")[: len(patch_files)] == subjects[::-1]
    with pytest.raises(fseries.SeriesError, match="branch mig exists"):
        fseries.apply_series(upstream_repo, patch_files, branch="mig", start="HEAD~1")


def test_apply_task_names_the_first_patch_that_fails(upstream_repo, patch_files) -> None:
    first = patch_files[0]
    target = fseries.parse_patch_file(first).diffs
    upstream = next(p for p, d in target.items() if "new file mode" not in d)
    (upstream_repo / upstream).write_text("something else entirely\n")
    assert _git(upstream_repo, "commit", "-qam", "diverge").returncode == 0
    with pytest.raises(fseries.SeriesError, match=re.escape(first.name) + " does not apply"):
        fseries.apply_series(upstream_repo, patch_files, branch="mig2", start="HEAD")
    assert not (
        Path(_git(upstream_repo, "rev-parse", "--absolute-git-dir").stdout.strip()) / "rebase-apply"
    ).exists()


# ---------------------------------------------------------------------------- man pages

_OPENERS = {
    "Bl": "El",
    "Bd": "Ed",
    "Oo": "Oc",
    "Xo": "Xc",
    "Bo": "Bc",
    "Bk": "Ek",
    "Do": "Dc",
    "Po": "Pc",
    "Qo": "Qc",
    "So": "Sc",
    "Rs": "Re",
}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_OPEN_LINE = {"Bl": ".Bl -tag -width Ds", "Bd": ".Bd -literal"}
_IGNORED = ("referenced manual not found",)


def _macros(line: str) -> list[str]:
    if not line.startswith("."):
        return []
    words = line[1:].split()
    if not words:
        return []
    if words[0] in ("Bl", "Bd", "Sh", "It", "Ss"):
        rest = words[1:] if words[0] == "It" else []
        return [words[0]] + [w for w in rest if w in _OPENERS or w in _CLOSERS]
    return [w for w in words if w in _OPENERS or w in _CLOSERS]


def _scaffold(sim: SimFile, slots: list[Slot]) -> tuple[list[str], list[bool]]:
    """The page with every run of unknown lines replaced by just enough mdoc to keep the
    known regions in the blocks their context implies.  Returns lines and 'added' flags."""
    name = Path(sim.path).name.rsplit(".", 1)[0]
    regions: list[list[Slot]] = []
    for slot in slots:
        if slot.text is None:
            if not regions or regions[-1]:
                regions.append([])
        else:
            if not regions:
                regions.append([])
            regions[-1].append(slot)
    regions = [r for r in regions if r]
    out = [
        ".Dd January 1, 2026",
        f".Dt {name.upper()} 8",
        ".Os",
        ".Sh NAME",
        f".Nm {name}",
        ".Nd scaffold",
        ".Sh SYNOPSIS",
        ".Nm",
    ]
    flags = [False] * len(out)
    stack: list[str] = []
    section = "SYNOPSIS"
    for index, region in enumerate(regions):
        filler = [f".{_OPENERS[b]}" for b in reversed(stack)]
        stack = []
        needs: list[str] = []  # blocks the filler opens, outermost first
        outer: list[str] = []  # those of them still open
        local: list[str] = []  # blocks the region itself opened
        for slot in region:
            for macro in _macros(slot.text or ""):
                if macro == "Sh":
                    local, outer = [], []
                elif macro in _OPENERS:
                    local.append(macro)
                elif macro in _CLOSERS:
                    if local and local[-1] == _CLOSERS[macro]:
                        local.pop()
                    elif not local and outer and outer[-1] == _CLOSERS[macro]:
                        outer.pop()
                    elif not local:
                        needs.insert(0, _CLOSERS[macro])
                elif macro == "It" and "Bl" not in local and "Bl" not in outer:
                    needs.insert(0, "Bl")
                    outer.insert(0, "Bl")
        first = region[0].text or ""
        if index > 0 and section == "SYNOPSIS" and not first.startswith(".Sh"):
            filler.append(".Sh DESCRIPTION")
            section = "DESCRIPTION"
        for block in needs:
            filler.append(_OPEN_LINE.get(block, f".{block}"))
            if block == "Bl" and not first.startswith(".It"):
                filler += [".It Scaffold", "Scaffold text."]
        out += filler
        flags += [False] * len(filler)
        for slot in region:
            out.append(slot.text or "")
            flags.append(slot.added)
            if (slot.text or "").startswith(".Sh "):
                section = slot.text[4:].strip()  # type: ignore[index]
        stack = outer + local
    tail = [f".{_OPENERS[b]}" for b in reversed(stack)]
    return out + tail, flags + [False] * len(tail)


def _lint(lines: list[str], where: Path) -> list[tuple[int, str]]:
    where.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["mandoc", "-Tlint", str(where)], capture_output=True, text=True, check=False
    )
    out = []
    for line in (result.stdout + result.stderr).splitlines():
        match = re.match(r"mandoc: [^:]+:(\d+):\d+: (.*)$", line)
        if match:
            out.append((int(match.group(1)), match.group(2)))
        elif line.strip():
            out.append((0, line))
    return out


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
def test_man_page_additions_are_lint_clean(simulation, tmp_path) -> None:
    pages = [s for s in simulation.values() if re.search(r"\.[1-9]$", s.path)]
    assert pages, "the series touches no man page"
    problems = []
    for sim in pages:
        before, _ = _scaffold(sim, sim.pre_slots)
        after, added = _scaffold(sim, sim.state)
        old = Counter(re.sub(r"\d+", "N", m) for _, m in _lint(before, tmp_path / "before.8"))
        for line, msg in _lint(after, tmp_path / "after.8"):
            if any(i in msg for i in _IGNORED):
                continue
            kind = re.sub(r"\d+", "N", msg)
            on_added = 0 < line <= len(added) and added[line - 1]
            if on_added or old[kind] == 0:
                problems.append(f"{sim.path}: {after[line - 1] if line else ''!r}: {msg}")
            else:
                old[kind] -= 1
    assert not problems, "mandoc -Tlint:\n" + "\n".join(problems)


def test_strict_check_against_the_patches_own_preimages(tmp_path: Path) -> None:
    """Every patch applies in order, with no fuzz and no offset, to the upstream files as
    the series' own context describes them (CI has no FreeBSD tree)."""
    from harness import series_strict

    patches = fseries.read_series_list(ROOT / "patches")
    written = series_strict.rebuild_preimages(patches, tmp_path)
    assert "sys/amd64/amd64/pmap.c" in written
    results = series_strict.strict_check(tmp_path, patches)
    bad = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not bad, "\n".join(bad)


def test_strict_check_refuses_an_offset(tmp_path: Path) -> None:
    """A line inserted above a hunk is an offset patch(1) would explain away: refused."""
    from harness import series_strict

    patches = fseries.read_series_list(ROOT / "patches")
    series_strict.rebuild_preimages(patches, tmp_path)
    pmap = tmp_path / "sys/amd64/amd64/pmap.c"
    pmap.write_text("/* moved */\n" + pmap.read_text())
    results = series_strict.strict_check(tmp_path, patches)
    assert not results[0].ok and "offset" in results[0].detail.lower()
