"""Strict application of the series: every patch in order, no fuzz, no unexplained offset.

`strict_check(src, patches)` copies the upstream files the series touches out of src (a
FreeBSD src tree, git checkout or not) into a scratch directory and, for each patch in
order, runs `git apply --check` and `patch --dry-run -p1 -F0`; a patch fails if either
refuses it or if patch(1) reports any fuzz or offset (a hunk whose line numbers are not
where its context is: the diff was not made against this file).  A patch that passes is
applied, so the next one is checked against the result.

`rebuild_preimages(patches, dest)` writes the upstream files as the patches' own context
and removed lines describe them (unknown lines become filler), so that the strict check
runs in CI where no FreeBSD tree exists: it proves that line numbers, counts, context
shared between patches and end-of-file markers agree with each other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.series import SeriesError, parse_hunks, parse_patch_file


@dataclass
class StrictResult:
    name: str
    ok: bool
    detail: str = ""


_NOISE = re.compile(r"(offset|fuzz)", re.IGNORECASE)


def touched_files(patches: Sequence[Path]) -> dict[str, bool]:
    """Every path the patches touch -> whether it exists before the series."""
    out: dict[str, bool] = {}
    for patch in patches:
        for path, text in parse_patch_file(patch).diffs.items():
            new = "\nnew file mode " in "\n" + text
            out.setdefault(path, not new)
    return out


def _without(patch: Path, missing: set[str], dest: Path) -> Path:
    """A copy of patch without the diffs of the files in missing."""
    text = patch.read_text()
    parts = re.split(r"(?m)^(?=diff --git )", text)
    keep = [parts[0]] + [
        part for part in parts[1:] if part.split("\n", 1)[0].split(" b/", 1)[1] not in missing
    ]
    out = dest / patch.name
    out.write_text("".join(keep))
    return out


def strict_check(
    src: Path, patches: Sequence[Path], allow_missing: bool = False
) -> list[StrictResult]:
    """Check each patch in order; with allow_missing, a patch's diffs of upstream files
    src lacks are left out and the result says which (the rest is still checked)."""
    src = Path(src)
    if not src.is_dir():
        raise SeriesError(f"{src}: no such directory (a FreeBSD src tree)")
    missing = {p for p, pre in touched_files(patches).items() if pre and not (src / p).is_file()}
    if missing and not allow_missing:
        raise SeriesError(f"{src}: the series patches files it lacks: {', '.join(sorted(missing))}")
    results = []
    with tempfile.TemporaryDirectory(prefix="series-strict-") as tmp:
        work = Path(tmp)
        for path, pre in touched_files(patches).items():
            if pre and path not in missing:
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / path, work / path)
        trimmed = Path(tmp) / ".trimmed"
        trimmed.mkdir()
        for patch in patches:
            lacks = sorted(set(parse_patch_file(patch).diffs) & missing)
            use = _without(patch.resolve(), set(lacks), trimmed) if lacks else patch.resolve()
            result = _check_one(work, use)
            result.name = patch.name
            if lacks:
                result.detail += f" (not checked, missing from {src}: {', '.join(lacks)})"
            results.append(result)
            if result.ok:
                subprocess.run(["git", "apply", str(use)], cwd=work, check=True)
    return results


def _check_one(work: Path, patch: Path) -> StrictResult:
    git = subprocess.run(
        ["git", "apply", "--check", "-v", str(patch)],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    if git.returncode != 0:
        return StrictResult(patch.name, False, "git apply --check: " + git.stderr.strip())
    dry = subprocess.run(
        ["patch", "-p1", "--dry-run", "-F0", "-N", "-i", str(patch)],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    said = "\n".join(
        line
        for line in (dry.stdout + dry.stderr).splitlines()
        if not line.startswith("checking file ")
    ).strip()
    if dry.returncode != 0 or _NOISE.search(said):
        return StrictResult(patch.name, False, "patch --dry-run -F0: " + said)
    return StrictResult(patch.name, True, "git apply --check and patch -F0: exact")


class _Cell:
    """One upstream line; unknown until some hunk names it."""

    __slots__ = ("text",)

    def __init__(self, text: str | None = None) -> None:
        self.text = text


def rebuild_preimages(patches: Sequence[Path], dest: Path) -> list[str]:
    """Write the upstream files the patches describe into dest; returns their paths."""
    base: dict[str, list[_Cell]] = {}
    cur: dict[str, list[_Cell]] = {}
    eol: dict[str, bool] = {}
    for patch in patches:
        for path, text in parse_patch_file(patch).diffs.items():
            if "\nnew file mode " in "\n" + text:
                continue
            body = text.split("\n")
            start = next(i for i, line in enumerate(body) if line.startswith("@@"))
            lines = [x for x in body[start:] if x != ""]
            hunks = parse_hunks(lines, f"{patch.name}: {path}")
            if path not in cur:
                size = max(h.old_start + h.old_count - 1 for h in hunks)
                cells = [_Cell() for _ in range(size)]
                base[path], cur[path] = cells, list(cells)
            cells = cur[path]
            for hunk in reversed(hunks):
                at = hunk.old_start - 1 if hunk.old_count else hunk.old_start
                while len(cells) < at + hunk.old_count:
                    extra = _Cell()
                    cells.append(extra)
                    base[path].append(extra)
                new: list[_Cell] = []
                pos = at
                for i, line in enumerate(hunk.lines):
                    tag, rest = line[:1], line[1:]
                    nxt = hunk.lines[i + 1] if i + 1 < len(hunk.lines) else ""
                    if tag == "\\":
                        continue
                    if tag in (" ", "-"):
                        cell = cells[pos]
                        if cell.text is None:
                            cell.text = rest
                        elif cell.text != rest:
                            raise SeriesError(
                                f"{patch.name}: {path} line {pos + 1}: context {rest!r} "
                                f"disagrees with an earlier patch's {cell.text!r}"
                            )
                        if nxt.startswith("\\") and tag in (" ", "-") and base[path][-1] is cell:
                            eol[path] = False
                        pos += 1
                        if tag == " ":
                            new.append(cell)
                    else:
                        new.append(_Cell(rest))
                cells[at : at + hunk.old_count] = new
    written = []
    for path, cells in sorted(base.items()):
        text = "\n".join(
            c.text if c.text is not None else f"/* filler line {n} */"
            for n, c in enumerate(cells, 1)
        )
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + ("\n" if eol.get(path, True) else ""))
        written.append(path)
    return written
