"""The spec stage: positions, schema messages, extends chains, merge rules, defaults, cross-field rules."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator.errors import SpecError
from generator.schema import BOOTSTRAP_DISTROS, FAMILY_BY_DISTRO, spec_schema
from generator.spec import load_project
from generator.spec.merge import with_defaults_at
from generator.spec.project import _dependency_order

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
name: base
tags: [latest]
base:
  distro: debian
  release: bookworm
  bootstrap: {}
"""


def write(tmp_path: Path, **specs: str) -> Path:
    directory = tmp_path / "specs"
    directory.mkdir(exist_ok=True)
    for name, text in specs.items():
        (directory / f"{name}.yaml").write_text(textwrap.dedent(text))
    return directory


def load(tmp_path: Path, **specs: str):
    return load_project([write(tmp_path, **specs)], tmp_path)


def errors(tmp_path: Path, **specs: str):
    with pytest.raises(SpecError) as info:
        load(tmp_path, **specs)
    return info.value.diagnostics


def only(diagnostics, text: str):
    found = [d for d in diagnostics if text in d.message]
    assert len(found) == 1, [d.format() for d in diagnostics]
    return found[0]


def test_bundled_examples_resolve_parents_first():
    project = load_project([ROOT / "specs"], ROOT)
    assert project.order() == ["debian-s6", "runtime", "app-base"]
    assert project.ancestors("app-base") == ["debian-s6", "runtime"]
    assert project.descendants("debian-s6") == ["runtime", "app-base"]
    assert project.children("runtime") == ["app-base"]


def test_unknown_field_points_at_key_with_suggestion(tmp_path):
    diags = errors(tmp_path, base=BASE + "users:\n  - name: app\n    uidd: 1000\n")
    unknown = only(diags, "unknown field 'uidd'")
    assert (unknown.file, unknown.line, unknown.column, unknown.path) == ("specs/base.yaml", 9, 5, "$.users[0].uidd")
    assert "did you mean 'uid'?" in unknown.hint and "Allowed here:" in unknown.hint
    assert only(diags, "missing required field 'uid'").line == 8


def test_every_schema_error_of_a_file_is_reported_at_once(tmp_path):
    diags = errors(tmp_path, base=BASE + "init: {kind: s6-ovrlay}\nlogging: {keep: 1}\nenv: {1A: x}\nlables: {}\n")
    kinds = {d.path: d for d in diags}
    assert set(kinds) == {"$.init.kind", "$.logging.keep", "$.env.1A", "$.lables"}
    assert "did you mean 's6-overlay'" in kinds["$.init.kind"].hint
    assert "at least 2" in kinds["$.logging.keep"].message
    assert "environment variable name" in kinds["$.env.1A"].hint
    assert "did you mean 'labels'" in kinds["$.lables"].hint
    assert [d.line for d in diags] == sorted(d.line for d in diags)


def test_unquoted_octal_mode_explains_quoting(tmp_path):
    diag = errors(tmp_path, base=BASE + "volumes:\n  - {path: /data, mode: 0750}\n")[0]
    assert diag.path == "$.volumes[0].mode" and "expected string" in diag.message
    assert "quote" in diag.hint and '"0755"' in diag.hint


@pytest.mark.parametrize(
    "text, path",
    [
        ("users: [{name: 'root;rm', uid: 5}]", "$.users[0].name"),
        ("users: [{name: Admin, uid: 5}]", "$.users[0].name"),
        ("volumes: [{path: '/data/../etc'}]", "$.volumes[0].path"),
        ("volumes: [{path: '/my data'}]", "$.volumes[0].path"),
        ("volumes: [{path: 'relative'}]", "$.volumes[0].path"),
        ("sysctls: {values: {'kernel/shmmax': 1}}", "$.sysctls.values.kernel/shmmax"),
        ("sysctls: {values: {'kernel.shmmax': '1; reboot'}}", "$.sysctls.values.kernel.shmmax"),
        ("packages: ['curl; rm -rf /']", "$.packages[0]"),
        ('env: {A: "line\\nbreak"}', "$.env.A"),
        ("rootfs: ['../outside']", "$.rootfs[0]"),
        ("services: [{name: Web, command: [x]}]", "$.services[0].name"),
    ],
)
def test_hostile_values_are_rejected(tmp_path, text, path):
    diags = errors(tmp_path, base=BASE + text + "\n")
    assert path in [d.path for d in diags], [d.format() for d in diags]


def test_yaml_syntax_and_duplicate_keys(tmp_path):
    diag = errors(tmp_path, base=BASE + "tags: [again]\n")[0]
    assert "duplicate key" in diag.message and diag.line == 7
    diag = errors(tmp_path, base="name: [unclosed\n")[0]
    assert diag.message.startswith("invalid YAML") and diag.line > 0


def test_non_mapping_file(tmp_path):
    assert "must be a mapping" in errors(tmp_path, base="- a\n- b\n")[0].message


def test_missing_parent_suggests_and_cycle_names_every_spec(tmp_path):
    diags = errors(
        tmp_path,
        base=BASE,
        child="name: child\ntags: [x]\nextends: bsae\n",
        a="name: a\ntags: [x]\nextends: b\n",
        b="name: b\ntags: [x]\nextends: a\n",
    )
    missing = only(diags, "'bsae' not found")
    assert (missing.file, missing.line, missing.column) == ("specs/child.yaml", 3, 10)
    assert "did you mean 'base'" in missing.hint
    cycles = [d for d in diags if "cycle" in d.message]
    assert {d.message.split(": ")[1] for d in cycles} == {"a -> b -> a", "b -> a -> b"}


def test_a_parent_that_cannot_be_read_is_its_own_error_not_a_missing_parent(tmp_path):
    diags = errors(
        tmp_path,
        base=BASE + "tags: [again]\n",  # a duplicate key: the file is not read at all
        child="name: child\ntags: [x]\nextends: base\n",
        grandchild="name: grandchild\ntags: [x]\nextends: child\n",
    )
    assert [(d.file, d.message) for d in diags] == [("specs/base.yaml", "invalid YAML: found duplicate key 'tags'")]


def test_the_known_specs_hint_of_a_large_project_stays_one_short_line(tmp_path):
    many = {f"s{i:03d}": f"name: s{i:03d}\ntags: [x]\nextends: base\n" for i in range(200)}
    missing = only(errors(tmp_path, base=BASE, child="name: child\ntags: [x]\nextends: nowhere\n", **many), "nowhere")
    assert missing.hint == "known specs: base, child, s000, s001, s002, s003, s004, s005, s006, s007 and 192 more"


def test_parent_found_next_to_a_spec_given_alone(tmp_path):
    directory = write(tmp_path, base=BASE, child="name: child\ntags: [x]\nextends: base\n")
    project = load_project([directory / "child.yaml"], tmp_path)
    assert project.order() == ["base", "child"]


def test_file_name_must_match_spec_name_and_names_are_unique(tmp_path):
    diags = errors(tmp_path, base=BASE, other=BASE)
    assert "in a file named other.yaml" in only(diags, "file named").message
    assert only(diags, "two specs are named 'base'").file == "specs/other.yaml"


def test_defaults_follow_the_schema(tmp_path):
    data = load(tmp_path, base=BASE).specs["base"].data
    assert data["logging"] == {
        "dir": "/lain/logs/default",
        "max_size": 268435455,
        "keep": 3,
        "timestamp": "none",
        "stdout": True,
        "logger": "gen-log",
    }
    assert data["init"]["kind"] == "s6" and data["init"]["kill_grace_time"] == 3000
    assert data["base"]["bootstrap"] == {
        "variant": "minbase",
        "components": ["main"],
        "include": [],
        "source_date_epoch": 1700000000,
    }
    assert data["sysctls"] == {"values": {}, "policy": "fail", "node_level": "error"}


CHILD = """\
name: child
tags: [c1]
extends: base
packages: [b, c]
expose: [80]
init: {kill_grace_time: 500}
logging: {keep: 5}
sysctls: {values: {kernel.msgmax: 2}}
env: {B: child, C: new}
labels: {l2: "2"}
groups: [{name: g2, gid: 2000}]
users:
  - {name: u1, uid: 1001}  # repeats the parent's: allowed, changing it is not
  - {name: u2, uid: 1002}
volumes: [{path: /data, mode: "0700"}, {path: /cache}]
services: [{name: s2, command: [b]}]
healthcheck: {test: [child]}
cmd: [child]
rootfs: [ov-child]
"""

PARENT = (
    BASE
    + """\
description: parent only
packages: [a, b]
expose: [80, 443]
init: {restart: restart}
logging: {max_size: 100000}
sysctls: {values: {kernel.shmmax: 1}, policy: warn}
env: {A: parent, B: parent}
labels: {l1: "1"}
groups: [{name: g1, gid: 1500}]
users: [{name: u1, uid: 1001}]
volumes: [{path: /data, owner: u1}]
services: [{name: s1, command: [a]}]
healthcheck: {test: [parent], retries: 3}
cmd: [parent]
workdir: /srv
rootfs: [ov-parent]
"""
)


def test_merge_rules(tmp_path):
    data = load(tmp_path, base=PARENT, child=CHILD).specs["child"].data
    assert data["name"] == "child" and data["tags"] == ["c1"] and "description" not in data
    assert data["base"]["distro"] == "debian"
    assert data["packages"] == ["a", "b", "c"] and data["expose"] == [80, 443]
    assert data["init"]["restart"] == "restart" and data["init"]["kill_grace_time"] == 500
    assert (data["logging"]["max_size"], data["logging"]["keep"]) == (100000, 5)
    assert data["sysctls"]["values"] == {"kernel.shmmax": 1, "kernel.msgmax": 2}
    assert data["sysctls"]["policy"] == "warn"
    assert data["env"] == {"A": "parent", "B": "child", "C": "new"}
    assert data["labels"] == {"l1": "1", "l2": "2"}
    assert [g["name"] for g in data["groups"]] == ["g1", "g2"]
    assert [(u["name"], u["shell"]) for u in data["users"]] == [
        ("u1", "/usr/sbin/nologin"),
        ("u2", "/usr/sbin/nologin"),
    ]
    assert [(v["path"], v["mode"], v.get("owner")) for v in data["volumes"]] == [
        ("/data", "0700", None),
        ("/cache", "0755", None),
    ]
    assert [s["name"] for s in data["services"]] == ["s1", "s2"]
    assert data["healthcheck"] == {"test": ["child"]}
    assert data["cmd"] == ["child"] and data["workdir"] == "/srv"
    assert data["rootfs"] == ["ov-child"]


def test_diagnostic_on_inherited_entry_points_at_the_parent_file(tmp_path):
    project = load(tmp_path, base=PARENT, child=CHILD)
    child = project.specs["child"]
    inherited = child.diagnostic(("services", 0, "name"), "x")
    assert (inherited.file, inherited.line) == ("specs/base.yaml", 18)
    own = child.diagnostic(("services", 1, "name"), "x")
    assert (own.file, own.line) == ("specs/child.yaml", 16)
    replaced = child.diagnostic(("users", 0, "shell"), "x")
    assert (replaced.file, replaced.line) == ("specs/child.yaml", 13)
    from_map = child.diagnostic(("sysctls", "values", "kernel.shmmax"), "x")
    assert (from_map.file, from_map.line) == ("specs/base.yaml", 12)


@pytest.mark.parametrize(
    "text, message",
    [
        ("base: {distro: debian, release: bookworm}\n", "exactly one of bootstrap, image, local"),
        ("base: {distro: alpine, release: '3.20', bootstrap: {}}\n", "only makes debian and ubuntu"),
        ("init: {kind: s6-overlay}\n", "needs a pinned init.version"),
        ("init: {kind: s6, version: 3.2.0.2}\n", "only applies to kind s6-overlay"),
        ("users: [{name: a, uid: 1000}, {name: b, uid: 1000}]\n", "uid 1000 is given to two users"),
        ("groups: [{name: a, gid: 7000}, {name: b, gid: 7000}]\n", "gid 7000 is given to two groups"),
        ("users: [{name: www-data, uid: 1000}]\n", "already exists in the base (with uid 33)"),
        ("groups: [{name: staff, gid: 1000}]\n", "already exists in the base (with gid 50)"),
        ("users: [{name: a, uid: 1000, group: nope}]\n", "names group 'nope'"),
        ("users: [{name: a, uid: 1000, groups: [nope]}]\n", "names group 'nope'"),
        ("groups: [{name: g, gid: 1000}]\nusers: [{name: a, uid: 1000}]\n", "which group 'g' already has"),
        ("user: ghost\n", "user 'ghost' is not declared"),
        ("volumes: [{path: /data, owner: ghost}]\n", "user 'ghost' is not declared"),
        ("volumes: [{path: /data, group: ghost}]\n", "group 'ghost' is not declared"),
        ("services: [{name: w, command: [x], user: ghost}]\n", "user 'ghost' is not declared"),
        ("volumes: [{path: /data}, {path: /data}]\n", "lists '/data' twice"),
        ("services: [{name: app, command: [x]}]\n", "reserved for CMD"),
        ("volumes: [{path: /proc/x}]\n", "runtime owns it"),
        (
            "users: [{name: a, uid: 1000}, {name: b, uid: 1001}]\nuser: a\n"
            "services: [{name: w, command: [x], user: b}]\n",
            "PID 1 runs as 'a' (the image's user) and cannot switch users",
        ),
    ],
)
def test_cross_field_rules(tmp_path, text, message):
    spec = BASE if not text.startswith("base:") else "name: base\ntags: [latest]\n"
    only(errors(tmp_path, base=spec + text), message)


def test_a_service_may_have_its_own_user_when_pid1_starts_as_root(tmp_path):
    users = "users: [{name: a, uid: 1000}, {name: b, uid: 1001}]\nuser: a\n"
    service = "services: [{name: w, command: [x], user: b}]\n"
    load(tmp_path, base=BASE + users + service + "init: {start_as_root: true}\n")
    load(tmp_path, base=BASE + users + "services: [{name: w, command: [x], user: a}]\n")
    diag = only(errors(tmp_path, base=BASE + users + service), "cannot switch users")
    assert diag.path == "$.services[0].user" and "init.start_as_root: true" in diag.hint


def test_base_groups_are_usable_without_declaring(tmp_path):
    data = load(tmp_path, base=BASE + "users: [{name: a, uid: 1000, groups: [users, adm]}]\n").specs["base"].data
    assert data["users"][0]["groups"] == ["users", "adm"]


def test_child_rules(tmp_path):
    child = "name: child\ntags: [x]\nextends: base\n"
    only(
        errors(tmp_path, base=BASE, child=child + "base: {distro: debian, release: trixie, bootstrap: {}}\n"),
        "inherits its parent's base",
    )
    only(errors(tmp_path, base=BASE, child=child + "init: {kind: none}\n"), "cannot replace or remove")
    only(errors(tmp_path, base=BASE, child="name: child\ntags: [x]\n"), "missing `base`")


def test_family_map_covers_the_schema():
    assert set(FAMILY_BY_DISTRO) == set(spec_schema()["properties"]["base"]["properties"]["distro"]["enum"])


def test_the_bootstrap_distros_are_the_apt_familys_and_every_stage_asks_the_one_list():
    from generator.builder import bootstrap
    from generator.rebuild import updates
    from generator.spec import checks

    assert BOOTSTRAP_DISTROS == ("debian", "ubuntu")
    assert checks.BOOTSTRAP_DISTROS is bootstrap.BOOTSTRAP_DISTROS is updates.BOOTSTRAP_DISTROS is BOOTSTRAP_DISTROS


def test_defaults_at_a_path_are_the_schemas():
    """What the model and plan need for a part the spec left out or gave in its short form."""
    assert with_defaults_at(("rootfs", 0), {"src": "overlay"}) == {"src": "overlay", "dest": "/"}
    assert with_defaults_at(("logging", "forward"), {"to": ""}) == {"to": "", "facility": "user"}
    assert with_defaults_at(("base", "bootstrap"), {})["source_date_epoch"] == 1700000000
    assert with_defaults_at(("profiles", "dev"), {}) == {"env": {}, "rootfs": []}


def test_specs_are_ordered_depth_first_each_subtree_together(tmp_path):
    child = "name: {name}\ntags: [x]\nextends: {parent}\n"
    specs = {"b": BASE.replace("name: base", "name: b"), "a": BASE.replace("name: base", "name: a")}
    specs |= {"z": child.format(name="z", parent="a"), "c": child.format(name="c", parent="b")}
    assert load(tmp_path, **specs).order() == ["a", "z", "b", "c"]


def _depth_first(parents: dict[str, str | None]) -> list[str]:
    """The order `_dependency_order` keeps: roots by name, each followed by its subtree."""
    order: list[str] = []

    def visit(name: str) -> None:
        order.append(name)
        for child in sorted(n for n, p in parents.items() if p == name):
            visit(child)

    for root in sorted(n for n, p in parents.items() if p is None):
        visit(root)
    return order


@st.composite
def _forests(draw: st.DrawFn) -> dict[str, str | None]:
    names = draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), unique=True, max_size=12))
    names = draw(st.permutations(names))
    return {name: draw(st.sampled_from([None, *names[:i]])) for i, name in enumerate(names)}


@given(_forests())
def test_the_dependency_order_is_the_depth_first_walk(parents):
    specs = {name: SimpleNamespace(parent=parent) for name, parent in parents.items()}
    assert list(_dependency_order(specs)) == _depth_first(parents)


def test_platforms_are_inherited_and_may_only_narrow(tmp_path):
    parent = BASE + "platforms: [linux/amd64, linux/arm64]\n"
    project = load(tmp_path, base=parent, child="name: child\ntags: [x]\nextends: base\n")
    assert project.specs["child"].data["platforms"] == ["linux/amd64", "linux/arm64"]
    narrowed = load(tmp_path, base=parent, child="name: child\ntags: [x]\nextends: base\nplatforms: [linux/arm64]\n")
    assert narrowed.specs["child"].data["platforms"] == ["linux/arm64"]
    wider = errors(
        tmp_path, base=parent, child="name: child\ntags: [x]\nextends: base\nplatforms: [linux/arm64, linux/s390x]\n"
    )
    diag = only(wider, "linux/s390x is not built for parent")
    assert (diag.file, diag.line, diag.column) == ("specs/child.yaml", 4, 26)
    only(
        errors(tmp_path, base=BASE, child="name: child\ntags: [x]\nextends: base\nplatforms: [linux/arm64]\n"),
        "builds only for the build host's platform",
    )
    assert "$.platforms[0]" in [d.path for d in errors(tmp_path, base=BASE + "platforms: [windows/amd64]\n")]
