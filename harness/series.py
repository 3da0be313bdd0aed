"""The FreeBSD patch series, built from the tree and patches/hunks/.

Inputs (all in this repository):

- patches/hunks/NN-slug/PATCH.txt: a commit message (subject, blank line, body wrapped at
  72) and a `Files:` line, possibly continued on indented lines, naming the project files
  the patch adds (paths from the repository root; `name.[ch]` stands for name.c and
  name.h);
- patches/hunks/NN-slug/*.diff: unified-diff hunks against upstream FreeBSD files, each
  preceded by '#' comment lines saying which upstream version the context was read from
  and why the change is made;
- the project's own FreeBSD-layout files under sys/, lib/ and usr.sbin/;
- patches/cover-letter.txt: the hand-written cover letter, where `{size:PATH}` stands
  for the generated size of the change to upstream file PATH, `{count:upstream}` and
  `{count:patches}` for the number of upstream files and of patches.

Outputs (written by export(); `invoke patches.export`):

- patches/0000-cover-letter.patch and patches/NNNN-slug.patch in `git format-patch`
  form (the '#' comments stripped, the new files as `new file mode` diffs read from the
  tree, so that the series and the tree never drift apart);
- patches/series, the patch files in order;
- patches/BASE, the base commit and where each hunk's context was read from.

The cover letter carries a `base-commit:` line, which harness.freebsd.find_series()
reads.  Every project file must be added by exactly one patch; anything else is a
SeriesError naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

PROJECT_DIRS = ("sys", "lib", "usr.sbin")
SUBJECT_PREFIXES = ("vmm:", "bhyve:", "bhyvectl:", "libvmmapi:", "amd64:", "vm:")
WRAP = 72
STAT_WIDTH = 72  # git format-patch's diffstat width (MAIL_DEFAULT_WRAP)
NAME_MAX = 64  # git format-patch's file name limit
ZERO_COMMIT = "0" * 40
ZERO_BLOB = "0000000"
AUTHOR = "bhyve-migration developers <dev@bhyve-migration.invalid>"
# The series' date: the first patch is dated here, each next one a minute later, so that
# `git am` keeps their order in author dates.  Change it when the series is reissued.
SERIES_DATE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SIGNATURE = "harness/series.py"
COVER_SUBJECT = "bhyve live migration"
BRANCH = "bhyvemig"
GIT_IDENTITY = ["-c", "user.name=bhyvemig harness", "-c", "user.email=bhyvemig@localhost"]


class SeriesError(Exception):
    """The series cannot be built or checked; the message names the file and the reason."""


@dataclass(frozen=True)
class Base:
    """The upstream commit the series applies to, and how it was identified."""

    release: str
    branch: str
    tag: str
    commit: str
    evidence: str


BASE = Base(
    release="FreeBSD 15.0-RELEASE",
    branch="releng/15.0",
    tag="release/15.0.0",
    commit="7aedc8de6446ad5a10d553b926423c689f0a3363",
    evidence=(
        "15.0-RELEASE kernels identify themselves as releng/15.0-n280995-7aedc8de6446, "
        "and the freebsd/freebsd-src copy of sys/conf/newvers.sh at commit "
        '7aedc8de6446ad5a10d553b926423c689f0a3363 reads REVISION="15.0", '
        'BRANCH="RELEASE" (read through the project\'s code search, not from a '
        "checkout).  On a checkout, `git rev-parse release/15.0.0^{commit}` must print "
        "the same commit; `invoke patches.check --src DIR` verifies it."
    ),
)


# ---------------------------------------------------------------------------- diffs


@dataclass
class Hunk:
    """One @@ hunk: its header numbers and its lines, each with its ' ', '-', '+' or '\\'."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: list[str]
    section: str = ""  # text after the closing @@, if any

    def header(self) -> str:
        def rng(start: int, count: int) -> str:
            return f"{start}" if count == 1 else f"{start},{count}"

        old = rng(self.old_start, self.old_count)
        new = rng(self.new_start, self.new_count)
        tail = f" {self.section}" if self.section else ""
        return f"@@ -{old} +{new} @@{tail}"

    @property
    def added(self) -> int:
        return sum(1 for line in self.lines if line.startswith("+"))

    @property
    def removed(self) -> int:
        return sum(1 for line in self.lines if line.startswith("-"))


@dataclass
class FileDiff:
    """The change a patch makes to one file: hunks against upstream, or a new file."""

    path: str
    hunks: list[Hunk]
    new_file: bool = False
    blob: str | None = None  # git blob id of a new file
    source: Path | None = None  # the .diff it came from
    comments: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(h.added for h in self.hunks)

    @property
    def removed(self) -> int:
        return sum(h.removed for h in self.hunks)

    def render(self) -> str:
        """The diff in git's form: `diff --git`, (new file) mode and index, ---/+++, hunks."""
        out = [f"diff --git a/{self.path} b/{self.path}"]
        if self.new_file:
            out += ["new file mode 100644", f"index {ZERO_BLOB}..{self.blob}"]
            if not self.hunks:  # an empty new file has no ---/+++ lines
                return "\n".join(out) + "\n"
            out += ["--- /dev/null", f"+++ b/{self.path}"]
        else:
            out += [f"--- a/{self.path}", f"+++ b/{self.path}"]
        for hunk in self.hunks:
            out.append(hunk.header())
            out.extend(hunk.lines)
        return "\n".join(out) + "\n"


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")


def parse_hunks(lines: Sequence[str], origin: str) -> list[Hunk]:
    """Parse the hunks of one file's diff body, checking every header's line counts."""
    hunks: list[Hunk] = []
    cur: Hunk | None = None
    for num, line in enumerate(lines, 1):
        match = _HUNK_RE.match(line)
        if match:
            old_start, old_count, new_start, new_count, section = match.groups()
            cur = Hunk(
                int(old_start),
                1 if old_count is None else int(old_count),
                int(new_start),
                1 if new_count is None else int(new_count),
                [],
                section,
            )
            hunks.append(cur)
        elif cur is None:
            raise SeriesError(f"{origin}: line {num}: expected a @@ hunk header, got {line!r}")
        elif line[:1] in (" ", "-", "+", "\\"):
            cur.lines.append(line)
        elif line == "":
            # Editors strip the single space of an empty context line.
            cur.lines.append(" ")
        else:
            raise SeriesError(f"{origin}: line {num}: not a diff line: {line!r}")
    if not hunks:
        raise SeriesError(f"{origin}: no @@ hunks")
    for index, hunk in enumerate(hunks, 1):
        old = sum(1 for x in hunk.lines if x[:1] in (" ", "-"))
        new = sum(1 for x in hunk.lines if x[:1] in (" ", "+"))
        if (old, new) != (hunk.old_count, hunk.new_count):
            raise SeriesError(
                f"{origin}: hunk {index} ({hunk.header()}) has {old} old and {new} new "
                f"lines, its header says {hunk.old_count} and {hunk.new_count}"
            )
    return hunks


def read_hunk_file(path: Path) -> FileDiff:
    """Read a patches/hunks/*/*.diff: leading '#' comments, ---/+++ naming one upstream
    file, then its hunks."""
    lines = path.read_text().splitlines()
    comments: list[str] = []
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        if lines[i].startswith("#"):
            comments.append(lines[i])
        i += 1
    if (
        i + 1 >= len(lines)
        or not lines[i].startswith("--- ")
        or not lines[i + 1].startswith("+++ ")
    ):
        raise SeriesError(f"{path}: expected '--- a/PATH' and '+++ b/PATH' after the comments")
    old = lines[i][4:].split("\t")[0].strip()
    new = lines[i + 1][4:].split("\t")[0].strip()
    if not old.startswith("a/") or not new.startswith("b/") or old[2:] != new[2:]:
        raise SeriesError(f"{path}: ---/+++ must name the same upstream file as a/PATH b/PATH")
    upstream = new[2:]
    expected = path.name.removesuffix(".diff").replace("__", "/")
    if upstream != expected:
        raise SeriesError(f"{path}: the diff is for {upstream}, its name says {expected}")
    hunks = parse_hunks(lines[i + 2 :], str(path))
    return FileDiff(upstream, hunks, source=path, comments=comments)


def git_blob_id(data: bytes) -> str:
    """The id `git hash-object` gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def new_file_diff(root: Path, relpath: str) -> FileDiff:
    """A `new file mode 100644` diff adding the tree's file relpath."""
    data = (root / relpath).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SeriesError(f"{relpath}: not UTF-8 text ({exc})") from exc
    lines = text.split("\n")
    no_eol = lines[-1] != ""
    if not no_eol:
        lines.pop()
    hunks = []
    if lines:
        body = ["+" + x for x in lines]
        if no_eol:
            body.append("\\ No newline at end of file")
        hunks.append(Hunk(0, 0, 1, len(lines), body))
    return FileDiff(relpath, hunks, new_file=True, blob=git_blob_id(data))


# ---------------------------------------------------------------------------- patches


@dataclass
class Patch:
    """One patch of the series, from one patches/hunks/ directory."""

    number: int
    directory: Path
    subject: str
    body: list[str]
    files: list[str]  # project files it adds
    upstream: list[FileDiff]  # its hunks against upstream files

    diffs: list[FileDiff] = field(default_factory=list)  # everything, sorted by path

    @property
    def slug(self) -> str:
        return self.directory.name.split("-", 1)[1] if "-" in self.directory.name else ""

    def file_name(self) -> str:
        return patch_file_name(self.number, self.subject)


def patch_file_name(number: int, subject: str) -> str:
    """git format-patch's name: NNNN-<sanitized subject>.patch, at most 64 characters."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", subject)
    slug = re.sub(r"\.\.+", ".", slug).strip(".-")
    prefix, suffix = f"{number:04d}-", ".patch"
    slug = slug[: NAME_MAX - len(prefix) - len(suffix)].rstrip(".-")
    return f"{prefix}{slug}{suffix}"


def parse_patch_txt(path: Path) -> tuple[str, list[str], list[str]]:
    """Split a PATCH.txt into subject, body lines and the tokens of its `Files:` line."""
    lines = path.read_text().splitlines()
    if not lines or not lines[0].strip():
        raise SeriesError(f"{path}: the first line must be the subject")
    subject = lines[0].strip()
    if len(lines) > 1 and lines[1].strip():
        raise SeriesError(f"{path}: the subject must be followed by a blank line")
    body: list[str] = []
    tokens: list[str] | None = None
    in_files = False
    for line in lines[2:]:
        if line.startswith("Files:"):
            if tokens is not None:
                raise SeriesError(f"{path}: more than one Files: line")
            tokens = line[len("Files:") :].split()
            in_files = True
        elif in_files and line[:1] in (" ", "\t") and line.strip():
            tokens += line.split()  # type: ignore[operator]
        else:
            in_files = False
            body.append(line.rstrip())
    if tokens is None:
        raise SeriesError(f"{path}: no Files: line (write `Files:` alone if it adds none)")
    while body and not body[-1]:
        body.pop()
    while body and not body[0]:
        body.pop(0)
    return subject, body, tokens


def expand_files(root: Path, tokens: Iterable[str], origin: Path) -> list[str]:
    """Expand a Files: line's tokens (with `[ch]`-style globs) to existing project files."""
    out: list[str] = []
    for token in tokens:
        if token.startswith("/") or ".." in Path(token).parts:
            raise SeriesError(f"{origin}: Files: {token!r} must be relative to the repository")
        if not token.startswith(tuple(d + "/" for d in PROJECT_DIRS)):
            raise SeriesError(f"{origin}: Files: {token!r} is not under {', '.join(PROJECT_DIRS)}")
        if any(c in token for c in "*?["):
            matches = sorted(p.relative_to(root).as_posix() for p in root.glob(token))
            if not matches:
                raise SeriesError(f"{origin}: Files: {token!r} matches no file in the tree")
            out.extend(matches)
        elif (root / token).is_file():
            out.append(token)
        else:
            raise SeriesError(f"{origin}: Files: {token} does not exist in the tree")
    dups = sorted({f for f in out if out.count(f) > 1})
    if dups:
        raise SeriesError(f"{origin}: Files: lists {', '.join(dups)} more than once")
    return out


def project_files(root: Path) -> list[str]:
    """The project's FreeBSD-layout files: everything under sys/, lib/ and usr.sbin/ that
    git tracks or would track (untracked files count too; ignored ones do not)."""
    dirs = [d for d in PROJECT_DIRS if (root / d).is_dir()]
    if not dirs:
        return []
    if (root / ".git").exists():
        result = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
                "--",
                *dirs,
            ],
            capture_output=True,
            check=False,
        )
        if result.returncode == 0:
            names = {n for n in result.stdout.decode().split("\0") if n}
            return sorted(n for n in names if (root / n).is_file())
    return sorted(
        p.relative_to(root).as_posix() for d in dirs for p in (root / d).rglob("*") if p.is_file()
    )


@dataclass
class Series:
    """The whole series: patches in order, the base and the cover letter's text."""

    root: Path
    patches: list[Patch]
    base: Base
    cover_text: str

    @property
    def total(self) -> int:
        return len(self.patches)

    def upstream_files(self) -> dict[str, list[tuple[Patch, FileDiff]]]:
        out: dict[str, list[tuple[Patch, FileDiff]]] = {}
        for patch in self.patches:
            for diff in patch.upstream:
                out.setdefault(diff.path, []).append((patch, diff))
        return dict(sorted(out.items()))


def hunk_dirs(root: Path) -> list[Path]:
    """patches/hunks/NN-slug directories in order; the numbers must run 01, 02, ..."""
    hunks = root / "patches" / "hunks"
    if not hunks.is_dir():
        raise SeriesError(f"{hunks}: no such directory (the series' sources)")
    dirs = sorted(d for d in hunks.iterdir() if d.is_dir() and not d.name.startswith("."))
    for index, d in enumerate(dirs, 1):
        match = re.fullmatch(r"(\d\d)-[a-z0-9][a-z0-9.-]*", d.name)
        if not match:
            raise SeriesError(f"{d}: patch directories are named NN-slug (e.g. 01-pmap)")
        if int(match.group(1)) != index:
            raise SeriesError(f"{d}: expected number {index:02d}: the numbers must run 01, 02, ...")
    if not dirs:
        raise SeriesError(f"{hunks}: no patch directories")
    return dirs


def load_series(root: Path) -> Series:
    """Read patches/hunks/ and the tree; check that every project file is added by exactly
    one patch and that every hunk header is consistent."""
    root = Path(root).resolve()
    patches: list[Patch] = []
    added_by: dict[str, list[str]] = {}
    for number, directory in enumerate(hunk_dirs(root), 1):
        txt = directory / "PATCH.txt"
        if not txt.is_file():
            raise SeriesError(f"{directory}: no PATCH.txt (commit message and Files: line)")
        subject, body, tokens = parse_patch_txt(txt)
        files = expand_files(root, tokens, txt)
        upstream = [read_hunk_file(p) for p in sorted(directory.glob("*.diff"))]
        if not files and not upstream:
            raise SeriesError(f"{directory}: the patch changes nothing")
        for name in files:
            added_by.setdefault(name, []).append(directory.name)
        patch = Patch(number, directory, subject, body, files, upstream)
        new = [new_file_diff(root, f) for f in files]
        clash = {d.path for d in upstream} & set(files)
        if clash:
            raise SeriesError(f"{directory}: {', '.join(sorted(clash))} both added and patched")
        patch.diffs = sorted(upstream + new, key=lambda d: d.path)
        patches.append(patch)

    problems = []
    for name in project_files(root):
        owners = added_by.get(name, [])
        if not owners:
            problems.append(f"{name} is added by no patch (list it on a Files: line)")
        elif len(owners) > 1:
            problems.append(f"{name} is added by more than one patch: {', '.join(owners)}")
    if problems:
        raise SeriesError("project files and the series disagree:\n  " + "\n  ".join(problems))

    cover_path = root / "patches" / "cover-letter.txt"
    cover = cover_path.read_text() if cover_path.is_file() else ""
    if not cover.strip():
        raise SeriesError(f"{cover_path}: missing or empty (the hand-written cover letter)")
    return Series(root, patches, BASE, cover)


# ---------------------------------------------------------------------------- formatting


def _scale(it: int, width: int, max_change: int) -> int:
    """git's scale_linear(): 0 stays 0, anything else gets at least one column."""
    if it == 0 or max_change == 0:
        return 0
    return 1 + (it * (width - 1) // max_change)


def diffstat(diffs: Sequence[FileDiff]) -> list[str]:
    """A diffstat in git's layout (width 72), with the summary and `create mode` lines."""
    merged: dict[str, list[int]] = {}
    created: list[str] = []
    for d in diffs:
        counts = merged.setdefault(d.path, [0, 0])
        counts[0] += d.added
        counts[1] += d.removed
        if d.new_file:
            created.append(d.path)
    if not merged:
        return [" 0 files changed"]
    names = sorted(merged)
    max_change = max(a + r for a, r in merged.values())
    number_width = len(str(max_change))
    name_width = max(len(n) for n in names)
    graph_width = max_change
    if name_width + number_width + 6 + graph_width > STAT_WIDTH:
        graph_cap = max(STAT_WIDTH * 3 // 8 - number_width - 6, 6)
        graph_width = min(graph_width, graph_cap)
        name_width = min(name_width, STAT_WIDTH - number_width - 6 - graph_width)
        graph_width = STAT_WIDTH - number_width - 6 - name_width
        graph_width = min(graph_width, max_change)
    out = []
    for name in names:
        add, rem = merged[name]
        shown = name if len(name) <= name_width else "..." + name[-(name_width - 3) :]
        if max_change > graph_width:
            total = _scale(add + rem, graph_width, max_change)
            if total < 2 and add and rem:
                total = 2
            if add < rem:
                plus = _scale(add, graph_width, max_change)
                minus = total - plus
            else:
                minus = _scale(rem, graph_width, max_change)
                plus = total - minus
        else:
            plus, minus = add, rem
        count = str(add + rem).rjust(number_width)
        out.append(f" {shown.ljust(name_width)} | {count} {'+' * plus}{'-' * minus}".rstrip())
    adds = sum(a for a, _ in merged.values())
    rems = sum(r for _, r in merged.values())
    summary = f" {len(names)} file{'s' if len(names) != 1 else ''} changed"
    if adds or not rems:
        summary += f", {adds} insertion{'s' if adds != 1 else ''}(+)"
    if rems:
        summary += f", {rems} deletion{'s' if rems != 1 else ''}(-)"
    out.append(summary)
    out.extend(f" create mode 100644 {name}" for name in sorted(created))
    return out


def _date(number: int) -> str:
    return format_datetime(SERIES_DATE + timedelta(minutes=number))


def _mail_header(number: int, total: int, subject: str) -> list[str]:
    width = len(str(total)) if total >= 10 else 2
    return [
        f"From {ZERO_COMMIT} Mon Sep 17 00:00:00 2001",
        f"From: {AUTHOR}",
        f"Date: {_date(number)}",
        f"Subject: [PATCH {number:0{width}d}/{total:0{width}d}] {subject}",
        "",
    ]


def format_patch(patch: Patch, total: int) -> str:
    """One patch in `git format-patch` form."""
    out = _mail_header(patch.number, total, patch.subject)
    out += patch.body
    out += ["", "---", *diffstat(patch.diffs), ""]
    text = "\n".join(out) + "\n" + "".join(d.render() for d in patch.diffs)
    return text + f"-- \n{SIGNATURE}\n\n"


_SIZE_RE = re.compile(r"\{size:([^}\s]+)\}")


def _size(series: Series, path: str) -> str:
    changes = series.upstream_files().get(path)
    if not changes:
        raise SeriesError(f"cover-letter.txt: {{size:{path}}}: no patch changes {path}")
    adds = sum(d.added for _, d in changes)
    rems = sum(d.removed for _, d in changes)
    which = ", ".join(f"{p.number:02d}" for p, _ in changes)
    return f"+{adds} -{rems}, patch{'es' if len(changes) > 1 else ''} {which}"


def render_cover_text(series: Series) -> str:
    """cover-letter.txt with every {size:PATH}, {count:upstream} and {count:patches} filled
    in; every upstream file the series touches must have a {size:PATH}."""
    text = series.cover_text
    named = set(_SIZE_RE.findall(text))
    missing = sorted(set(series.upstream_files()) - named)
    if missing:
        raise SeriesError(
            "cover-letter.txt: the list of upstream files lacks "
            + ", ".join(missing)
            + " (add a line with {size:PATH} and the reason)"
        )
    text = text.replace("{count:upstream}", str(len(series.upstream_files())))
    text = text.replace("{count:patches}", str(series.total))
    return _SIZE_RE.sub(lambda m: _size(series, m.group(1)), text).rstrip("\n")


def format_cover(series: Series) -> str:
    """patches/0000-cover-letter.patch: the letter, a shortlog, the series' diffstat and
    the base-commit line, as `git format-patch --cover-letter --base` writes them."""
    out = _mail_header(0, series.total, COVER_SUBJECT)
    out += render_cover_text(series).split("\n")
    name = AUTHOR.split(" <")[0]
    out += ["", f"{name} ({series.total}):"]
    for patch in series.patches:
        out += textwrap.wrap(patch.subject, 76, initial_indent="  ", subsequent_indent="    ")
    all_diffs = [d for p in series.patches for d in p.diffs]
    out += ["", *diffstat(all_diffs), "", "", f"base-commit: {series.base.commit}"]
    return "\n".join(out) + f"\n-- \n{SIGNATURE}\n\n"


def _context_source(diff: FileDiff) -> str:
    """What a .diff's comments say its context was read from."""
    text: list[str] = []
    taking = False
    for line in diff.comments:
        body = line.lstrip("#").strip()
        if re.match(r"(Context (read )?from|Context read from):?", body):
            taking = True
            body = re.sub(r"^Context (read )?from:\s*", "", body)
        elif re.match(r"(Why|Upstream( file)?):", body):
            taking = False
        if taking and body:
            text.append(body)
    if not text:
        raise SeriesError(f"{diff.source}: no '# Context from:' comment naming its version")
    return " ".join(text)


def render_base(series: Series) -> str:
    """patches/BASE: the base commit and where each hunk's context was read from."""
    base = series.base
    out = [
        f"Base: {base.release}",
        f"branch: {base.branch}",
        f"tag:    {base.tag}",
        f"commit: {base.commit}",
        "",
        *textwrap.wrap("How it was identified: " + base.evidence, WRAP, break_on_hyphens=False),
        "",
        *textwrap.wrap(
            "Where each hunk's context was read from.  The 15.0-RELEASE tag itself was not "
            "readable here; each upstream file below is the stored version that stands for "
            "it (whole files, gathered outside the repository with their provenance).  The "
            "hunks are `git diff -U3` of those files (`invoke patches.refresh`), and `invoke "
            "patches.check --src DIR` applies each patch in order with no fuzz and no "
            "offset.  Every file below was gathered whole; none is the 15.0-RELEASE blob itself, "
            "and the ones taken from forks of main or older than 15.0 say so below.",
            WRAP,
        ),
        "",
        "patch  upstream file / context read from",
        "-----  " + "-" * (WRAP - 7),
    ]
    for patch in series.patches:
        for diff in patch.upstream:
            out.append(f"{patch.number:02d}     {diff.path}")
            out += textwrap.wrap(
                _context_source(diff),
                WRAP,
                initial_indent=" " * 7,
                subsequent_indent=" " * 7,
                break_long_words=False,
                break_on_hyphens=False,
            )
    return "\n".join(out) + "\n"


def render_series_list(series: Series) -> str:
    return "".join(p.file_name() + "\n" for p in series.patches)


def series_outputs(series: Series) -> dict[str, str]:
    """Every generated file of patches/, by name."""
    files = {"0000-cover-letter.patch": format_cover(series)}
    for patch in series.patches:
        files[patch.file_name()] = format_patch(patch, series.total)
    files["series"] = render_series_list(series)
    files["BASE"] = render_base(series)
    return files


def export(root: Path, out_dir: Path | None = None) -> list[str]:
    """Write the series into out_dir (default root/patches); remove stale *.patch files.
    Returns the names written or removed because they changed; [] when up to date."""
    root = Path(root).resolve()
    series = load_series(root)
    outputs = series_outputs(series)
    out = Path(out_dir) if out_dir is not None else root / "patches"
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in outputs.items():
        path = out / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(name)
    for stale in sorted(out.glob("*.patch")):
        if stale.name not in outputs:
            stale.unlink()
            changed.append(stale.name)
    return changed


# ---------------------------------------------------------------------------- parsing


@dataclass
class ParsedPatch:
    """What a generated .patch file says (for checks and tests)."""

    path: Path
    from_line: str
    author: str
    date: str
    subject: str  # without the [PATCH n/m] prefix
    number: int
    total: int
    body: list[str]
    stat: list[str]
    diffs: dict[str, str]  # path -> that file's diff text


def parse_patch_file(path: Path) -> ParsedPatch:
    """Parse a format-patch file; SeriesError naming what is missing."""
    text = path.read_text()
    lines = text.split("\n")
    if not re.fullmatch(r"From [0-9a-f]{40} Mon Sep 17 00:00:00 2001", lines[0]):
        raise SeriesError(f"{path}: the first line is not a format-patch 'From <hash> ...' line")
    headers: dict[str, str] = {}
    i = 1
    while i < len(lines) and lines[i]:
        key, _, value = lines[i].partition(": ")
        headers[key] = value
        i += 1
    for key in ("From", "Date", "Subject"):
        if key not in headers:
            raise SeriesError(f"{path}: no {key}: header")
    match = re.fullmatch(r"\[PATCH (\d+)/(\d+)\] (.+)", headers["Subject"])
    if not match:
        raise SeriesError(f"{path}: Subject is not '[PATCH n/m] ...'")
    try:
        sep = lines.index("---", i)
    except ValueError:
        sep = -1
    if int(match.group(1)) == 0:  # the cover letter has no --- line
        body = lines[i + 1 :]
        return ParsedPatch(
            path,
            lines[0],
            headers["From"],
            headers["Date"],
            match.group(3),
            0,
            int(match.group(2)),
            body,
            [],
            {},
        )
    if sep < 0:
        raise SeriesError(f"{path}: no '---' line before the diffstat")
    body = lines[i + 1 : sep]
    while body and not body[-1]:
        body.pop()
    j = sep + 1
    stat = []
    while j < len(lines) and lines[j] and not lines[j].startswith("diff --git "):
        stat.append(lines[j])
        j += 1
    if not stat or not re.search(r"\d+ files? changed", "\n".join(stat)):
        raise SeriesError(f"{path}: no diffstat after '---'")
    diffs: dict[str, str] = {}
    cur: str | None = None
    chunk: list[str] = []
    for line in lines[j:]:
        if line == "-- ":
            break
        if line.startswith("diff --git "):
            if cur is not None:
                diffs[cur] = "\n".join(chunk) + "\n"
            cur = line.split(" b/", 1)[1]
            chunk = [line]
        elif cur is not None:
            chunk.append(line)
    if cur is not None:
        diffs[cur] = "\n".join(chunk).rstrip("\n") + "\n"
    if not diffs:
        raise SeriesError(f"{path}: no diffs")
    return ParsedPatch(
        path,
        lines[0],
        headers["From"],
        headers["Date"],
        match.group(3),
        int(match.group(1)),
        int(match.group(2)),
        body,
        stat,
        diffs,
    )


def read_series_list(patches_dir: Path) -> list[Path]:
    """The patch files named by patches/series, in order."""
    listing = patches_dir / "series"
    if not listing.is_file():
        raise SeriesError(f"{listing}: missing; run `invoke patches.export`")
    names = [n.strip() for n in listing.read_text().splitlines()]
    paths = [patches_dir / n for n in names if n and not n.startswith("#")]
    for p in paths:
        if not p.is_file():
            raise SeriesError(f"{listing}: {p.name} does not exist; run `invoke patches.export`")
    return paths


# ---------------------------------------------------------------------------- a checkout


def _git(src: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(src), *args], capture_output=True, text=True, check=False, env=env
    )


def _require_checkout(src: Path) -> None:
    if not src.is_dir():
        raise SeriesError(f"{src}: no such directory (a git checkout of freebsd-src)")
    if _git(src, "rev-parse", "--git-dir").returncode != 0:
        raise SeriesError(f"{src}: not a git checkout (clone freebsd-src there first)")


@dataclass
class BaseCheck:
    head: str
    base_present: bool
    relation: str  # "is the base", "N commits on top of the base", ...
    ok: bool


def check_base(src: Path, base: Base = BASE) -> BaseCheck:
    """Where the checkout's HEAD stands relative to the series' base."""
    _require_checkout(src)
    head = _git(src, "rev-parse", "HEAD").stdout.strip()
    present = _git(src, "cat-file", "-e", base.commit + "^{commit}").returncode == 0
    if head == base.commit:
        return BaseCheck(head, True, f"HEAD is the base ({base.release})", True)
    if not present:
        return BaseCheck(
            head,
            False,
            f"the base {base.commit[:12]} ({base.tag}) is not in this clone; "
            f"`git -C {src} fetch origin {base.tag}` fetches it",
            False,
        )
    if _git(src, "merge-base", "--is-ancestor", base.commit, "HEAD").returncode == 0:
        count = _git(src, "rev-list", "--count", f"{base.commit}..HEAD").stdout.strip()
        return BaseCheck(head, True, f"HEAD is {count} commits on top of the base", False)
    return BaseCheck(head, True, f"HEAD {head[:12]} does not contain the base", False)


@dataclass
class PatchResult:
    name: str
    ok: bool
    detail: str = ""


def check_apply(src: Path, patches: Sequence[Path], rev: str = "HEAD") -> list[PatchResult]:
    """`git apply --check` each patch in order against rev, each on top of the ones before
    it that applied.  Uses a temporary index: the checkout's files and index stay as they
    are."""
    _require_checkout(src)
    results = []
    with tempfile.TemporaryDirectory(prefix="series-check-") as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"))
        read = _git(src, "read-tree", rev, env=env)
        if read.returncode != 0:
            raise SeriesError(f"{src}: git read-tree {rev} failed: {read.stderr.strip()}")
        for patch in patches:
            check = _git(src, "apply", "--cached", "--check", str(patch.resolve()), env=env)
            if check.returncode != 0:
                results.append(PatchResult(patch.name, False, check.stderr.strip()))
                continue
            applied = _git(src, "apply", "--cached", str(patch.resolve()), env=env)
            results.append(PatchResult(patch.name, applied.returncode == 0, applied.stderr.strip()))
    return results


def apply_series(
    src: Path,
    patches: Sequence[Path],
    branch: str = BRANCH,
    start: str | None = None,
    force: bool = False,
) -> list[str]:
    """`git am` the patches onto a new branch started at start (default: the base).
    Refuses a dirty tree, an unfinished am or rebase, and an existing branch unless force.
    On the first patch that fails, aborts that am and raises SeriesError naming it; the
    branch keeps the patches before it.  Returns the names applied."""
    _require_checkout(src)
    status = _git(src, "status", "--porcelain", "--untracked-files=no")
    if status.stdout.strip():
        raise SeriesError(
            f"{src} has uncommitted changes; commit or stash them first:\n{status.stdout.rstrip()}"
        )
    git_dir = Path(_git(src, "rev-parse", "--absolute-git-dir").stdout.strip())
    for busy in ("rebase-apply", "rebase-merge"):
        if (git_dir / busy).exists():
            raise SeriesError(
                f"{src}: a git am or rebase is in progress ({git_dir / busy}); "
                "finish or abort it first"
            )
    start = start or BASE.commit
    if _git(src, "cat-file", "-e", start + "^{commit}").returncode != 0:
        raise SeriesError(
            f"{src}: {start} is not a commit here; fetch it first (`git fetch origin {BASE.tag}`)"
        )
    exists = _git(src, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").returncode == 0
    if exists and not force:
        raise SeriesError(f"{src}: branch {branch} exists; pass --force to reset it to {start}")
    co = _git(src, "checkout", "--quiet", "-B" if force else "-b", branch, start)
    if co.returncode != 0:
        raise SeriesError(f"{src}: git checkout -b {branch} {start} failed: {co.stderr.strip()}")
    identity = [] if _git(src, "config", "user.email").stdout.strip() else GIT_IDENTITY
    applied = []
    for patch in patches:
        am = subprocess.run(
            ["git", "-C", str(src), *identity, "am", "--3way", str(patch.resolve())],
            capture_output=True,
            text=True,
            check=False,
        )
        if am.returncode != 0:
            _git(src, "am", "--abort")
            done = f"; {branch} holds the {len(applied)} before it" if applied else ""
            raise SeriesError(
                f"{patch.name} does not apply to {src}{done}.  git am said:\n"
                + (am.stdout + am.stderr).strip()
            )
        applied.append(patch.name)
    return applied
