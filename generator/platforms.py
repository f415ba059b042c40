"""One value type for a container platform and every name the tools give its architecture.

A platform is written as OCI writes it (`linux/arm/v7`); mmdebstrap and dpkg call that
architecture `armhf`, s6-overlay's release files `armhf`, qemu's binfmt handler `arm`, and
`uname -m` on such a host says `armv7l`. The table below is the only place those names meet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _ArchNames:
    debian: str
    s6_overlay: str | None  # None: s6-overlay publishes no release for it
    qemu: str
    machines: tuple[str, ...]  # what platform.machine() says on a host that runs it natively


# OCI architecture[/variant] -> its names elsewhere.
_ARCHITECTURES: dict[str, _ArchNames] = {
    "amd64": _ArchNames("amd64", "x86_64", "x86_64", ("x86_64", "amd64")),
    "arm64": _ArchNames("arm64", "aarch64", "aarch64", ("aarch64", "arm64")),
    "arm/v7": _ArchNames("armhf", "armhf", "arm", ("armv7l",)),
    "arm/v6": _ArchNames("armel", "arm", "arm", ()),
    "arm/v5": _ArchNames("armel", None, "arm", ()),
    "386": _ArchNames("i386", "i686", "i386", ("i686",)),
    "ppc64le": _ArchNames("ppc64el", "powerpc64le", "ppc64le", ("ppc64le",)),
    "riscv64": _ArchNames("riscv64", "riscv64", "riscv64", ("riscv64",)),
    "s390x": _ArchNames("s390x", "s390x", "s390x", ("s390x",)),
}


@dataclass(frozen=True)
class Platform:
    """os/architecture[/variant], as in `--platform linux/arm/v7`."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """From `os/arch[/variant]` (the schema has already checked the form)."""
        os_name, _, rest = text.partition("/")
        architecture, _, variant = rest.partition("/")
        return cls(os_name, architecture, variant)

    @classmethod
    def of_machine(cls, machine: str) -> Platform:
        """The platform a host whose `uname -m` says machine runs natively."""
        for arch, names in _ARCHITECTURES.items():
            if machine in names.machines:
                return cls.parse(f"linux/{arch}")
        return cls("linux", machine)

    def __str__(self) -> str:
        return f"{self.os}/{self.arch_variant}"

    @property
    def arch_variant(self) -> str:
        """TARGETARCH[/TARGETVARIANT]: `arm/v7`, `amd64`."""
        return f"{self.architecture}/{self.variant}" if self.variant else self.architecture

    @property
    def suffix(self) -> str:
        """The tag suffix of this platform's own image: arm64, arm-v7."""
        return self.arch_variant.replace("/", "-")

    @property
    def debian_arch(self) -> str:
        """dpkg's and mmdebstrap's name (armhf for arm/v7); the OCI name where gen knows no other."""
        names = _ARCHITECTURES.get(self.arch_variant)
        return names.debian if names else self.architecture

    @property
    def s6_overlay_arch(self) -> str | None:
        """The architecture in s6-overlay's release file names (s6-overlay-<arch>.tar.xz)."""
        names = _ARCHITECTURES.get(self.arch_variant)
        return names.s6_overlay if names else None

    @property
    def qemu_name(self) -> str | None:
        """qemu's name: the binfmt handler qemu-<name>, the emulator qemu-<name>-static."""
        names = _ARCHITECTURES.get(self.arch_variant)
        return names.qemu if names else None


DEFAULT_PLATFORM = Platform.parse("linux/amd64")
S6_OVERLAY_ARCHES = frozenset(names.s6_overlay for names in _ARCHITECTURES.values() if names.s6_overlay)
