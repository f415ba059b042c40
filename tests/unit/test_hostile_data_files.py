"""Hostile data files beside the specs and in output/ (overlay file names, the project's
s6-overlay checksum table, gen.lock, manifests, a base policy.json, .sha256 files): each is one
clear error of exit code 2 naming the file, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from generator.contract import Lock, LockError, Manifest, ManifestError, context_sha256, read_json
from generator.errors import SpecFieldError, UsageError
from generator.model import build_image
from generator.plan.init_layer import (
    NOARCH,
    add_version,
    checksum_table,
    known_checksums,
    s6_overlay_checksums,
)
from generator.rebuild.release_sums import fetch_sha256_files
from generator.rebuild.trust import read_base_policy
from generator.spec import load_project

HUGE = "9" * 5000  # past int()'s 4300-digit limit, which json.loads raises as a plain ValueError
SUM = "a" * 64


def _bad_input(exc: pytest.ExceptionInfo, *said: str) -> str:
    """The error's text, checked to be one line of bad input (exit 2) saying each of said."""
    text = str(exc.value)
    assert exc.value.exit_code == 2, text
    assert "\n" not in text and all(s in text for s in said), text
    return text


# --- overlay file names -------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_refused_not_hashed():
    name = b"rootfs/etc/bad\xff".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    with pytest.raises(UsageError) as exc:
        context_sha256([(name, 0o644, b"x")])
    _bad_input(exc, "rootfs/etc/bad\\xff", "not UTF-8", "rename")


def test_a_file_name_that_is_not_utf8_in_an_output_folder_names_the_folder(tmp_path):
    """Dropped into output/IMAGE by hand: the build's digest of the folder refuses it with one line
    naming the folder, where it crashed encoding the name."""
    from generator.builder.outputs import folder_digests

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / b"bad\xff".decode("utf-8", "surrogateescape")).write_bytes(b"x")
    with pytest.raises(UsageError) as exc:
        folder_digests(tmp_path)
    _bad_input(exc, f"{tmp_path}/bad\\xff", "not UTF-8")


# --- the shared JSON reader ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, said",
    [
        (f'{{"a": {HUGE}}}'.encode(), "more than 4300 digits"),
        (b"[" * 100_000, "nested too deeply"),
        (b"{", "not valid JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_read_json_turns_every_failure_into_the_callers_error(tmp_path, data, said):
    path = tmp_path / "x.json"
    path.write_bytes(data)
    with pytest.raises(UsageError) as exc:
        read_json(path, UsageError, "fix it")
    assert _bad_input(exc, said, "fix it").startswith(str(path))


def test_a_lock_with_a_huge_number_is_a_lock_error(tmp_path):
    path = tmp_path / "gen.lock"
    path.write_text(f'{{"lock_version": 1, "registry": {HUGE}}}')
    with pytest.raises(LockError) as exc:
        Lock.read(path)
    _bad_input(exc, "gen.lock", "4300 digits", "gen lock --update")


@pytest.mark.parametrize("epoch", [HUGE, "1e999"])  # 1e999 reads as inf, which int() cannot take
def test_a_manifest_with_a_huge_epoch_is_a_manifest_error(tmp_path, epoch):
    path = tmp_path / "gen-manifest.json"
    path.write_text(
        '{"manifest_version": 1, "name": "x", "tags": [], "context_sha256": "",'
        f' "base": {{"kind": "local", "image": "x"}}, "source_date_epoch": {epoch}}}'
    )
    with pytest.raises(ManifestError) as exc:
        Manifest.read(path)
    _bad_input(exc, "gen-manifest.json", "gen render")


# --- the project's s6-overlay checksum table ------------------------------------------------------


@pytest.mark.parametrize(
    "table, said",
    [
        ('{"abc": {}}', "'abc' is not an s6-overlay 3.x version"),
        (f'{{"3.{HUGE}": {{"{NOARCH}": "{SUM}"}}}}', "is not an s6-overlay 3.x version"),
        (f'{{"a": {HUGE}}}', "more than 4300 digits"),
        (f'{{"3.9.0.1": {{"evil.sh": "{SUM}"}}}}', "'evil.sh' is not a release file gen fetches"),
        (f'{{"3.9.0.1": {{"{NOARCH}": "{SUM}\\n"}}}}', "is not a sha256"),
        ('{"3.9.0.1": []}', "3.9.0.1: expected {file name: sha256}"),
        ("[]", "not a JSON list"),
    ],
)
def test_a_bad_project_table_names_the_file_and_the_key(tmp_path, table, said):
    (tmp_path / "s6-overlay-checksums.json").write_text(table)
    with pytest.raises(UsageError) as exc:
        known_checksums(tmp_path)
    _bad_input(exc, "s6-overlay-checksums.json", said)


def test_a_project_table_that_changes_a_shipped_release_is_bad_input(tmp_path):
    version = sorted(checksum_table())[0]
    (tmp_path / "s6-overlay-checksums.json").write_text(json.dumps({version: {NOARCH: "0" * 64}}))
    with pytest.raises(UsageError) as exc:
        known_checksums(tmp_path)
    _bad_input(exc, "s6-overlay-checksums.json", version, NOARCH, "never changes")


def test_a_good_project_table_adds_its_release(tmp_path):
    (tmp_path / "s6-overlay-checksums.json").write_text(json.dumps({"3.9.0.1": {NOARCH: SUM}}))
    assert known_checksums(tmp_path)["3.9.0.1"] == {NOARCH: SUM}


def test_a_spec_version_of_huge_parts_is_a_spec_error(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "o.yaml").write_text(
        textwrap.dedent(f"""\
        name: o
        tags: [latest]
        base: {{distro: debian, release: bookworm, bootstrap: {{variant: minbase}}}}
        init: {{kind: s6-overlay, version: "3.{HUGE}", checksums: {{{NOARCH}: {SUM}, s6-overlay-x86_64.tar.xz: {SUM}}}}}
        """)
    )
    image = build_image(load_project([specs], tmp_path).specs["o"])
    with pytest.raises(SpecFieldError, match="is not an s6-overlay 3.x version"):
        s6_overlay_checksums(image)


# --- gen trust --base-policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, said",
    [
        ('{"transports": {"docker": []}}', "transports.docker is not an object"),
        ('{"transports": []}', "transports is not an object"),
        ('{"default": {}}', "default is not a list"),
        ("[1]", "not a policy.json"),
        (f'{{"a": {HUGE}}}', "4300 digits"),
    ],
)
def test_a_base_policy_of_the_wrong_shape_is_one_line(tmp_path, policy, said):
    path = tmp_path / "p.json"
    path.write_text(policy)
    with pytest.raises(UsageError) as exc:
        read_base_policy(path)
    _bad_input(exc, str(path), said)


def test_a_missing_base_policy_is_an_empty_one(tmp_path):
    assert read_base_policy(tmp_path / "none.json") == {}


def test_gen_trust_refuses_a_base_policy_of_the_wrong_shape(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "k.pub"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    policy = tmp_path / "p.json"
    policy.write_text('{"transports": {"docker": []}}')
    got = subprocess.run(
        [sys.executable, "-m", "generator", "trust", str(key), "-r", "reg.example/org", "--dir", "o"]
        + ["--base-policy", str(policy), "-C", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr[-2000:]
    assert "transports.docker" in got.stderr and not (tmp_path / "o").exists()


# --- s6-overlay add-version: the release's .sha256 files ----------------------------------------


def test_a_sha256_file_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / f"{NOARCH}.sha256").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(UsageError) as exc:
        fetch_sha256_files("3.9.0.1", str(tmp_path))
    _bad_input(exc, f"{NOARCH}.sha256", "not text")


def test_an_unparsable_sha256_line_is_bad_input():
    with pytest.raises(UsageError) as exc:
        add_version("3.9.0.1", {NOARCH: "garbage\n"})
    _bad_input(exc, f"{NOARCH}.sha256", "not a sha256sum line")


def test_a_version_of_huge_parts_is_refused_before_any_sorting():
    with pytest.raises(UsageError) as exc:
        add_version(f"3.{HUGE}", {NOARCH: f"{SUM}  {NOARCH}\n"})
    assert len(_bad_input(exc, "only the 3.x line")) < 300


def test_a_missing_release_is_bad_input(tmp_path):
    with pytest.raises(UsageError) as exc:
        fetch_sha256_files("3.9.0.1", str(tmp_path))
    _bad_input(exc, f"no {NOARCH}.sha256")
