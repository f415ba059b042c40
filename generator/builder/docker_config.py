"""Reproducible docker-format images.

An image with a HEALTHCHECK is built in docker format (the OCI config has no field for it), and
buildah writes things of that one build into a docker config: the working container's id and
hostname, the parent image's id (twice), and history comments `FROM <intermediate image id>`, whose ids
differ between builds because they hold the same random fields. Two builds of the same inputs then
have identical layers and different image ids. gen clears those fields after the build and stores
the result as a new image over the same layers (skopeo reuses the layers storage already has, so
no layer data is copied).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from generator.builder import storage
from generator.builder.host import Host
from generator.builder.proc import run_quiet

_INTERMEDIATE_COMMENT = re.compile(r"FROM [0-9a-f]{12,64}")
_DIR_TRANSPORT_VERSION = "Directory Transport Version: 1.1\n"
_SCRATCH_REPO = "localhost/gen-reproducible"


def without_build_specifics(config: dict[str, Any]) -> dict[str, Any]:
    """config (a docker image config) with every field that names one build's throwaway objects
    cleared; everything that describes the image is kept."""
    fixed = json.loads(json.dumps(config))
    if "container" in fixed:
        fixed["container"] = ""
    fixed.pop("parent", None)
    for section in ("config", "container_config"):
        if isinstance(fixed.get(section), dict):
            for key in ("Hostname", "Image"):
                if key in fixed[section]:
                    fixed[section][key] = ""
    for entry in fixed.get("history") or ():
        if _INTERMEDIATE_COMMENT.fullmatch(str(entry.get("comment", ""))):
            del entry["comment"]
    return fixed


def make_reproducible(host: Host, image_id: str, work: Path) -> str:
    """The id of image_id stored again with without_build_specifics' config (image_id itself when
    nothing needed clearing). work is a scratch directory, removed afterwards."""
    ref = host.skopeo_ref(f"@{image_id}")
    manifest = json.loads(run_quiet(["skopeo", "inspect", "--raw", ref], host.env).stdout)
    config = json.loads(run_quiet(["skopeo", "inspect", "--config", "--raw", ref], host.env).stdout)
    fixed = without_build_specifics(config)
    if fixed == config:
        return image_id
    config_bytes = json.dumps(fixed, separators=(",", ":")).encode()
    new_id = hashlib.sha256(config_bytes).hexdigest()
    manifest["config"] = {**manifest["config"], "digest": f"sha256:{new_id}", "size": len(config_bytes)}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        (work / "version").write_text(_DIR_TRANSPORT_VERSION)
        (work / "manifest.json").write_text(json.dumps(manifest, separators=(",", ":")))
        (work / new_id).write_bytes(config_bytes)
        scratch_ref = f"{_SCRATCH_REPO}:{new_id[:16]}"
        run_quiet(["skopeo", "copy", "--quiet", f"dir:{work}", host.skopeo_ref(scratch_ref)], host.env)
        storage.untag(host, new_id, scratch_ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return new_id
