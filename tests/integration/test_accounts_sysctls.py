"""Users, volume ownership and sysctl pre-start hooks, shown with podman (issue 6's "done when")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

READ_SYSCTLS = 'for k do printf "%s=%s\\n" "$k" "$(cat "/proc/sys/$(echo "$k" | tr . /)")"; done'
KEYS = ["kernel.msgmax", "kernel.shmmax"]
DECLARED = {"kernel.msgmax": "65536", "kernel.shmmax": "68719476736"}


def test_sysctls_read_back_inside_the_app_with_the_hint_flags(podman, example_images, hint_flags) -> None:
    flags = hint_flags("app-base")
    assert sorted(flags) == [f"--sysctl={k}={v}" for k, v in sorted(DECLARED.items())]
    for name in ("app-base", "app-strict"):  # both policies run once the runtime sets the values
        got = podman.run(example_images[name], ["sh", "-c", READ_SYSCTLS, "sh", *KEYS], options=flags, timeout=60)
        assert got.code == 0, got.stderr
        assert got.stdout.splitlines()[-2:] == [f"{k}={DECLARED[k]}" for k in KEYS]


def test_policy_warn_without_flags_warns_and_runs_the_app(podman, example_images) -> None:
    got = podman.run(example_images["app-base"], ["echo", "app ran"], timeout=60)
    assert got.code == 0, got.stderr
    assert got.stdout.splitlines()[-1:] == ["app ran"]
    assert "kernel.shmmax" in got.stderr and "warning" in got.stderr


def test_policy_fail_without_flags_stops_before_the_app(podman, example_images) -> None:
    got = podman.run(example_images["app-strict"], ["echo", "app ran"], timeout=60)
    assert got.code != 0
    assert "app ran" not in got.stdout
    assert "kernel.shmmax" in got.stderr and "--sysctl" in got.stderr, got.stderr


def test_app_runs_as_the_declared_uid_and_gid(podman, example_images, hint_flags) -> None:
    got = podman.run(
        example_images["app-base"],
        ["sh", "-c", 'echo "$(id -u):$(id -g):$(id -un)"'],
        options=hint_flags("app-base"),
        timeout=60,
    )
    assert got.code == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "1000:1000:app"


def _root_owned_dir(path: Path) -> Path:
    path.mkdir()
    os.chmod(path, 0o755)
    assert path.stat().st_uid == 0
    return path


WRITE = ["sh", "-c", "echo written > /data/by-app && id -u"]


@pytest.mark.parametrize(
    "name, options", [("app-base", ["--user", "0"]), ("app-strict", [])], ids=["run-with-user-0", "spec-start-as-root"]
)
def test_a_root_start_gives_a_root_owned_bind_mount_to_the_app(
    podman, example_images, hint_flags, tmp_path: Path, name, options
) -> None:
    host_dir = _root_owned_dir(tmp_path / "data")
    got = podman.run(
        example_images[name],
        WRITE,
        options=[*hint_flags("app-base"), *options, "--volume", f"{host_dir}:/data"],
        timeout=60,
    )
    assert got.code == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "1000"  # the init dropped to the app's user
    written = host_dir / "by-app"
    assert written.read_text() == "written\n"
    assert (written.stat().st_uid, host_dir.stat().st_uid) == (1000, 1000)


def test_a_non_root_start_says_how_to_give_it_a_root_owned_mount(
    podman, example_images, hint_flags, tmp_path: Path
) -> None:
    host_dir = _root_owned_dir(tmp_path / "data")
    got = podman.run(
        example_images["app-base"],
        ["id", "-u"],
        options=[*hint_flags("app-base"), "--volume", f"{host_dir}:/data"],
        timeout=60,
    )
    assert got.code == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "1000"
    warning = next(line for line in got.stderr.splitlines() if "volume /data" in line)
    assert "--user 0" in warning and ":U" in warning and "chown it to app:app" in warning
    assert host_dir.stat().st_uid == 0
    # podman's :U, as `gen hints` prints it, is the other way.
    got = podman.run(
        example_images["app-base"],
        WRITE,
        options=[*hint_flags("app-base"), "--volume", f"{host_dir}:/data:U"],
        timeout=60,
    )
    assert got.code == 0 and (host_dir / "by-app").stat().st_uid == 1000, got.stderr


def test_images_say_who_they_run_as_by_uid(podman, example_images) -> None:
    users = {
        name: podman.inspect_image(example_images[name])["Config"].get("User")
        for name in ("debian-s6", "app-base", "app-strict")
    }
    assert users == {"debian-s6": "65532", "app-base": "1000", "app-strict": "0"}


def test_node_level_sysctl_is_flagged_at_render_time(tmp_path: Path, gen_env, gen_cli) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = (
        "name: swappy\ntags: ['1']\nbase:\n  distro: debian\n  release: bookworm\n  bootstrap:\n"
        "    variant: minbase\nsysctls:\n  values:\n    vm.swappiness: 10\n"
    )
    (specs / "swappy.yaml").write_text(spec)
    got = gen_cli(["render", "-C", str(tmp_path)], gen_env)
    assert got.returncode == 2
    assert "vm.swappiness" in got.stderr and "swappy.yaml" in got.stderr
    assert not (tmp_path / "output").exists()
    (specs / "swappy.yaml").write_text(spec.replace("values:", "node_level: warn\n  values:"))
    got = gen_cli(["render", "-C", str(tmp_path)], gen_env)
    assert got.returncode == 0, got.stderr
    assert "vm.swappiness" in got.stdout + got.stderr


def test_a_root_start_logs_as_the_log_directorys_owner(podman, example_images, tmp_path: Path) -> None:
    """After `--user 0` the log files stay the image user's, so its next non-root start can append."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    os.chown(log_dir, 65532, 0)
    os.chmod(log_dir, 0o2775)
    for options in (["--user", "0"], []):
        got = podman.run(
            example_images["runtime"],
            ["echo", "logged"],
            options=[*options, "--volume", f"{log_dir}:/lain/logs/default"],
            timeout=60,
        )
        assert got.code == 0, got.stderr
    current = log_dir / "current"
    assert current.read_text().splitlines() == ["logged", "logged"]
    owners = {p.name: p.stat().st_uid for p in log_dir.iterdir()}
    assert owners == {"current": 65532, "lock": 65532, "gen-log.state": 65532}  # gen-log's files
