"""The manifest contract: what render writes is what build reads, field for field, and a manifest
gen cannot use is one clear line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.builder.outputs import load_output
from generator.contract import (
    MANIFEST,
    BootstrapBase,
    InitPins,
    LocalBase,
    Manifest,
    ManifestError,
    ParentBase,
    RegistryBase,
)
from generator.model import build_image
from generator.plan.init_layer import known_checksums, s6_overlay_checksums
from generator.platforms import Platform
from generator.spec import load_project
from tests.conftest import render_specs
from tests.unit.test_platforms import S6_OVERLAY_SPEC

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["debian-s6", "runtime", "app-base"])
def test_every_committed_manifest_reads_and_writes_back_the_same(name):
    path = ROOT / "output" / name / MANIFEST
    data = json.loads(path.read_text())
    manifest = Manifest.read(path)
    assert manifest.to_json() == data
    assert isinstance(manifest.base, BootstrapBase if name == "debian-s6" else ParentBase)


def test_an_s6_overlay_manifest_keeps_its_served_dirs_and_per_platform_arguments(tmp_path):
    path = render_specs(tmp_path, ov=S6_OVERLAY_SPEC) / "ov" / MANIFEST
    data = json.loads(path.read_text())
    assert Manifest.read(path).to_json() == data


def test_the_manifest_pins_what_the_plan_resolved_of_the_init_layer(tmp_path):
    """The lock copies these; it reads no spec and merges no checksum table of its own."""
    output = render_specs(tmp_path, ov=S6_OVERLAY_SPEC)
    pins = Manifest.read(output / "ov" / MANIFEST).init
    image = build_image(load_project([output.parent / "specs"], output.parent).specs["ov"])
    assert pins.kind == "s6-overlay" and pins.version == image.init.version
    assert dict(pins.checksums) == s6_overlay_checksums(image, known_checksums(output.parent))
    assert Manifest.read(ROOT / "output" / "debian-s6" / MANIFEST).init == InitPins("s6")
    old = {**Manifest.read(output / "ov" / MANIFEST).to_json()}
    del old["init"]  # a manifest rendered before the field: the lock says so instead of guessing
    assert Manifest.from_json(old, tmp_path).init == InitPins("unknown")
    with pytest.raises(ManifestError, match="wrong type"):
        Manifest.from_json({**old, "init": {"version": "1"}}, tmp_path)


def test_each_base_kind_round_trips_and_a_platform_base_gets_its_own_rootfs(tmp_path):
    bootstrap = BootstrapBase(
        "localhost/gen/rootfs-debian-bookworm:k",
        "debian",
        "bookworm",
        "minbase",
        ("main",),
        ("s6",),
        None,
        1700000000,
        mirror="http://mirror.invalid/debian",
    )
    for base in (bootstrap, RegistryBase("r.invalid/x@sha256:" + "a" * 64), LocalBase("l/x:1"), ParentBase("p/x:1")):
        manifest = Manifest("x", ("1",), "specs/x.yaml", "s", "t", None, base, 1, (), None, context_sha256="c")
        assert Manifest.from_json(json.loads(json.dumps(manifest.to_json())), tmp_path) == manifest
    arm = bootstrap.for_platform("linux/arm/v7")
    assert arm.image == "localhost/gen/rootfs-debian-bookworm:k-arm-v7"
    assert arm.platform == Platform.parse("linux/arm/v7") and arm.mirror == bootstrap.mirror
    assert (
        "mirror"
        not in Manifest(
            "x",
            ("1",),
            "",
            "",
            "",
            None,
            BootstrapBase("i", "debian", "bookworm", "minbase", ("main",), (), None, None),
            1,
            (),
            None,
        ).to_json()["base"]
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{ not json", ":1:3: not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"name": "x"}', "manifest lacks tags, base, source_date_epoch, context_sha256"),
        (
            '{"name": "x", "tags": [], "base": {"kind": "nfs", "image": "i"}, "source_date_epoch": 1, '
            '"context_sha256": "c"}',
            "base kind 'nfs' is none of bootstrap, image, local, parent",
        ),
        (
            '{"name": "x", "tags": [], "base": "i", "source_date_epoch": 1, "context_sha256": "c"}',
            "base must be an object with an image",
        ),
        (
            '{"name": "x", "tags": [], "base": {"kind": "bootstrap", "image": "i"}, "source_date_epoch": 1, '
            '"context_sha256": "c"}',
            "bootstrap base lacks or garbles 'distro'",
        ),
        (
            '{"name": "x", "tags": [], "base": {"kind": "local", "image": "i"}, "source_date_epoch": "soon", '
            '"context_sha256": "c"}',
            "a field has the wrong type",
        ),
    ],
)
def test_a_manifest_gen_cannot_use_is_one_line_naming_it(tmp_path, text, says):
    path = tmp_path / MANIFEST
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        Manifest.read(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and says in message and "\n" not in message
    assert "gen render" in message


def test_the_spec_mirror_reaches_the_build_through_the_manifest_only(tmp_path):
    spec = (
        'name: m\ntags: ["1"]\n'
        "base: {distro: debian, release: bookworm, bootstrap: {mirror: 'http://mirror.invalid/debian'}}\n"
    )
    output = render_specs(tmp_path, m=spec)
    (tmp_path / "specs" / "m.yaml").unlink()  # build reads output/ alone, never the spec file
    image = load_output(output / "m")
    assert isinstance(image.base, BootstrapBase) and image.base.mirror == "http://mirror.invalid/debian"
    (tmp_path / "plain").mkdir()
    plain = render_specs(
        tmp_path / "plain", m=spec.replace(", bootstrap: {mirror: 'http://mirror.invalid/debian'}", ", bootstrap: {}")
    )
    assert "mirror" not in (plain / "m" / MANIFEST).read_text()
