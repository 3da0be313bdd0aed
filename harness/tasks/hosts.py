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

from harness import freebsd, netns
from harness.config import HostsConfig, load_hosts
from harness.errors import HarnessError
from harness.ssh import OutputSink, SSHRunner, run_parallel, runners_for
from harness.tasks.testbed import user_errors

TESTBED_PROGRAMS = ("tbvm", "tbctl")
DEFAULT_OUT = "build/testbed"


def load_or_testbed(hosts: str | None) -> HostsConfig:
    """The given hosts file, or the local test bed's (bringing the test bed up)."""
    if hosts:
        return load_hosts(hosts)
    netns.Testbed.require_root("up")
    return load_hosts(netns.Testbed(netns.TestbedSpec()).up())


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


def build_testbed(out_dir: Path) -> Path:
    """Compile the test bed's programs here; the directory that holds them."""
    try:
        from harness.engine_build import build_testbed_programs
    except ImportError as exc:
        raise HarnessError(f"the engine's Linux build is not available: {exc}") from None
    built = Path(build_testbed_programs(out_dir))
    bin_dir = built if built.is_dir() else built.parent
    missing = [p for p in TESTBED_PROGRAMS if not (bin_dir / p).is_file()]
    if missing:
        raise HarnessError(f"build produced no {', '.join(missing)} in {bin_dir}")
    return bin_dir


def deploy_testbed_programs(runner: SSHRunner, bin_dir: Path) -> str:
    """Upload tbvm and tbctl to the host's workdir/bin and check that they run."""
    remote_bin = f"{runner.workdir}/bin"
    for prog in TESTBED_PROGRAMS:
        runner.put(bin_dir / prog, f"{remote_bin}/{prog}", mode=0o755)
    for prog in TESTBED_PROGRAMS:
        result = runner.run([f"{remote_bin}/{prog}", "--version"], timeout=30, check=False)
        text = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and "usage" not in text.lower():
            raise HarnessError(
                f"{runner.name}: {remote_bin}/{prog} does not run after upload "
                f"(exit {result.returncode}): {text or '(no output)'}"
            )
    return remote_bin


@task(
    help={
        "hosts": "hosts file (default: the local test bed, brought up if needed)",
        "only": "comma-separated host names (default: the build hosts)",
        "out": f"test bed: where to put the programs (default {DEFAULT_OUT})",
        "patches": "freebsd: the series directory (default patches)",
    }
)
def build(c, hosts=None, only="", out=DEFAULT_OUT, patches="patches"):
    """Build: the test bed's programs here, or the patched FreeBSD world and kernel."""
    with user_errors():
        config = load_or_testbed(hosts)
        names = (
            _select(config, only)
            if only
            else [h.name for h in (config.hosts_with_role("build") or config.hosts.values())]
        )
        if _kind(config, names) == "testbed":
            bin_dir = build_testbed(Path(out))
            print(f"built {', '.join(TESTBED_PROGRAMS)} in {bin_dir}")
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
def deploy(c, hosts=None, only="", out=DEFAULT_OUT, reboot_timeout=900):
    """Deploy: upload the test bed's programs, or install, reboot into and verify FreeBSD."""
    with user_errors():
        config = load_or_testbed(hosts)
        names = _select(config, only)
        runners = runners_for(config, names, OutputSink(), stream=True)
        if _kind(config, names) == "testbed":
            bin_dir = Path(out)
            missing = [p for p in TESTBED_PROGRAMS if not (bin_dir / p).is_file()]
            if missing:
                raise HarnessError(f"{bin_dir}: no {', '.join(missing)}; run `invoke build`")
            done = run_parallel(runners, lambda r: deploy_testbed_programs(r, bin_dir))
            for name, where in sorted(done.items()):
                print(f"{name}: {', '.join(TESTBED_PROGRAMS)} in {where}")
            return
        done = run_parallel(
            runners,
            lambda r: freebsd.deploy_to_host(r, config.hosts[r.name], float(reboot_timeout)),
        )
        for name, uname in sorted(done.items()):
            print(f"{name}: running {uname}")
