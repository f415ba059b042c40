"""Fetching an s6-overlay release's published .sha256 files, to add the release to gen's table.

The release directory is the project's GitHub releases by default, or a mirror URL or a local
directory holding the same files (offline). Each tarball's sum is in `<tarball>.sha256`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from generator.errors import GenError
from generator.plan.init_layer import GITHUB_RELEASES, NOARCH, SYMLINK_FILES
from generator.platforms import S6_OVERLAY_ARCHES

FETCH_TIMEOUT = 30.0


def release_files() -> tuple[str, ...]:
    """Every tarball a 3.x release may publish: noarch, symlinks and one per architecture."""
    per_arch = tuple(f"s6-overlay-{arch}.tar.xz" for arch in sorted(S6_OVERLAY_ARCHES))
    return (NOARCH, *SYMLINK_FILES, *per_arch)


def _read(source: str, name: str) -> str | None:
    """The text of source/name, or None when the release does not have that file."""
    if not source.startswith(("http://", "https://", "file://")):
        path = Path(source) / name
        return path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        with urllib.request.urlopen(f"{source.rstrip('/')}/{name}", timeout=FETCH_TIMEOUT) as response:
            return response.read(65536).decode("utf-8")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise GenError(f"{source}/{name}: HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise GenError(
            f"{source}/{name}: {getattr(exc, 'reason', exc)}; check the address, or pass "
            "--source with a mirror or a directory holding the .sha256 files"
        ) from None


def fetch_sha256_files(version: str, source: str | None = None) -> dict[str, str]:
    """{tarball name: its .sha256 file's text} for the files this release publishes."""
    base = source or f"{GITHUB_RELEASES}/v{version}"
    found = {}
    for name in release_files():
        text = _read(base, f"{name}.sha256")
        if text is not None:
            found[name] = text
    if NOARCH not in found:
        raise GenError(f"no {NOARCH}.sha256 under {base}: is {version} an s6-overlay 3.x release there?")
    return found
