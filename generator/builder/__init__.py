"""Build stage: rendered output/ to images in containers storage, with buildah.

The only stage (with verify) that runs subprocesses. Entry points:
- Host.from_env(storage_root, project): storage and config for every subprocess;
- Builder(host, output_dir, project_root, BuildOptions, on_event, cancel).plan(names) / .build(names);
- affected_images(...) with changed_paths(...) for --since;
- check_reproducible(...); image_statuses(builder); run_checks(host) for `gen doctor`.
"""

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
