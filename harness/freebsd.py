"""Command lines and their order for hosts of kind `freebsd`: build, deploy, migrate.

Everything here is a pure function from configuration to a list of Steps (argv, timeout,
log file), plus one small executor, run_steps(), that runs them on a Runner and turns a
failed step into a BuildError that names the host, the step and the log kept on the host.

NOT YET RUN AGAINST FREEBSD: these command lines follow FreeBSD 15's documented tools
(make buildworld/buildkernel, src.conf(5), src-env.conf, bectl(8), nextboot(8), bhyve(8),
bhyvectl(8)) and are unit-tested for their content and order only.  The bhyvectl/bhyve
migration options are the ones the series adds; keep BHYVECTL_POLICY_OPTIONS in step with
bhyvectl's option table.

Build: the src tree is put on the series' base commit (branch `bhyvemig`), the series is
applied with `git am`, and world and kernel are built with WITH_BHYVE_SNAPSHOT and a kernel
configuration `include GENERIC` + `options BHYVE_SNAPSHOT`, in meta mode (filemon) so that
rebuilding after a patch change is incremental.  Each build step writes its own log under
the host's log_dir; logs are kept, and a failure quotes the tail.

Deploy: with a ZFS boot environment (bectl), world and kernel go into a new boot
environment activated for the next boot only (`bectl activate -t`): a kernel that does not
boot falls back to the current environment on the following boot, and only a verified boot
makes the new one permanent.  Without boot environments, the kernel goes to
/boot/<kernel_config> and is booted once with `nextboot -k`, and only bhyve's userland
(libvmmapi, bhyve, bhyvectl) is installed in place.  After the reboot the harness waits for
SSH, checks that `uname -v` is the built kernel, and that `kldload vmm` works.

Every deployed host needs the built tree at the same src_dir/obj_dir: give each the
`build` role, or share /usr/src and /usr/obj over NFS from the build host.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import FreeBSDGuest, FreeBSDHost, Guest, Host, MigrationPolicy
from harness.errors import HarnessError
from harness.runner import CommandResult, Runner
from harness.switchover import engine_wait_ms

MACHINE = "amd64"  # bhyve's snapshot support is amd64-only
BRANCH = "bhyvemig"
GIT_IDENTITY = ["-c", "user.name=bhyvemig harness", "-c", "user.email=bhyvemig@localhost"]
HOUR = 3600.0

# bhyvectl options for the migration policy: --migrate-NAME for each NAME of the control
# plane's option table (mig_opts[] in usr.sbin/bhyve/migration_ctl.c, the same table as
# tbctl's --NAME).  The overall timeout is not one of them: the harness bounds the command.
BHYVECTL_POLICY_OPTIONS = {
    "downtime_limit_ms": "--migrate-downtime-limit",
    "max_rounds": "--migrate-max-rounds",
    "fixed_rounds": "--migrate-fixed-rounds",
    "bandwidth": "--migrate-bandwidth",
    "encrypt": "--migrate-encrypt",
    "no_throttle": "--migrate-no-throttle",
    "switchover_wait_ms": "--migrate-switchover-wait",
    "disks": "--migrate-disks",
    "streams": "--migrate-streams",
}


class BuildError(HarnessError):
    """A build or deploy step failed; the message names host, step and kept log."""

    def __init__(self, host: str, step: Step, result: CommandResult, log_tail: str):
        self.host = host
        self.step = step
        self.result = result
        self.log = step.log
        where = f"; log kept at {host}:{step.log}" if step.log else ""
        tail = log_tail or (result.stderr or result.stdout).strip() or "(no output)"
        tail = "\n  ".join(tail.splitlines()[-15:])
        super().__init__(
            f"{host}: {step.name} failed (exit {result.returncode}){where}\n"
            f"  `{shlex.join(step.argv)}`\n  {tail}"
        )


@dataclass(frozen=True)
class Step:
    """One remote command in a plan."""

    name: str
    argv: list[str]
    timeout: float = 600.0
    log: str | None = None
    check: bool = True


@dataclass(frozen=True)
class Series:
    """The patch series: its base commit and the patch files in order."""

    base_commit: str
    patches: list[Path] = field(default_factory=list)


def find_series(patches_dir: Path) -> Series:
    """Read patches/: the *.patch files in name order, and the base commit from a
    `base-commit` file or a `base-commit: SHA` line (git format-patch --base)."""
    patches_dir = Path(patches_dir)
    patches = sorted(p for p in patches_dir.glob("*.patch") if not p.name.startswith("0000-"))
    if not patches:
        raise HarnessError(f"{patches_dir}: no *.patch files (the series to apply)")
    base = None
    base_file = patches_dir / "base-commit"
    if base_file.is_file():
        words = base_file.read_text().split()
        base = words[0] if words else None
    if base is None:
        for path in sorted(patches_dir.glob("*.patch")):
            match = re.search(r"^base-commit: ([0-9a-f]{7,40})\s*$", path.read_text(), re.M)
            if match:
                base = match.group(1)
                break
    if base is None or not re.fullmatch(r"[0-9a-f]{7,40}", base):
        raise HarnessError(
            f"{patches_dir}: the series' base commit is not recorded; write it to "
            f"{base_file} or format the series with `git format-patch --base=...`"
        )
    return Series(base, patches)


def _sh(script: str, log: str | None = None) -> list[str]:
    """argv running a shell script, its output going to log (kept) when given."""
    if log is not None:
        script = f"exec >{shlex.quote(log)} 2>&1; {script}"
    return ["sh", "-c", script]


def _q(*words: str) -> str:
    return shlex.join(words)


def kernel_config_text(settings: FreeBSDHost) -> str:
    """The kernel configuration: GENERIC plus BHYVE_SNAPSHOT."""
    return (
        f"# Written by the bhyve migration harness.\n"
        f"include {settings.base_kernel_config}\n"
        f"ident {settings.kernel_config}\n"
        f"options BHYVE_SNAPSHOT\n"
    )


def src_conf_text() -> str:
    """src.conf(5) for the build: bhyve's snapshot (and so migration) support."""
    return "WITH_BHYVE_SNAPSHOT=yes\n"


def src_env_conf_text() -> str:
    """src-env.conf: meta mode must be set here, not in src.conf."""
    return "WITH_META_MODE=yes\n"


def build_paths(host: Host) -> dict[str, str]:
    """Where the build's files live on the host."""
    fb = host.freebsd or FreeBSDHost()
    return {
        "patches": f"{host.workdir}/patches",
        "src_conf": f"{host.workdir}/src.conf",
        "src_env_conf": f"{host.workdir}/src-env.conf",
        "kernconf": f"{fb.src_dir}/sys/{MACHINE}/conf/{fb.kernel_config}",
        "kernel": f"{fb.obj_dir}{fb.src_dir}/{MACHINE}.{MACHINE}/sys/{fb.kernel_config}/kernel",
    }


def _make(host: Host, targets: list[str], jobs: bool = True) -> str:
    fb = host.freebsd or FreeBSDHost()
    paths = build_paths(host)
    words = ["env", f"SRC_ENV_CONF={paths['src_env_conf']}", f"MAKEOBJDIRPREFIX={fb.obj_dir}"]
    words += ["make", "-C", fb.src_dir]
    if jobs:
        words.append(f"-j{fb.jobs}" if fb.jobs else "-j$(sysctl -n hw.ncpu)")
    words += [f"SRCCONF={paths['src_conf']}", f"KERNCONF={fb.kernel_config}", *targets]
    # -j$(...) must stay unquoted for the shell
    return " ".join(w if w.startswith("-j$(") else shlex.quote(w) for w in words)


def build_steps(host: Host, series: Series) -> list[Step]:
    """Bring the src tree to the base commit, apply the series, build world and kernel.

    The patches are expected already uploaded to build_paths(host)['patches'] under their
    own names, and src.conf/src-env.conf/the kernel config written (see build_files()).
    """
    fb = host.freebsd or FreeBSDHost()
    src = fb.src_dir
    patches = [f"{build_paths(host)['patches']}/{p.name}" for p in series.patches]
    log = f"{fb.log_dir}/%s.log"
    git = ["git", "-C", src]
    return [
        Step(
            "check the src tree",
            _sh(
                f"test -d {shlex.quote(src)}/.git || {{ echo '{src} is not a git checkout of "
                f"freebsd-src' >&2; exit 1; }}; mkdir -p {shlex.quote(fb.log_dir)}"
            ),
            timeout=60,
        ),
        Step(
            "refuse local changes",
            _sh(
                f'[ "$({_q(*git, "rev-parse", "--abbrev-ref", "HEAD")})" = {BRANCH} ] || '
                f'[ -z "$({_q(*git, "status", "--porcelain", "--untracked-files=no")})" ] || '
                f"{{ echo '{src} has uncommitted changes; commit or stash them first' >&2; "
                "exit 1; }"
            ),
            timeout=120,
        ),
        Step(
            "abort an unfinished git am",
            _sh(f"{_q(*git, 'am', '--abort')} 2>/dev/null; true"),
            timeout=60,
            check=False,
        ),
        Step(
            "fetch the base commit",
            _sh(
                f"{_q(*git, 'cat-file', '-e', series.base_commit + '^{commit}')} 2>/dev/null || "
                f"{_q(*git, 'fetch', '--quiet', 'origin', series.base_commit)}"
            ),
            timeout=HOUR,
        ),
        Step(
            "check out the base commit",
            [*git, "checkout", "--quiet", "--force", "-B", BRANCH, series.base_commit],
            timeout=600,
        ),
        Step(
            "apply the series",
            _sh(
                f"{_q(*git, *GIT_IDENTITY, 'am', '--3way', *patches)} || "
                f"{{ {_q(*git, 'am', '--abort')}; exit 1; }}",
                log % "git-am",
            ),
            timeout=600,
            log=log % "git-am",
        ),
        Step(
            "install the kernel config",
            _sh(
                f"cp {shlex.quote(host.workdir)}/{fb.kernel_config}.conf "
                f"{shlex.quote(build_paths(host)['kernconf'])}"
            ),
            timeout=60,
        ),
        Step("load filemon for meta mode", ["kldload", "-n", "filemon"], timeout=60),
        Step(
            "buildworld",
            _sh(_make(host, ["buildworld"]), log % "buildworld"),
            timeout=12 * HOUR,
            log=log % "buildworld",
        ),
        Step(
            "buildkernel",
            _sh(_make(host, ["buildkernel"]), log % "buildkernel"),
            timeout=6 * HOUR,
            log=log % "buildkernel",
        ),
    ]


def build_files(host: Host) -> dict[str, str]:
    """Remote path -> content of the small files the build needs."""
    fb = host.freebsd or FreeBSDHost()
    paths = build_paths(host)
    return {
        paths["src_conf"]: src_conf_text(),
        paths["src_env_conf"]: src_env_conf_text(),
        f"{host.workdir}/{fb.kernel_config}.conf": kernel_config_text(fb),
    }


def boot_method(settings: FreeBSDHost, bectl_check_ok: bool) -> str:
    """`bectl` or `nextboot`: `auto` picks bectl when `bectl check` succeeded."""
    if settings.boot == "auto":
        return "bectl" if bectl_check_ok else "nextboot"
    return settings.boot


def install_steps(host: Host, method: str) -> list[Step]:
    """Install the built world and kernel so that a bad kernel falls back (before reboot)."""
    fb = host.freebsd or FreeBSDHost()
    paths = build_paths(host)
    log = f"{fb.log_dir}/%s.log"
    be = fb.boot_environment
    mnt = f"/tmp/be.{be}"
    check = Step(
        "check the build",
        _sh(
            f"test -f {shlex.quote(paths['kernel'])} || {{ echo 'no built kernel at "
            f"{paths['kernel']}: run the build on this host (role build) or share "
            f"{fb.src_dir} and {fb.obj_dir} with the build host' >&2; exit 1; }}"
        ),
        timeout=60,
    )
    if method == "bectl":
        return [
            check,
            Step(
                "remove an old boot environment",
                _sh(
                    f"if bectl list -H -c name | cut -f1 | grep -qx {shlex.quote(be)}; then "
                    f"bectl umount -f {shlex.quote(be)} 2>/dev/null; "
                    f"bectl destroy -F {shlex.quote(be)}; fi"
                ),
                timeout=300,
            ),
            Step("create the boot environment", ["bectl", "create", be], timeout=300),
            Step(
                "mount the boot environment",
                _sh(f"mkdir -p {mnt} && bectl mount {shlex.quote(be)} {mnt}"),
                timeout=300,
            ),
            Step(
                "installkernel",
                _sh(_make(host, ["installkernel", f"DESTDIR={mnt}"], False), log % "installkernel"),
                timeout=HOUR,
                log=log % "installkernel",
            ),
            Step(
                "installworld",
                _sh(_make(host, ["installworld", f"DESTDIR={mnt}"], False), log % "installworld"),
                timeout=2 * HOUR,
                log=log % "installworld",
            ),
            Step("unmount the boot environment", ["bectl", "umount", be], timeout=300),
            Step(
                "activate it for the next boot only", ["bectl", "activate", "-t", be], timeout=300
            ),
        ]
    if method == "nextboot":
        kodir = f"/boot/{fb.kernel_config}"
        userland = ["lib/libvmmapi", "usr.sbin/bhyve", "usr.sbin/bhyvectl"]
        steps = [
            check,
            Step(
                "installkernel",
                _sh(_make(host, ["installkernel", f"KODIR={kodir}"], False), log % "installkernel"),
                timeout=HOUR,
                log=log % "installkernel",
            ),
        ]
        for sub in userland:
            steps.append(
                Step(
                    f"install {sub}",
                    _sh(
                        f"cd {shlex.quote(fb.src_dir + '/' + sub)} && "
                        f"env MAKEOBJDIRPREFIX={shlex.quote(fb.obj_dir)} "
                        f"make SRCCONF={shlex.quote(paths['src_conf'])} install",
                        log % ("install-" + sub.replace("/", "-")),
                    ),
                    timeout=600,
                    log=log % ("install-" + sub.replace("/", "-")),
                )
            )
        steps.append(Step("boot it once", ["nextboot", "-k", fb.kernel_config], timeout=60))
        return steps
    raise HarnessError(f"{host.name}: unknown boot method {method!r}")


def reboot_step() -> Step:
    """Reboot in the background so that the SSH command returns first."""
    return Step(
        "reboot", _sh("nohup sh -c 'sleep 2; shutdown -r now' >/dev/null 2>&1 &"), timeout=30
    )


def expected_version_step(host: Host) -> Step:
    """Before reboot: the version string of the built kernel (what(1) of the kernel file)."""
    return Step(
        "read the built kernel's version", ["what", "-qs", build_paths(host)["kernel"]], timeout=60
    )


def verify_steps(host: Host, method: str) -> list[Step]:
    """After reboot: the running kernel and vmm."""
    fb = host.freebsd or FreeBSDHost()
    steps = [
        Step("uname -v", ["uname", "-v"], timeout=30),
        Step("sysctl kern.version", ["sysctl", "-n", "kern.version"], timeout=30),
        Step("kldload vmm", _sh("kldload -n vmm && kldstat -q -m vmm"), timeout=60),
        Step(
            "BHYVE_SNAPSHOT in the kernel",
            _sh(
                "sysctl -n kern.conftxt 2>/dev/null | grep -q BHYVE_SNAPSHOT || "
                "{ echo 'the running kernel lacks options BHYVE_SNAPSHOT' >&2; exit 1; }"
            ),
            timeout=30,
        ),
    ]
    if method == "bectl":
        steps.append(
            Step(
                "make the boot environment permanent",
                ["bectl", "activate", fb.boot_environment],
                timeout=300,
            )
        )
    return steps


def check_kernel_version(host: str, kernel_config: str, expected: str, uname_v: str) -> None:
    """Raise unless the running kernel (uname -v) is the one built (what -qs of its file)."""
    norm_expected = " ".join(expected.split())
    norm_running = " ".join(uname_v.split())
    if f"/{kernel_config}" not in norm_running:
        raise HarnessError(
            f"{host}: the running kernel is not {kernel_config} (uname -v: {norm_running}); "
            "the new kernel did not boot and the host fell back to the previous one"
        )
    if norm_expected and norm_expected not in norm_running and norm_running not in norm_expected:
        raise HarnessError(
            f"{host}: the running kernel is an older {kernel_config} build\n"
            f"  running: {norm_running}\n  built:   {norm_expected}"
        )


def run_steps(runner: Runner, steps: list[Step]) -> list[CommandResult]:
    """Run steps in order; the first failing checked step stops the plan with a BuildError
    that quotes the tail of its log (the log itself stays on the host)."""
    results = []
    for step in steps:
        result = runner.run(step.argv, timeout=step.timeout, check=False)
        results.append(result)
        if step.check and result.returncode != 0:
            tail = ""
            if step.log:
                tail_result = runner.run(["tail", "-n", "30", step.log], timeout=30, check=False)
                tail = tail_result.stdout.strip() if tail_result.returncode == 0 else ""
            raise BuildError(runner.name, step, result, tail)
    return results


# --------------------------------------------------------------------------------------
# Migration command lines


def endpoint(address: str, port: int) -> str:
    """host:port, with IPv6 literals in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def keyfile_path(host: Host, vm: str) -> str:
    """Where the controller puts the per-migration key on a host (mode 0600)."""
    return f"{host.workdir}/{vm}.migkey"


def bhyve_argv(guest: Guest, receive: str | None = None, keyfile: str | None = None) -> list[str]:
    """bhyve's command line for a guest; with receive (host:port) it is the destination,
    which waits for the migration stream instead of booting."""
    fb: FreeBSDGuest = guest.freebsd or FreeBSDGuest()
    argv = ["bhyve", "-c", str(guest.vcpus), "-m", f"{guest.memory // (1 << 20)}M", "-H", "-A"]
    if fb.wired:
        argv.append("-S")
    for slot in fb.devices:
        argv += ["-s", slot]
    if fb.bootrom:
        argv += ["-l", f"bootrom,{fb.bootrom}"]
    for key, value in fb.config.items():
        argv += ["-o", f"{key}={value}"]
    if receive is not None:
        if keyfile is None:
            raise HarnessError(f"{guest.name}: a receiving bhyve needs a migration key file")
        argv += ["-R", receive, "-o", f"migration.keyfile={keyfile}"]
    argv.append(guest.name)
    return argv


def bhyvectl_migrate_argv(
    vm: str, destination: str, keyfile: str, policy: MigrationPolicy, live: bool = True
) -> list[str]:
    """bhyvectl's command line on the source: migrate vm to destination (host:port).

    The policy's timeout is not passed (bhyvectl has none): run it with that timeout."""
    opt = BHYVECTL_POLICY_OPTIONS
    argv = ["bhyvectl", f"--vm={vm}", BHYVECTL_EVENTS_OPTION]
    argv.append(f"--migrate-live={destination}" if live else f"--migrate={destination}")
    argv.append(f"--migrate-keyfile={keyfile}")
    if live:
        argv.append(f"{opt['downtime_limit_ms']}={policy.downtime_limit_ms}")
        # bhyvectl refuses the two together: fixed rounds replace the bound.
        if policy.fixed_rounds is not None:
            argv.append(f"{opt['fixed_rounds']}={policy.fixed_rounds}")
        else:
            argv.append(f"{opt['max_rounds']}={policy.max_rounds}")
    if policy.bandwidth:
        argv.append(f"{opt['bandwidth']}={policy.bandwidth}")
    if policy.encrypt:
        argv.append(opt["encrypt"])
    if not policy.auto_throttle:
        argv.append(opt["no_throttle"])
    if policy.switchover_hook:
        argv.append(f"{opt['switchover_wait_ms']}="
                    f"{engine_wait_ms(policy.switchover_timeout)}")  # fmt: skip
    if policy.disks:
        argv.append(opt["disks"])
    if policy.streams > 1:
        argv.append(f"{opt['streams']}={policy.streams}")
    return argv


# bhyvectl's control-plane options beyond the policy: JSON event lines on stdout
# (harness.events), and the operator commands (cancel, the switchover hook's go-ahead
# and resume on the source, the "does the guest run here?" query on the destination:
# {"state", "guest_runs_here"}).
BHYVECTL_EVENTS_OPTION = "--migrate-json"
BHYVECTL_OPERATOR_OPTIONS = {
    "cancel": "--migrate-cancel",
    "continue": "--migrate-continue",
    "resume": "--migrate-resume",
    "status": "--migrate-status",
}


def bhyvectl_check_argv(vm: str, destination: str, keyfile: str) -> list[str]:
    """bhyvectl's dry run on the source: handshake, authentication, compatibility."""
    return ["bhyvectl", f"--vm={vm}", BHYVECTL_EVENTS_OPTION, f"--migrate-check={destination}",
            f"--migrate-keyfile={keyfile}"]  # fmt: skip


def bhyvectl_operator_argv(vm: str, command: str) -> list[str]:
    """bhyvectl's command line for an operator command (cancel, continue, resume,
    status); the answer is one JSON line."""
    return ["bhyvectl", f"--vm={vm}", BHYVECTL_EVENTS_OPTION, BHYVECTL_OPERATOR_OPTIONS[command]]


def destroy_vm_argv(vm: str) -> list[str]:
    """Remove a VM's kernel state (after a migration away, or a failed receive)."""
    return ["bhyvectl", f"--vm={vm}", "--destroy"]


# --------------------------------------------------------------------------------------
# Flows on one host (driven by `invoke build` / `invoke deploy`)


def build_on_host(runner: Runner, host: Host, series: Series, upload) -> None:
    """Upload the series and build files, then run build_steps().  `upload(local, remote)`
    copies one file to the host (SSHRunner.put)."""
    paths = build_paths(host)
    fb = host.freebsd or FreeBSDHost()
    run_steps(
        runner,
        [
            Step(
                "prepare directories",
                [
                    "mkdir",
                    "-p",
                    paths["patches"],
                    fb.log_dir,
                ],
                timeout=60,
            ),
            Step(
                "remove old patches",
                _sh(f"rm -f {shlex.quote(paths['patches'])}/*.patch"),
                timeout=60,
            ),
        ],
    )
    for patch in series.patches:
        upload(patch, f"{paths['patches']}/{patch.name}")
    for remote, text in build_files(host).items():
        runner.put_text(remote, text, 0o644)
    run_steps(runner, build_steps(host, series))


def deploy_to_host(runner, host: Host, reboot_timeout: float) -> str:
    """Install, reboot into the new kernel, verify.  `runner` is an SSHRunner (it needs
    boot_id() and wait_until_back()).  Returns the running kernel's `uname -v`."""
    fb = host.freebsd or FreeBSDHost()
    bectl_ok = runner.run(["bectl", "check"], timeout=60, check=False).returncode == 0
    method = boot_method(fb, bectl_ok)
    run_steps(runner, install_steps(host, method))
    expected = run_steps(runner, [expected_version_step(host)])[0].stdout
    boot_id = runner.boot_id()
    run_steps(runner, [reboot_step()])
    runner.wait_until_back(reboot_timeout, previous_boot_id=boot_id)
    results = run_steps(runner, verify_steps(host, method))
    uname_v = results[0].stdout.strip()
    check_kernel_version(host.name, fb.kernel_config, expected, uname_v)
    return uname_v
