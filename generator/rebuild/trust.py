"""`gen trust`: the containers configuration that makes podman, buildah and skopeo require gen's
signatures for a registry: a policy.json entry (sigstoreSigned by the project's public key) and the
registries.d file saying the signatures are the registry's own `.sig` tags."""

from __future__ import annotations

import json
from pathlib import Path

from generator.contract import read_json
from generator.errors import UsageError
from generator.render.templates import TemplateSet

_POLICY_FIX = "fix it (see containers-policy.json(5)) or pass another --base-policy"


def read_base_policy(path: Path) -> dict:
    """The policy.json trust_policy extends ({} when there is none), checked for the shape
    trust_policy writes into: an object whose default is a list and whose transports and
    transports.docker are objects. Anything else is one UsageError naming the file."""
    try:
        policy = read_json(path, UsageError, _POLICY_FIX)
    except FileNotFoundError:
        return {}

    def refuse(what: str) -> UsageError:
        return UsageError(f"--base-policy {path}: {what}; {_POLICY_FIX}")

    if not isinstance(policy, dict):
        raise refuse("not a policy.json (a JSON object)")
    if not isinstance(policy.get("default", []), list):
        raise refuse("default is not a list of requirements")
    transports = policy.get("transports", {})
    if not isinstance(transports, dict):
        raise refuse("transports is not an object (transport -> scopes)")
    docker = transports.get("docker", {})
    if not isinstance(docker, dict):
        raise refuse("transports.docker is not an object (scope -> requirements)")
    return policy


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
