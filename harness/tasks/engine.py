"""invoke tasks: migrate (and ping-pong) and bench, on the local test bed or configured hosts."""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from invoke import task

from harness.config import (
    MAX_STREAMS,
    Guest,
    HostsConfig,
    MigrationPolicy,
    TestbedGuest,
    load_hosts,
    parse_rate,
)
from harness.deploy import endpoints_for, load_or_testbed
from harness.errors import HarnessError
from harness.flow import FlowOptions, Report, interrupt_on_terminate, require_ok
from harness.migrate import PingPong, resolve_testbed
from harness.progress import Display, PlainDisplay, make_display
from harness.report import plot_rounds, summary, usage_table, write_json
from harness.ssh import SSHRunner
from harness.switchover import HOOK_TIMEOUT_MAX_S
from harness.units import parse_size


def _guest(base: Guest | None, memory, vcpus, workload, fill, segments,
           disk=None) -> Guest:  # fmt: skip
    """The hosts file's guest (or the default one) with command-line overrides."""
    guest = copy.deepcopy(base) if base else Guest(name="tbguest", memory=256 << 20, vcpus=2)
    tb = guest.testbed or TestbedGuest(workload="hotset:64M", fill="pattern", segments=1)
    if memory is not None:
        guest.memory = parse_size(memory, "--memory")
    if vcpus is not None:
        guest.vcpus = int(vcpus)
    if workload is not None:
        tb.workload = workload
    if fill is not None:
        tb.fill = fill
    if segments is not None:
        tb.segments = int(segments)
    if disk is not None:
        tb.disk = parse_size(disk, "--disk")
    guest.testbed = tb
    return guest


def _policy(base: MigrationPolicy | None, downtime_limit, max_rounds, fixed_rounds, bandwidth,
            encrypt, no_throttle, switchover_hook=None, switchover_timeout=None,
            streams=None) -> MigrationPolicy:  # fmt: skip
    """The hosts file's policy (or the defaults) with command-line overrides."""
    policy = copy.deepcopy(base) if base else MigrationPolicy()
    if streams is not None:
        try:
            policy.streams = int(streams)
        except ValueError:
            policy.streams = 0
        if not 1 <= policy.streams <= MAX_STREAMS:
            raise HarnessError(f"--streams {streams}: give a number from 1 to {MAX_STREAMS}")
    if downtime_limit is not None:
        policy.downtime_limit_ms = int(downtime_limit)
    if max_rounds is not None:
        policy.max_rounds = int(max_rounds)
    if fixed_rounds is not None:
        policy.fixed_rounds = int(fixed_rounds) or None
    if bandwidth:
        policy.bandwidth = parse_rate(bandwidth, "--bandwidth")
    if encrypt:
        policy.encrypt = True
    if no_throttle:
        policy.auto_throttle = False
    if switchover_hook:
        policy.switchover_hook = switchover_hook
    if switchover_timeout is not None:
        policy.switchover_timeout = float(switchover_timeout)
        if not 0 < policy.switchover_timeout <= HOOK_TIMEOUT_MAX_S:
            raise HarnessError(f"--switchover-timeout: give seconds, more than 0 and at most "
                               f"{HOOK_TIMEOUT_MAX_S:g}")  # fmt: skip
    return policy


def _freebsd_migrations(
    config: HostsConfig, guest: Guest, policy: MigrationPolicy, runs: int, display: Display,
    flow: FlowOptions,
) -> list[Report]:  # fmt: skip
    """bhyve guests between FreeBSD hosts, back and forth `runs` times (not run here)."""
    from harness.freebsd_migrate import migrate_freebsd

    source, destination = config.migration_pair()
    if destination.kind != "freebsd":
        raise HarnessError(f"{config.path}: {source.name} is FreeBSD but {destination.name} is not")
    runners = (SSHRunner.from_config(config, source.name),
               SSHRunner.from_config(config, destination.name))  # fmt: skip
    reports: list[Report] = []
    for _ in range(runs):
        report = migrate_freebsd(config, source, destination, guest, policy, runners, display,
                                 flow=dataclasses.replace(
                                     flow, migrate_timeout_s=policy.timeout + 60.0))  # fmt: skip
        reports.append(report)
        if report.status != "completed":
            break
        source, destination = destination, source
        runners = (runners[1], runners[0])
    return reports


def _freebsd_check(config: HostsConfig, guest: Guest, display: Display) -> Report:
    """bhyvectl --migrate-check between the hosts file's pair (not run here)."""
    from harness.freebsd_migrate import check_freebsd

    source, destination = config.migration_pair()
    runners = (SSHRunner.from_config(config, source.name),
               SSHRunner.from_config(config, destination.name))  # fmt: skip
    return check_freebsd(config, source, destination, guest, runners, display)


def _testbed_check(endpoints, guest: Guest, flow: FlowOptions, display: Display) -> Report:
    """tbctl check from a fresh guest on the first endpoint to the second."""
    from harness.migrate import check_once, start_guest

    source = start_guest(endpoints[0], guest, flow, "check")
    try:
        return check_once(source, endpoints[1], guest, flow, "check", display)
    finally:
        source.stop()


@task(
    help={
        "hosts": "hosts file (default: the local namespace test bed, brought up if needed)",
        "local": "two VM processes on this machine over loopback, no SSH",
        "memory": "guest memory, e.g. 256M or 1G",
        "vcpus": "vCPU threads",
        "workload": "idle | full | hotset:SIZE, optionally @RATE pages/s per vCPU",
        "fill": "initial memory: pattern (every page non-zero) or zero",
        "segments": "guest memory segments (like bhyve's NUMA domains)",
        "lazy_memory": "the destination faults memory in as pages arrive (bhyve without -S); "
        "for guests larger than RAM",
        "downtime_limit": "target downtime in ms (default 300)",
        "max_rounds": "upper bound of live rounds (default 30)",
        "fixed_rounds": "a fixed number of live rounds (as in D30954) instead of the policy",
        "bandwidth": "migration bandwidth limit, e.g. 100M (bytes/s)",
        "encrypt": "encrypt the stream (it is always authenticated)",
        "no_throttle": "never slow the vCPUs down to converge",
        "disks": "move the guest's disks too (no shared storage): each host has its own image",
        "disk": "test bed: give the guest a disk of this size, e.g. 1G, written while it runs",
        "disk_prefill": "test bed: the source's disk starts fully written (not sparse)",
        "streams": "move memory over this many connections at once (1 to 8, default 1)",
        "count": "number of migrations (with --ping-pong)",
        "ping_pong": "migrate back and forth --count times",
        "report": "write the JSON report here (and a PNG plot beside it)",
        "run_after": "seconds the guest runs on the destination before the check",
        "plain": "plain progress lines instead of the live bar (the default when not a tty)",
        "check": "dry run: handshake, authentication and the compatibility check only; "
        "no memory moves (exit 0 if compatible)",
        "no_resolve": "leave an indeterminate outcome alone (default: ask the destination, "
        "then resume or destroy the source)",
        "switchover_hook": "run this shell command while the guest is paused before the "
        "switchover (BMIG_* variables name the hosts and guest); exit 0 finishes the "
        "migration, anything else rolls it back",
        "switchover_timeout": "seconds the switchover hook may run (default 60)",
    }
)
def migrate(
    c, hosts=None, local=False, memory=None, vcpus=None, workload=None, fill=None,
    segments=None, downtime_limit=None, max_rounds=None, fixed_rounds=None, bandwidth=None,
    encrypt=False, no_throttle=False, count=1, ping_pong=False, report="", run_after=1.0,
    plain=False, no_resolve=False, check=False, lazy_memory=False, switchover_hook=None,
    switchover_timeout=None, disks=False, disk=None, disk_prefill=False, streams=None,
):  # fmt: skip
    """Live-migrate a running guest between two hosts, verify it and report."""
    from harness.local import local_endpoints, local_workdir

    display: Display | None = None
    usage: list[dict] = []
    workdir = None
    # SIGTERM/SIGHUP cancel like Ctrl-C: the hosts are cleaned up either way, and a local
    # run's temporary directory removed.
    with interrupt_on_terminate(), ExitStack() as stack:
        try:
            if local or (hosts is None and os.geteuid() != 0):
                if not local:
                    print("not root: migrating between two local processes over loopback")
                config = None
                workdir = stack.enter_context(local_workdir())
                endpoints = local_endpoints(workdir.path)
            else:
                config = load_or_testbed(hosts)
            guest = _guest(config.guest() if config else None, memory, vcpus, workload, fill,
                           segments, disk)  # fmt: skip
            if lazy_memory and guest.testbed:
                guest.testbed.lazy_memory = True
            if disk_prefill and guest.testbed:
                guest.testbed.disk_prefill = True
            policy = _policy(config.migration if config else None, downtime_limit, max_rounds,
                             fixed_rounds, bandwidth, encrypt, no_throttle,
                             switchover_hook, switchover_timeout, streams)  # fmt: skip
            policy.disks = policy.disks or disks
            runs = count if ping_pong else 1
            flow = FlowOptions(run_after_s=run_after, resolve=not no_resolve)
            display = make_display(guest.memory, plain)
            if config is not None and config.migration_pair()[0].kind == "freebsd":
                if check:
                    reports = [_freebsd_check(config, guest, display)]
                else:
                    reports = _freebsd_migrations(config, guest, policy, runs, display, flow)
            else:
                if config is not None:
                    endpoints = endpoints_for(config)
                if check:
                    reports = [_testbed_check(endpoints, guest, flow, display)]
                else:
                    pingpong = PingPong(*endpoints, guest, policy, flow)
                    reports = pingpong.run(runs, display)
                    usage = pingpong.usage
            if workdir is not None and any(r.guest_runs_on == "undecided" for r in reports):
                workdir.keep("the outcome is undecided: the guests' control sockets and "
                             "images are there for `invoke resolve`")  # fmt: skip
        except (HarnessError, ValueError) as exc:
            sys.exit(f"migrate: {exc}")
        except KeyboardInterrupt as exc:
            sys.exit(f"migrate: interrupted ({exc or 'SIGINT'}) before a report was made")
        finally:
            if display is not None:
                display.close()
    for rep in reports:
        print(summary(rep.as_json()))
    if len(usage) > 1:
        print("processes per hop (fds, threads, RSS and peak RSS in MiB):")
        print(usage_table(usage))
    if report:
        path = Path(report)
        docs = [r.as_json() for r in reports]
        write_json(docs[0] if len(docs) == 1 else docs, path)
        plot_rounds(docs[-1], path.with_suffix(".png"))
        print(f"report: {path} (plot {path.with_suffix('.png')})")
        if usage:
            write_json(usage, path.with_suffix(".usage.json"))
            print(f"process usage per hop: {path.with_suffix('.usage.json')}")
    try:
        for rep in reports:
            require_ok(rep)
    except HarnessError as exc:
        sys.exit(str(exc))


@task(
    help={
        "hosts": "hosts file; freebsd hosts: the pair of its migration section",
        "guest": "freebsd: the guest's name (default: the hosts file's guest)",
        "source_control": "test bed: the source guest's control socket (from the report)",
        "destination_control": "test bed: the receiving guest's control socket",
    }
)
def resolve(c, hosts=None, guest=None, source_control="", destination_control=""):
    """After an indeterminate migration: ask the destination whether the guest runs there,
    then destroy the paused copy on the source (it does) or resume it (it does not)."""
    try:
        if source_control or destination_control:
            resolution = resolve_testbed(hosts, source_control, destination_control)
        else:
            if not hosts:
                raise HarnessError("give --hosts (FreeBSD) or both --source-control and "
                                   "--destination-control (test bed)")  # fmt: skip
            from harness.freebsd_migrate import resolve_freebsd

            config = load_hosts(hosts)
            source, destination = config.migration_pair()
            runners = (SSHRunner.from_config(config, source.name),
                       SSHRunner.from_config(config, destination.name))  # fmt: skip
            resolution = resolve_freebsd(config, source, destination, config.guest(guest),
                                         runners, PlainDisplay())  # fmt: skip
    except (HarnessError, ValueError) as exc:
        sys.exit(f"resolve: {exc}")
    print(f"{resolution.action}: {resolution.detail}; the guest runs on the "
          f"{resolution.guest_runs_on}")  # fmt: skip
    if resolution.action == "none":
        sys.exit(1)


@task(
    help={
        "memory": "guest memory for every case (default 1G)",
        "vcpus": "vCPU threads",
        "report": "JSON output path",
        "repeats": "runs of each case and of raw TCP (medians are compared)",
        "cases": "only these cases, comma-separated (e.g. full,full-2streams,full-4streams)",
    }
)
def bench(c, memory="1G", vcpus=1, report="reports/bench.json", repeats=3, cases=""):
    """Measure the cases matched against QEMU, the full case over 2 and 4 streams and the
    idle scale cases (16 and 64 times --memory), beside raw TCP measured in the same run."""
    from harness.bench import run_bench, select_cases
    from harness.local import local_endpoints, local_workdir

    try:
        size = parse_size(memory, "--memory")
        with local_workdir() as workdir:
            result = run_bench(local_endpoints(workdir.path), size, vcpus, repeats,
                               select_cases(cases, size))  # fmt: skip
    except (HarnessError, ValueError) as exc:
        sys.exit(f"bench: {exc}")
    print(result["table"])
    write_json(result, Path(report))
    print(f"report: {report}")
