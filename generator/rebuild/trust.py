"""`gen trust`: the containers configuration that makes podman, buildah and skopeo require gen's
signatures for a registry: a policy.json entry (sigstoreSigned by the project's public key) and the
registries.d file saying the signatures are the registry's own `.sig` tags."""

from __future__ import annotations

import json
from pathlib import Path

from generator.render.templates import TemplateSet


def trust_policy(base_policy: dict, scope: str, public_key: Path) -> dict:
    """base_policy (the host's policy.json) with scope (HOST/ORG) requiring sigstore signatures by
    public_key for the repository an image is pulled from; every other scope as it was."""
    policy = json.loads(json.dumps(base_policy))  # a copy
    policy.setdefault("default", [{"type": "insecureAcceptAnything"}])
    docker = policy.setdefault("transports", {}).setdefault("docker", {})
    docker[scope] = [
        {"type": "sigstoreSigned", "keyPath": str(public_key), "signedIdentity": {"type": "matchRepository"}}
    ]
    return policy


def registries_d(host: str) -> str:
    """A registries.d file making containers/image read (and write) sigstore signatures as registry
    attachments (the `.sig` tags) for host."""
    return TemplateSet().render("trust/registries-d.yaml.j2", host=host)
