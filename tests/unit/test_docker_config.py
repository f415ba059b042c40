"""Docker-format images (those with a HEALTHCHECK) are reproducible: the fields buildah fills
with one build's throwaway ids are cleared, and nothing that describes the image is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from generator.builder.docker_config import make_reproducible, without_build_specifics
from generator.builder.host import Host

AS_BUILT = {
    "created": "1970-01-01T00:00:00Z",
    "container": "375666b5c0f487780b17d42253f62965d606eeb9b7690449d223f7bfa23c8b71",
    "parent": "sha256:82a14d1b7edb13882ae60eeda93f283949cb6789fa17963d1cf34600f380cc19",
    "container_config": {"Hostname": "2a8ab45b6452", "Image": "f6c6c6ebc6cf", "Cmd": ["/true"]},
    "config": {
        "Hostname": "2a8ab45b6452",
        "Image": "sha256:f6c6c6ebc6cf9912de7e30cc409ac9e921a2df347d565c8116b1eefd445bcb99",
        "Healthcheck": {"Test": ["CMD", "/true"]},
        "Labels": {"org.opencontainers.image.title": "x"},
    },
    "history": [
        {"created_by": "/bin/sh -c #(nop) COPY file:18bf in /x ", "comment": "FROM docker.io/library/debian"},
        {"created_by": "/bin/sh -c #(nop) COPY file:1cde in /y ", "comment": "FROM 3c33a8154341"},
    ],
}


def test_only_the_builds_own_ids_are_cleared():
    fixed = without_build_specifics(AS_BUILT)
    assert "parent" not in fixed and fixed["container"] == ""
    assert fixed["config"]["Hostname"] == fixed["config"]["Image"] == ""
    assert fixed["container_config"] == {"Hostname": "", "Image": "", "Cmd": ["/true"]}
    assert fixed["config"]["Healthcheck"] == AS_BUILT["config"]["Healthcheck"]
    assert fixed["config"]["Labels"] == AS_BUILT["config"]["Labels"]
    assert [entry.get("comment") for entry in fixed["history"]] == ["FROM docker.io/library/debian", None]
    assert AS_BUILT["container"].startswith("3756")  # the input is left as it was
    assert without_build_specifics(fixed) == fixed


def _build_twice_apart(tmp_path: Path) -> list[tuple[Host, str]]:
    """A two-stage docker-format build with a HEALTHCHECK in two fresh storages (no base image:
    FROM scratch and COPY)."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "x").write_text("x\n")
    (context / "y").write_text("y\n")
    (context / "Dockerfile").write_text(
        'FROM scratch AS first\nCOPY x /x\nFROM first\nCOPY y /y\nHEALTHCHECK CMD ["/true"]\n'
    )
    built = []
    for round_ in ("a", "b"):
        host = Host.from_env(tmp_path / round_)
        iid = tmp_path / f"{round_}.iid"
        subprocess.run(
            ["buildah", *host.global_flags(), "bud", "--isolation", "chroot", "--layers", "--format", "docker"]
            + ["--timestamp", "0", "--iidfile", str(iid), "-q", str(context)],
            env=host.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        built.append((host, iid.read_text().strip().removeprefix("sha256:")))
    return built


def test_two_builds_of_one_docker_format_image_get_one_id(tmp_path):
    built = _build_twice_apart(tmp_path)
    assert built[0][1] != built[1][1]  # what buildah alone gives
    fixed = [make_reproducible(host, image_id, tmp_path / "work") for host, image_id in built]
    assert fixed[0] == fixed[1] and not (tmp_path / "work").exists()
    host = built[0][0]
    inspected = subprocess.run(
        ["podman", *host.podman_flags(), "image", "inspect", fixed[0]],
        env=host.env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    image = json.loads(inspected.stdout)[0]
    assert image["Id"] == fixed[0] and image["Healthcheck"]["Test"] == ["CMD", "/true"]
    assert len(image["RootFS"]["Layers"]) == 2 and image["RepoTags"] == []
    assert make_reproducible(host, fixed[0], tmp_path / "work") == fixed[0]  # nothing left to clear
