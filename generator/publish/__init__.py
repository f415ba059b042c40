"""Publish stage: moving built images between gen's storage and registries with skopeo: push,
pull and retag, per-platform images joined in an OCI index, SBOMs attached beside them. It
depends on build only; the rebuild stage depends on it.

Entry points:
- parse_registry(text, insecure) -> Registry;
- push_images / pull_images / retag_images(host, images, names, ...) -> list[Transferred];
- select_images(project, names, since) -> (images, names): all, named, or affected since REV.
"""

from __future__ import annotations

from pathlib import Path

from generator.builder.outputs import OutputImage, load_outputs, select
from generator.builder.since import affected_images, changed_paths
from generator.publish.skopeo import RegistryError, Skopeo
from generator.publish.target import Registry, is_loopback, parse_registry
from generator.publish.transfer import Transferred, pull_images, push_images, retag_images

__all__ = [
    "Registry",
    "RegistryError",
    "Skopeo",
    "Transferred",
    "is_loopback",
    "parse_registry",
    "pull_images",
    "push_images",
    "retag_images",
    "select_images",
]


def select_images(project: Path, names: list[str], since: str | None) -> tuple[dict[str, OutputImage], list[str]]:
    """Rendered images of the project and the chosen ones in build order: the named ones (all when
    none), narrowed to those affected in (since, HEAD] when since is given."""
    images = load_outputs(project / "output")
    chosen = select(images, names)
    if since:
        affected = affected_images(images, changed_paths(project, since))
        chosen = [n for n in chosen if n in affected]
    return images, chosen
