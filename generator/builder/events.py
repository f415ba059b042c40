"""What the build reports while it runs; the CLI turns these into a live display."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Phase(str, Enum):
    PLANNED = "planned"  # decided: build or skip, with the reason in message
    BOOTSTRAP = "bootstrap"  # bootstrapping a base rootfs
    STARTED = "started"  # buildah started on this image
    STEP = "step"  # buildah entered a Dockerfile step (step holds its text)
    TAGGED = "tagged"  # build done and every tag applied (message: the image id)
    SKIPPED = "skipped"  # up to date, or a parent failed (message says which)
    FAILED = "failed"  # message holds the error


@dataclass(frozen=True)
class BuildEvent:
    image: str
    phase: Phase
    step: str = ""
    elapsed: float = 0.0  # seconds since this image's work started
    message: str = ""


EventHandler = Callable[[BuildEvent], None]


def ignore_event(event: BuildEvent) -> None:
    """The default handler: library callers that want no progress pass nothing."""
