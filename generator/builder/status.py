"""`gen images`: what is built, under which tags, and whether it matches output/."""

from __future__ import annotations

from dataclasses import dataclass

from generator.builder import storage
from generator.builder.engine import Builder


@dataclass(frozen=True)
class ImageStatus:
    name: str
    tags: tuple[str, ...]  # full references currently on the image
    id: str | None
    digest: str | None
    up_to_date: bool
    reasons: tuple[str, ...]
    size: int | None
    layers: int | None
    build_id: str | None
    platform: str  # os/arch of this row's image: one row per platform of an image with several


def image_statuses(builder: Builder) -> list[ImageStatus]:
    """One row per rendered image and platform, in build order; an image never built has id None."""
    rows = []
    for planned in builder.plan([]):
        image = builder.images[planned.name]
        current = None
        if planned.build_id and planned.action != "build":
            current = storage.inspect(builder.host, f"{builder.options.prefix}/{image.repo}:{planned.build_id}")
        if current is None:
            current = storage.inspect(builder.host, planned.tags[0])
        build_id = None
        if current is not None:
            build_id = next(
                (n.rsplit(":", 1)[1] for n in current.names if n.rsplit(":", 1)[1].startswith("gen-")), None
            )
        rows.append(
            ImageStatus(
                name=planned.name,
                tags=tuple(n for n in current.names if n.rsplit(":", 1)[1] in planned_tags(planned.tags))
                if current
                else (),
                id=current.id if current else None,
                digest=current.digest if current else None,
                up_to_date=planned.action == "skip",
                reasons=planned.reasons,
                size=current.size if current else None,
                layers=current.layers if current else None,
                build_id=build_id,
                platform=image.platform or builder.host_platform,
            )
        )
    return rows


def planned_tags(refs: tuple[str, ...]) -> set[str]:
    return {ref.rsplit(":", 1)[1] for ref in refs}
