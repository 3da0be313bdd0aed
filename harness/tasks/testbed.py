"""invoke tasks for the local two-host test bed (collection `testbed`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, task

from harness import netns
from harness.errors import HarnessError


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a HarnessError into a one-message exit (status 1) instead of a traceback."""
    try:
        yield
    except HarnessError as exc:
        raise Exit(f"error: {exc}", code=1) from None


def _spec(
    state_dir: str, prefix: str, ipv4_range: str, ipv6_range: str, bandwidth: str | None
) -> netns.TestbedSpec:
    return netns.TestbedSpec(
        prefix=prefix,
        ipv4_range=ipv4_range,
        ipv6_range=ipv6_range,
        state_dir=Path(state_dir),
        bandwidth=bandwidth or None,
    )


_HELP = {
    "state-dir": f"where keys, sshd files and hosts.yaml live (default {netns.DEFAULT_STATE_DIR})",
    "prefix": f"name prefix of namespaces and bridge (default {netns.DEFAULT_PREFIX})",
    "ipv4-range": f"the test bed's IPv4 range (default {netns.DEFAULT_IPV4_RANGE})",
    "ipv6-range": f"the test bed's IPv6 range (default {netns.DEFAULT_IPV6_RANGE})",
    "bandwidth": "shape the migration link with tbf, e.g. 1gbit (default: unshaped)",
    "verbose": "print every command run",
}


def _help(*names: str) -> dict[str, str]:
    return {name: _HELP[name] for name in names}


_COMMON = ("state-dir", "prefix", "ipv4-range", "ipv6-range")


@task(help=_help(*_COMMON, "bandwidth", "verbose"))
def up(
    c,
    state_dir=str(netns.DEFAULT_STATE_DIR),
    prefix=netns.DEFAULT_PREFIX,
    ipv4_range=netns.DEFAULT_IPV4_RANGE,
    ipv6_range=netns.DEFAULT_IPV6_RANGE,
    bandwidth="",
    verbose=False,
):
    """Create the two namespace hosts, their link, sshds and hosts file (idempotent)."""
    with user_errors():
        spec = _spec(state_dir, prefix, ipv4_range, ipv6_range, bandwidth)
        hosts_file = netns.Testbed(spec, verbose=verbose).up()
    a, b = spec.namespaces
    print(
        f"test bed up: {a} ({spec.mgmt_addrs(a)[0]}), {b} ({spec.mgmt_addrs(b)[0]}); "
        f"migration link {spec.mig_addrs(a)[0]} <-> {spec.mig_addrs(b)[0]}"
        + (f", shaped to {spec.bandwidth}" if spec.bandwidth else "")
    )
    print(f"hosts file: {hosts_file}")


@task(help=_help(*_COMMON, "verbose"))
def down(
    c,
    state_dir=str(netns.DEFAULT_STATE_DIR),
    prefix=netns.DEFAULT_PREFIX,
    ipv4_range=netns.DEFAULT_IPV4_RANGE,
    ipv6_range=netns.DEFAULT_IPV6_RANGE,
    verbose=False,
):
    """Remove everything the test bed made: processes, namespaces, bridge, routes, state.

    The ranges and prefix are read from the state directory when it exists."""
    with user_errors():
        spec = netns.load_spec(Path(state_dir)) or _spec(
            state_dir, prefix, ipv4_range, ipv6_range, None
        )
        removed = netns.Testbed(spec, verbose=verbose).down()
    print("removed: " + ", ".join(removed) if removed else "nothing to remove")


@task(help=_help(*_COMMON))
def status(
    c,
    state_dir=str(netns.DEFAULT_STATE_DIR),
    prefix=netns.DEFAULT_PREFIX,
    ipv4_range=netns.DEFAULT_IPV4_RANGE,
    ipv6_range=netns.DEFAULT_IPV6_RANGE,
):
    """Report each piece of the test bed and where its hosts file is; exits 1 if incomplete."""
    with user_errors():
        netns.Testbed.require_root("status")
        spec = netns.load_spec(Path(state_dir)) or _spec(
            state_dir, prefix, ipv4_range, ipv6_range, None
        )
        pieces = netns.Testbed(spec).status()
    for piece in pieces:
        mark = "ok  " if piece.ok else "MISSING"
        print(f"{mark:8} {piece.name}" + (f": {piece.detail}" if piece.detail else ""))
    print(
        f"hosts file: {spec.hosts_file}"
        + ("" if spec.hosts_file.exists() else " (not written: run testbed.up)")
    )
    if not all(p.ok for p in pieces):
        raise SystemExit(1)


ns = Collection("testbed")
ns.add_task(up)
ns.add_task(down)
ns.add_task(status)
