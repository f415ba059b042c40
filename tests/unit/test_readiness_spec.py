"""Readiness and start-up order in the spec, the plan and the build: `ready`, `after`, the
HEALTHCHECK generated from them and the image format that keeps it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from generator.builder.engine import Builder, BuildOptions
from generator.builder.host import Host
from generator.builder.outputs import load_outputs
from generator.contract import MANIFEST, Manifest
from generator.model import build_image, duration_ms
from generator.plan import HEALTH_SCRIPT
from generator.plan.hints import runtime_hints
from generator.publish import index
from generator.publish.target import Registry
from generator.render import write_outputs
from tests.unit.test_platforms import S6_OVERLAY_SPEC
from tests.unit.test_render import render
from tests.unit.test_spec import errors, load, only, write

ROOT_SPEC = """\
name: app
tags: ["1"]
base: {distro: debian, release: bookworm, bootstrap: {}}
init: {kind: s6}
services:
  - name: db
    command: [db-server, --port, "5432"]
    ready: {check: [pg_isready, -q], interval: 500ms, timeout: 2m}
  - name: cache
    command: [cache-server]
    ready: {notify: fd, fd: 5}
    after: [db]
cmd: [app, serve]
after: [db, cache]
"""


def test_durations_are_milliseconds():
    assert [duration_ms(t) for t in ("500ms", "30s", "2m", "1h", "0s")] == [500, 30_000, 120_000, 3_600_000, 0]


def test_ready_and_after_reach_the_model(tmp_path):
    image = build_image(load(tmp_path, app=ROOT_SPEC).specs["app"])
    db, cache = image.services
    assert db.ready is not None and (db.ready.check, db.ready.interval_ms, db.ready.timeout_ms, db.ready.fd) == (
        ("pg_isready", "-q"),
        500,
        120_000,
        3,
    )
    assert cache.ready is not None and (cache.ready.check, cache.ready.fd, cache.after) == (None, 5, ("db",))
    assert image.ready is None and image.after == ("db", "cache")


def test_a_spec_without_readiness_gets_no_ready_object(tmp_path):
    """A readiness is a check or a notification: none is not a default the loader may fill in."""
    spec = load(tmp_path, app=ROOT_SPEC.split("services:")[0]).specs["app"]
    assert "ready" not in spec.data and spec.data["after"] == []


@pytest.mark.parametrize(
    ("edit", "message", "where"),
    [
        (("after: [db, cache]", "after: [db, nope]"), "CMD starts after 'nope', which is not a service", (14, 13)),
        (("after: [db]", "after: [cache]"), "service 'cache' cannot start after itself", (12, 13)),
        (
            ("    ready: {check: [pg_isready, -q]", "    after: [cache]\n    ready: {check: [pg_isready, -q]"),
            "services start after each other in a cycle: db -> cache -> db",
            (8, 13),
        ),
        (("init: {kind: s6}", "init: {kind: none}"), "`ready` and `after` need an init layer", (14, 9)),
        (("ready: {notify: fd, fd: 5}", "ready: {notify: fd, check: [x]}"), "is not valid here", (11, 12)),
    ],
)
def test_start_order_mistakes_are_spec_errors_at_their_line(tmp_path, edit, message, where):
    found = only(errors(tmp_path, app=ROOT_SPEC.replace(*edit)), message)
    assert (found.line, found.column) == where, found.format()


def _rendered(tmp_path: Path, text: str) -> Path:
    write(tmp_path, app=text)
    write_outputs(tmp_path / "output", render(tmp_path), prune=True)
    return tmp_path / "output"


def test_readiness_generates_a_healthcheck_and_a_docker_format_image(tmp_path):
    output = _rendered(tmp_path, ROOT_SPEC)
    text = (output / "app" / "Dockerfile").read_text()
    # The start period is the longest readiness timeout: a slow start is not a failure.
    assert f'HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["{HEALTH_SCRIPT}"]' in text
    assert json.loads((output / "app" / MANIFEST).read_text())["image_format"] == "docker"
    conf = (output / "app" / "gen-init/etc/gen/init.conf").read_text().splitlines()
    assert conf[-6:] == [
        "service db '' 0 db-server --port 5432",
        "ready db check 3 500 120000 pg_isready -q",
        "service cache '' 0 cache-server",
        "ready cache fd 5 1000 60000",
        "after cache db",
        "after app db cache",
    ]
    argv = Builder(Host.from_env(tmp_path / "storage"), output, tmp_path, BuildOptions()).build_argv(
        load_outputs(output)["app"], "b" * 64, tmp_path / "iid"
    )
    assert argv[argv.index("--format") + 1] == "docker"


def test_the_specs_own_healthcheck_wins_and_keeps_the_image_docker(tmp_path):
    output = _rendered(tmp_path, ROOT_SPEC + "healthcheck: {test: [curl, -f, localhost]}\n")
    assert 'CMD ["curl", "-f", "localhost"]' in (output / "app" / "Dockerfile").read_text()
    assert HEALTH_SCRIPT not in (output / "app" / "Dockerfile").read_text()
    assert Manifest.read(output / "app" / MANIFEST).image_format == "docker"


def test_an_image_without_healthcheck_stays_oci():
    manifest = Manifest.read(Path(__file__).resolve().parents[2] / "output" / "runtime" / MANIFEST)
    assert manifest.image_format == "oci"


def test_an_unknown_image_format_in_a_manifest_is_refused(tmp_path):
    data = json.loads((Path(__file__).resolve().parents[2] / "output" / "runtime" / MANIFEST).read_text())
    with pytest.raises(Exception, match="wrong type"):
        Manifest.from_json({**data, "image_format": "v1"}, tmp_path)


@pytest.mark.parametrize(("image_format", "pushed_as"), [("oci", "oci"), ("docker", "v2s2")])
def test_an_index_of_docker_images_is_a_docker_manifest_list(monkeypatch, tmp_path, image_format, pushed_as):
    """Pushing docker-format instances as an OCI index would convert each one and drop its
    HEALTHCHECK."""
    calls: list[list[str]] = []

    def fake_run(argv, env, timeout=None, check=True):
        calls.append(argv)
        if "--digestfile" in argv:
            Path(argv[argv.index("--digestfile") + 1]).write_text("sha256:" + "c" * 64)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(index, "run_quiet", fake_run)
    registry = Registry("127.0.0.1:5000", "team", tls_verify=False)
    digest = index.push_index(Host.from_env(tmp_path), registry, "app", ["sha256:" + "a" * 64], "1", image_format)
    push = next(c for c in calls if "push" in c)
    assert digest == "sha256:" + "c" * 64 and push[push.index("--format") + 1] == pushed_as


def test_hints_give_kubernetes_probes_from_readiness(tmp_path):
    hints = runtime_hints(build_image(load(tmp_path, app=ROOT_SPEC).specs["app"]), "localhost/gen/app:1")
    pod = hints.kubernetes()
    assert pod["startupProbe"]["failureThreshold"] == 125  # the longest timeout, 2 min, in 1 s periods, + 5
    assert "test -e /run/gen/ready" in pod["startupProbe"]["exec"]["command"][-1]
    assert pod["readinessProbe"]["exec"]["command"] == pod["livenessProbe"]["exec"]["command"] == [HEALTH_SCRIPT]
    plain = runtime_hints(
        build_image(load(tmp_path, other=ROOT_SPEC.split("services:")[0].replace("app", "other")).specs["other"]), "x"
    )
    assert "startupProbe" not in plain.kubernetes()


def test_under_s6_overlay_readiness_and_order_are_s6_rc_definitions(tmp_path):
    """s6-rc starts a longrun after its dependencies are up and, with a notification-fd, ready;
    timeout-up fails a start that never gets there (s6-overlay then stops the container)."""
    overlay = S6_OVERLAY_SPEC + ROOT_SPEC.split("init: {kind: s6}\n")[1]
    output = _rendered(tmp_path, overlay.replace("name: ov", "name: app"))
    rc = output / "app" / "gen-init/etc/s6-overlay/s6-rc.d"
    db, cache = rc / "db", rc / "cache"
    assert (db / "notification-fd").read_text() == "3\n" and (db / "timeout-up").read_text() == "120000\n"
    assert (db / "data/ready/kind").read_text() == "check\n"
    assert [p.read_text() for p in sorted((db / "data/ready/argv").iterdir())] == ["pg_isready", "-q"]
    assert (cache / "notification-fd").read_text() == "5\n" and (cache / "data/ready/kind").read_text() == "fd\n"
    assert (cache / "dependencies.d/db").exists() and not (db / "dependencies.d/cache").exists()
    assert f'CMD ["{HEALTH_SCRIPT}"]' in (output / "app" / "Dockerfile").read_text()


def test_a_cycle_through_a_duplicated_service_name_is_two_clear_errors(tmp_path):
    """The duplicate's first entry waits for nothing: the cycle is located at the entry that waits."""
    text = ROOT_SPEC.split("services:")[0] + (
        "services:\n  - {name: a, command: [x]}\n  - {name: b, command: [x], after: [a]}\n"
        "  - {name: a, command: [x], after: [b]}\n"
    )
    found = only(errors(tmp_path, app=text), "in a cycle: a -> b -> a")
    assert found.path == "$.services[2].after[0]"
    assert only(errors(tmp_path, app=text), "services lists 'a' twice")
