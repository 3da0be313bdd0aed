"""Putting the test bed's programs on its hosts, and the endpoints a migration runs between."""

from __future__ import annotations

from pathlib import Path

from harness import netns
from harness.config import HostsConfig, load_hosts
from harness.engine_build import PROGRAMS, build_testbed_programs
from harness.errors import HarnessError
from harness.migrate import Endpoint
from harness.ssh import SSHRunner


def load_or_testbed(hosts: str | None) -> HostsConfig:
    """The given hosts file, or the local test bed's (bringing the test bed up)."""
    if hosts:
        return load_hosts(hosts)
    netns.Testbed.require_root("up")
    return load_hosts(netns.Testbed(netns.TestbedSpec()).up())


def deploy_testbed_programs(runner: SSHRunner, bin_dir: Path) -> str:
    """Upload tbvm and tbctl to the host's workdir/bin and check that they run there."""
    remote_bin = f"{runner.workdir}/bin"
    for prog in PROGRAMS:
        runner.put(bin_dir / prog, f"{remote_bin}/{prog}", mode=0o755)
    for prog in PROGRAMS:
        result = runner.run([f"{remote_bin}/{prog}", "--version"], timeout=30, check=False)
        text = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and "usage" not in text.lower():
            raise HarnessError(
                f"{runner.name}: {remote_bin}/{prog} does not run after upload "
                f"(exit {result.returncode}): {text or '(no output)'}"
            )
    return remote_bin


def endpoints_for(config: HostsConfig) -> tuple[Endpoint, Endpoint]:
    """The migration pair of a test-bed hosts file, with freshly built and deployed programs."""
    source, destination = config.migration_pair()
    for host in (source, destination):
        if host.kind != "testbed":
            raise HarnessError(
                f"{config.path}: host {host.name} is of kind {host.kind!r}; "
                "FreeBSD hosts migrate with bhyve, see harness/freebsd_migrate.py"
            )
    bin_dir = build_testbed_programs()
    endpoints = []
    for host in (source, destination):
        runner = SSHRunner.from_config(config, host.name)
        remote_bin = deploy_testbed_programs(runner, bin_dir)
        endpoints.append(
            Endpoint(runner, remote_bin, host.migration_address, host.address, host.name)
        )
    return endpoints[0], endpoints[1]
