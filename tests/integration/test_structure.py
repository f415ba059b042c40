"""Every built example carries its own proof: the embedded spec, a build-id tag, and a generated
container-structure-test config that passes on it and fails on an image that breaks its promises."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from generator.verify.structure import run_structure_test, tool_path

pytestmark = pytest.mark.integration

EXAMPLES = ("debian-s6", "runtime", "app-base")


@pytest.mark.parametrize("name", EXAMPLES)
def test_embedded_spec_reads_back_as_rendered(name, example_project: Path, example_images, gen_host, gen_env):
    got = subprocess.run(
        [
            "podman",
            *gen_host.podman_flags(),
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            example_images[name],
            "/etc/gen/spec.json",
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr
    rendered = (example_project / "output" / name / "gen-spec" / "etc" / "gen" / "spec.json").read_text()
    assert got.stdout == rendered
    assert json.loads(got.stdout)["name"] == name


@pytest.mark.parametrize("name", EXAMPLES)
def test_build_id_tag_points_at_the_image(name, example_images, gen_host, gen_env):
    listed = subprocess.run(
        ["podman", *gen_host.podman_flags(), "images", "--format", "{{.Tag}} {{.ID}}", f"localhost/gen/{name}"],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    ids = {tag: image_id for tag, image_id in (line.split() for line in listed.stdout.splitlines())}
    build_ids = [tag for tag in ids if re.fullmatch(r"gen-[0-9a-f]{16}", tag)]
    assert len(build_ids) == 1, ids
    assert ids[build_ids[0]] == ids[example_images[name].rsplit(":", 1)[1]]


def test_structure_test_fails_readably_on_an_image_that_breaks_the_spec(
    example_project: Path, example_images, gen_host
):
    if tool_path() is None:
        pytest.fail("container-structure-test is not installed: ./tests/run installs it")
    # runtime has no app user and no /data: app-base's promises do not hold there.
    report = run_structure_test(
        gen_host, example_images["runtime"], example_project / "output" / "app-base" / "structure-test.yaml"
    )
    assert not report.passed
    failing = {case.name for case in report.failures}
    assert any("user app" in name for name in failing), failing
    assert any("volume /data" in name for name in failing), failing
    assert all(case.errors for case in report.failures)
