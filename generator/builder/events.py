"""What the build, and the scheduled rebuild around it, report while they run; the CLI turns these
into a live display or log lines."""

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
    # The scheduled rebuild's own steps around the build (gen rebuild).
    CHECK = "check"  # asking the package index for updates
    ADOPT = "adopt"  # pulling an image published under the same tag
    VERIFY = "verify"  # gen verify on an image just built
    PUSH = "push"  # pushing an image just verified


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
