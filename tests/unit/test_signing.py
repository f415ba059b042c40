"""Signing keys and signatures in the sigstore format (generator.publish.signing): the key file as
cosign and skopeo read it, the passphrase never from a flag, and what a signature check says."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from generator.errors import UsageError
from generator.publish.signing import (
    PRIVATE_PEM_TYPE,
    SigningError,
    check_signed,
    open_private_key,
    passphrase_from,
    payload_subject,
    read_public_key,
    signature_payload,
    signature_tag,
    signer_from_env,
    verify_signature,
    write_key_pair,
)

DIGEST = "sha256:" + "ab" * 32
REPOSITORY = "registry.example.com/team/app"


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory) -> tuple[Path, Path]:
    return write_key_pair(tmp_path_factory.mktemp("keys") / "gen-signing", b"correct horse")


def test_the_key_file_is_an_encrypted_sigstore_key_as_cosign_writes_it(key_pair):
    key_path, pub_path = key_pair
    lines = key_path.read_text().splitlines()
    assert lines[0] == f"-----BEGIN {PRIVATE_PEM_TYPE}-----" and lines[-1] == f"-----END {PRIVATE_PEM_TYPE}-----"
    document = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert document["kdf"]["name"] == "scrypt" and document["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(document["kdf"]["salt"])) == 32
    assert document["cipher"]["name"] == "nacl/secretbox" and len(base64.b64decode(document["cipher"]["nonce"])) == 24
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600 and stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    assert pub_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert b"correct horse" not in key_path.read_bytes()


def test_a_signature_verifies_with_the_public_key_and_fails_for_other_bytes(key_pair):
    signer = open_private_key(key_pair[0], b"correct horse")
    public = read_public_key(key_pair[1])
    payload = signature_payload(REPOSITORY, DIGEST)
    signature = signer.sign(payload)
    assert verify_signature(public, payload, signature)
    assert not verify_signature(public, payload.replace(b"ab", b"cd", 1), signature)
    assert not verify_signature(public, payload, "not base64!")


def test_the_payload_is_cosigns_simple_signing_document():
    payload = signature_payload(REPOSITORY, DIGEST)
    assert json.loads(payload) == {
        "critical": {
            "identity": {"docker-reference": REPOSITORY},
            "image": {"docker-manifest-digest": DIGEST},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    assert payload_subject(payload) == (REPOSITORY, DIGEST)
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    with pytest.raises(ValueError):
        payload_subject(b'{"critical": {"type": "something else"}}')


def test_a_wrong_passphrase_is_one_clear_line(key_pair):
    with pytest.raises(SigningError, match="the passphrase does not open this key") as info:
        open_private_key(key_pair[0], b"wrong")
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "text, why",
    [
        ("hello", "not a PEM file"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "a PUBLIC KEY, not an ENCRYPTED SIGSTORE"),
        (f"-----BEGIN {PRIVATE_PEM_TYPE}-----\n!!!!\n-----END {PRIVATE_PEM_TYPE}-----\n", "not base64"),
        (
            f"-----BEGIN {PRIVATE_PEM_TYPE}-----\nWzFd\n-----END {PRIVATE_PEM_TYPE}-----\n",  # "[1]"
            "not an encrypted sigstore key",
        ),
    ],
)
def test_a_file_that_is_not_a_signing_key_is_one_clear_line(tmp_path, text, why):
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(SigningError, match=why):
        open_private_key(path, b"x")


def test_scrypt_parameters_from_the_file_are_bounded(key_pair, tmp_path):
    """A hostile key file must not make gen spend gigabytes on scrypt."""
    lines = key_pair[0].read_text().splitlines()
    document = json.loads(base64.b64decode("".join(lines[1:-1])))
    document["kdf"]["params"]["N"] = 1 << 30
    body = base64.b64encode(json.dumps(document).encode()).decode()
    path = tmp_path / "greedy.key"
    path.write_text(f"{lines[0]}\n{body}\n{lines[-1]}\n")
    with pytest.raises(SigningError, match="scrypt parameters out of range"):
        open_private_key(path, b"correct horse")


def test_the_passphrase_comes_from_a_file_or_the_environment_never_a_default(tmp_path):
    with pytest.raises(SigningError, match="no passphrase: set GEN_KEY_PASSPHRASE_FILE"):
        passphrase_from({})
    assert passphrase_from({"GEN_KEY_PASSPHRASE": "env"}) == b"env"
    secret = tmp_path / "pass"
    secret.write_text("from file\n")
    assert passphrase_from({"GEN_KEY_PASSPHRASE_FILE": str(secret), "GEN_KEY_PASSPHRASE": "env"}) == b"from file"
    with pytest.raises(SigningError, match="cannot read the passphrase file"):
        passphrase_from({"GEN_KEY_PASSPHRASE_FILE": str(tmp_path / "absent")})


def test_no_key_configured_means_no_signing_and_a_bad_one_is_said(key_pair):
    assert signer_from_env({}) is None
    signer = signer_from_env({"GEN_SIGNING_KEY": str(key_pair[0]), "GEN_KEY_PASSPHRASE": "correct horse"})
    assert signer is not None
    with pytest.raises(SigningError, match="cannot read the signing key .*No such file"):
        signer_from_env({"GEN_SIGNING_KEY": "/nonexistent/key", "GEN_KEY_PASSPHRASE": "x"})


def test_keys_are_never_overwritten(key_pair):
    with pytest.raises(UsageError, match="exists: gen never overwrites a key"):
        write_key_pair(key_pair[0].parent / "gen-signing", b"x")


def test_what_a_signature_check_says(key_pair, tmp_path):
    signer = open_private_key(key_pair[0], b"correct horse")
    public = read_public_key(key_pair[1])
    other_key, _ = write_key_pair(tmp_path / "other", b"x")
    other = open_private_key(other_key, b"x")
    right = signature_payload(REPOSITORY, DIGEST)
    elsewhere = signature_payload("registry.example.com/team/other", DIGEST)
    assert check_signed([], public, REPOSITORY, DIGEST) == "no signature"
    assert check_signed([(right, other.sign(right))], public, REPOSITORY, DIGEST) == "signed by another key"
    said = check_signed([(elsewhere, signer.sign(elsewhere))], public, REPOSITORY, DIGEST)
    assert said == f"a valid signature for registry.example.com/team/other@{DIGEST}, not this image"
    assert check_signed([(right, other.sign(right)), (right, signer.sign(right))], public, REPOSITORY, DIGEST) == ""


def test_gen_keys_new_takes_no_passphrase_flag_and_writes_the_pair(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEN_SIGNING")}
    gen = [sys.executable, "-m", "generator", "keys", "new", "--output", "k/release", "-C", str(tmp_path)]
    refused = subprocess.run(gen, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no passphrase" in refused.stderr and not (tmp_path / "k").exists()
    made = subprocess.run(
        gen, env={**env, "GEN_KEY_PASSPHRASE": "s3cr3t-value"}, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert "s3cr3t-value" not in made.stdout + made.stderr
    open_private_key(tmp_path / "k" / "release.key", b"s3cr3t-value")
    assert (tmp_path / "k" / "release.pub").is_file()
    from_file = tmp_path / "passphrase"
    from_file.write_text("filed\n")
    filed = subprocess.run(
        [*gen[:-4], "--output", "k/filed", "-C", str(tmp_path)],
        env={**env, "GEN_KEY_PASSPHRASE_FILE": str(from_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert filed.returncode == 0, filed.stderr
    open_private_key(tmp_path / "k" / "filed.key", b"filed")
    flag = subprocess.run([*gen, "--passphrase", "p"], env=env, capture_output=True, text=True, timeout=60)
    assert flag.returncode == 2


def test_trust_adds_one_scope_and_keeps_the_hosts_other_rules(tmp_path):
    from generator.rebuild.trust import registries_d, trust_policy

    base = {
        "default": [{"type": "reject"}],
        "transports": {"docker": {"quay.io": [{"type": "insecureAcceptAnything"}]}},
    }
    policy = trust_policy(base, "registry.example.com/team", tmp_path / "gen.pub")
    assert policy["default"] == [{"type": "reject"}]
    assert policy["transports"]["docker"]["quay.io"] == [{"type": "insecureAcceptAnything"}]
    assert policy["transports"]["docker"]["registry.example.com/team"] == [
        {"type": "sigstoreSigned", "keyPath": str(tmp_path / "gen.pub"), "signedIdentity": {"type": "matchRepository"}}
    ]
    assert "quay.io" in base["transports"]["docker"] and "registry.example.com/team" not in base["transports"]["docker"]
    assert trust_policy({}, "r.example.com/t", tmp_path / "k")["default"] == [{"type": "insecureAcceptAnything"}]
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(registries_d("registry.example.com")) == {
        "docker": {"registry.example.com": {"use-sigstore-attachments": True}}
    }


def test_gen_trust_writes_the_policy_and_never_through_a_committed_link(key_pair, tmp_path):
    project = tmp_path / "project"
    (project / ".gen").mkdir(parents=True)
    base = tmp_path / "policy.json"
    base.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    gen = [sys.executable, "-m", "generator", "trust", str(key_pair[1]), "--registry", "r.example.com/team"]
    made = subprocess.run(
        [*gen, "--base-policy", str(base), "-C", str(project)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    written = json.loads((project / ".gen" / "trust" / "policy.json").read_text())
    assert written["transports"]["docker"]["r.example.com/team"][0]["keyPath"] == str(key_pair[1])
    assert (project / ".gen" / "trust" / "registries.d" / "gen.yaml").is_file()

    outside = tmp_path / "outside"
    outside.mkdir()
    other = tmp_path / "other"
    (other / ".gen").mkdir(parents=True)
    (other / ".gen" / "trust").symlink_to(outside)
    refused = subprocess.run(
        [*gen, "--base-policy", str(base), "-C", str(other)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "is a symlink" in refused.stderr and not list(outside.iterdir())
    bad = base.with_name("bad.json")
    bad.write_text("[1]")
    wrong = subprocess.run(
        [*gen, "--base-policy", str(bad), "-C", str(project)], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 2 and "not a policy.json" in wrong.stderr


def test_debians_tools_built_without_sigstore_are_named(tmp_path, monkeypatch):
    from generator.publish.signing import SIGSTORE_DISABLED, tools_without_sigstore

    for name, body in (("skopeo", b"\0x" + SIGSTORE_DISABLED + b"\0"), ("podman", b"\0a sigstore-capable build\0")):
        tool = tmp_path / name
        tool.write_bytes(body)
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tools_without_sigstore() == ["skopeo"]


@pytest.mark.parametrize(
    "reference", ["app:1", "registry.example.com/team/app", "registry.example.com/team/app@sha256:ab"]
)
def test_verify_image_wants_a_tagged_reference(key_pair, reference):
    got = subprocess.run(
        [sys.executable, "-m", "generator", "verify-image", reference, "--key", str(key_pair[1])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 2 and "give HOST[:PORT]/ORG/NAME:TAG" in got.stderr, got.stderr
