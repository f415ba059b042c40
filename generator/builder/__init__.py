"""Build stage: rendered output/ to images in containers storage, with buildah.

The only stage (with verify) that runs subprocesses. Entry points:
- Host.from_env(storage_root, project): storage and config for every subprocess;
- Builder(host, output_dir, project_root, BuildOptions, on_event, cancel).plan(names) / .build(names);
- affected_images(...) with changed_paths(...) for --since;
- check_reproducible(...); image_statuses(builder); run_checks(host) for `gen doctor`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are imported on first use (PEP 562), so a command that needs only Host does not load the
# engine, the render stage and the spec loader at start-up.
_HOMES = {
    "UP_TO_DATE": "decide",
    "DEFAULT_PREFIX": "engine",
    "Builder": "engine",
    "BuildFailed": "engine",
    "BuildOptions": "engine",
    "BuildReport": "engine",
    "BuiltImage": "engine",
    "PlannedImage": "engine",
    "BuildEvent": "events",
    "EventHandler": "events",
    "Phase": "events",
    "Host": "host",
    "gen_containers_conf": "host",
    "MirrorNotFound": "mirror",
    "resolve_mirror": "mirror",
    "Cancel": "proc",
    "Interrupted": "proc",
    "affected_images": "since",
    "changed_paths": "since",
}

if TYPE_CHECKING:
    from generator.builder.decide import UP_TO_DATE
    from generator.builder.engine import (
        DEFAULT_PREFIX,
        Builder,
        BuildFailed,
        BuildOptions,
        BuildReport,
        BuiltImage,
        PlannedImage,
    )
    from generator.builder.events import BuildEvent, EventHandler, Phase
    from generator.builder.host import Host, gen_containers_conf
    from generator.builder.mirror import MirrorNotFound, resolve_mirror
    from generator.builder.proc import Cancel, Interrupted
    from generator.builder.since import affected_images, changed_paths


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "DEFAULT_PREFIX",
    "UP_TO_DATE",
    "BuildEvent",
    "BuildFailed",
    "BuildOptions",
    "BuildReport",
    "Builder",
    "BuiltImage",
    "Cancel",
    "EventHandler",
    "Host",
    "Interrupted",
    "MirrorNotFound",
    "Phase",
    "PlannedImage",
    "affected_images",
    "changed_paths",
    "gen_containers_conf",
    "resolve_mirror",
]
