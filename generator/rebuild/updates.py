"""Newer package versions for a built image, resolved against the current package index.

A throwaway container of the image (--rm, root, the image's entrypoint bypassed) gets the mirror
gen builds with (spec > GEN_MIRROR > host apt sources, passed in at run time, never written into
the project) in place of the bootstrap's sources.list, keeps the repositories the image's own
layers added under sources.list.d (a vendor's repository is checked too), runs `apt-get update`
and `apt-get -s upgrade`, and gen reads the `Inst` lines of the simulation. It runs on the host's
network, as buildah's chroot builds do, so it reaches exactly the repositories a rebuild would.
Downloaded indexes go to a cache directory shared by every image of the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from generator.builder.host import Host
from generator.builder.mirror import resolve_mirror, snapshot_url
from generator.builder.outputs import OutputImage, ancestors
from generator.builder.proc import run_quiet
from generator.contract import BootstrapBase
from generator.errors import GenError
from generator.schema import BOOTSTRAP_DISTROS

CHECK_TIMEOUT = 600.0
# `Inst libc6 [2.36-9+deb12u3] (2.36-9+deb12u4 Debian-Security:12/stable-security [amd64])`
_INST = re.compile(r"^Inst (\S+) \[([^\]]+)\] \((\S+) ([^\[)]*?)\s*(?:\[[^\]]*\])?\)")
# The sh -c program of the check container; mirror and suite come in as environment variables.
CHECK_SCRIPT = (
    'set -e; echo "deb $GEN_APT_URL $GEN_APT_SUITE $GEN_APT_COMPONENTS" > /etc/apt/sources.list; '
    "apt-get -qq -o Acquire::Check-Valid-Until=false update >&2; "
    "apt-get -s -o Debug::NoLocking=1 upgrade"
)


@dataclass(frozen=True)
class Update:
    package: str
    old: str
    new: str
    origin: str

    @property
    def security(self) -> bool:
        return "security" in self.origin.lower()


def parse_simulation(text: str) -> list[Update]:
    """Updates from `apt-get -s upgrade` output, security updates first, then by name."""
    found = []
    for line in text.splitlines():
        match = _INST.match(line.strip())
        if match:
            found.append(Update(match.group(1), match.group(2), match.group(3), match.group(4).strip()))
    return sorted(found, key=lambda u: (not u.security, u.package))


def root_of(images: dict[str, OutputImage], name: str) -> OutputImage:
    chain = ancestors(images, name)
    return images[chain[-1]] if chain else images[name]


def apt_source(images: dict[str, OutputImage], name: str, env: dict[str, str]) -> tuple[str, str, str] | None:
    """(url, suite, components) the image's packages come from; None for a non-apt distro or a
    base that is not bootstrapped (gen does not know its sources)."""
    root = root_of(images, name)
    base = root.base
    if not isinstance(base, BootstrapBase) or base.distro not in BOOTSTRAP_DISTROS:
        return None
    mirror = resolve_mirror(base.mirror, base.distro, base.release, env)
    url = snapshot_url(mirror, base.snapshot)
    return url, base.release, " ".join(base.components)


def available_updates(
    host: Host, ref: str, source: tuple[str, str, str], lists_cache: Path, platform: str | None = None
) -> list[Update]:
    """Updates the package index offers for the image `ref` (of `platform`, emulated if foreign)."""
    url, suite, components = source
    lists_cache.mkdir(parents=True, exist_ok=True)
    # As root: the image's USER may be a non-root user, and apt needs root.
    argv = [
        "podman",
        *host.podman_flags(),
        "run",
        "--rm",
        "--network",
        "host",
        "--user",
        "0",
        *(["--platform", platform] if platform else []),
        "--entrypoint",
        "sh",
        "-e",
        f"GEN_APT_URL={url}",
        "-e",
        f"GEN_APT_SUITE={suite}",
        "-e",
        f"GEN_APT_COMPONENTS={components}",
        "-v",
        f"{lists_cache}:/var/lib/apt/lists",
        ref,
        "-c",
        CHECK_SCRIPT,
    ]
    proc = run_quiet(argv, host.env, timeout=CHECK_TIMEOUT, check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise GenError(
            f"checking {ref} for package updates failed (exit {proc.returncode}): {tail}; "
            "check the mirror (spec base.bootstrap.mirror, GEN_MIRROR or the host's apt sources)"
        )
    return parse_simulation(proc.stdout)
