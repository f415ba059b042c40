"""`gen doctor`: what gen needs from this host, each problem with the exact fix."""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from generator.builder.host import Host, gen_containers_conf, host_platform, tool_version
from generator.builder.mirror import MirrorNotFound, resolve_mirror
from generator.builder.outputs import OutputImage, expand_platforms, load_outputs
from generator.builder.proc import ToolError, run_quiet
from generator.contract import BootstrapBase
from generator.errors import GenError, HostError
from generator.platforms import Platform

REQUIRED_TOOLS = {
    "buildah": "apt-get install buildah",
    "podman": "apt-get install podman",
    "skopeo": "apt-get install skopeo",
    "mmdebstrap": "apt-get install mmdebstrap",
    "git": "apt-get install git",
}
MIN_VERSIONS = {"buildah": (1, 28), "podman": (4, 3), "mmdebstrap": (1, 0)}
RLIMIT_FIX = (
    "export CONTAINERS_CONF={conf}  (gen's own, with default_ulimits = [] under [containers]), "
    "or add `default_ulimits = []` under [containers] in the containers.conf you use"
)
# podman's shared lock table (/dev/shm/libpod_lock) fills when stores are deleted with containers or
# volumes in them; renumbering rebuilds it from the normal store's objects alone.
LOCKS_FIX = (
    "run `podman system renumber` while no container runs (it frees the locks deleted stores "
    "leaked); gen's own stores keep their locks in the store (README: Containers configuration)"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, problem, warning, info
    detail: str
    fix: str = ""
    platform: str = ""  # set on the checks of one foreign platform (`gen build` names it)

    @property
    def problem(self) -> bool:
        return self.status == "problem"

    def problem_line(self) -> str:
        """The one line `gen build` and `gen rebuild` stop with."""
        return f"{self.platform or self.name}: {self.detail}; fix: {self.fix}"


def check_tools(host: Host) -> list[Check]:
    checks = []
    for name, install in REQUIRED_TOOLS.items():
        found = tool_version(name, host.env)
        if not found.present:
            checks.append(Check(name, "problem", "not installed", install))
            continue
        minimum = MIN_VERSIONS.get(name)
        if minimum and found.version and found.version < minimum:
            want = ".".join(map(str, minimum))
            checks.append(
                Check(
                    name,
                    "problem",
                    f"{found.text}: gen needs {want} or newer",
                    f"{install} (from a newer release or backports)",
                )
            )
        else:
            checks.append(Check(name, "ok", found.text))
    return checks


def check_storage(host: Host) -> Check:
    argv = ["podman", *host.podman_flags(), "info", "--format", "{{.Store.GraphDriverName}} {{.Store.GraphRoot}}"]
    try:
        proc = run_quiet(argv, host.env, timeout=60, check=False)
    except ToolError as exc:
        return Check("storage", "problem", f"podman info failed: {exc}", "install podman; see its error above")
    if proc.returncode != 0:
        return Check(
            "storage",
            "problem",
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"podman info exited {proc.returncode}",
            "fix the storage configuration podman names, or give gen an isolated store with "
            "--storage-root DIR (or GEN_STORAGE_ROOT)",
        )
    return Check("storage", "ok", proc.stdout.strip())


def _conf_containers(path: Path) -> dict | None:
    """The [containers] table of a containers.conf; None if unreadable."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return data.get("containers", {})


def _conf_sets_ulimits(path: Path) -> bool | None:
    """Whether a containers.conf sets default_ulimits under [containers]; None if unreadable."""
    table = _conf_containers(path)
    return None if table is None else "default_ulimits" in table


def check_rlimits(host: Host, probe_image: str | None) -> Check:
    """`podman run` fails on some hosts ("error setting rlimit type 7") with the engine's default
    ulimits, and on any host whose shared lock table is full; run a trivial container when an image
    is at hand (which finds both), else read the config (the first alone)."""
    conf = host.env.get("CONTAINERS_CONF", "")
    fix = RLIMIT_FIX.format(conf=gen_containers_conf())
    if probe_image:
        argv = [
            "podman",
            *host.podman_flags(),
            "run",
            "--rm",
            "--network",
            "none",
            "--pull",
            "never",
            probe_image,
            "true",
        ]
        try:
            proc = run_quiet(argv, host.env, timeout=120, check=False)
        except ToolError as exc:
            return Check("podman run", "problem", f"trial run failed: {exc}", fix)
        if proc.returncode == 0:
            return Check("podman run", "ok", f"trial container of {probe_image} ran (CONTAINERS_CONF={conf})")
        err = proc.stderr.strip()
        if "rlimit" in err:
            return Check("podman run", "problem", err.splitlines()[-1], fix)
        if "num_locks" in err:
            return Check("podman run", "problem", err.splitlines()[-1], LOCKS_FIX)
        return Check(
            "podman run",
            "problem",
            err.splitlines()[-1] if err else f"exit {proc.returncode}",
            "see the error; then rerun `gen doctor`",
        )
    sets = _conf_sets_ulimits(Path(conf)) if conf else None
    if sets:
        return Check("podman run", "ok", f"{conf} sets default_ulimits (no local image to try a run)")
    return Check(
        "podman run",
        "warning",
        f"{conf or 'no CONTAINERS_CONF'} does not set default_ulimits; `podman run` may fail with "
        '"error setting rlimit type 7" on this host (no local image to try)',
        fix,
    )


def check_mirror(host: Host, distro: str = "debian", release: str = "bookworm") -> Check:
    try:
        mirror = resolve_mirror(None, distro, release, host.env)
    except MirrorNotFound as exc:
        return Check(
            "mirror",
            "problem",
            str(exc).splitlines()[0],
            f"export GEN_MIRROR=<URL of a {distro} archive mirror>, or set base.bootstrap.mirror",
        )
    source = "GEN_MIRROR" if host.env.get("GEN_MIRROR") else "host apt sources"
    return Check("mirror", "ok", f"{distro} {release}: {mirror} (from {source})")


BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_INSTALL = "apt-get install qemu-user-static binfmt-support"


def check_binfmt(binfmt_dir: Path = BINFMT_DIR) -> Check:
    """Which foreign architectures this host can run (info when no spec needs one)."""
    handlers = sorted(p.name for p in binfmt_dir.glob("qemu-*")) if binfmt_dir.is_dir() else []
    if handlers:
        return Check("binfmt", "info", f"foreign architectures: {', '.join(handlers)}")
    return Check(
        "binfmt",
        "info",
        "no qemu binfmt handlers: native-architecture builds only",
        f"{QEMU_INSTALL} (only for other architectures)",
    )


def check_emulation(platform: str, binfmt_dir: Path = BINFMT_DIR) -> Check:
    """A spec builds for a foreign platform: its RUN steps, bootstrap scripts and `gen verify` run
    under qemu user emulation, which needs the static qemu registered with binfmt_misc with the F
    flag (the interpreter is opened at registration, so it works inside containers and chroots)."""
    name = f"qemu {platform}"
    qemu = Platform.parse(platform).qemu_name
    if qemu is None:
        return Check(name, "problem", f"gen knows no qemu emulator for {platform}", "build it on a native host")
    if shutil.which(f"qemu-{qemu}-static") is None:
        return Check(name, "problem", f"qemu-{qemu}-static is not installed", QEMU_INSTALL)
    if not (binfmt_dir / "register").exists():
        return Check(
            name,
            "problem",
            f"binfmt_misc is not mounted at {binfmt_dir}",
            f"mount -t binfmt_misc binfmt_misc {binfmt_dir}; update-binfmts --enable qemu-{qemu}",
        )
    lines = _handler_lines(binfmt_dir, qemu)
    if not lines or lines[0] != "enabled" or _read(binfmt_dir / "status") != "enabled":
        return Check(
            name,
            "problem",
            f"no enabled binfmt handler qemu-{qemu}",
            f"update-binfmts --enable qemu-{qemu} (and echo 1 > {binfmt_dir}/status)",
        )
    flags = _flags(lines)
    if "F" not in flags:
        return Check(
            name,
            "problem",
            f"qemu-{qemu} is registered without the F flag: containers cannot use it",
            f"update-binfmts --disable qemu-{qemu}; apt-get install --reinstall qemu-user-static",
        )
    return Check(name, "ok", f"qemu-{qemu} registered (flags {flags})")


def _handler_lines(binfmt_dir: Path, qemu: str) -> list[str]:
    handler = binfmt_dir / f"qemu-{qemu}"
    return handler.read_text().splitlines() if handler.is_file() else []


def _flags(lines: list[str]) -> str:
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")


def emulation_honours_setuid(platform: str, binfmt_dir: Path = BINFMT_DIR) -> bool:
    """Whether a setuid program of `platform` gets its owner's rights under qemu here: only with
    the handler's C flag (credentials from the program, not from qemu); without it the kernel
    runs qemu, which is not setuid, and the program keeps the caller's uid."""
    qemu = Platform.parse(platform).qemu_name
    return qemu is not None and "C" in _flags(_handler_lines(binfmt_dir, qemu))


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


ARCH_TEST = "arch-test"
ARCH_TEST_INSTALL = "apt-get install arch-test"
ARCH_TEST_TIMEOUT = 30  # it runs one tiny binary, under qemu: seconds even on a slow host


def _arch_test(arch: str, native_only: bool) -> tuple[bool, str]:
    """(passed, what it said) of `arch-test [-n] ARCH`; passed as mmdebstrap reads it: exit 0 and
    "ARCH: ok" on stdout. -n: without emulation (i386 on amd64, armhf on many arm64 hosts)."""
    path = shutil.which(ARCH_TEST)
    if path is None:
        return False, f"{ARCH_TEST} is not installed"
    args = [*(["-n"] if native_only else []), arch]
    command = " ".join([ARCH_TEST, *args])
    try:
        proc = run_quiet([path, *args], dict(os.environ), timeout=ARCH_TEST_TIMEOUT, check=False)
    except ToolError as exc:
        return False, f"`{command}` failed: {exc}"
    said = " ".join(proc.stdout.split())
    if proc.returncode == 0 and said == f"{arch}: ok":
        return True, said
    return False, f"`{command}` exited {proc.returncode}: {said or ' '.join(proc.stderr.split()) or 'no output'}"


def check_arch_test(platform: str, arch: str) -> Check:
    """mmdebstrap bootstraps a foreign architecture only after `arch-test ARCH` passes; without
    arch-test (only a Recommends of mmdebstrap) it stops with exit 25."""
    name = f"arch-test {platform}"
    if shutil.which(ARCH_TEST) is None:
        return Check(
            name, "problem", f"arch-test is not installed (mmdebstrap needs it to bootstrap {arch})", ARCH_TEST_INSTALL
        )
    passed, said = _arch_test(arch, native_only=False)
    if passed:
        return Check(name, "ok", said)
    return Check(name, "problem", f"{said} (mmdebstrap cannot run {arch} programs)", emulation_fix(platform))


def emulation_fix(platform: str) -> str:
    """The commands that give this host qemu user emulation of platform."""
    qemu = Platform.parse(platform).qemu_name or "<arch>"
    return f"{QEMU_INSTALL}; update-binfmts --enable qemu-{qemu}"


def platform_debian_arch(platform: str) -> str:
    """Debian's name for an OCI platform's architecture (linux/arm/v7 -> armhf)."""
    return Platform.parse(platform).debian_arch


def platform_checks(platform: str, bootstraps: bool, binfmt_dir: Path | None = None) -> list[Check]:
    """A foreign platform's checks: none when the host runs it natively; else qemu for its RUN
    steps and, when mmdebstrap bootstraps a rootfs for it, arch-test (only once qemu is there)."""
    arch = platform_debian_arch(platform)
    native, said = _arch_test(arch, native_only=True)
    if native:
        return [Check(f"arch {platform}", "ok", f"{said} (runs without emulation)", platform=platform)]
    checks = [check_emulation(platform, binfmt_dir or BINFMT_DIR)]
    if bootstraps and checks[0].problem and shutil.which(ARCH_TEST):
        # Running it would only fail for the reason the qemu check already gives.
        checks.append(Check(f"arch-test {platform}", "info", f"`arch-test {arch}` not run: fix qemu first"))
    elif bootstraps:
        checks.append(check_arch_test(platform, arch))
    return [replace(c, platform=platform) for c in checks]


def foreign_platform_bootstraps(
    units: Iterable[OutputImage],
    native: str,
    base_stored: Callable[[OutputImage], bool] = lambda unit: False,
) -> dict[str, bool]:
    """Each foreign platform among build units (expand_platforms()'s) -> whether mmdebstrap will
    bootstrap a rootfs for it: a root unit on a bootstrapped base not yet in storage (base_stored
    says). mmdebstrap skips its architecture test for the extract variant."""
    bootstraps: dict[str, bool] = {}
    for unit in units:
        platform = unit.platform or native
        if platform == native:
            continue
        base = unit.base
        needed = (
            isinstance(base, BootstrapBase)
            and base.platform is not None
            and base.variant != "extract"
            and not base_stored(unit)
        )
        bootstraps[platform] = bootstraps.get(platform, False) or needed
    return dict(sorted(bootstraps.items()))


def build_problems(
    units: Iterable[OutputImage],
    native: str,
    base_stored: Callable[[OutputImage], bool] = lambda unit: False,
    binfmt_dir: Path | None = None,
) -> list[Check]:
    """The platform checks a build of these units must pass before it starts; problems only.
    Native-only units need none, so they cost no subprocess."""
    return [
        c
        for platform, bootstraps in foreign_platform_bootstraps(units, native, base_stored).items()
        for c in platform_checks(platform, bootstraps, binfmt_dir)
        if c.problem
    ]


def require_platforms(
    units: Iterable[OutputImage], native: str, base_stored: Callable[[OutputImage], bool] = lambda unit: False
) -> None:
    """Raise HostError with each problem a build of these units would hit, one line each."""
    problems = build_problems(units, native, base_stored)
    if problems:
        raise HostError("\n".join(c.problem_line() for c in problems))


PODMAN_INIT_DEFAULT = Path("/usr/libexec/podman/catatonit")
PODMAN_INIT_INSTALL = "apt-get install catatonit"


def podman_init_path(env: dict[str, str]) -> Path:
    """The binary `podman run --init` starts: init_path from the containers.conf files podman
    reads (CONTAINERS_CONF alone when set; else the system's, then a rootless user's; the last
    wins), else podman's default."""
    if env.get("CONTAINERS_CONF"):
        confs = [Path(env["CONTAINERS_CONF"])]
    else:
        confs = [Path("/usr/share/containers/containers.conf"), Path("/etc/containers/containers.conf")]
        if os.geteuid() != 0:
            user = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config")
            confs.append(user / "containers" / "containers.conf")
    found = [(_conf_containers(c) or {}).get("init_path") for c in confs]
    return Path(next((str(p) for p in reversed(found) if p), PODMAN_INIT_DEFAULT))


def check_podman_init(host: Host) -> Check:
    """gen's own commands never pass --init, so a missing catatonit is a warning; bench/run (a README
    command) does, for the runtime benchmark's baseline."""
    path = podman_init_path(host.env)
    if os.access(path, os.X_OK):
        return Check("podman --init", "ok", str(path))
    fix = (
        PODMAN_INIT_INSTALL
        if path == PODMAN_INIT_DEFAULT
        else f"{PODMAN_INIT_INSTALL}, and point init_path in containers.conf at /usr/bin/catatonit"
    )
    return Check(
        "podman --init",
        "warning",
        f"{path} is missing: `podman run --init` fails (gen does not use it; bench/run's runtime benchmark does)",
        fix,
    )


def run_checks(host: Host, probe_image: str | None = None, foreign: dict[str, bool] | None = None) -> list[Check]:
    """Every check; foreign: each foreign platform the rendered specs build -> whether a rootfs is
    bootstrapped for it (rendered_foreign_platforms())."""
    checks = check_tools(host)
    tools_ok = all(not c.problem for c in checks if c.name == "podman")
    if tools_ok:
        checks.append(check_storage(host))
        checks.append(check_rlimits(host, probe_image))
        checks.append(check_podman_init(host))
    checks.append(check_mirror(host))
    checks.append(check_binfmt())
    for platform, bootstraps in (foreign or {}).items():
        checks += platform_checks(platform, bootstraps)
    return checks


def probe_image(host: Host) -> str | None:
    """A local image to try `podman run` with: a gen rootfs if there is one, else any named image."""
    argv = ["podman", *host.podman_flags(), "images", "--noheading", "--format", "{{.Repository}}:{{.Tag}}"]
    try:
        proc = run_quiet(argv, host.env, timeout=60, check=False)
    except ToolError:
        return None
    names = [n for n in proc.stdout.split() if not n.startswith("<none>")]
    preferred = [n for n in names if "/gen/rootfs-" in n]
    candidates = preferred or names
    return candidates[0] if candidates else None


def rendered_foreign_platforms(output_dir: Path) -> dict[str, bool]:
    """foreign_platform_bootstraps() of every rendered image, as a build from empty storage does
    (none before a render)."""
    native = host_platform()
    try:
        units = expand_platforms(load_outputs(output_dir), native)
    except GenError:
        return {}
    return foreign_platform_bootstraps(units.values(), native)
