"""Which package mirror a bootstrap uses: the spec's, else GEN_MIRROR, else the host's apt sources.

The mirror is a build input, never part of output/, so the same output/ builds on any machine with
a reachable mirror. Snapshots follow the Debian snapshot archive's layout: `<mirror>/<YYYYMMDDThhmmssZ>/`
appended to a snapshot service's archive URL (e.g. GEN_MIRROR=<service>/archive/debian gives
`<service>/archive/debian/20240101T000000Z/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from generator.errors import GenError

MIRROR_ENV = "GEN_MIRROR"
_SECURITY_MARKERS = ("security",)


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry: where it came from, its URIs, suites and components."""

    file: Path
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    enabled: bool = True


class MirrorNotFound(GenError):
    """No mirror was given and none could be taken from the host's apt sources."""


def _strip_options(words: list[str]) -> list[str]:
    """Drop a one-line entry's `[arch=amd64 signed-by=...]` block."""
    if words and words[0].startswith("["):
        while words and not words[0].endswith("]"):
            words = words[1:]
        words = words[1:]
    return words


def parse_one_line(path: Path, text: str) -> list[AptSource]:
    """Parse a one-line-style sources.list."""
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        words = _strip_options(words[1:])
        if len(words) < 2:
            continue
        sources.append(AptSource(path, (words[0],), (words[1],), tuple(words[2:])))
    return sources


def parse_deb822(path: Path, text: str) -> list[AptSource]:
    """Parse a deb822-style .sources file: stanzas of `Field: value` separated by blank lines."""
    sources = []
    for stanza in _stanzas(text):
        types = stanza.get("types", "").split()
        if "deb" not in types:
            continue
        enabled = stanza.get("enabled", "yes").strip().lower() not in ("no", "false", "0")
        sources.append(
            AptSource(
                path,
                tuple(stanza.get("uris", "").split()),
                tuple(stanza.get("suites", "").split()),
                tuple(stanza.get("components", "").split()),
                enabled,
            )
        )
    return sources


def _stanzas(text: str) -> list[Deb822]:
    """deb822 paragraphs (python-debian: comments, continuation lines, case-insensitive names)."""
    return list(Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False))


def host_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every `deb` entry of the host: deb822 files first (the modern default), then sources.list."""
    sources: list[AptSource] = []
    listd = etc_apt / "sources.list.d"
    if listd.is_dir():
        for path in sorted(listd.glob("*.sources")):
            sources += parse_deb822(path, path.read_text(errors="replace"))
        for path in sorted(listd.glob("*.list")):
            sources += parse_one_line(path, path.read_text(errors="replace"))
    main = etc_apt / "sources.list"
    if main.is_file():
        sources += parse_one_line(main, main.read_text(errors="replace"))
    return sources


def _looks_like_archive(uri: str, distro: str) -> bool:
    """The distro's main archive rather than a security or third-party repository: its path ends
    in the distro's name (.../debian, .../ubuntu)."""
    bare = uri.rstrip("/")
    if any(marker in bare.rsplit("/", 1)[-1] for marker in _SECURITY_MARKERS):
        return False
    return bare.endswith(f"/{distro}")


def mirror_from_sources(sources: list[AptSource], distro: str, suite: str) -> str | None:
    """The first URI serving `suite` itself (not -updates/-security) from the distro's archive;
    failing that, the first archive URI of the distro serving any suite."""
    candidates = [s for s in sources if s.enabled]
    for source in candidates:
        if suite in source.suites:
            for uri in source.uris:
                if _looks_like_archive(uri, distro):
                    return uri.rstrip("/")
    for source in candidates:
        for uri in source.uris:
            if _looks_like_archive(uri, distro):
                return uri.rstrip("/")
    return None


def resolve_mirror(
    spec_mirror: str | None, distro: str, suite: str, env: dict[str, str], etc_apt: Path = Path("/etc/apt")
) -> str:
    """The mirror for a bootstrap, by precedence: spec, GEN_MIRROR, host apt sources."""
    if spec_mirror:
        return spec_mirror.rstrip("/")
    if env.get(MIRROR_ENV):
        return env[MIRROR_ENV].rstrip("/")
    found = mirror_from_sources(host_sources(etc_apt), distro, suite)
    if found:
        return found
    raise MirrorNotFound(
        f"no {distro} mirror for {suite}: the spec sets none, {MIRROR_ENV} is unset, and no "
        f"{distro} archive entry was found in {etc_apt}/sources.list or {etc_apt}/sources.list.d/*.sources\n"
        f"  fix: export {MIRROR_ENV}=<URL of a {distro} archive mirror, ending in /{distro}>, "
        f"or set base.bootstrap.mirror in the spec (check with `gen doctor`)"
    )


def snapshot_url(mirror: str, snapshot: str | None) -> str:
    """The archive URL for a pinned snapshot (the Debian snapshot archive's layout), or the mirror itself."""
    return f"{mirror.rstrip('/')}/{snapshot}" if snapshot else mirror.rstrip("/")
