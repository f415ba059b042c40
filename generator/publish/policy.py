"""The containers policy a `gen pull` runs under, and the part of it gen checks itself.

skopeo enforces policy.json on every copy. Debian 12 builds it (and podman, buildah) without
sigstore: a `sigstoreSigned` requirement makes it refuse every image, signed or not. So for a pull,
gen checks each sigstoreSigned requirement that covers the image itself (a signature by one of the
requirement's keys over the very manifest digest it then copies, by digest, so nothing can be
swapped in between) and hands skopeo the policy with only those requirements taken out: skopeo
still enforces the rest (reject, signedBy). A skopeo with sigstore gets the policy unchanged.

Which policy: `--policy`, else the one `gen trust` wrote in the project (.gen/trust), else the
user's (~/.config/containers/policy.json), else the system's, as skopeo itself looks them up.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.errors import UsageError
from generator.files import refuse_links_below
from generator.publish.attach import read_signatures
from generator.publish.signing import check_signed, load_public_key, read_public_key, tools_without_sigstore
from generator.publish.skopeo import RegistryError, Skopeo
from generator.publish.target import Registry, host_name

PROJECT_POLICY = Path(".gen") / "trust" / "policy.json"  # where `gen trust` writes by default
SYSTEM_POLICY = Path("/etc/containers/policy.json")
# signedIdentity rules met by a signature naming the repository, for a pull by digest.
_REPOSITORY_IDENTITIES = ("matchRepoDigestOrExact", "matchRepository")
_KEYLESS_FIELDS = ("fulcio", "pki", "rekorPublicKeyPath", "rekorPublicKeyData", "rekorPublicKeyPaths")


@dataclass(frozen=True)
class Policy:
    """A policy.json as read, and the registries.d directory beside it (if any)."""

    path: Path
    document: dict
    registries_d: Path | None = None


@dataclass(frozen=True)
class SigstoreRule:
    """One sigstoreSigned requirement: any of its keys must have signed the manifest for identity
    (None: the repository pulled from)."""

    keys: tuple
    identity: str | None
    where: str  # the policy and scope, for messages


def policy_in_effect(explicit: Path | None, project: Path, env: dict[str, str]) -> Policy | None:
    """The policy a pull runs under (see the module's doc); None when there is none at all."""
    if explicit is not None:
        return read_policy(explicit)
    refuse_links_below(project, project / PROJECT_POLICY)  # the project's may be a committed link
    candidates = [project / PROJECT_POLICY]
    if env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".config" / "containers" / "policy.json")
    candidates.append(SYSTEM_POLICY)
    for candidate in candidates:
        if candidate.is_file():
            return read_policy(candidate)
    return None


def read_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the policy ({exc}); give a readable policy.json") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg}); fix the policy") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}:1:1: a policy is a JSON object; fix the policy")
    registries_d = path.parent / "registries.d"
    return Policy(path, document, registries_d if registries_d.is_dir() else None)


def scope_for(policy: Policy, repository: str, tag: str) -> tuple[str | None, list]:
    """(scope, requirements) that govern docker://repository:tag, most specific scope first as
    containers-policy.json(5) orders them; scope None is the policy's global default."""
    transports = policy.document.get("transports") or {}
    scopes = transports.get("docker") if isinstance(transports, dict) else None
    scopes = scopes if isinstance(scopes, dict) else {}
    parts = repository.split("/")
    labels = host_name(parts[0]).split(".")
    candidates = [f"{repository}:{tag}", repository]
    candidates += ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
    candidates += ["*." + ".".join(labels[n:]) for n in range(1, len(labels))]
    candidates.append("")
    for scope in candidates:
        if scope in scopes:
            return scope, _requirements(policy, scopes[scope], f"transports.docker[{scope!r}]")
    return None, _requirements(policy, policy.document.get("default"), "default")


def _requirements(policy: Policy, value: object, where: str) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) and "type" in r for r in value):
        raise UsageError(f"{policy.path}: {where} is not a list of requirements with a type each; fix the policy")
    return value


def sigstore_rules(policy: Policy, repository: str, tag: str) -> list[SigstoreRule]:
    """The sigstoreSigned requirements covering repository:tag, keys loaded."""
    scope, requirements = scope_for(policy, repository, tag)
    where = f"{policy.path} ({'default' if scope is None else repr(scope)})"
    return [_rule(r, where) for r in requirements if r["type"] == "sigstoreSigned"]


def _rule(requirement: dict, where: str) -> SigstoreRule:
    keyless = [f for f in _KEYLESS_FIELDS if f in requirement]
    if keyless:
        raise UsageError(f"{where}: gen checks key-based sigstoreSigned only, not {keyless[0]}; use keyPath")
    keys = [_key_from_path(p, where) for p in _strings(requirement, "keyPath", "keyPaths", where)]
    keys += [_key_from_data(d, where) for d in _strings(requirement, "keyData", "keyDatas", where)]
    if not keys:
        raise UsageError(f"{where}: a sigstoreSigned requirement without keyPath or keyData; fix the policy")
    identity = requirement.get("signedIdentity") or {"type": "matchRepoDigestOrExact"}
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind in _REPOSITORY_IDENTITIES:
        return SigstoreRule(tuple(keys), None, where)
    if kind == "exactRepository" and isinstance(identity.get("dockerRepository"), str):
        return SigstoreRule(tuple(keys), identity["dockerRepository"], where)
    raise UsageError(
        f"{where}: gen checks signedIdentity {', '.join(_REPOSITORY_IDENTITIES)} or exactRepository, not "
        f"{kind!r} (gen's signatures name the repository); change the policy"
    )


def _strings(requirement: dict, one: str, many: str, where: str) -> list[str]:
    values = ([requirement[one]] if one in requirement else []) + list(requirement.get(many) or [])
    if not all(isinstance(v, str) and v for v in values):
        raise UsageError(f"{where}: {one}/{many} must be strings; fix the policy")
    return values


def _key_from_path(path: str, where: str):
    if not os.path.isabs(path):
        raise UsageError(f"{where}: keyPath {path} is not absolute; give the key's absolute path")
    return read_public_key(Path(path))


def _key_from_data(data: str, where: str):
    try:
        pem = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{where}: keyData is not base64; fix the policy") from None
    return load_public_key(pem, f"keyData in {where}")


def unmet(rules: list[SigstoreRule], signatures: list[tuple[bytes, str]], repository: str, digest: str) -> str:
    """ "" when every rule is met by one of signatures (payload, base64 signature) over digest; else
    what is wrong, the first rule that fails named."""
    for rule in rules:
        problems = [check_signed(signatures, key, rule.identity or repository, digest) for key in rule.keys]
        if all(problems):
            return f"{problems[0]} (required by {rule.where})"
    return ""


def without_sigstore(policy: Policy, repository: str, tag: str) -> dict:
    """The policy with the sigstoreSigned requirements covering repository:tag taken out (an
    empty scope accepts: gen has checked those signatures itself)."""
    document = json.loads(json.dumps(policy.document))  # a copy
    scope, requirements = scope_for(policy, repository, tag)
    kept = [r for r in requirements if r["type"] != "sigstoreSigned"] or [{"type": "insecureAcceptAnything"}]
    if scope is None:
        document["default"] = kept
    else:
        document["transports"]["docker"][scope] = kept
    return document


class PullGate:
    """Admits each manifest of a pull under a policy (None: skopeo's own lookup, unchanged)."""

    def __init__(self, policy: Policy | None, skopeo_has_sigstore: bool | None = None):
        self.policy = policy
        self._skopeo_has_sigstore = skopeo_has_sigstore  # None: looked at when a rule needs it
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def skopeo_has_sigstore(self) -> bool:
        if self._skopeo_has_sigstore is None:
            self._skopeo_has_sigstore = "skopeo" not in tools_without_sigstore(("skopeo",))
        return self._skopeo_has_sigstore

    def __enter__(self) -> PullGate:
        return self

    def __exit__(self, *_) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()

    def admit(self, registry: Registry, name: str, tag: str, digest: str, skopeo: Skopeo) -> list[str]:
        """skopeo's global flags for copying registry/name@digest; RegistryError naming what a
        sigstoreSigned requirement found wrong."""
        if self.policy is None:
            return []
        flags = ["--policy", str(self.policy.path)]
        if self.policy.registries_d is not None:
            flags += ["--registries.d", str(self.policy.registries_d)]
        repository = registry.repository(name)
        rules = sigstore_rules(self.policy, repository, tag)
        if not rules or self.skopeo_has_sigstore:
            return flags
        problem = unmet(rules, read_signatures(skopeo, registry, name, digest), repository, digest)
        if problem:
            raise RegistryError(f"{repository}:{tag} ({digest}) refused: {problem}; nothing was pulled")
        return ["--policy", str(self._write(without_sigstore(self.policy, repository, tag)))]

    def _write(self, document: dict) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="gen-policy-")
        handle, name = tempfile.mkstemp(prefix="policy-", suffix=".json", dir=self._scratch.name)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out)
        return Path(name)
