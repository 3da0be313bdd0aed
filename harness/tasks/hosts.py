"""invoke tasks `build` and `deploy` for the hosts in a hosts file.

Without --hosts they use the local test bed (brought up if needed).  For `testbed` hosts,
build compiles the engine's Linux programs here and deploy uploads them to every host and
checks that they run.  For `freebsd` hosts, build applies the series and builds world and
kernel on the build hosts, and deploy installs, reboots and verifies (harness.freebsd).
"""

from __future__ import annotations

import re
from pathlib import Path

from invoke import task

from harness import freebsd
from harness.config import HostsConfig
from harness.deploy import deploy_testbed_programs, load_or_testbed
from harness.engine_build import DEFAULT_OUT, PROGRAMS, build_testbed_programs
from harness.errors import HarnessError
from harness.ssh import OutputSink, run_parallel, runners_for
from harness.tasks.testbed import user_errors


def _select(config: HostsConfig, only: str) -> list[str]:
    names = [n for n in re.split(r"[,\s]+", only) if n] if only else list(config.hosts)
    for name in names:
        config.host(name)
    return names


def _kind(config: HostsConfig, names: list[str]) -> str:
    kinds = {config.hosts[n].kind for n in names}
    if len(kinds) != 1:
        raise HarnessError(
            f"{config.path}: hosts of different kinds ({', '.join(sorted(kinds))}); "
            "use --only to pick hosts of one kind"
        )
    return kinds.pop()


@task(
    help={
        "hosts": "hosts file (default: the local test bed, brought up if needed)",
        "only": "comma-separated host names (default: the build hosts)",
        "out": f"test bed: where to put the programs (default {DEFAULT_OUT})",
        "patches": "freebsd: the series directory (default patches)",
    }
)
def build(c, hosts=None, only="", out=str(DEFAULT_OUT), patches="patches"):
    """Build: the test bed's programs here, or the patched FreeBSD world and kernel."""
    with user_errors():
        config = load_or_testbed(hosts)
        names = (
            _select(config, only)
            if only
            else [h.name for h in (config.hosts_with_role("build") or config.hosts.values())]
        )
        if _kind(config, names) == "testbed":
            bin_dir = build_testbed_programs(Path(out))
            print(f"built {', '.join(PROGRAMS)} in {bin_dir}")
            return
        series = freebsd.find_series(Path(patches))
        runners = runners_for(config, names, OutputSink(), stream=True)
        run_parallel(
            runners, lambda r: freebsd.build_on_host(r, config.hosts[r.name], series, r.put)
        )
        print(f"built world and kernel on {', '.join(names)}")


@task(
    help={
        "hosts": "hosts file (default: the local test bed, brought up if needed)",
        "only": "comma-separated host names (default: all)",
        "out": f"test bed: where the built programs are (default {DEFAULT_OUT})",
        "reboot_timeout": "freebsd: seconds to wait for a host to come back (default 900)",
    }
)
def deploy(c, hosts=None, only="", out=str(DEFAULT_OUT), reboot_timeout=900):
    """Deploy: upload the test bed's programs, or install, reboot into and verify FreeBSD."""
    with user_errors():
        config = load_or_testbed(hosts)
        names = _select(config, only)
        runners = runners_for(config, names, OutputSink(), stream=True)
        if _kind(config, names) == "testbed":
            bin_dir = Path(out)
            missing = [p for p in PROGRAMS if not (bin_dir / p).is_file()]
            if missing:
                raise HarnessError(f"{bin_dir}: no {', '.join(missing)}; run `invoke build`")
            done = run_parallel(runners, lambda r: deploy_testbed_programs(r, bin_dir))
            for name, where in sorted(done.items()):
                print(f"{name}: {', '.join(PROGRAMS)} in {where}")
            return
        done = run_parallel(
            runners,
            lambda r: freebsd.deploy_to_host(r, config.hosts[r.name], float(reboot_timeout)),
        )
        for name, uname in sorted(done.items()):
            print(f"{name}: running {uname}")
