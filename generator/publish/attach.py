"""SBOMs pushed alongside their images, where the registry allows: as a one-layer OCI artifact
under the tag `sha256-<image manifest hex>.sbom` in the image's repository. That is the tag
scheme cosign (`cosign attach sbom`, `cosign download sbom`) and tools following it look up, and
any OCI 1.0 registry stores it (no referrers API needed). `gen retag` carries it like any tag.

The artifact is written as an OCI layout here (no subprocess) and copied byte for byte by skopeo.
An SBOM whose subject is not the image being pushed (written for an older build) is not attached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.publish.signing import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    ManifestCheck,
    Signer,
    check_signed,
    signature_payload,
    signature_tag,
    verify_signature,
)
from generator.publish.skopeo import RegistryError, Skopeo
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
    return _write_layers_layout(directory, media_type, [(payload, {})], annotations)


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


def attach_signature(skopeo: Skopeo, registry: Registry, name: str, digest: str, signer: Signer) -> Attached:
    """Sign manifest digest of registry/name and push the signature beside it (cosign's scheme: one
    manifest per signed digest, a layer per signature). Signatures by other keys stay; this key's
    earlier one is replaced, so pushing again adds none."""
    payload = signature_payload(registry.repository(name), digest)
    own_key = signer.public_key()
    kept = [
        (p, sig) for p, sig in read_signatures(skopeo, registry, name, digest) if not verify_signature(own_key, p, sig)
    ]
    with tempfile.TemporaryDirectory(prefix="gen-sig-") as tmp:
        layout = Path(tmp) / "layout"
        _write_signature_layout(layout, [*kept, (payload, signer.sign(payload))])
        pushed = skopeo.push_layout(layout, registry, name, signature_tag(digest))
    return Attached(signature_tag(digest), pushed)


def _write_signature_layout(directory: Path, signatures: list[tuple[bytes, str]]) -> None:
    """An OCI layout of one manifest with a simple-signing layer per (payload, signature)."""
    layers = [(payload, {SIGNATURE_ANNOTATION: signature}) for payload, signature in signatures]
    _write_layers_layout(directory, SIMPLE_SIGNING_MEDIA_TYPE, layers)


def _write_layers_layout(
    directory: Path,
    media_type: str,
    layers: list[tuple[bytes, dict[str, str]]],
    annotations: dict[str, str] | None = None,
) -> str:
    """An OCI layout of one manifest whose layers are (blob, annotations) of media_type; the
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
        "layers": [{**blob(data, media_type), **({"annotations": notes} if notes else {})} for data, notes in layers],
        **({"annotations": annotations} if annotations is not None else {}),
    }
    descriptor = blob(json.dumps(manifest, sort_keys=True).encode(), MANIFEST_MEDIA_TYPE)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": "artifact"}
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return descriptor["digest"]


def read_signatures(skopeo: Skopeo, registry: Registry, name: str, digest: str) -> list[tuple[bytes, str]]:
    """(payload, base64 signature) of each signature stored for manifest digest of registry/name;
    [] when there is none."""
    with tempfile.TemporaryDirectory(prefix="gen-sig-") as tmp:
        layout = Path(tmp) / "layout"
        remote = f"{registry.repository(name)}:{signature_tag(digest)}"
        if not skopeo.fetch_layout(remote, registry.tls_verify, layout):
            return []
        return _layout_signatures(layout)


def _layout_signatures(layout: Path) -> list[tuple[bytes, str]]:
    found = []
    for payload, notes in _layout_layers(layout, SIMPLE_SIGNING_MEDIA_TYPE):
        if notes.get(SIGNATURE_ANNOTATION):
            found.append((payload, notes[SIGNATURE_ANNOTATION]))
    return found


def _layout_layers(layout: Path, media_type: str) -> list[tuple[bytes, dict[str, str]]]:
    """(blob, annotations) of each layer of media_type in the one manifest of an OCI layout; []
    when the layout is not such (written by someone else: never trusted, only checked)."""
    blobs = layout / "blobs" / "sha256"
    try:
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":", 1)[1]).read_text())
        return [
            ((blobs / layer["digest"].split(":", 1)[1]).read_bytes(), dict(layer.get("annotations") or {}))
            for layer in manifest.get("layers", [])
            if layer.get("mediaType") == media_type
        ]
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return []


def check_image_signatures(skopeo: Skopeo, registry: Registry, name: str, tag: str, public_key) -> list[ManifestCheck]:
    """Each manifest registry/name:tag stands for (the index and each platform's image, or the
    one image), with whether public_key signed it for this repository."""
    repository = registry.repository(name)
    raw = skopeo.raw_manifest(f"{repository}:{tag}", registry.tls_verify)
    if raw is None:
        raise RegistryError(f"{repository}:{tag} does not exist")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    manifest = json.loads(raw)
    manifests = [(digest, "index" if "manifests" in manifest else "image")]
    for entry in manifest.get("manifests", []):
        platform = entry.get("platform") or {}
        manifests.append((entry["digest"], f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"))
    return [
        ManifestCheck(d, what, check_signed(read_signatures(skopeo, registry, name, d), public_key, repository, d))
        for d, what in manifests
    ]


DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def attestation_tag(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}-{hex_digest}.att"


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def dsse_envelope(statement: bytes, signer: Signer) -> bytes:
    envelope = {
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(statement).decode(),
        "signatures": [{"keyid": "", "sig": signer.sign(_pae(IN_TOTO_PAYLOAD_TYPE, statement))}],
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def envelope_statement(envelope: bytes, public_key) -> bytes | None:
    """The statement a DSSE envelope carries when public_key signed it; None otherwise."""
    try:
        document = json.loads(envelope)
        if document["payloadType"] != IN_TOTO_PAYLOAD_TYPE:
            return None
        body = base64.b64decode(document["payload"], validate=True)
        signatures = [s["sig"] for s in document["signatures"]]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    pae = _pae(IN_TOTO_PAYLOAD_TYPE, body)
    return body if any(verify_signature(public_key, pae, sig) for sig in signatures) else None


def attach_attestation(
    skopeo: Skopeo, registry: Registry, name: str, digest: str, statement: bytes, predicate_type: str, signer: Signer
) -> Attached:
    """A signed in-toto statement about manifest digest, beside it under cosign's `.att` tag (a layer
    per attestation; this key's earlier ones replaced, other keys' kept)."""
    own_key = signer.public_key()
    existing = read_attestations(skopeo, registry, name, digest)
    kept = [(envelope, kind) for envelope, kind in existing if envelope_statement(envelope, own_key) is None]
    with tempfile.TemporaryDirectory(prefix="gen-att-") as tmp:
        layout = Path(tmp) / "layout"
        layers = [
            (envelope, {SIGNATURE_ANNOTATION: "", "predicateType": kind})
            for envelope, kind in [*kept, (dsse_envelope(statement, signer), predicate_type)]
        ]
        _write_layers_layout(layout, DSSE_MEDIA_TYPE, layers)
        pushed = skopeo.push_layout(layout, registry, name, attestation_tag(digest))
    return Attached(attestation_tag(digest), pushed)


def read_attestations(skopeo: Skopeo, registry: Registry, name: str, digest: str) -> list[tuple[bytes, str]]:
    """(DSSE envelope, predicate type) of each attestation stored for manifest digest; [] if none."""
    with tempfile.TemporaryDirectory(prefix="gen-att-") as tmp:
        layout = Path(tmp) / "layout"
        if not skopeo.fetch_layout(
            f"{registry.repository(name)}:{attestation_tag(digest)}", registry.tls_verify, layout
        ):
            return []
        return [(data, notes.get("predicateType", "")) for data, notes in _layout_layers(layout, DSSE_MEDIA_TYPE)]
