"""Readiness in a real container: CMD starts after a service that becomes ready late, the
generated HEALTHCHECK survives the build (docker format) and podman sees it go from starting to
healthy, then unhealthy when the service is brought down; `gen verify` checks it all."""

from __future__ import annotations

import json
import time

import pytest

from generator.verify.podman import Podman, poll

pytestmark = pytest.mark.integration

HEALTH = "/usr/lib/gen/init/health"
START_PERIOD = 10.0  # the ready spec's longest readiness timeout


def _health_status(podman: Podman, name: str) -> str:
    got = podman.call(["container", "inspect", "--format", "{{json .State.Health}}", name], timeout=30)
    return json.loads(got.stdout or "{}").get("Status", "") if got.code == 0 else ""


@pytest.mark.parametrize("image", ["ready", "overlay-ready"])
def test_cmd_waits_for_the_service_and_podman_sees_health_follow_readiness(podman: Podman, example_images, image):
    """ready: gen's s6 init; overlay-ready: the same spec on s6-overlay (db an s6-rc longrun)."""
    if image not in example_images:
        pytest.skip("no s6-overlay image in this session (its pinned sources are not on this machine)")
    ref = example_images[image]
    service_dir = "/run/gen/service/db" if image == "ready" else "/run/service/db"
    config = podman.call(["image", "inspect", "--format", "{{json .HealthCheck}}", ref], timeout=30)
    assert json.loads(config.stdout)["Test"] == ["CMD", HEALTH], config.stdout  # kept: a docker-format image
    started = time.monotonic()
    name = podman.start(ref, healthcheck=True)
    try:
        early = podman.exec(name, [HEALTH])
        if time.monotonic() - started < 2.5:  # db takes 3 s to become ready
            assert early.code == 1 and "start-up:unfinished" in early.stdout, early
        assert poll(lambda: podman.exec(name, ["test", "-e", "/run/gen/ready"]).code == 0, 60), "never ready"
        assert podman.call(["healthcheck", "run", name], timeout=60).code == 0
        assert _health_status(podman, name) == "healthy"
        assert "started after db" in podman.logs_tail(name, 20)
        # Brought down, the service makes the container unhealthy after the check's 3 retries
        # (failures within the start period, the 10 s readiness timeout, do not count).
        time.sleep(max(0.0, START_PERIOD + 0.5 - (time.monotonic() - started)))
        assert podman.call(["exec", "--user", "0", name, "s6-svc", "-d", service_dir], timeout=30).code == 0
        for _ in range(3):
            failing = podman.call(["healthcheck", "run", name], timeout=60)
        assert failing.code == 1 and _health_status(podman, name) == "unhealthy"
        assert "db:down" in podman.exec(name, [HEALTH]).stdout
    finally:
        podman.remove(name)


@pytest.mark.parametrize("image", ["ready", "overlay-ready"])
def test_verify_checks_readiness_and_health(gen_verify, example_images, image) -> None:
    if image not in example_images:
        pytest.skip("no s6-overlay image in this session (its pinned sources are not on this machine)")
    result = gen_verify(image, "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0, result.stdout[-3000:]
    assert rows["readiness and health"]["status"] == "pass", rows["readiness and health"]
    assert rows["log forwarding"]["status"] == "pass", rows["log forwarding"]
    assert f"APP-NAME {image}, PRI {17 * 8 + 6}" in rows["log forwarding"]["detail"]
