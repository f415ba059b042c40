"""An image built for several platforms, pushed as one OCI image index under each tag.

Each platform's image is pushed first under its own build-id tag (and its spec tags with the
platform suffix, e.g. `latest-arm64`); buildah then joins those registry manifests, by digest and
in the spec's platform order, into an index (`buildah manifest create/add`) pushed with
`manifest push --all` under the index's build-id tag, which the spec's tags then copy. The index
lists only digests, sizes and platforms, so the same per-platform images give the same index.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from pathlib import Path

from generator.builder.host import Host
from generator.builder.outputs import build_id_tag
from generator.builder.proc import ToolError, run_quiet
from generator.contract import ImageFormat
from generator.publish.skopeo import RegistryError, scrub, tls_flag
from generator.publish.target import Registry

INDEX_TIMEOUT = 1800.0


def index_build_id(platform_build_ids: list[str]) -> str:
    """The index's own build-id tag, from its platforms' build ids in order."""
    return build_id_tag(hashlib.sha256(" ".join(platform_build_ids).encode()).hexdigest())


def push_index(
    host: Host, registry: Registry, name: str, instance_digests: list[str], tag: str, image_format: ImageFormat = "oci"
) -> str:
    """Join name@digest for each digest (already in the registry) as an index pushed to name:tag:
    an OCI index, or a Docker manifest list for docker-format images (pushing those as OCI would
    convert each instance, dropping its HEALTHCHECK); the index's digest."""
    buildah = ["buildah", *host.global_flags(), "manifest"]
    tls = tls_flag("tls-verify", registry.tls_verify)
    # A list name of gen's own in storage, removed afterwards: never one of the user's names.
    listed = f"localhost/gen-index-{uuid.uuid4().hex[:12]}:{tag}"
    repository = registry.repository(name)
    try:
        run_quiet([*buildah, "create", listed], host.env, timeout=120)
        try:
            for digest in instance_digests:
                run_quiet([*buildah, "add", *tls, listed, f"docker://{repository}@{digest}"], host.env, timeout=300)
            with tempfile.TemporaryDirectory(prefix="gen-index-") as tmp:
                digestfile = Path(tmp) / "digest"
                run_quiet(
                    [
                        *buildah,
                        "push",
                        "--all",
                        "--quiet",
                        "--format",
                        "oci" if image_format == "oci" else "v2s2",
                        *tls,
                        "--digestfile",
                        str(digestfile),
                        listed,
                        f"docker://{repository}:{tag}",
                    ],
                    host.env,
                    timeout=INDEX_TIMEOUT,
                )
                return digestfile.read_text().strip()
        finally:
            run_quiet([*buildah, "rm", listed], host.env, timeout=120, check=False)
    except ToolError as exc:
        raise RegistryError(
            f"{name}: joining {len(instance_digests)} platform images as {repository}:{tag} "
            f"failed: {scrub(str(exc).splitlines()[0])}"
        ) from None
