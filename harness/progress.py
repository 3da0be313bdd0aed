"""Showing a migration's events to a person: a live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import IO, Protocol

from harness.events import Event, PhaseEvent, ProgressEvent, ResultEvent, RoundEvent

_MIB = 1 << 20


def _ms(us: int | None) -> str:
    return "?" if us is None else f"{us / 1000.0:.1f} ms"


def round_line(ev: RoundEvent) -> str:
    name = "final round (guest paused)" if ev.final else f"round {ev.index}"
    text = (
        f"{name}: {ev.dirty_pages} dirty, {ev.pages_sent} sent, {ev.zero_pages} zero; "
        f"{ev.bytes / _MIB:.1f} MiB in {ev.duration_us / 1000.0:.1f} ms"
    )
    if ev.throttle_pct:
        text += f"; vCPUs slowed {ev.throttle_pct}%"
    if ev.est_downtime_us is not None and not ev.final:
        text += f"; estimated downtime {_ms(ev.est_downtime_us)}"
    return text


def result_line(ev: ResultEvent) -> str:
    text = f"result: {ev.result}"
    if ev.guest_runs_on:
        text += f", guest runs on the {ev.guest_runs_on.replace('_', ' ')}"
    if ev.error is not None:
        text += f"; {ev.error.side} side, {ev.error.phase}: {ev.error.message}"
    if ev.reasons:
        text += "; " + "; ".join(ev.reasons)
    return text


class Display(Protocol):
    """Where a flow shows what happens."""

    def event(self, host: str, ev: Event) -> None: ...

    def say(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """One line per phase, round and result (progress snapshots are skipped)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def event(self, host: str, ev: Event) -> None:
        if isinstance(ev, PhaseEvent):
            self.say(f"[{host}] phase {ev.phase}")
        elif isinstance(ev, RoundEvent):
            self.say(f"[{host}] {round_line(ev)}")
        elif isinstance(ev, ResultEvent):
            self.say(f"[{host}] {result_line(ev)}")

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A rich progress bar: bytes sent, rate, dirty pages left and the downtime estimate."""

    def __init__(self, memory_bytes: int):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.console = Console()
        self.progress = Progress(
            TextColumn("{task.fields[phase]:<10}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("dirty {task.fields[dirty]}"),
            TextColumn("est. downtime {task.fields[est]}"),
            console=self.console,
            transient=True,
        )
        # One pass over memory is the bar's first goal; later rounds extend it.
        self.task = self.progress.add_task(
            "migrate", total=max(memory_bytes, 1), phase="connect", dirty="-", est="-"
        )
        self.progress.start()

    def event(self, host: str, ev: Event) -> None:
        if isinstance(ev, PhaseEvent):
            self.progress.update(self.task, phase=ev.phase)
        elif isinstance(ev, ProgressEvent):
            total = self.progress.tasks[0].total or 0
            self.progress.update(
                self.task,
                completed=ev.bytes_sent,
                total=max(total, ev.bytes_sent + ev.remaining_pages * 4096),
                phase=ev.phase,
                dirty=str(ev.remaining_pages),
                est=_ms(ev.est_downtime_us),
            )
        elif isinstance(ev, RoundEvent):
            self.progress.console.print(f"[{host}] {round_line(ev)}", highlight=False)
        elif isinstance(ev, ResultEvent):
            self.progress.console.print(f"[{host}] {result_line(ev)}", highlight=False)

    def say(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        self.progress.stop()


def make_display(memory_bytes: int, plain: bool = False) -> Display:
    """The live bar on a terminal unless plain; plain lines otherwise."""
    if not plain and sys.stdout.isatty():
        return LiveDisplay(memory_bytes)
    return PlainDisplay()
