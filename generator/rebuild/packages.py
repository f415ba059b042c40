"""What is installed in a built image, read from its dpkg database without running the image.

As root, `podman image mount` exposes the image's files read-only in place; gen reads
/var/lib/dpkg/status and the machine-readable (DEP-5) copyright files from there. Where mounting
is refused (rootless without unshare) it falls back to `podman run --entrypoint cat` for the status
file, and licenses stay unknown. Free-text copyright files give no license: guessing from prose
would put wrong licenses in an SBOM.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from generator.builder.host import Host
from generator.builder.proc import ToolError, run_quiet
from generator.errors import GenError

STATUS_FILE = "var/lib/dpkg/status"
DOC_DIR = "usr/share/doc"
DEP5_FORMAT = re.compile(r"^Format:\s*\S*copyright-format", re.IGNORECASE | re.MULTILINE)
# DEP-5 short names whose SPDX identifier differs from the name (DEP-5 marks "or later" with +).
DEP5_TO_SPDX = {
    "Expat": "MIT",
    "BSD-2-clause": "BSD-2-Clause",
    "BSD-3-clause": "BSD-3-Clause",
    "BSD-4-clause": "BSD-4-Clause",
    "public-domain": "",
    "Zlib": "Zlib",
    "Artistic": "Artistic-1.0-Perl",
    "MPL-2.0": "MPL-2.0",
    "Apache-2.0": "Apache-2.0",
    "ISC": "ISC",
    "OpenSSL": "OpenSSL",
}
_GNU = re.compile(r"^(GPL|LGPL|AGPL|GFDL)-(\d(?:\.\d)?)(\+)?$")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    source: str
    source_version: str
    licenses: tuple[str, ...] = ()  # SPDX ids where known, else DEP-5 short names


def parse_status(text: str) -> list[Package]:
    """Installed packages of a dpkg status file, sorted by name and architecture."""
    packages = []
    for stanza in _stanzas(text):
        if stanza.get("status", "").split()[-1:] != ["installed"]:
            continue
        version = stanza.get("version", "")
        source, _, rest = stanza.get("source", "").partition(" ")
        source_version = rest.strip("() ") or version
        packages.append(
            Package(
                stanza.get("package", ""),
                version,
                stanza.get("architecture", ""),
                source or stanza.get("package", ""),
                source_version,
            )
        )
    return sorted(packages, key=lambda p: (p.name, p.architecture))


def _stanzas(text: str) -> list[Deb822]:
    """deb822 paragraphs of a dpkg status or DEP-5 copyright file (python-debian)."""
    return list(Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False))


def dep5_licenses(text: str) -> tuple[str, ...]:
    """License short names of a machine-readable copyright file's Files stanzas (first line of each
    License field), in order of appearance; () for a free-text file."""
    if not DEP5_FORMAT.search(text):
        return ()
    found: list[str] = []
    for stanza in _stanzas(text):
        if "files" not in stanza or "license" not in stanza:
            continue
        first = stanza["license"].splitlines()[0].strip()
        for name in re.split(r"\s+(?:or|and)\s+|\s*,\s*", first):
            spdx = to_spdx(name.strip())
            if spdx and spdx not in found:
                found.append(spdx)
    return tuple(found)


def to_spdx(name: str) -> str:
    """An SPDX id for a DEP-5 short name where one maps exactly; the name itself otherwise."""
    if name in DEP5_TO_SPDX:
        return DEP5_TO_SPDX[name]
    match = _GNU.match(name)
    if match:
        family, version, later = match.groups()
        version = version if "." in version else f"{version}.0"
        return f"{family}-{version}-{'or-later' if later else 'only'}"
    return name


@contextmanager
def mounted(host: Host, ref: str) -> Iterator[Path | None]:
    """The image's root directory, mounted read-only for the duration; None if mounting is refused."""
    flags = host.podman_flags()
    try:
        proc = run_quiet(["podman", *flags, "image", "mount", ref], host.env, timeout=120, check=False)
    except ToolError:
        yield None
        return
    if proc.returncode != 0 or not proc.stdout.strip():
        yield None
        return
    try:
        yield Path(proc.stdout.strip().splitlines()[-1])
    finally:
        run_quiet(["podman", *flags, "image", "unmount", ref], host.env, timeout=120, check=False)


def installed_packages(host: Host, ref: str) -> list[Package]:
    """The packages installed in the image ref names, with licenses where the image has DEP-5
    copyright files. [] for an image without dpkg (not a Debian-family image)."""
    with mounted(host, ref) as root:
        if root is not None:
            status = root / STATUS_FILE
            if not status.is_file():
                return []
            packages = parse_status(status.read_text(errors="replace"))
            return [_with_licenses(root, p) for p in packages]
    proc = run_quiet(
        [
            "podman",
            *host.podman_flags(),
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "0",
            "--entrypoint",
            "cat",
            ref,
            "/" + STATUS_FILE,
        ],
        host.env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        if "no such file" in proc.stderr.lower():
            return []
        raise GenError(f"reading the package database of {ref} failed: {proc.stderr.strip()[-300:]}")
    return parse_status(proc.stdout)


def _with_licenses(root: Path, package: Package) -> Package:
    name = package.name.split(":")[0]
    path = root / DOC_DIR / name / "copyright"
    try:
        # A link with an absolute target would resolve on the host, not in the image: skip it.
        inside = path.resolve().is_relative_to(root.resolve())
        text = path.read_text(errors="replace") if inside and path.is_file() else ""
    except OSError:
        text = ""
    licenses = dep5_licenses(text)
    if not licenses:
        return package
    return Package(
        package.name, package.version, package.architecture, package.source, package.source_version, licenses
    )
