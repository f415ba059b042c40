"""SBOMs pushed alongside their images, where the registry allows: as a one-layer OCI artifact
under the tag `sha256-<image manifest hex>.sbom` in the image's repository. That is the tag
scheme cosign (`cosign attach sbom`, `cosign download sbom`) and tools following it look up, and
any OCI 1.0 registry stores it (no referrers API needed). `gen retag` carries it like any tag.

The artifact is written as an OCI layout here (no subprocess) and copied byte for byte by skopeo.
An SBOM whose subject is not the image being pushed (written for an older build) is not attached.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.publish.skopeo import Skopeo
from generator.publish.target import Registry

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
EMPTY_CONFIG = b"{}"

SBOM_SUFFIX = ".sbom.cdx.json"


def sbom_path(output_dir: Path, name: str) -> Path:
    """Where `gen sbom` writes an image's CycloneDX SBOM and push finds it to attach."""
    return output_dir / f"{name}{SBOM_SUFFIX}"


@dataclass(frozen=True)
class Attached:
    tag: str
    digest: str  # the artifact's manifest digest


def sbom_tag(image_digest: str) -> str:
    algorithm, _, hex_digest = image_digest.partition(":")
    return f"{algorithm}-{hex_digest}.sbom"


def sbom_subject(path: Path) -> str | None:
    """The image id an SBOM describes (its metadata component's sha256), or None."""
    try:
        component = json.loads(path.read_text())["metadata"]["component"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return next((h["content"] for h in component.get("hashes", []) if h.get("alg") == "SHA-256"), None)


def write_layout(directory: Path, payload: bytes, media_type: str, annotations: dict[str, str]) -> str:
    """An OCI image layout holding one artifact manifest with payload as its only layer; the
    manifest's digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, kind: str) -> dict:
        hex_digest = hashlib.sha256(data).hexdigest()
        (blobs / hex_digest).write_bytes(data)
        return {"mediaType": kind, "digest": f"sha256:{hex_digest}", "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": blob(EMPTY_CONFIG, CONFIG_MEDIA_TYPE),
        "layers": [blob(payload, media_type)],
        "annotations": annotations,
    }
    descriptor = blob(json.dumps(manifest, sort_keys=True).encode(), MANIFEST_MEDIA_TYPE)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": "artifact"}
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return descriptor["digest"]


def attach_sbom(
    skopeo: Skopeo, output_dir: Path, name: str, image_id: str, image_digest: str, registry: Registry, unit: str = ""
) -> Attached | None:
    """Push output/<unit or name>.sbom.cdx.json next to the image in repository `name` when it
    describes image_id; None when there is no SBOM for this build (run `gen sbom` first)."""
    path = sbom_path(output_dir, unit or name)
    if not path.is_file() or sbom_subject(path) != image_id:
        return None
    tag = sbom_tag(image_digest)
    with tempfile.TemporaryDirectory(prefix="gen-sbom-") as tmp:
        layout = Path(tmp) / "layout"
        write_layout(
            layout,
            path.read_bytes(),
            SBOM_MEDIA_TYPE,
            {"org.opencontainers.image.title": path.name, "dev.gen.subject": image_digest},
        )
        digest = skopeo.push_layout(layout, registry, name, tag)
    return Attached(tag, digest)
