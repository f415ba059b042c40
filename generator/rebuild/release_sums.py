"""Fetching an s6-overlay release's published .sha256 files, to add the release to gen's table.

The release directory is the project's GitHub releases by default, or a mirror URL or a local
directory holding the same files (offline). Each tarball's sum is in `<tarball>.sha256`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from generator.errors import GenError, UsageError
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
        if not path.is_file():
            return None
        try:
            with path.open("rb") as file:
                data = file.read(65536)  # a .sha256 file is one line; never read a huge file whole
        except OSError as exc:
            raise UsageError(f"{path}: unreadable ({exc.strerror or exc}); make it readable") from None
    else:
        try:
            with urllib.request.urlopen(f"{source.rstrip('/')}/{name}", timeout=FETCH_TIMEOUT) as response:
                data = response.read(65536)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise GenError(f"{source}/{name}: HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise GenError(
                f"{source}/{name}: {getattr(exc, 'reason', exc)}; check the address, or pass "
                "--sums-from with a mirror or a directory holding the .sha256 files"
            ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # bad input, not a failed fetch: exit 2
        raise UsageError(
            f"{source.rstrip('/')}/{name}: not text (a .sha256 file is one UTF-8 line, '<sha256>  <file name>'); "
            "use the release's published .sha256 file"
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
        raise UsageError(f"no {NOARCH}.sha256 under {base}: is {version} an s6-overlay 3.x release there?")
    return found
