"""The init layer's decisions: provider, packages, ENV defaults, s6-overlay checksums and errors."""

from __future__ import annotations

import json
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest

from generator.errors import GenError, SpecError, SpecFieldError
from generator.model import build_image
from generator.plan.init_layer import (
    GEN_ONESHOTS,
    NOARCH,
    RC_SOURCES,
    add_version,
    checksum_table,
    init_env,
    init_layer,
    merge_table,
    parse_sha256_file,
)
from generator.render.project import render_project
from generator.spec import load_project
from generator.spec.checks import reserved_service_names

BASE = "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
SUM = "a" * 64


def image_from(tmp_path: Path, body: str, name: str = "img"):
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    (specs / f"{name}.yaml").write_text(f"name: {name}\ntags: [latest]\n{BASE}" + textwrap.dedent(body))
    project = load_project([specs], tmp_path)
    return build_image(project.specs[name]), project


def test_s6_provider_uses_distro_packages_and_gen_init(tmp_path):
    image, _ = image_from(tmp_path, "init: {kind: s6}\n")
    layer = init_layer(image, None)
    assert layer.packages == ("execline", "s6")
    assert (layer.template_dir, layer.fetch_stage, layer.entrypoint) == ("init/s6", None, ("/init",))


def _child_layer(tmp_path: Path, parent_logging: str, child_logging: str):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "parent.yaml").write_text(f"name: parent\ntags: [latest]\n{BASE}{parent_logging}")
    (specs / "child.yaml").write_text(f"name: child\ntags: [latest]\nextends: parent\n{child_logging}")
    project = load_project([specs], tmp_path)
    parent, child = build_image(project.specs["parent"]), build_image(project.specs["child"])
    return init_layer(parent, None), init_layer(child, parent)


def test_gen_log_is_compiled_once_in_a_chain_by_the_first_image_that_uses_it(tmp_path):
    parent, child = _child_layer(tmp_path, "", "")
    stage = parent.logger_stage
    assert stage is not None and child.logger_stage is None  # the child inherits the binary
    assert (stage.name, stage.packages, stage.binary, stage.become_root) == (
        "gen-log",
        ("gcc", "libc6-dev"),
        "/usr/lib/gen/init/gen-log",
        False,
    )
    assert parent.builder_stages == (stage,)


def test_an_s6_log_image_has_no_compiler_stage_and_its_child_may_add_gen_log(tmp_path):
    parent, child = _child_layer(tmp_path, "logging: {logger: s6-log}\n", "logging: {logger: gen-log}\n")
    assert parent.logger_stage is None and parent.builder_stages == ()
    assert child.logger_stage is not None


def test_env_defaults_come_from_the_spec(tmp_path):
    image, _ = image_from(
        tmp_path,
        """
        init: {kind: s6, kill_grace_time: 1500, services_grace_time: 2500, on_hook_failure: warn,
               verbosity: 0, restart: restart}
        logging: {dir: /var/log/app, max_size: 100000, keep: 5, timestamp: iso8601, stdout: false}
        sysctls: {values: {kernel.shmmax: 68719476736}, policy: skip-if-equal}
    """,
    )
    assert init_env(image) == {
        "S6_KILL_GRACETIME": "1500",
        "S6_SERVICES_GRACETIME": "2500",
        "S6_BEHAVIOUR_IF_STAGE2_FAILS": "1",
        "S6_VERBOSITY": "0",
        "GEN_LOG_DIR": "/var/log/app",
        "GEN_LOG_MAX_SIZE": "100000",
        "GEN_LOG_KEEP": "5",
        "GEN_LOG_TIMESTAMP": "iso8601",
        "GEN_LOG_STDOUT": "0",
        "GEN_LOGGER": "gen-log",
        "GEN_RESTART": "restart",
        "GEN_SYSCTL_POLICY": "skip-if-equal",
    }


@pytest.mark.parametrize("failure, value", [("stop", "2"), ("warn", "1"), ("continue", "0")])
def test_hook_failure_maps_to_s6_overlays_values(tmp_path, failure, value):
    image, _ = image_from(tmp_path, f"init: {{kind: s6, on_hook_failure: {failure}}}\n")
    assert init_env(image)["S6_BEHAVIOUR_IF_STAGE2_FAILS"] == value


def test_reserved_service_name_is_an_error_of_the_spec(tmp_path):
    with pytest.raises(SpecError, match="'current' is reserved by the init layer") as info:
        image_from(tmp_path, "services: [{name: current, command: [sleep, '1']}]\n")
    assert [(d.file, d.path) for d in info.value.diagnostics] == [("specs/img.yaml", "$.services[0].name")]


def test_without_an_init_layer_only_cmds_name_is_reserved(tmp_path):
    image_from(tmp_path, "init: {kind: none}\nservices: [{name: current, command: [x]}]\n")
    with pytest.raises(SpecError, match="'app' is reserved for CMD"):
        image_from(tmp_path, "init: {kind: none}\nservices: [{name: app, command: [x]}]\n")


def test_rendered_init_conf_round_trips_hostile_commands(tmp_path):
    """init.conf is sourced by /init: every argument must come back exactly."""
    args = ["a b", "it's", "$HOME", "new\nline", "back\\slash", '"q"']
    image, project = image_from(
        tmp_path,
        f"""
        user: nobody
        services: [{{name: worker, command: {json.dumps(["printf", *args])}, log_stdout: true}}]
    """,
    )
    rendered = render_project(project).images[0]
    conf = rendered.file("gen-init/etc/gen/init.conf").data.decode()
    script = conf + '\nservice() { shift 3; for a in "$@"; do printf "[%s]" "$a"; done; }\n' + conf
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == "[printf]" + "".join(f"[{a}]" for a in args)
    assert "service worker nobody 1 " in conf and "app_user=nobody" in conf


def test_init_scripts_are_rendered_executable(tmp_path):
    _, project = image_from(tmp_path, "init: {kind: s6}\n")
    files = {f.path: f.mode for f in render_project(project).images[0].files}
    assert files["gen-init/init"] == 0o755
    assert files["gen-init/usr/lib/gen/init/service-run"] == 0o755
    assert files["gen-init/etc/gen/init.d/10-gen-sysctls"] == 0o755


# --- s6-overlay ---------------------------------------------------------------------------------


def test_shipped_table_has_the_required_files_per_version():
    table = checksum_table()
    assert table
    for version, files in table.items():
        assert version.startswith("3.")
        assert NOARCH in files and any(name.endswith("x86_64.tar.xz") for name in files)
        assert all(len(d) == 64 and int(d, 16) >= 0 for d in files.values())


def test_known_version_gets_a_fetch_stage(tmp_path):
    image, _ = image_from(tmp_path, "init: {kind: s6-overlay, version: 3.1.6.2}\n")
    layer = init_layer(image, None)
    stage = layer.fetch_stage
    assert layer.packages == () and layer.template_dir == "init/s6-overlay"
    assert stage.name == "s6-overlay" and stage.default_arch == "x86_64"
    assert stage.base_url.endswith("/v3.1.6.2") and stage.packages == ("xz-utils",)
    assert {f.name: f.sha256 for f in stage.files} == checksum_table()["3.1.6.2"]
    assert init_env(image)["S6_KEEP_ENV"] == "1"


def test_unknown_version_without_checksums_is_a_clear_error(tmp_path):
    image, _ = image_from(tmp_path, "init: {kind: s6-overlay, version: 3.9.9.9}\n")
    with pytest.raises(SpecFieldError, match=r"knows no checksums for s6-overlay 3\.9\.9\.9") as info:
        init_layer(image, None)
    assert info.value.path == ("init", "version") and "init.checksums" in info.value.hint


def test_spec_checksums_and_source_override(tmp_path):
    image, _ = image_from(
        tmp_path,
        f"""
        init:
          kind: s6-overlay
          version: 3.9.9.9
          source: http://127.0.0.1:8000/s6/
          checksums: {{s6-overlay-noarch.tar.xz: {SUM}, s6-overlay-aarch64.tar.xz: {"b" * 64}}}
    """,
    )
    stage = init_layer(image, None).fetch_stage
    assert stage.base_url == "http://127.0.0.1:8000/s6" and stage.default_arch == "aarch64"
    assert [(f.name, f.arch) for f in stage.files] == [("s6-overlay-aarch64.tar.xz", "aarch64"), (NOARCH, None)]


def test_spec_checksums_need_an_arch_file(tmp_path):
    image, _ = image_from(tmp_path, f"init: {{kind: s6-overlay, version: 3.9.9.9, checksums: {{{NOARCH}: {SUM}}}}}\n")
    with pytest.raises(GenError, match="any s6-overlay-<arch>"):
        init_layer(image, None)


def test_local_source_directory_is_passed_to_the_build(tmp_path):
    image, _ = image_from(tmp_path, "init: {kind: s6-overlay, version: 3.1.6.2, source: /srv/s6}\n")
    stage = init_layer(image, None).fetch_stage
    assert (stage.base_url, stage.local_dir) == ("", "/srv/s6")


def test_fetch_stage_renders_verification(tmp_path):
    _, project = image_from(tmp_path, "init: {kind: s6-overlay, version: 3.1.6.2}\ncmd: [echo, hi]\n")
    text = render_project(project).images[0].file("Dockerfile").data.decode()
    assert "FROM ${BASE_IMAGE} AS s6-overlay" in text
    assert "sha256sum -c -" in text and checksum_table()["3.1.6.2"][NOARCH] in text
    assert "COPY --from=s6-overlay /gen-s6-overlay/ /" in text
    assert 'ENTRYPOINT ["/init", "/usr/lib/gen/init/overlay-cmd"]' in text
    assert "AS gen-log" in text, "s6-overlay images log with gen-log too"


OVERLAY_SERVICES = """\
init: {kind: s6-overlay, version: VERSION, checksums: {s6-overlay-noarch.tar.xz: SUM, s6-overlay-x86_64.tar.xz: SUM}}
logging: {stdout: true}
services:
  - {name: web, command: [httpd, -f, "two words"], log_stdout: true}
  - {name: worker, command: [work], user: nobody}
"""


def _context(tmp_path: Path, version: str) -> dict[str, str]:
    _, project = image_from(tmp_path, OVERLAY_SERVICES.replace("VERSION", version).replace("SUM", SUM))
    files = render_project(project).images[0].files
    return {f.path.removeprefix("gen-init/"): f.data.decode() for f in files if f.path.startswith("gen-init/")}


def test_s6_overlay_services_become_s6_rc_pipelines_that_cmd_starts_after(tmp_path):
    files = _context(tmp_path, "3.2.3.2")
    rc = "etc/s6-overlay/s6-rc.d"
    assert [files[f"{rc}/web/data/argv/{i:06d}"] for i in range(3)] == ["httpd", "-f", "two words"]
    assert (files[f"{rc}/web/type"], files[f"{rc}/web/producer-for"]) == ("longrun\n", "web-log\n")
    assert "exec /usr/lib/gen/init/service-run" in files[f"{rc}/web/run"]
    assert (files[f"{rc}/web/data/user"], files[f"{rc}/worker/data/user"]) == ("", "nobody")
    assert files[f"{rc}/web-log/consumer-for"] == "web\n" and files[f"{rc}/web-log/pipeline-name"] == "web-pipeline\n"
    assert (files[f"{rc}/web-log/data/name"], files[f"{rc}/web-log/data/stdout"]) == ("web", "1")
    # Two writers share stdout (web and CMD): web's lines carry its name; worker is not on stdout.
    assert files[f"{rc}/web-log/data/prefix"] == "web:" and f"{rc}/worker-log/data/prefix" not in files
    # gen-app depends on every service, so s6-rc stops the app first; everything waits for gen-setup.
    assert {
        f"{rc}/gen-app/dependencies.d/web",
        f"{rc}/gen-app/dependencies.d/worker",
        f"{rc}/web/dependencies.d/gen-setup",
        f"{rc}/web-log/dependencies.d/gen-setup",
    } <= set(files)
    bundle = "etc/s6-overlay/user-bundles.d/user/contents.d"
    assert {p.rsplit("/", 1)[1] for p in files if p.startswith(bundle)} == {
        "gen-setup",
        "gen-app",
        "web-pipeline",
        "worker-pipeline",
    }


def test_s6_overlay_before_3_2_3_2_gets_its_user_bundle_in_s6_rc_d(tmp_path):
    files = _context(tmp_path, "3.1.6.2")
    assert "etc/s6-overlay/s6-rc.d/user/contents.d/web-pipeline" in files
    assert not any(p.startswith("etc/s6-overlay/user-bundles.d") for p in files)


@pytest.mark.parametrize("name", ["base", "gen-app", "user", "web-log"])
def test_s6_overlay_service_names_must_not_clash_in_s6_rc(tmp_path, name):
    with pytest.raises(SpecError, match="reserved by the init layer") as info:
        image_from(
            tmp_path,
            f"""
            init: {{kind: s6-overlay, version: 3.1.6.2}}
            services: [{{name: web, command: [x]}}, {{name: {name}, command: [y]}}]
        """,
        )
    assert [d.path for d in info.value.diagnostics] == ["$.services[1].name"]


def test_every_s6_rc_name_the_plan_writes_is_reserved_by_the_spec_stage(tmp_path):
    """The plan names gen's oneshots and each service's logger and pipeline; the spec stage must
    keep a service off every one of them (the two are written in two stages)."""
    image, _ = image_from(
        tmp_path,
        """
        init: {kind: s6-overlay, version: 3.1.6.2}
        services: [{name: web, command: [x]}, {name: worker, command: [y]}]
    """,
    )
    written = set(GEN_ONESHOTS)
    for definition in init_layer(image, None).rc_definitions:  # s6-rc source directories, pipelines
        written.add(definition.directory.removeprefix(f"{RC_SOURCES}/").split("/")[0])
        written |= {text.strip() for path, text in definition.files if path == "pipeline-name"}
    services = {s.name for s in image.services}
    assert {"web-log", "worker-pipeline", "gen-app"} <= written
    assert written - services <= reserved_service_names("s6-overlay", services)


def test_s6_overlay_env_keeps_gens_kill_grace_time_and_zeroes_s6_overlays_fixed_sleep(tmp_path):
    image, _ = image_from(
        tmp_path,
        """
        init: {kind: s6-overlay, version: 3.1.6.2, kill_grace_time: 1500, services_start_timeout: 20000}
    """,
    )
    env = init_env(image)
    assert (env["S6_KILL_GRACETIME"], env["GEN_KILL_GRACETIME"]) == ("0", "1500")
    assert (env["S6_KEEP_ENV"], env["S6_CMD_WAIT_FOR_SERVICES_MAXTIME"]) == ("1", "20000")
    assert env["GEN_LOGGER"] == "gen-log" and "S6_LOGGING_SCRIPT" not in env


def test_add_version_parses_published_sha256_files():
    entries = add_version(
        "3.2.0.2",
        {
            NOARCH: f"{SUM}  {NOARCH}\n",
            "s6-overlay-x86_64.tar.xz": f"{'C' * 64} *s6-overlay-x86_64.tar.xz\n",
        },
    )
    assert entries == {"3.2.0.2": {NOARCH: SUM, "s6-overlay-x86_64.tar.xz": "c" * 64}}
    text = merge_table({"3.1.6.2": {NOARCH: "d" * 64}}, entries)
    assert list(json.loads(text)) == ["3.1.6.2", "3.2.0.2"]


@pytest.mark.parametrize(
    "files, message",
    [
        ({NOARCH: "garbage"}, "not a sha256sum line"),
        ({NOARCH: f"{SUM}  other.tar.xz"}, "names 'other.tar.xz'"),
        ({"s6-overlay-x86_64.tar.xz": f"{SUM}  s6-overlay-x86_64.tar.xz"}, "noarch.tar.xz.sha256 is required"),
        ({NOARCH: f"{SUM}  {NOARCH}"}, "at least one s6-overlay-<arch>"),
    ],
)
def test_add_version_rejects_bad_input(files, message):
    with pytest.raises(GenError, match=message):
        add_version("3.2.0.2", files)


def test_add_version_refuses_2x_and_changed_sums():
    with pytest.raises(GenError, match="only the 3.x line"):
        add_version("2.2.0.3", {})
    with pytest.raises(GenError, match="never changes"):
        merge_table({"3.1.6.2": {NOARCH: "d" * 64}}, {"3.1.6.2": {NOARCH: SUM}})


def test_parse_sha256_file_takes_the_base_name():
    assert parse_sha256_file(f"{SUM}  ./dist/{NOARCH}\n") == (NOARCH, SUM)
    assert shlex.quote(NOARCH) == NOARCH  # file names need no quoting in the fetch stage
