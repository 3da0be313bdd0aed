"""Regenerate patches/hunks/ as real diffs of real upstream files.

`refresh(root, src)` walks the series in order over a scratch copy of the upstream files
it touches (taken from src, e.g. /work/upstream/15.0).  For each hunk file
(patches/hunks/NN-slug/<path>.diff) it applies the current hunks to the file as the
patches before it left it, allowing fuzz and offsets once (this is the porting step),
and then replaces the hunks with `git diff -U3` of the file before and after: every
context line is now the upstream line, at its real line number, with git's three lines
either side and git's end-of-file markers.  The '#' comments are kept.  A hunk that
does not apply even with fuzz is reported with patch(1)'s words and left as it was: edit
it (or the upstream file's copy in --keep DIR) by hand, then refresh again.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.series import SeriesError, hunk_dirs


@dataclass
class Refreshed:
    diff: Path
    status: str  # "unchanged", "rewritten", "missing upstream file", "does not apply: ..."


def _git_diff(before: Path, after: Path, path: str) -> list[str]:
    proc = subprocess.run(
        ["git", "diff", "--no-index", "--no-color", "-U3", str(before), str(after)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise SeriesError(f"git diff of {path} failed: {proc.stderr.strip()}")
    lines = proc.stdout.split("\n")
    start = next((i for i, x in enumerate(lines) if x.startswith("@@")), len(lines))
    body = lines[start:]
    while body and body[-1] == "":
        body.pop()
    return [f"--- a/{path}", f"+++ b/{path}", *body]


def refresh(root: Path, src: Path) -> list[Refreshed]:
    root, src = Path(root).resolve(), Path(src).resolve()
    out: list[Refreshed] = []
    with tempfile.TemporaryDirectory(prefix="series-refresh-") as tmp:
        work = Path(tmp)
        for directory in hunk_dirs(root):
            for diff in sorted(directory.glob("*.diff")):
                path = diff.name.removesuffix(".diff").replace("__", "/")
                current = work / "tree" / path
                if not current.is_file():
                    if not (src / path).is_file():
                        out.append(Refreshed(diff, "missing upstream file"))
                        continue
                    current.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / path, current)
                before = work / "before"
                shutil.copyfile(current, before)
                lines = diff.read_text().split("\n")
                head = [x for x in lines[: _first_header(lines)] if x.startswith("#")]
                body = "\n".join(lines[_first_header(lines) :])
                applied = subprocess.run(
                    ["patch", "-s", "-F3", "--no-backup-if-mismatch", "-r", "-", str(current)],
                    input=body,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if applied.returncode != 0:
                    shutil.copyfile(before, current)
                    said = (applied.stdout + applied.stderr).strip()
                    out.append(Refreshed(diff, f"does not apply: {said}"))
                    continue
                new = "\n".join([*head, *_git_diff(before, current, path)]) + "\n"
                if new == diff.read_text():
                    out.append(Refreshed(diff, "unchanged"))
                else:
                    diff.write_text(new)
                    out.append(Refreshed(diff, "rewritten"))
    return out


def _first_header(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if line.startswith("--- "):
            return i
    raise SeriesError("a hunk file without a '--- a/PATH' line")
