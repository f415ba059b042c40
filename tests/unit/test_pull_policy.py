"""`gen pull` under a containers policy (generator.publish.policy): which policy and which of its
scopes governs an image, the sigstoreSigned requirements gen checks itself where skopeo cannot,
the policy skopeo gets for the copy, and a refusal that pulls nothing."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from generator.errors import UsageError
from generator.publish import transfer
from generator.publish.policy import (
    Policy,
    PullGate,
    policy_in_effect,
    read_policy,
    scope_for,
    sigstore_rules,
    without_sigstore,
)
from generator.publish.signing import open_private_key, signature_payload, write_key_pair
from generator.publish.skopeo import RegistryError
from generator.publish.target import Registry

REGISTRY = Registry("registry.example.com:5000", "team")
REPOSITORY = "registry.example.com:5000/team/app"
DIGEST = "sha256:" + "cd" * 32
ACCEPT = [{"type": "insecureAcceptAnything"}]
REJECT = [{"type": "reject"}]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    return write_key_pair(tmp_path_factory.mktemp("keys") / "release", b"phrase")


def _policy(tmp_path: Path, docker: dict, default=ACCEPT) -> Policy:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default": default, "transports": {"docker": docker}}))
    return read_policy(path)


def _sigstore(pub: Path, **identity) -> list[dict]:
    rule: dict = {"type": "sigstoreSigned", "keyPath": str(pub)}
    if identity:
        rule["signedIdentity"] = identity
    return [rule]


def _signature(keys, repository: str = REPOSITORY, digest: str = DIGEST) -> tuple[bytes, str]:
    payload = signature_payload(repository, digest)
    return payload, open_private_key(keys[0], b"phrase").sign(payload)


@pytest.mark.parametrize(
    ("present", "chosen"),
    [
        ([f"{REPOSITORY}:1.0", REPOSITORY, "registry.example.com:5000"], f"{REPOSITORY}:1.0"),
        ([REPOSITORY, "registry.example.com:5000/team", ""], REPOSITORY),
        (["registry.example.com:5000/team", "registry.example.com:5000"], "registry.example.com:5000/team"),
        (["registry.example.com:5000", "*.example.com"], "registry.example.com:5000"),
        (["*.com", "*.example.com", ""], "*.example.com"),
        (["", "other.example.com"], ""),
        (["other.example.com"], None),
    ],
)
def test_the_most_specific_scope_governs_as_containers_policy_orders_them(tmp_path, present, chosen):
    policy = _policy(tmp_path, {scope: REJECT for scope in present})
    assert scope_for(policy, REPOSITORY, "1.0") == (chosen, ACCEPT if chosen is None else REJECT)


def test_sigstore_requirements_load_their_keys_and_identities(tmp_path, keys):
    pub = keys[1]
    data = base64.b64encode(pub.read_bytes()).decode()
    policy = _policy(
        tmp_path,
        {
            REPOSITORY: [
                *_sigstore(pub, type="matchRepository"),
                {
                    "type": "sigstoreSigned",
                    "keyData": data,
                    "signedIdentity": {
                        "type": "exactRepository",
                        "dockerRepository": "registry.example.com:5000/team/base",
                    },
                },
                {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"},
            ]
        },
    )
    repository_rule, exact_rule = sigstore_rules(policy, REPOSITORY, "1.0")
    assert len(repository_rule.keys) == 1 and repository_rule.identity is None
    assert exact_rule.identity == "registry.example.com:5000/team/base"


@pytest.mark.parametrize(
    ("requirement", "said"),
    [
        ({"keyPath": "relative.pub"}, "keyPath relative.pub is not absolute"),
        ({"keyData": "not base64!"}, "keyData is not base64"),
        ({}, "without keyPath or keyData"),
        ({"fulcio": {}, "rekorPublicKeyPath": "/r.pub"}, "not fulcio"),
        ({"keyPath": "KEY", "signedIdentity": {"type": "matchExact"}}, "not 'matchExact'"),
        ({"keyPath": "KEY", "signedIdentity": {"type": "remapIdentity"}}, "not 'remapIdentity'"),
        ({"keyPaths": ["KEY", 3]}, "keyPath/keyPaths must be strings"),
    ],
)
def test_a_requirement_gen_cannot_check_is_one_clear_line(tmp_path, keys, requirement, said):
    requirement = {k: (str(keys[1]) if v == "KEY" else v) for k, v in requirement.items()}
    if "keyPaths" in requirement:
        requirement["keyPaths"] = [str(keys[1]), 3]
    policy = _policy(tmp_path, {REPOSITORY: [{"type": "sigstoreSigned", **requirement}]})
    with pytest.raises(UsageError, match=said) as raised:
        sigstore_rules(policy, REPOSITORY, "1.0")
    assert str(tmp_path / "policy.json") in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"default": [\n  {"type": }]}', "policy.json:2:12: not JSON"),
        ("[]", "a policy is a JSON object"),
    ],
)
def test_a_broken_policy_file_says_where(tmp_path, text, said):
    (tmp_path / "policy.json").write_text(text)
    with pytest.raises(UsageError, match=said):
        read_policy(tmp_path / "policy.json")


def test_a_scope_without_requirements_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"transports.docker\[''\] is not a list of requirements"):
        scope_for(_policy(tmp_path, {"": []}), REPOSITORY, "1.0")


def test_skopeo_gets_the_policy_less_the_sigstore_requirements_gen_checked(tmp_path, keys):
    gpg = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}
    policy = _policy(tmp_path, {REPOSITORY: [*_sigstore(keys[1]), gpg], "other.example.com": REJECT})
    assert without_sigstore(policy, REPOSITORY, "1.0")["transports"]["docker"] == {
        REPOSITORY: [gpg],
        "other.example.com": REJECT,
    }
    only_sigstore = _policy(tmp_path, {}, default=_sigstore(keys[1]))
    assert without_sigstore(only_sigstore, REPOSITORY, "1.0")["default"] == ACCEPT
    assert json.loads(only_sigstore.path.read_text())["default"] == _sigstore(keys[1])  # the file untouched


def _admit(gate: PullGate, signatures, monkeypatch) -> list[str]:
    monkeypatch.setattr("generator.publish.policy.read_signatures", lambda *_: signatures)
    return gate.admit(REGISTRY, "app", "1.0", DIGEST, skopeo=None)


def test_a_signed_image_is_admitted_and_copied_under_a_policy_skopeo_can_apply(tmp_path, keys, monkeypatch):
    policy = _policy(tmp_path, {"registry.example.com:5000/team": _sigstore(keys[1])}, default=REJECT)
    with PullGate(policy, skopeo_has_sigstore=False) as gate:
        flag, written = _admit(gate, [_signature(keys)], monkeypatch)
        assert flag == "--policy"
        given = json.loads(Path(written).read_text())
        assert given["transports"]["docker"]["registry.example.com:5000/team"] == ACCEPT
        assert given["default"] == REJECT
    assert not Path(written).exists()  # the gate's scratch policy is gone with the gate


@pytest.mark.parametrize(
    ("signature", "said"),
    [
        (None, "no signature"),
        ("other repository", "a valid signature for registry.example.com:5000/team/other@"),
        ("other digest", "not this image"),
        ("other key", "signed by another key"),
    ],
)
def test_an_image_the_policy_would_refuse_is_refused_naming_why(tmp_path, keys, monkeypatch, signature, said):
    if signature == "other key":
        other = write_key_pair(tmp_path / "other", b"x")
        payload = signature_payload(REPOSITORY, DIGEST)
        signatures = [(payload, open_private_key(other[0], b"x").sign(payload))]
    elif signature == "other repository":
        signatures = [_signature(keys, repository="registry.example.com:5000/team/other")]
    elif signature == "other digest":
        signatures = [_signature(keys, digest="sha256:" + "ef" * 32)]
    else:
        signatures = []
    policy = _policy(tmp_path, {REPOSITORY: _sigstore(keys[1])})
    with PullGate(policy, skopeo_has_sigstore=False) as gate, pytest.raises(RegistryError) as raised:
        _admit(gate, signatures, monkeypatch)
    message = str(raised.value)
    assert said in message and f"{REPOSITORY}:1.0 ({DIGEST}) refused" in message
    assert "required by" in message and "nothing was pulled" in message


def test_exact_repository_wants_the_signature_to_name_that_repository(tmp_path, keys, monkeypatch):
    base = "registry.example.com:5000/team/base"
    policy = _policy(tmp_path, {REPOSITORY: _sigstore(keys[1], type="exactRepository", dockerRepository=base)})
    with PullGate(policy, skopeo_has_sigstore=False) as gate:
        assert _admit(gate, [_signature(keys, repository=base)], monkeypatch)[0] == "--policy"
        with pytest.raises(RegistryError, match="not this image"):
            _admit(gate, [_signature(keys)], monkeypatch)


def test_without_sigstore_rules_or_with_a_sigstore_skopeo_the_policy_goes_to_skopeo_as_is(tmp_path, keys, monkeypatch):
    (tmp_path / "registries.d").mkdir()
    plain = _policy(tmp_path, {REPOSITORY: REJECT})
    expected = ["--policy", str(plain.path), "--registries.d", str(tmp_path / "registries.d")]
    assert _admit(PullGate(plain, skopeo_has_sigstore=False), [], monkeypatch) == expected
    signed = _policy(tmp_path, {REPOSITORY: _sigstore(keys[1])})
    assert _admit(PullGate(signed, skopeo_has_sigstore=True), [], monkeypatch) == expected
    assert _admit(PullGate(None, skopeo_has_sigstore=False), [], monkeypatch) == []


def test_the_policy_in_effect_is_the_flag_then_gen_trusts_then_the_users(tmp_path, monkeypatch):
    project, home = tmp_path / "project", tmp_path / "home"
    monkeypatch.setattr("generator.publish.policy.SYSTEM_POLICY", tmp_path / "no-system-policy.json")
    assert policy_in_effect(None, project, {"HOME": str(home)}) is None
    user = home / ".config" / "containers" / "policy.json"
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"default": ACCEPT}))
    assert policy_in_effect(None, project, {"HOME": str(home)}).path == user
    trusted = project / ".gen" / "trust" / "policy.json"
    trusted.parent.mkdir(parents=True)
    trusted.write_text(json.dumps({"default": REJECT}))
    assert policy_in_effect(None, project, {"HOME": str(home)}).path == trusted
    assert policy_in_effect(user, project, {}).path == user


def test_a_committed_link_out_of_the_project_is_never_followed_to_a_policy(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "policy.json").write_text(json.dumps({"default": ACCEPT}))
    project = tmp_path / "project"
    (project / ".gen").mkdir(parents=True)
    os.symlink(outside, project / ".gen" / "trust")
    with pytest.raises(UsageError, match="symlink"):
        policy_in_effect(None, project, {})


def test_a_refusal_pulls_nothing_of_any_image(monkeypatch):
    """Every manifest is admitted before the first copy: the second image's refusal leaves the
    first one unpulled too."""
    images = {name: SimpleNamespace(name=name, repo=name) for name in ("base", "app")}
    units = {name: transfer._PullUnit(image, ("1.0",), f"sha256:{name}", ("1.0",)) for name, image in images.items()}
    monkeypatch.setattr(transfer, "Skopeo", lambda host: None)
    monkeypatch.setattr(transfer, "_pull_units", lambda image, *_: [units[image.repo]])
    imported = []
    monkeypatch.setattr(transfer, "_import", lambda *args: imported.append(args) or "id")

    class RefusesApp(PullGate):
        def admit(self, registry, name, tag, digest, skopeo):
            if name == "app":
                raise RegistryError("app refused")
            return []

    with pytest.raises(RegistryError, match="app refused"):
        transfer.pull_images(None, images, ["base", "app"], "localhost/gen", REGISTRY, gate=RefusesApp(None, False))
    assert imported == []


class _Registry:
    """skopeo against an in-memory registry: tags to digests, digests to manifests."""

    def __init__(self, tags: dict[str, str], manifests: dict[str, dict]):
        self.tags_, self.manifests = tags, manifests

    def tags(self, registry, name):
        return list(self.tags_)

    def digest(self, remote, tls_verify):
        return self.tags_[remote.rsplit(":", 1)[1]]

    def copy_tag(self, src, src_tag, dst, dst_tag, name):
        return self.tags_[src_tag]

    def raw_manifest(self, remote, tls_verify):
        return json.dumps(self.manifests.get(remote.split("@", 1)[1], {})).encode()


def test_retag_with_a_key_signs_every_manifest_for_the_new_repository(monkeypatch):
    """The index a tag names and each platform image it joins are signed in the destination; the
    attachment tags (.sig, .att, .sbom) are copied, never signed."""
    index, amd64, arm64, sbom = (f"sha256:{c * 64}" for c in "1234")
    fake = _Registry(
        {"1.0": index, "gen-abc": index, f"sha256-{index[7:]}.sig": sbom, f"sha256-{amd64[7:]}.sbom": sbom},
        {index: {"manifests": [{"digest": amd64}, {"digest": arm64}]}},
    )
    signed = []
    monkeypatch.setattr(
        transfer, "attach_signature", lambda skopeo, registry, name, d, signer: signed.append((registry, d))
    )
    destination = Registry("registry.example.com:5000", "moved")
    image = SimpleNamespace(name="app", tags=("1.0",))
    done = transfer.retag_image(None, image, REGISTRY, destination, fake, signer=object())
    assert signed == [(destination, d) for d in sorted([index, amd64, arm64])] and done.signed == tuple(
        sorted([index, amd64, arm64])
    )
    unsigned = transfer.retag_image(None, image, REGISTRY, destination, fake)
    assert unsigned.signed == () and len(signed) == 3


def test_gen_rebuild_adopts_an_image_only_as_the_policy_admits_it(tmp_path, keys, monkeypatch):
    """An image rebuild adopts from the registry goes through the same gate as `gen pull`."""
    from generator.rebuild import scheduled

    trusted = tmp_path / ".gen" / "trust" / "policy.json"
    trusted.parent.mkdir(parents=True)
    trusted.write_text(json.dumps({"default": ACCEPT, "transports": {"docker": {REPOSITORY: _sigstore(keys[1])}}}))
    monkeypatch.setattr("generator.publish.policy.tools_without_sigstore", lambda tools: ["skopeo"])
    monkeypatch.setattr("generator.publish.policy.read_signatures", lambda *_: [])
    pulled = []
    fake = SimpleNamespace(pull_ref=lambda *args: pulled.append(args))
    monkeypatch.setattr(scheduled, "Skopeo", lambda host: fake)
    ctx = SimpleNamespace(
        registry=REGISTRY,
        images={"app": SimpleNamespace(tags=("1.0",))},
        prefix="localhost/gen",
        host=None,
        project=tmp_path,
    )
    with pytest.raises(RegistryError, match="refused: no signature"):
        scheduled._adopt(ctx, "app", DIGEST)
    assert pulled == []
