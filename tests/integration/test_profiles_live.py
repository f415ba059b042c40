"""Profiles in real containers on both inits: the default profile, another chosen with
GEN_PROFILE, one brought by a mounted config volume, and an unknown one that stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.verify.podman import Podman

pytestmark = pytest.mark.integration

SHOW = 'echo "mode=$APP_MODE"; cat /tmp/app/mode.conf 2>/dev/null || echo "no file"'


@pytest.mark.parametrize("image", ["ready", "overlay-ready"])
def test_the_profile_chosen_at_start_gives_its_env_and_files(podman: Podman, example_images, tmp_path: Path, image):
    if image not in example_images:
        pytest.skip("no s6-overlay image in this session (its pinned sources are not on this machine)")
    ref = example_images[image]
    default = podman.run(ref, ["sh", "-c", SHOW], timeout=120)
    assert (default.code, default.stdout) == (0, "mode=production\nno file\n"), default
    dev = podman.run(ref, ["sh", "-c", SHOW], env={"GEN_PROFILE": "dev"}, timeout=120)
    assert (dev.code, dev.stdout) == (0, "mode=development\nverbose = yes\n"), dev
    unknown = podman.run(ref, ["echo", "never"], env={"GEN_PROFILE": "qa"}, timeout=120)
    assert unknown.code != 0 and "never" not in unknown.stdout
    assert "profile qa is not in /etc/gen/profiles (known: dev prd)" in unknown.stderr, unknown
    mounted = tmp_path / "profiles" / "ops"
    (mounted / "rootfs" / "tmp" / "app").mkdir(parents=True)
    (mounted / "env").write_text("APP_MODE=operations\n")
    (mounted / "rootfs" / "tmp" / "app" / "mode.conf").write_text("from the volume\n")
    (tmp_path / "profiles").chmod(0o755)
    ops = podman.run(
        ref,
        ["sh", "-c", SHOW],
        env={"GEN_PROFILE": "ops"},
        options=["-v", f"{tmp_path / 'profiles'}:/etc/gen/profiles:ro"],
        timeout=120,
    )
    assert (ops.code, ops.stdout) == (0, "mode=operations\nfrom the volume\n"), ops
