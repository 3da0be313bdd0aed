"""Command lines and ordering for FreeBSD hosts (pure; nothing here runs FreeBSD)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness import freebsd
from harness.config import (
    FreeBSDGuest,
    FreeBSDHost,
    Guest,
    Host,
    MigrationPolicy,
)
from harness.errors import HarnessError
from harness.runner import CommandResult


def lab_host(**settings) -> Host:
    return Host(
        name="alpha", address="192.0.2.10", kind="freebsd", workdir="/var/tmp/bhyvemig",
        freebsd=FreeBSDHost(jobs=8, **settings),
    )  # fmt: skip


SERIES = freebsd.Series("0123456789abcdef0123", [Path("0001-vmm-a.patch"), Path("0002-b.patch")])


def names(steps: list[freebsd.Step]) -> list[str]:
    return [s.name for s in steps]


def flat(step: freebsd.Step) -> str:
    return shlex.join(step.argv)


def test_build_order_and_content() -> None:
    steps = freebsd.build_steps(lab_host(), SERIES)
    assert names(steps) == [
        "check the src tree", "refuse local changes", "abort an unfinished git am",
        "fetch the base commit", "check out the base commit", "apply the series",
        "install the kernel config", "load filemon for meta mode", "buildworld", "buildkernel",
    ]  # fmt: skip
    by = {s.name: s for s in steps}
    assert by["check out the base commit"].argv == [
        "git", "-C", "/usr/src", "checkout", "--quiet", "--force", "-B", "bhyvemig",
        "0123456789abcdef0123",
    ]  # fmt: skip
    apply = flat(by["apply the series"])
    assert "am --3way /var/tmp/bhyvemig/patches/0001-vmm-a.patch" in apply
    assert apply.index("0001-vmm-a.patch") < apply.index("0002-b.patch")
    assert "am --abort" in apply  # a failed am is undone
    world = by["buildworld"].argv[2]
    assert "make -C /usr/src -j8 SRCCONF=/var/tmp/bhyvemig/src.conf" in world
    assert "SRC_ENV_CONF=/var/tmp/bhyvemig/src-env.conf" in world
    assert world.endswith("buildworld")
    assert by["buildworld"].log == "/var/log/bhyvemig/buildworld.log"
    assert world.startswith("exec >/var/log/bhyvemig/buildworld.log 2>&1;")
    assert "KERNCONF=BHYVEMIG" in by["buildkernel"].argv[2]
    assert by["load filemon for meta mode"].argv == ["kldload", "-n", "filemon"]
    assert not by["abort an unfinished git am"].check


def test_jobs_default_to_ncpu() -> None:
    host = lab_host()
    assert host.freebsd is not None
    host.freebsd.jobs = None
    world = next(s for s in freebsd.build_steps(host, SERIES) if s.name == "buildworld")
    assert "-j$(sysctl -n hw.ncpu)" in world.argv[2]


def test_build_files() -> None:
    files = freebsd.build_files(lab_host())
    assert files["/var/tmp/bhyvemig/src.conf"] == "WITH_BHYVE_SNAPSHOT=yes\n"
    assert files["/var/tmp/bhyvemig/src-env.conf"] == "WITH_META_MODE=yes\n"
    kernconf = files["/var/tmp/bhyvemig/BHYVEMIG.conf"]
    assert "include GENERIC\n" in kernconf
    assert "ident BHYVEMIG\n" in kernconf
    assert "options BHYVE_SNAPSHOT\n" in kernconf
    assert freebsd.build_paths(lab_host())["kernconf"] == "/usr/src/sys/amd64/conf/BHYVEMIG"


def test_install_with_boot_environment() -> None:
    steps = freebsd.install_steps(lab_host(), "bectl")
    order = names(steps)
    assert order[0] == "check the build"
    assert order.index("create the boot environment") < order.index("installkernel")
    assert order.index("installworld") < order.index("unmount the boot environment")
    assert order[-1] == "activate it for the next boot only"
    assert steps[-1].argv == ["bectl", "activate", "-t", "bhyvemig"]
    installkernel = next(s for s in steps if s.name == "installkernel")
    assert "DESTDIR=/tmp/be.bhyvemig" in installkernel.argv[2]
    verify = freebsd.verify_steps(lab_host(), "bectl")
    assert verify[-1].argv == ["bectl", "activate", "bhyvemig"]  # only after a verified boot


def test_install_with_nextboot() -> None:
    steps = freebsd.install_steps(lab_host(), "nextboot")
    assert "KODIR=/boot/BHYVEMIG" in steps[1].argv[2]
    assert [s.name for s in steps[2:5]] == [
        "install lib/libvmmapi", "install usr.sbin/bhyve", "install usr.sbin/bhyvectl",
    ]  # fmt: skip
    assert steps[-1].argv == ["nextboot", "-k", "BHYVEMIG"]
    assert "bectl" not in " ".join(names(freebsd.verify_steps(lab_host(), "nextboot")))


def test_boot_method() -> None:
    assert freebsd.boot_method(FreeBSDHost(boot="auto"), True) == "bectl"
    assert freebsd.boot_method(FreeBSDHost(boot="auto"), False) == "nextboot"
    assert freebsd.boot_method(FreeBSDHost(boot="nextboot"), True) == "nextboot"
    with pytest.raises(HarnessError):
        freebsd.install_steps(lab_host(), "floppy")


def test_verify_checks_vmm_and_kernel() -> None:
    steps = freebsd.verify_steps(lab_host(), "nextboot")
    assert steps[0].argv == ["uname", "-v"]
    assert any("kldload -n vmm" in flat(s) for s in steps)
    uname = (
        "FreeBSD 15.0-RELEASE #1 bhyvemig-n1: Mon Jan  5 "
        "root@alpha:/usr/obj/usr/src/amd64.amd64/sys/BHYVEMIG"
    )
    freebsd.check_kernel_version("alpha", "BHYVEMIG", uname, uname + "  ")
    with pytest.raises(HarnessError, match="fell back to the previous one"):
        freebsd.check_kernel_version(
            "alpha", "BHYVEMIG", uname, uname.replace("BHYVEMIG", "GENERIC")
        )
    with pytest.raises(HarnessError, match="older BHYVEMIG build"):
        freebsd.check_kernel_version("alpha", "BHYVEMIG", uname, uname.replace("#1", "#0"))


class FakeRunner:
    """Records commands; fails the ones whose text contains `fail_on`."""

    name = "alpha"
    workdir = "/var/tmp/bhyvemig"

    def __init__(self, fail_on: str):
        self.fail_on = fail_on
        self.ran: list[list[str]] = []

    def run(self, argv, timeout=60.0, check=True):
        self.ran.append(argv)
        if argv[0] == "tail":
            return CommandResult(
                argv, 0, "cc: error: vmm_migration.c:12: boom\n*** Error code 1\n", ""
            )
        code = 1 if self.fail_on in shlex.join(argv) else 0
        return CommandResult(argv, code, "", "make failed" if code else "")


def test_failed_step_stops_and_keeps_log() -> None:
    runner = FakeRunner("buildworld")
    with pytest.raises(freebsd.BuildError) as info:
        freebsd.run_steps(runner, freebsd.build_steps(lab_host(), SERIES))
    err = info.value
    assert err.log == "/var/log/bhyvemig/buildworld.log"
    message = str(err)
    assert (
        "alpha: buildworld failed (exit 1); log kept at alpha:/var/log/bhyvemig/buildworld.log"
        in message
    )
    assert "vmm_migration.c:12: boom" in message  # the log's tail is quoted
    assert runner.ran[-1] == ["tail", "-n", "30", "/var/log/bhyvemig/buildworld.log"]
    assert not any("buildkernel" in shlex.join(a) for a in runner.ran)  # stopped there


def test_unchecked_step_does_not_stop() -> None:
    runner = FakeRunner("am --abort")
    freebsd.run_steps(runner, freebsd.build_steps(lab_host(), SERIES)[:3])
    assert len(runner.ran) == 3


def test_find_series(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no \\*.patch files"):
        freebsd.find_series(tmp_path)
    (tmp_path / "0002-b.patch").write_text("x\n")
    (tmp_path / "0001-a.patch").write_text("x\n-- \nbase-commit: abcdef1234567\n")
    series = freebsd.find_series(tmp_path)
    assert series.base_commit == "abcdef1234567"
    assert [p.name for p in series.patches] == ["0001-a.patch", "0002-b.patch"]
    (tmp_path / "base-commit").write_text("1234567890abcdef\n")
    assert freebsd.find_series(tmp_path).base_commit == "1234567890abcdef"


def test_migration_command_lines() -> None:
    guest = Guest(
        name="fbsd-guest", memory=4 << 30, vcpus=2,
        freebsd=FreeBSDGuest(
            disk="/vm/g.img", devices=["0,hostbridge", "3,virtio-blk,/vm/g.img", "31,lpc"],
            config={"lpc.com1.path": "stdio"}, bootrom="/boot/BHYVE_UEFI.fd",
        ),
    )  # fmt: skip
    dst = freebsd.endpoint("2001:db8::11", 24981)
    assert dst == "[2001:db8::11]:24981"
    argv = freebsd.bhyve_argv(guest, receive=dst, keyfile="/var/tmp/bhyvemig/fbsd-guest.migkey")
    assert argv[:5] == ["bhyve", "-c", "2", "-m", "4096M"]
    assert argv[-1] == "fbsd-guest"
    joined = shlex.join(argv)
    assert "-s 3,virtio-blk,/vm/g.img" in joined
    assert "-l bootrom,/boot/BHYVE_UEFI.fd" in joined
    assert "-o lpc.com1.path=stdio" in joined
    assert (
        "-R '[2001:db8::11]:24981' -o migration.keyfile=/var/tmp/bhyvemig/fbsd-guest.migkey"
        in joined
    )
    assert "-R" not in freebsd.bhyve_argv(guest)  # the source starts it normally
    with pytest.raises(HarnessError, match="key file"):
        freebsd.bhyve_argv(guest, receive=dst)

    policy = MigrationPolicy(downtime_limit_ms=200, max_rounds=10, fixed_rounds=4,
                             bandwidth=125_000_000, encrypt=True, auto_throttle=True,
                             timeout=300)  # fmt: skip
    src = freebsd.bhyvectl_migrate_argv("fbsd-guest", freebsd.endpoint("192.0.2.11", 24981),
                                        "/k", policy)  # fmt: skip
    assert src[:5] == ["bhyvectl", "--vm=fbsd-guest", "--migrate-json",
                       "--migrate-live=192.0.2.11:24981", "--migrate-keyfile=/k"]  # fmt: skip
    assert "--migrate-downtime-limit=200" in src
    assert "--migrate-fixed-rounds=4" in src
    assert not any(a.startswith("--migrate-max-rounds") for a in src)  # bhyvectl: exclusive
    assert "--migrate-bandwidth=125000000" in src
    assert "--migrate-encrypt" in src
    assert not any("timeout" in a for a in src)  # bhyvectl has none: the harness bounds it
    default = freebsd.bhyvectl_migrate_argv("g", "h:1", "/k", MigrationPolicy())
    assert "--migrate-encrypt" not in default
    assert "--migrate-no-throttle" not in default
    assert "--migrate-no-throttle" in freebsd.bhyvectl_migrate_argv(
        "g", "h:1", "/k", MigrationPolicy(auto_throttle=False))
    assert "--migrate-disks" not in default
    assert "--migrate-disks" in freebsd.bhyvectl_migrate_argv(
        "g", "h:1", "/k", MigrationPolicy(disks=True))
    assert not any("streams" in a for a in default)
    assert "--migrate-streams=4" in freebsd.bhyvectl_migrate_argv(
        "g", "h:1", "/k", MigrationPolicy(streams=4))
    cold = freebsd.bhyvectl_migrate_argv("g", "h:1", "/k", MigrationPolicy(), live=False)
    assert "--migrate=h:1" in cold and not any("rounds" in a for a in cold)
    # A switchover hook: the engine waits the hook's limit and a margin for the answer.
    assert not any("switchover" in a for a in default)
    hooked = freebsd.bhyvectl_migrate_argv("g", "h:1", "/k", MigrationPolicy(
        switchover_hook="./zfs-hook.sh", switchover_timeout=90))
    assert "--migrate-switchover-wait=95000" in hooked
    assert freebsd.bhyvectl_operator_argv("g", "continue") == [
        "bhyvectl", "--vm=g", "--migrate-json", "--migrate-continue"]
