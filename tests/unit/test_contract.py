"""The manifest contract: what render writes is what build reads, field for field, and a manifest
gen cannot use is one clear line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.builder.outputs import load_output
from generator.contract import (
    LOCK_VERSION,
    MANIFEST,
    MANIFEST_VERSION,
    BootstrapBase,
    EmbeddedSpec,
    EmbeddedSpecError,
    InitPins,
    LocalBase,
    Lock,
    LockedBase,
    LockedImage,
    LockedPlatform,
    LockError,
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
V1 = '{"manifest_version": 1, '  # a manifest of the version this gen reads, opened


@pytest.mark.parametrize("name", ["debian-s6", "runtime", "app-base"])
def test_every_committed_manifest_reads_and_writes_back_the_same(name):
    path = ROOT / "output" / name / MANIFEST
    data = json.loads(path.read_text())
    manifest = Manifest.read(path)
    assert manifest.to_json() == data and data["manifest_version"] == MANIFEST_VERSION
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
        (V1 + '"name": "x"}', "manifest lacks tags, base, source_date_epoch, context_sha256"),
        (
            V1 + '"name": "x", "tags": [], "base": {"kind": "nfs", "image": "i"}, "source_date_epoch": 1, '
            '"context_sha256": "c"}',
            "base kind 'nfs' is none of bootstrap, image, local, parent",
        ),
        (
            V1 + '"name": "x", "tags": [], "base": "i", "source_date_epoch": 1, "context_sha256": "c"}',
            "base must be an object with an image",
        ),
        (
            V1 + '"name": "x", "tags": [], "base": {"kind": "bootstrap", "image": "i"}, "source_date_epoch": 1, '
            '"context_sha256": "c"}',
            "bootstrap base lacks or garbles 'distro'",
        ),
        (
            V1 + '"name": "x", "tags": [], "base": {"kind": "local", "image": "i"}, "source_date_epoch": "soon", '
            '"context_sha256": "c"}',
            "a field has the wrong type",
        ),
        # The version is checked first: another version's fields may mean something else.
        ('{"name": "x"}', "no manifest_version (rendered by a gen from before manifests had one)"),
        ('{"manifest_version": 2, "name": "x"}', "manifest_version 2 is not 1, the one this gen reads"),
        ('{"manifest_version": true}', "manifest_version True is not 1"),
        ('{"manifest_version": "1"}', "manifest_version '1' is not 1"),
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


# --- gen.lock --------------------------------------------------------------------------------

S6_OVERLAY_INIT = {"kind": "s6-overlay", "version": "3.2.0.2", "checksums": {"s6-overlay-noarch.tar.xz": "e" * 64}}


def _lock_as_gen_writes_it() -> dict:
    """A lock with every kind of entry, as the gen before typed records wrote it (asdict)."""
    parent_base = {"kind": "parent", "name": "root", "image_id": "a" * 64}
    registry_ref = "r.example/debian:12@sha256:" + "d" * 64
    return {
        "lock_version": 1,
        "registry": "127.0.0.1:5000/team",
        "images": {
            "root": {
                "name": "root",
                "parent": None,
                "tags": ["1.0", "latest"],
                "build_id": "gen-0123456789abcdef",
                "image_id": "a" * 64,
                "digest": "sha256:" + "b" * 64,
                "files_sha256": "c" * 64,
                "base": {"kind": "image", "ref": registry_ref, "image_id": "d" * 64, "digest": "sha256:" + "d" * 64},
                "init": S6_OVERLAY_INIT,
                "packages": {"bash": "5.2.15-2+b2", "libgcc-s1:i386": "12.2.0-14"},
                "platforms": {},
            },
            "child": {
                "name": "child",
                "parent": "root",
                "tags": ["2"],
                "build_id": "gen-1111111111111111",
                "image_id": "1" * 64,
                "digest": "",
                "files_sha256": "4" * 64,
                "base": parent_base,
                "init": {"kind": "s6"},
                "packages": {"bash": "5.2"},
                "platforms": {
                    "linux/amd64": {
                        "build_id": "gen-1111111111111111",
                        "image_id": "1" * 64,
                        "base": parent_base,
                        "packages": {"bash": "5.2"},
                    },
                    "linux/arm64": {
                        "build_id": "gen-2222222222222222",
                        "image_id": "2" * 64,
                        "base": {**parent_base, "image_id": "3" * 64},
                        "packages": {"bash": "5.2"},
                    },
                },
            },
            "boot": {
                "name": "boot",
                "parent": None,
                "tags": ["x"],
                "build_id": "",
                "image_id": "5" * 64,
                "digest": "",
                "files_sha256": "6" * 64,
                "base": {
                    "kind": "bootstrap",
                    "ref": "localhost/gen/rootfs-debian-bookworm:0123456789ab",
                    "image_id": "",
                },
                "init": {"kind": "none"},
                "packages": {},
                "platforms": {},
            },
        },
    }


def test_a_lock_reads_into_typed_records_and_writes_back_the_same_bytes(tmp_path):
    text = json.dumps(_lock_as_gen_writes_it(), indent=2, sort_keys=True) + "\n"
    (tmp_path / "gen.lock").write_text(text)
    lock = Lock.read(tmp_path / "gen.lock")
    assert lock.to_json() == text
    root, child = lock.images["root"], lock.images["child"]
    assert root.base == LockedBase(
        "image", "d" * 64, ref="r.example/debian:12@sha256:" + "d" * 64, digest="sha256:" + "d" * 64
    )
    assert root.init == InitPins("s6-overlay", "3.2.0.2", (("s6-overlay-noarch.tar.xz", "e" * 64),))
    assert root.tags == ("1.0", "latest") and child.base == LockedBase("parent", "a" * 64, name="root")
    assert child.platforms["linux/arm64"] == LockedPlatform(
        "gen-2222222222222222", "2" * 64, LockedBase("parent", "3" * 64, name="root"), {"bash": "5.2"}
    )
    assert Lock.read(tmp_path / "absent.lock") == Lock()


def test_a_lock_entry_from_before_packages_and_platforms_reads():
    data = _lock_as_gen_writes_it()
    for entry in data["images"].values():
        del entry["packages"], entry["platforms"]
    lock = Lock.from_json(data, Path("gen.lock"))
    assert lock.images["boot"] == LockedImage(
        "boot",
        None,
        ("x",),
        "",
        "5" * 64,
        "",
        "6" * 64,
        LockedBase("bootstrap", "", ref="localhost/gen/rootfs-debian-bookworm:0123456789ab"),
        InitPins("none"),
    )


def _images_with(change) -> dict:
    data = _lock_as_gen_writes_it()
    change(data["images"]["child"])
    return data


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "not a JSON object"),
        ({"images": {}}, "no lock_version, so gen did not write it"),
        ({"lock_version": "1"}, "lock_version '1' is not 1"),
        ({"lock_version": True}, "lock_version True is not 1"),
        ({"lock_version": LOCK_VERSION + 1}, "lock_version 2 is newer than this gen reads (1); upgrade gen"),
        ({"lock_version": 1, "images": [1]}, "images is not an object"),
        ({"lock_version": 1, "registry": 5}, "registry is int, not a string"),
        ({"lock_version": 1, "images": {"x": "y"}}, "image 'x' is not an object"),
        (_images_with(lambda e: e.pop("base")), "image 'child' lacks base"),
        (_images_with(lambda e: e.update(extra=1)), "image 'child' has fields gen does not write: extra"),
        (_images_with(lambda e: e.update(tags="latest")), "image 'child' tags is not a list"),
        (_images_with(lambda e: e.update(tags=[1])), "image 'child' tags is int, not a string"),
        (_images_with(lambda e: e.update(parent=["root"])), "image 'child' parent is list, not a string"),
        (_images_with(lambda e: e.update(base={"kind": "nfs", "image_id": ""})), "base kind 'nfs' is none of"),
        (_images_with(lambda e: e["base"].pop("kind")), "image 'child' base lacks kind"),
        (_images_with(lambda e: e.update(init={"version": "1"})), "image 'child' init: init is not an object"),
        (_images_with(lambda e: e.update(packages={"bash": 5})), "image 'child' packages 'bash' is int"),
        (_images_with(lambda e: e.update(platforms=[])), "image 'child' platforms is not an object"),
        (
            _images_with(lambda e: e["platforms"]["linux/arm64"].pop("packages")),
            "image 'child' platform 'linux/arm64' lacks packages",
        ),
        (
            _images_with(lambda e: e["platforms"]["linux/arm64"].update(base=None)),
            "image 'child' platform 'linux/arm64' base is not an object",
        ),
    ],
)
def test_a_lock_gen_cannot_use_is_one_line_naming_it(tmp_path, data, says):
    path = tmp_path / "gen.lock"
    path.write_text(json.dumps(data))
    with pytest.raises(LockError) as caught:
        Lock.read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message
    assert "upgrade gen" in message or "gen lock --update" in message


# --- the embedded spec -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["debian-s6", "runtime", "app-base"])
def test_every_committed_embedded_spec_reads_and_writes_back_the_same_bytes(name):
    text = (ROOT / "output" / name / "gen-spec" / "etc" / "gen" / "spec.json").read_text()
    embedded = EmbeddedSpec.from_json(text, "/etc/gen/spec.json")
    assert embedded.document["name"] == name and embedded.to_json() == text


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "not JSON"), ("[1]", "not a JSON object"), ("[" * 100_000, "nested deeper than any spec is")],
)
def test_an_embedded_spec_that_is_no_json_object_is_one_line(text, says):
    with pytest.raises(EmbeddedSpecError) as caught:
        EmbeddedSpec.from_json(text, "/etc/gen/spec.json")
    assert str(caught.value).startswith("/etc/gen/spec.json: ") and says in str(caught.value)
