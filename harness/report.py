"""Reports: the JSON file for machines, a summary table and a PNG plot for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(report: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def _mib(nbytes: float) -> str:
    return f"{nbytes / (1 << 20):.1f}"


def summary(report: dict[str, Any]) -> str:
    """A readable summary: totals, then one row per round."""
    guest = report.get("guest", {})
    ver = report.get("verification") or {}
    lines = [
        f"migration {report.get('status')}: {report.get('hosts', {}).get('source')} -> "
        f"{report.get('hosts', {}).get('destination')}, guest {guest.get('name')} "
        f"({_mib(guest.get('memory_bytes', 0))} MiB, {guest.get('vcpus')} vCPUs, "
        f"{guest.get('workload')})",
    ]
    if report.get("error"):
        err = report["error"]
        lines.append(f"  error: {err.get('side')} side, {err.get('phase')}: {err.get('message')}")
    for reason in report.get("reasons") or []:
        lines.append(f"  reason: {reason}")
    if report.get("resolution"):
        res = report["resolution"]
        lines.append(f"  resolved: {res.get('action')} ({res.get('detail')})")
    lines.append(
        f"  total {report.get('total_time_ms', 0):.1f} ms, downtime "
        f"{_fmt_ms(report.get('downtime_ms'))} (probe {_fmt_ms(report.get('downtime_probe_ms'))}), "
        f"{_mib(report.get('bytes_sent', 0))} MiB sent, {report.get('throughput_mb_s', 0)} MB/s, "
        f"stop: {report.get('stop_reason')}"
    )
    if report.get("downtime_hook_ms"):
        lines.append(
            f"  downtime: {_fmt_ms(report.get('downtime_memory_ms'))} memory, "
            f"{_fmt_ms(report.get('downtime_hook_ms'))} switchover hook, "
            f"{_fmt_ms(report.get('downtime_state_ms'))} state and switchover"
        )
    hook = report.get("switchover_hook")
    if hook:
        detail = f": {hook['detail']}" if hook.get("detail") else ""
        lines.append(
            f"  switchover hook: {hook.get('outcome')} after {hook.get('duration_ms', 0):.0f} ms"
            f" (exit {hook.get('exit_status')}){detail}"
        )
    if report.get("disk_bytes"):
        lines.append(
            f"  disks: {_mib(report['disk_bytes'])} MiB in {report.get('disk_rounds', 0)} "
            f"rounds, {report.get('disk_mb_s', 0)} MB/s"
        )
    lines.append(f"  the guest runs on the {report.get('guest_runs_on')}")
    lines.append(
        f"  verification ({ver.get('where', '?')}): {'ok' if ver.get('ok') else 'FAILED'}, "
        f"{ver.get('pages_checked', 0)} pages checked"
    )
    for err in (ver.get("errors") or [])[:5]:
        lines.append(f"    {err}")
    rounds = report.get("rounds") or []
    if rounds:
        lines.append("  round  final  dirty_pages  pages_sent  zero_pages    MiB  ms      throttle")
        for r in rounds:
            lines.append(
                f"  {r.get('index', 0):5d}  {'yes' if r.get('final') else 'no':5s}  "
                f"{r.get('dirty_pages', 0):11d}  {r.get('pages_sent', 0):10d}  "
                f"{r.get('zero_pages', 0):10d}  {_mib(r.get('bytes', 0)):>5s}  "
                f"{r.get('duration_us', 0) / 1000.0:7.1f} {r.get('throttle_pct', 0):3d}%"
            )
    return "\n".join(lines)


def usage_table(usage: list[dict[str, Any]]) -> str:
    """Per ping-pong hop: descriptors, threads, RSS and peak RSS (MiB) of the source process
    before it sends, of the destination process once the guest runs there, and of the
    harness."""

    def cols(u: dict[str, Any]) -> str:
        if not u:
            return f"{'-':>7} {'-':>4} {'-':>4} {'-':>7} {'-':>7}"
        return (f"{u['pid']:>7} {u['fds']:>4} {u['threads']:>4} "
                f"{u['rss_kib'] / 1024:>7.1f} {u['peak_rss_kib'] / 1024:>7.1f}")  # fmt: skip

    head = f"{'pid':>7} {'fds':>4} {'thr':>4} {'rss':>7} {'peak':>7}"
    lines = [f"{'hop':>3} | {'source (before sending)':^33} | "
             f"{'destination (guest running)':^33} | {'harness':^33}",
             f"{'':>3} | {head} | {head} | {head}"]  # fmt: skip
    for hop in usage:
        lines.append(f"{hop['hop']:>3} | {cols(hop['source'])} | {cols(hop['destination'])} | "
                     f"{cols(hop['harness'])}")  # fmt: skip
    return "\n".join(lines)


def _fmt_ms(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1f} ms"


def plot_rounds(report: dict[str, Any], path: Path) -> Path:
    """PNG of bytes sent and dirty pages per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report.get("rounds") or []
    idx = [r["index"] for r in rounds]
    fig, ax1 = plt.subplots(figsize=(7, 4), dpi=100)
    ax1.bar(idx, [r["bytes"] / (1 << 20) for r in rounds], color="#4c72b0", label="MiB sent")
    ax1.set_xticks(idx)
    ax1.set_xlabel("round (last: stop-and-copy, guest paused)")
    ax1.set_ylabel("MiB sent")
    ax2 = ax1.twinx()
    ax2.plot(idx, [r["dirty_pages"] for r in rounds], color="#dd8452", marker="o",
             label="dirty pages")  # fmt: skip
    ax2.set_ylabel("dirty pages")
    guest = report.get("guest", {})
    hosts = report.get("hosts", {})
    ax1.set_title(
        f"{guest.get('name')} ({guest.get('workload')}) {hosts.get('source')} -> "
        f"{hosts.get('destination')}: downtime {_fmt_ms(report.get('downtime_ms'))}",
        fontsize=10,
    )
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.9), ncols=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
