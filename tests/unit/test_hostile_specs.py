"""Hostile specs (issue 20): each is refused with one clear line naming file:line:col, exit 2, no
traceback, before anything can grow without bound: alias bombs, deep nesting, huge integers,
tags, merge keys, non-string keys, lone surrogates and endless extends chains."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASE = "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
LAUGHS = "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
CASES = {
    "alias bomb": (
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS,
        "expands to more than 100000 nodes",
    ),
    "deep nesting": ("name: deep\nx: " + "[" * 10000 + "]" * 10000 + "\n", "nesting deeper than 64"),
    "huge integer": ("name: big\nx: " + "9" * 5000 + "\n", "an integer of 5000 digits"),
    "merge key": ("name: merge\n<<: {tags: [a]}\n" + BASE, "merge keys (<<) are not allowed"),
    "integer key": ("name: intkey\ntags: [a]\n1: x\n" + BASE, "key 1 is not a string"),
    "null key": ("name: nullkey\ntags: [a]\n~: x\n" + BASE, "key None is not a string"),
    "custom tag": ("name: tag\ntags: [!foo bar]\n" + BASE, "the tag !foo is not allowed"),
    "python tag": (
        "name: pytag\ntags: [!!python/object/apply:os.system [touch /tmp/x]]\n" + BASE,
        "python/object/apply:os.system is not allowed",
    ),
    "lone surrogate": ('name: s\ndescription: "\\ud800"\ntags: [a]\n' + BASE, "lone surrogate"),
}


def validate(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "generator", "validate", "-C", str(project)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_spec_is_one_clear_error(tmp_path, case):
    text, said = CASES[case]
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "hostile.yaml").write_text(text)
    got = validate(tmp_path)
    assert got.returncode == 2, got.stderr[-2000:]
    assert "Traceback" not in got.stderr
    assert said in got.stderr
    assert re.search(r"specs/hostile\.yaml:\d+:\d+: ", got.stderr), got.stderr


def test_an_endless_extends_chain_is_cut_short(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "s0.yaml").write_text("name: s0\ntags: [a]\n" + BASE)
    for i in range(1, 1000):
        (specs / f"s{i}.yaml").write_text(f"name: s{i}\ntags: [a]\nextends: s{i - 1}\n")
    got = validate(tmp_path)
    assert got.returncode == 2 and "Traceback" not in got.stderr
    assert "is deeper than 16 specs" in got.stderr


def test_a_spec_over_a_megabyte_is_refused_unread(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "big.yaml").write_text("name: big\n" + "# padding\n" * 120_000)
    got = validate(tmp_path)
    assert got.returncode == 2 and "at most 1048576" in got.stderr


# --- symlinks a repository may commit -----------------------------------------------------------

SPEC = "name: x\ntags: [a]\n" + BASE + "init: {kind: none}\ncmd: [sh]\n"


def run_gen(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args, "-C", str(project)], capture_output=True, text=True, timeout=60
    )


def test_render_never_writes_or_deletes_through_an_output_symlink(tmp_path):
    """output/x -> a directory elsewhere: render used to write through it and delete every file
    there it had not rendered."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep\n")
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "x.yaml").write_text(SPEC)
    (project / "output").mkdir()
    (project / "output" / "x").symlink_to(victim)
    for args in (["render"], ["render", "--check"]):
        got = run_gen(project, *args)
        assert got.returncode == 2 and "output/x is a symlink" in got.stderr and "Traceback" not in got.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
    (project / "output" / "x").unlink()
    (project / "output" / "x").symlink_to(tmp_path / "nowhere")  # dangling: once a traceback
    got = run_gen(project, "render")
    assert got.returncode == 2 and "Traceback" not in got.stderr


def test_a_spec_symlinked_from_outside_is_not_read(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("name: x\npassword: hunter2\n")
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "x.yaml").symlink_to(secret)
    got = run_gen(project, "validate")
    assert got.returncode == 2 and "outside the project" in got.stderr
    assert "hunter2" not in got.stderr + got.stdout


@pytest.mark.parametrize("layout", ["overlay is a link out", "link inside an overlay", "template dir is a link out"])
def test_overlays_and_templates_never_bring_in_host_files(tmp_path, layout):
    project = tmp_path / "project"
    specs = project / "specs"
    specs.mkdir(parents=True)
    field = "templates: tpl\n" if layout.startswith("template") else "rootfs: [files]\n"
    (specs / "x.yaml").write_text(SPEC + field)
    if layout == "overlay is a link out":
        (specs / "files").symlink_to("/etc")
    elif layout == "link inside an overlay":
        (specs / "files").mkdir()
        (specs / "files" / "passwd").symlink_to("/etc/passwd")
    else:
        (specs / "tpl").symlink_to("/etc")
    got = run_gen(project, "render")
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    assert "outside the project" in got.stderr or "holds a symlink" in got.stderr
    assert re.search(r"specs/x\.yaml:\d+:\d+: ", got.stderr)
    assert not (project / "output").exists(), "nothing written"


# --- values that reach into gen's own state, or pass validate and fail at build -------------------

RESERVED = {
    "gen's label": ("labels: {dev.gen.spec.sha256: forged}\n", "key 'dev.gen.spec.sha256' is reserved"),
    "OCI title label": ("labels: {org.opencontainers.image.title: other}\n", "is reserved for gen's own use"),
    "GEN_ env": ("env: {GEN_LOG_DIR: /elsewhere}\n", "key 'GEN_LOG_DIR' is reserved"),
    "S6_ env gen sets": ("env: {S6_VERBOSITY: '9'}\n", "S6_VERBOSITY (init.verbosity)"),
    "build-id tag": ("tags: [gen-0123456789abcdef]\n", "'gen-0123456789abcdef' is reserved"),
    "base image name": ("name: rootfs-debian-bookworm\n", "'rootfs-debian-bookworm' is reserved"),
    "log dir /etc": ("logging: {dir: /etc}\n", "/etc is the distro's own directory"),
    "log dir in /usr/lib": ("logging: {dir: /usr/lib/x}\n", "/usr/lib/x is the distro's own directory"),
    "volume /usr": ("volumes: [{path: /usr, recursive: true}]\n", "/usr cannot be a volume"),
    "volume /etc": ("volumes: [{path: /etc}]\n", "/etc cannot be a volume"),
    "float uid": ("users: [{name: app, uid: 1000.0}]\n", "expected integer, got a number 1000.0"),
    "root user": ("users: [{name: root, uid: 0}]\n", "'root' already exists in the base"),
    "second uid 0": (
        "users: [{name: boss, uid: 0, group: g}]\ngroups: [{name: g, gid: 5000}]\n",
        "uid 0 belongs to the base's 'root'",
    ),
    "base uid": (
        "users: [{name: web, uid: 33, group: g}]\ngroups: [{name: g, gid: 5000}]\n",
        "uid 33 belongs to the base's 'www-data'",
    ),
    "implicit group on a base gid": ("users: [{name: app, uid: 100}]\n", "which the base's group 'users' has"),
    "base gid": ("groups: [{name: g, gid: 65534}]\n", "gid 65534 belongs to the base's 'nogroup'"),
    "platform tag": (
        "tags: [latest, latest-arm64]\nplatforms: [linux/amd64, linux/arm64]\n",
        "tag 'latest-arm64' is also the name of linux/arm64's image",
    ),
}


@pytest.mark.parametrize("case", sorted(RESERVED))
def test_values_that_reach_into_gen_or_fail_at_build_are_refused(tmp_path, case):
    field, said = RESERVED[case]
    lines = {line.split(":", 1)[0]: line for line in SPEC.splitlines(keepends=True)}
    for line in field.splitlines(keepends=True):  # the case's fields replace the plain spec's
        lines[line.split(":", 1)[0]] = line
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x.yaml").write_text("".join(lines.values()))
    got = validate(tmp_path)
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    assert said in got.stderr
    assert re.search(r"specs/x\.yaml:\d+:\d+: ", got.stderr), got.stderr


def test_a_child_cannot_change_an_account_its_parent_created(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x.yaml").write_text(SPEC + "users: [{name: app, uid: 1000}]\n")
    (tmp_path / "specs" / "y.yaml").write_text("name: y\ntags: [a]\nextends: x\nusers: [{name: app, uid: 1001}]\n")
    got = validate(tmp_path)
    assert got.returncode == 2 and "'app' is created by parent 'x' as" in got.stderr and "specs/y.yaml:4:" in got.stderr
    (tmp_path / "specs" / "y.yaml").write_text("name: y\ntags: [a]\nextends: x\nusers: [{name: app, uid: 1000}]\n")
    assert validate(tmp_path).returncode == 0


def test_every_variable_the_init_sets_is_reserved(tmp_path):
    """The schema's reserved env names and plan's init_env must not drift apart."""
    from generator.model import build_image
    from generator.plan.init_layer import init_env
    from generator.schema import spec_schema
    from generator.spec import load_project

    pattern = re.compile(spec_schema()["properties"]["env"]["propertyNames"]["not"]["pattern"])
    (tmp_path / "specs").mkdir()
    for kind in ("s6", "s6-overlay"):
        init = "{kind: s6-overlay, version: 3.2.3.2}" if kind == "s6-overlay" else "{kind: s6}"
        (tmp_path / "specs" / "x.yaml").write_text(
            f"name: x\ntags: [a]\n{BASE}init: {init}\nsysctls: {{values: {{net.core.somaxconn: 1024}}}}\n"
        )
        names = set(init_env(build_image(load_project([tmp_path / "specs"], tmp_path).specs["x"])))
        assert "GEN_SYSCTL_POLICY" in names and "S6_VERBOSITY" in names
        assert sorted(n for n in names if not pattern.search(n)) == []


def test_an_empty_overlay_is_refused_by_validate(tmp_path):
    (tmp_path / "specs" / "files" / "etc").mkdir(parents=True)
    (tmp_path / "specs" / "x.yaml").write_text(SPEC + "rootfs: [files]\n")
    got = validate(tmp_path)
    assert got.returncode == 2 and "holds no files" in got.stderr and "specs/x.yaml:6:" in got.stderr, got.stderr
    (tmp_path / "specs" / "files" / "etc" / "motd").write_text("hi\n")
    assert validate(tmp_path).returncode == 0


@pytest.mark.parametrize(
    "field", ["rootfs: [NAME]", "templates: NAME", "extends: NAME", "profiles: {p: {rootfs: [NAME]}}"]
)
def test_a_path_component_longer_than_the_file_system_allows_is_one_clear_error(tmp_path, field):
    """stat() of a 256-byte name raises ENAMETOOLONG, not 'not found' (the fuzz test found the
    traceback): validate says the directory is missing, at the field's line."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x.yaml").write_text(SPEC + field.replace("NAME", "y" * 256) + "\n")
    got = validate(tmp_path)
    _one_clear_line(got, "specs/x.yaml:6:")


# --- files a repository may commit beside the specs ----------------------------------------------

DEEP_JSON = "[" * 200_000


def rendered(project: Path) -> Path:
    (project / "specs").mkdir(parents=True, exist_ok=True)
    (project / "specs" / "x.yaml").write_text(SPEC)
    got = run_gen(project, "render")
    assert got.returncode == 0, got.stderr
    return project / "output" / "x"


def _one_clear_line(got: subprocess.CompletedProcess, said: str) -> None:
    assert got.returncode == 2, (got.returncode, got.stderr[-2000:])
    assert "Traceback" not in got.stderr and said in got.stderr, got.stderr[-2000:]


@pytest.mark.parametrize("where", ["s6-overlay checksums", "render memo", "manifest", "lock"])
def test_json_nested_without_end_is_one_clear_error(tmp_path, where):
    folder = rendered(tmp_path)
    if where == "s6-overlay checksums":
        (tmp_path / "s6-overlay-checksums.json").write_text(DEEP_JSON)
        _one_clear_line(run_gen(tmp_path, "validate"), "s6-overlay-checksums.json: not a JSON table")
    elif where == "render memo":  # damaged: the memo is ignored and rewritten
        (tmp_path / ".gen" / "render-memo.json").write_text(DEEP_JSON)
        got = run_gen(tmp_path, "render")
        assert got.returncode == 0 and "Traceback" not in got.stderr, got.stderr
        assert (tmp_path / ".gen" / "render-memo.json").read_text() != DEEP_JSON
    elif where == "manifest":
        (folder / "gen-manifest.json").write_text(DEEP_JSON)
        _one_clear_line(run_gen(tmp_path, "images"), "gen-manifest.json: nested deeper")
    else:
        (tmp_path / "gen.lock").write_text(DEEP_JSON)
        _one_clear_line(run_gen(tmp_path, "lock", "--registry", "localhost:1/x"), "gen.lock: nested too deeply")


def test_gen_new_never_writes_through_a_committed_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / ".foo.yaml.new").symlink_to(victim)
    got = run_gen(project, "new", "foo")
    assert got.returncode == 0, got.stderr
    assert victim.read_text() == "precious\n"
    assert (
        not (project / "specs" / "foo.yaml").is_symlink()
        and "name: foo" in (project / "specs" / "foo.yaml").read_text()
    )
    linked = tmp_path / "linked"
    (linked / "specs").mkdir(parents=True)
    (linked / "real").mkdir()
    (linked / "specs").rename(linked / "real" / "specs")
    (linked / "specs").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    _one_clear_line(run_gen(linked, "new", "foo"), "is a symlink")
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("link", ["output/x", "output"])
def test_build_and_images_never_read_a_rendered_folder_through_a_link(tmp_path, link):
    project = tmp_path / "project"
    folder = rendered(project)
    moved = tmp_path / "outside"
    target = folder if link == "output/x" else folder.parent
    target.rename(moved)
    (project / link).symlink_to(moved)
    for args in (("images",), ("build", "--dry-run")):
        _one_clear_line(run_gen(project, *args), f"{project / link} is a symlink")


@pytest.mark.parametrize("link", [".gen", ".gen/logs", ".gen/logs/x.log"])
def test_gen_state_is_never_written_through_a_committed_link(tmp_path, link):
    project = tmp_path / "project"
    rendered(project)
    victim = tmp_path / "victim"
    victim.mkdir()
    (project / link).parent.mkdir(parents=True, exist_ok=True)
    if (project / link).is_dir():
        shutil.rmtree(project / link)
    (project / link).symlink_to(victim)
    _one_clear_line(run_gen(project, "build", "--dry-run"), "is a symlink")
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("{{ 1/0 }}", "ZeroDivisionError: division by zero"),
        ("{{ 'x' * 10**10 }}", "'*' would build a value too large"),
        ("{{ 7 ** 9999999 }}", "'**' would build a value too large"),
        ("{{ [0] * 100000000 }}", "'*' would build a value too large"),
    ],
)
def test_a_user_template_failing_at_run_time_is_one_line(tmp_path, body, said):
    (tmp_path / "specs" / "tpl" / "family").mkdir(parents=True)
    (tmp_path / "specs" / "x.yaml").write_text(SPEC + "templates: tpl\n")
    (tmp_path / "specs" / "tpl" / "family" / "apt.j2").write_text(body + "\n")
    got = run_gen(tmp_path, "render")
    _one_clear_line(got, said)
    assert "template family/apt.j2:1: " in got.stderr and not (tmp_path / "output").exists()
