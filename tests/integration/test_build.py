"""gen build on real images: incremental decisions, the rebuilt set after an overlay change,
reproducibility from empty storage, and an interrupted build leaving the previous tags alone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SESSION_BASE, copy_bundled_specs, rehash_output_dir

pytestmark = pytest.mark.integration

BOOTSTRAP = (
    f"base: {{distro: debian, release: bookworm, bootstrap: {{variant: minbase, "
    f"include: [{', '.join(SESSION_BASE['include'])}], "
    f"source_date_epoch: {SESSION_BASE['source_date_epoch']}}}}}\n"
)
CHAIN = {
    "top": 'name: top\ntags: ["1"]\n' + BOOTSTRAP,
    "middle": 'name: middle\ntags: ["1"]\nextends: top\nrootfs: [overlays/middle]\n',
    "leaf": 'name: leaf\ntags: ["1"]\nextends: middle\nenv: {LEAF: "1"}\n',
    "other": 'name: other\ntags: ["1"]\nextends: top\nenv: {OTHER: "1"}\n',
}


def gen(args: list[str], project: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args, "-C", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def plan(project: Path, env: dict[str, str]) -> dict[str, list[str]]:
    got = gen(["build", "--dry-run", "--format", "json"], project, env)
    assert got.returncode == 0, got.stderr
    return {entry["name"]: entry["reasons"] for entry in json.loads(got.stdout) if entry["action"] == "build"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, gen_env, bootstrapped_base) -> Path:
    project = tmp_path_factory.mktemp("chain")
    (project / "specs" / "overlays" / "middle" / "etc").mkdir(parents=True)
    (project / "specs" / "overlays" / "middle" / "etc" / "middle.conf").write_text("v=1\n")
    for name, text in CHAIN.items():
        (project / "specs" / f"{name}.yaml").write_text(text)
    assert gen(["render"], project, gen_env).returncode == 0
    built = gen(["build"], project, gen_env)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    return project


def test_second_build_builds_nothing_and_says_so(chain, gen_env):
    assert plan(chain, gen_env) == {}
    again = gen(["build"], chain, gen_env)
    assert again.returncode == 0
    assert "built" not in again.stdout.replace("up to date", "")
    assert all(f"{name}" in again.stdout + again.stderr for name in CHAIN)


def test_overlay_change_in_the_middle_rebuilds_it_and_its_child_only(chain, gen_env, gen_host):
    (chain / "specs" / "overlays" / "middle" / "etc" / "middle.conf").write_text("v=2\n")
    assert gen(["render"], chain, gen_env).returncode == 0
    assert set(plan(chain, gen_env)) == {"middle", "leaf"}
    built = gen(["build"], chain, gen_env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert plan(chain, gen_env) == {}
    got = subprocess.run(
        [
            "podman",
            *gen_host.podman_flags(),
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            "localhost/gen/leaf:1",
            "/etc/middle.conf",
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.stdout == "v=2\n"


def image_id(gen_host, env, ref: str) -> str | None:
    got = subprocess.run(
        ["podman", *gen_host.podman_flags(), "image", "inspect", "--format", "{{.Id}}", ref],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return got.stdout.strip() if got.returncode == 0 else None


def _interrupt_a_slow_build(chain: Path, gen_env: dict[str, str], gen_host, command: list[str]):
    """Run `gen COMMAND` while other's build sleeps in a RUN step, send SIGINT there, and check
    that the previous image keeps its tags and no build container is left. Returns the ended
    process, its output and `restore`, which puts the rendered Dockerfile back (done here when
    anything fails)."""
    before = image_id(gen_host, gen_env, "localhost/gen/other:1")
    assert before
    # A slow RUN to interrupt: a start-up hook overlay is not enough, so edit the rendered Dockerfile.
    dockerfile = chain / "output" / "other" / "Dockerfile"
    text = dockerfile.read_text()
    dockerfile.write_text(text.replace("\nCOPY gen-config/ /", "\nRUN sleep 60\nCOPY gen-config/ /", 1))
    rehash_output_dir(dockerfile.parent)

    def restore() -> None:
        dockerfile.write_text(text)
        rehash_output_dir(dockerfile.parent)

    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", *command, "-C", str(chain)],
        env=gen_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        log = gen_host.logs_dir / "other.log"
        while time.monotonic() < deadline and not (log.is_file() and "sleep 60" in log.read_text(errors="replace")):
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert image_id(gen_host, gen_env, "localhost/gen/other:1") == before
        dangling = subprocess.run(
            ["podman", *gen_host.podman_flags(), "ps", "-a", "--format", "{{.Names}}"],
            env=gen_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        buildah = subprocess.run(
            ["buildah", *gen_host.global_flags(), "containers", "--format", "{{.ContainerName}}"],
            env=gen_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "other" not in dangling.stdout + buildah.stdout
    except BaseException:  # the module's later tests need the chain as it was, and no gen running
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        restore()
        raise
    return proc, out, err, restore


def test_interrupted_build_keeps_previous_tags_and_exits_non_zero(chain, gen_env, gen_host):
    proc, out, err, restore = _interrupt_a_slow_build(chain, gen_env, gen_host, ["build", "other"])
    assert proc.returncode != 0, out + err
    restore()  # resumes: the next build finds the image up to date
    assert "other" not in plan(chain, gen_env)


def test_interrupted_rebuild_stops_the_build_keeps_the_lock_and_exits_130(chain, gen_env, gen_host):
    """gen rebuild installed no signal handler: Ctrl-C left buildah running in its own session."""
    locked = gen(["lock", "--update"], chain, gen_env)
    assert locked.returncode == 0, locked.stderr[-3000:]
    lock_before = json.loads((chain / "gen.lock").read_text())["images"]["other"]
    command = ["rebuild", "--skip-verify", "--no-package-check"]
    proc, out, err, restore = _interrupt_a_slow_build(chain, gen_env, gen_host, command)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err, err
    assert json.loads((chain / "gen.lock").read_text())["images"]["other"] == lock_before
    restore()
    assert "other" not in plan(chain, gen_env)


@pytest.mark.skipif(os.environ.get("GEN_SKIP_REPRODUCIBILITY") == "1", reason="GEN_SKIP_REPRODUCIBILITY=1")
def test_bundled_chain_is_reproducible_from_empty_storage(tmp_path, gen_env):
    project = tmp_path / "project"
    copy_bundled_specs(project / "specs")
    assert gen(["render"], project, gen_env).returncode == 0
    # The chain, each built twice from empty storage: a bootstrap, an apt install, and app-base,
    # whose readiness gives it a HEALTHCHECK and so Docker's image format.
    checked = gen(["build", "--check-reproducible", "app-base"], project, gen_env, timeout=1500)
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    for name in ("debian-s6", "runtime", "app-base"):
        # Issue 23: the provenance each build's image would carry has the same build definition.
        assert f"reproducible {name}: " in checked.stdout, checked.stdout
        assert re.search(
            rf"^reproducible {name}: \w{{12}}, provenance's build definition identical$", checked.stdout, re.M
        )


def test_rendered_dockerfile_builds_unchanged_with_podman(chain, gen_env, gen_host, bootstrapped_base):
    context = chain / "output" / "top"
    built = subprocess.run(
        [
            "podman",
            *gen_host.podman_flags(),
            "build",
            "--format",
            "oci",
            "--layers",
            "--build-arg",
            f"BASE_IMAGE={bootstrapped_base}",
            "-t",
            "localhost/gen-podman-check/top:1",
            "-f",
            str(context / "Dockerfile"),
            str(context),
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    ran = subprocess.run(
        ["podman", *gen_host.podman_flags(), "run", "--rm", "localhost/gen-podman-check/top:1", "echo", "hi"],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (ran.returncode, ran.stdout) == (0, "hi\n"), ran.stderr


def test_bootstrapped_rootfs_takes_nothing_of_the_hosts_etc(gen_host, bootstrapped_base):
    """mmdebstrap copies the host's hostname and resolv.conf in; gen empties them, and their modes
    must not follow the host's either (a host with a 0755 /etc/hostname made a different rootfs).
    Read from the mounted image: a running container sees the engine's own copies."""
    podman = ["podman", *gen_host.podman_flags(), "image"]
    mounted = subprocess.run(
        [*podman, "mount", bootstrapped_base], env=gen_host.env, capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    try:
        etc = Path(mounted) / "etc"
        found = {
            name: (oct((etc / name).stat().st_mode & 0o7777), (etc / name).read_text())
            for name in ("hostname", "resolv.conf")
        }
    finally:
        subprocess.run([*podman, "unmount", bootstrapped_base], env=gen_host.env, capture_output=True, timeout=120)
    assert found == {"hostname": ("0o644", "localhost\n"), "resolv.conf": ("0o644", "")}
