"""Profiles: the spec's run-time configurations, rendered into the image and chosen at start by
GEN_PROFILE (gen's s6 init run with the real s6 binaries, see test_init_scripts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.errors import SpecError
from generator.model import build_image
from tests.unit.test_init_scripts import InitRoot, make_init_root
from tests.unit.test_init_scripts import pytestmark as init_script_marks
from tests.unit.test_readiness_spec import _rendered
from tests.unit.test_render import render
from tests.unit.test_spec import errors, load, only, write


def _with_init_marks(test):
    """The init tests' own marks: they need root (a PID namespace) and s6 on this host."""
    for mark in init_script_marks:
        test = mark(test)
    return test


SPEC = """\
name: app
tags: ["1"]
base: {distro: debian, release: bookworm, bootstrap: {}}
init: {kind: s6}
profiles:
  dev: {env: {LEVEL: debug, "URL": "http://localhost:8080/a b"}, rootfs: [dev-files]}
  prd: {env: {LEVEL: warn}}
default_profile: dev
cmd: [app]
"""


def test_profiles_reach_the_model_with_their_own_overlays(tmp_path):
    image = build_image(load(tmp_path, app=SPEC).specs["app"])
    dev, prd = image.profiles
    assert (dev.name, dev.env) == ("dev", (("LEVEL", "debug"), ("URL", "http://localhost:8080/a b")))
    assert [o.dest for o in dev.rootfs] == ["/etc/gen/profiles/dev/rootfs"] and prd.rootfs == ()
    assert image.default_profile == "dev" and image.profiles_dir == "/etc/gen/profiles"


def test_each_profile_gets_the_schemas_defaults_inside_the_profiles_map(tmp_path):
    """The spec stage fills a map's values too: a profile without env has the schema's {} (the
    model and verify read it as given, and the image embeds the spec with every default)."""
    spec = load(tmp_path, app=SPEC.replace("prd: {env: {LEVEL: warn}}", "prd: {}")).specs["app"]
    assert spec.data["profiles"]["prd"] == {"env": {}, "rootfs": []}
    assert spec.data["profiles"]["dev"]["env"]["LEVEL"] == "debug"
    assert build_image(spec).profiles[1].env == ()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("default_profile: dev", "default_profile: qa"), "default_profile 'qa' is not one of the spec's profiles"),
        (("init: {kind: s6}", "init: {kind: none}"), "profiles need an init layer"),
        (("prd: {env", "Prd: {env"), "key 'Prd' is not valid here"),
        (("LEVEL: warn", "GEN_X: warn"), "key 'GEN_X' is reserved for gen's own use"),
    ],
)
def test_profile_mistakes_are_spec_errors(tmp_path, edit, message):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "dev-files").mkdir()
    assert only(errors(tmp_path, app=SPEC.replace(*edit)), message)


def test_a_profile_is_rendered_as_an_env_file_and_an_overlay_under_profiles_dir(tmp_path):
    (tmp_path / "specs" / "dev-files" / "etc" / "app").mkdir(parents=True)
    (tmp_path / "specs" / "dev-files" / "etc" / "app" / "app.conf").write_text("debug = true\n")
    output = _rendered(tmp_path, SPEC)
    config = output / "app" / "gen-config" / "etc" / "gen" / "profiles"
    assert (config / "dev" / "env").read_text() == "LEVEL=debug\nURL=http://localhost:8080/a b\n"
    assert (config / "prd" / "env").read_text() == "LEVEL=warn\n"
    dockerfile = (output / "app" / "Dockerfile").read_text()
    assert 'COPY ["rootfs/01-dev-files/", "/etc/gen/profiles/dev/rootfs"]' in dockerfile
    assert 'GEN_PROFILE="dev"' in dockerfile and 'GEN_PROFILES_DIR="/etc/gen/profiles"' in dockerfile
    assert (output / "app" / "rootfs" / "01-dev-files" / "etc" / "app" / "app.conf").is_file()


def test_a_missing_profile_overlay_is_an_error_at_its_line(tmp_path):
    write(tmp_path, app=SPEC)
    with pytest.raises(SpecError) as info:
        render(tmp_path)
    found = only(info.value.diagnostics, "overlay directory")
    assert (found.line, found.column) == (6, 75), found.format()


# --- at start, with the real s6 -----------------------------------------------------------------


@pytest.fixture
def profiled_root(tmp_path: Path, gen_log_binary: Path) -> InitRoot:
    root = make_init_root(tmp_path, gen_log_binary)
    profiles = root.path / "etc/gen/profiles"
    (profiles / "dev/rootfs/etc/app").mkdir(parents=True)
    (profiles / "dev/env").write_text("LEVEL=debug\nURL=http://x/a b\n# a comment\nbad line\n")
    (profiles / "dev/rootfs/etc/app/app.conf").write_text("debug = true\n")
    (profiles / "prd").mkdir()
    (profiles / "prd/env").write_text("LEVEL=warn\n")
    return root


@_with_init_marks
def test_the_chosen_profile_gives_cmd_its_env_and_puts_its_files_in_place(profiled_root):
    script = 'echo "$LEVEL|$URL"; cat "$GEN_INIT_ROOT/etc/app/app.conf"'
    result = profiled_root.run("sh", "-c", script, GEN_PROFILE="dev")
    assert (result.returncode, result.stdout) == (0, b"debug|http://x/a b\ndebug = true\n"), result.stderr
    assert b"ignoring env line 'bad line'" in result.stderr
    result = profiled_root.run("sh", "-c", 'echo "$LEVEL"', GEN_PROFILE="prd")
    assert (result.returncode, result.stdout) == (0, b"warn\n")
    assert profiled_root.run("sh", "-c", 'echo "${LEVEL:-none}"').stdout == b"none\n"  # no profile chosen


@_with_init_marks
def test_an_unknown_profile_stops_the_start_with_the_known_ones(profiled_root):
    result = profiled_root.run("echo", "never", GEN_PROFILE="qa")
    assert result.returncode == 1 and result.stdout == b""
    assert b"profile qa is not in /etc/gen/profiles (known: dev prd)" in result.stderr
    bad = profiled_root.run("echo", "never", GEN_PROFILE="../etc")
    assert bad.returncode == 111 and b"GEN_PROFILE=../etc is not valid" in bad.stderr
