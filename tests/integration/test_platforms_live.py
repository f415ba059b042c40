"""One spec, two platforms, end to end: the bundled base spec, which lists `platforms:
[linux/amd64, linux/arm64]`, is bootstrapped and built for both (arm64 under qemu user emulation), verified on
arm64, pushed to a local registry as one OCI index, and each platform pulled back and run.

    build (both) -> uname per platform -> verify --platform linux/arm64 -> push (index) -> pull
    each platform into empty storage (skopeo, gen pull), uname -> per-platform pushes joined by
    --index-only (same index) -> lock and SBOM per platform -> push again (same index, both SBOMs)
    -> a field both platforms use changes -> rebuild: exactly both
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from generator.builder.doctor import check_emulation
from generator.builder.host import Host, host_platform
from generator.builder.storage import inspect
from tests.conftest import BUNDLED_PLATFORMS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "localhost/gen-platforms"
PLATFORMS = ("linux/amd64", "linux/arm64")
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


@pytest.fixture(scope="module")
def platforms_project(tmp_path_factory, gen_env, gen_cli, bootstrapped_base) -> Path:
    if host_platform() != "linux/amd64":
        pytest.skip("written for an amd64 build host (arm64 emulated)")
    emulation = check_emulation("linux/arm64")
    if emulation.problem:
        pytest.fail(f"arm64 emulation: {emulation.detail}; fix: {emulation.fix} (.ci/install-deps does it)")
    project = tmp_path_factory.mktemp("platforms-project")
    (project / "specs").mkdir()
    spec = (ROOT / "specs" / "debian-s6.yaml").read_text()
    assert BUNDLED_PLATFORMS in spec  # used as it is bundled
    (project / "specs" / "debian-s6.yaml").write_text(spec)
    rendered = gen_cli(["render", "-C", str(project)], gen_env)
    assert rendered.returncode == 0, rendered.stderr
    return project


def _gen(gen_cli, env, project: Path, *args: str, timeout: float = 1800):
    return gen_cli([*args, "-C", str(project), "--prefix", PREFIX], env, timeout=timeout)


def _build(gen_cli, env, project: Path) -> dict[str, dict]:
    # The two platforms' images are independent: built side by side, as a 2-core CI runner would.
    built = _gen(gen_cli, env, project, "build", "--jobs", "2", "--format", "json")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return {b["name"]: b for b in json.loads(built.stdout)["images"]}


def _uname(host: Host, env, ref: str) -> str:
    proc = subprocess.run(
        ["podman", *host.podman_flags(), "run", "--rm", "--entrypoint", "uname", ref, "-m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_base_spec_for_amd64_and_arm64_is_one_index(
    platforms_project, local_registry, gen_env, gen_host, gen_cli, tmp_path
):
    project = platforms_project
    first = _build(gen_cli, gen_env, project)
    assert {n: b["action"] for n, b in first.items()} == {"debian-s6": "built", "debian-s6@arm64": "built"}
    assert _uname(gen_host, gen_env, f"{PREFIX}/debian-s6:latest") == "x86_64"
    assert _uname(gen_host, gen_env, f"{PREFIX}/debian-s6:latest-arm64") == "aarch64"
    listed = _gen(gen_cli, gen_env, project, "images", "--format", "json")
    assert {r["name"]: (r["platform"], r["up_to_date"]) for r in json.loads(listed.stdout)} == {
        "debian-s6": ("linux/amd64", True),
        "debian-s6@arm64": ("linux/arm64", True),
    }

    verified = _gen(
        gen_cli, gen_env, project, "verify", "debian-s6", "--platform", "linux/arm64", "--json", timeout=900
    )
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["ok"], verified.stdout[-3000:]
    assert report["image"] == f"{PREFIX}/debian-s6:bookworm-arm64"
    passed = {c["name"] for c in report["checks"] if c["status"] == "pass"}
    assert {"SIGTERM stop", "exit code", "orphans reaped", "log rotation"} <= passed

    org = f"{local_registry}/platforms"
    pushed = _gen(gen_cli, gen_env, project, "push", "--registry", org, "--insecure-registry", "--json")
    assert pushed.returncode == 0, pushed.stderr
    result = json.loads(pushed.stdout)[0]
    assert list(result["platforms"]) == list(PLATFORMS)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{org}/debian-s6:latest"],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]] == list(PLATFORMS)
    assert [m["digest"] for m in index["manifests"]] == [result["platforms"][p] for p in PLATFORMS]

    # Each platform pulled from the one tag into empty storage runs as that machine.
    fresh = Host.from_env(tmp_path / "pulled", env=gen_env)
    for platform in PLATFORMS:
        arch = platform.split("/")[1]
        subprocess.run(
            [
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                "--override-arch",
                arch,
                f"docker://{org}/debian-s6:latest",
                fresh.skopeo_ref(f"localhost/pulled:{arch}"),
            ],
            env=gen_env,
            check=True,
            timeout=600,
        )
        assert _uname(fresh, gen_env, f"localhost/pulled:{arch}") == UNAME[platform]
    # gen pull brings every platform's image back under the tags gen build gives it, ids kept.
    pulled_env = dict(gen_env, GEN_STORAGE_ROOT=str(tmp_path / "gen-pulled"))
    got = _gen(gen_cli, pulled_env, project, "pull", "--registry", org, "--insecure-registry")
    assert got.returncode == 0, got.stdout + got.stderr
    pulled_host = Host.from_env(tmp_path / "gen-pulled", env=pulled_env)
    for unit, tag in (("debian-s6", "latest"), ("debian-s6@arm64", "latest-arm64")):
        found = inspect(pulled_host, f"{PREFIX}/debian-s6:{tag}")
        assert found is not None and found.id == first[unit]["id"], (unit, found)

    # One CI job per platform pushes its image alone; the last job joins them into the same index.
    for platform in PLATFORMS:
        alone = _gen(
            gen_cli,
            gen_env,
            project,
            "push",
            "--registry",
            f"{org}3",
            "--insecure-registry",
            "--platform",
            platform,
            "--json",
        )
        assert alone.returncode == 0, alone.stderr
        assert json.loads(alone.stdout)[0]["platforms"] == {platform: result["platforms"][platform]}
    joined = _gen(
        gen_cli, gen_env, project, "push", "--registry", f"{org}3", "--insecure-registry", "--index-only", "--json"
    )
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)[0]["digest"] == result["digest"]

    # Lock and SBOM per platform; each SBOM goes beside its platform's image.
    locked = _gen(gen_cli, gen_env, project, "lock", "--update", "--registry", org, "--insecure-registry")
    assert locked.returncode == 0, locked.stderr
    entry = json.loads((project / "gen.lock").read_text())["images"]["debian-s6"]
    assert entry["digest"] == result["digest"] and list(entry["platforms"]) == list(PLATFORMS)
    assert entry["platforms"]["linux/arm64"]["image_id"] == first["debian-s6@arm64"]["id"]
    assert entry["platforms"]["linux/amd64"]["image_id"] == entry["image_id"] == first["debian-s6"]["id"]
    assert "s6" in entry["platforms"]["linux/arm64"]["packages"]
    assert _gen(gen_cli, gen_env, project, "sbom", "debian-s6").returncode == 0
    arm_sbom = json.loads((project / "output" / "debian-s6@arm64.sbom.cdx.json").read_text())
    assert {"name": "dev.gen:platform", "value": "linux/arm64"} in arm_sbom["metadata"]["component"]["properties"]
    assert any("arch=arm64" in c.get("purl", "") for c in arm_sbom["components"])

    # The same images give the same index; now with both SBOMs attached.
    again = _gen(gen_cli, gen_env, project, "push", "--registry", f"{org}2", "--insecure-registry", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["digest"] == result["digest"]
    tags = json.loads(
        subprocess.run(
            ["skopeo", "list-tags", "--tls-verify=false", f"docker://{org}2/debian-s6"],
            env=gen_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
    for platform in PLATFORMS:
        assert f"sha256-{result['platforms'][platform].split(':')[1]}.sbom" in tags["Tags"], tags

    # A field both platforms use: the scheduled job rebuilds both platforms' images and pushes a
    # new index; then nothing is left to build.
    spec = project / "specs" / "debian-s6.yaml"
    spec.write_text(
        spec.read_text().replace(
            "org.opencontainers.image.vendor: gen examples", "org.opencontainers.image.vendor: gen platform test"
        )
    )
    assert gen_cli(["render", "-C", str(project)], gen_env).returncode == 0
    plan = _gen(gen_cli, gen_env, project, "build", "--dry-run", "--format", "json")
    assert {p["name"]: p["action"] for p in json.loads(plan.stdout)} == {
        "debian-s6": "build",
        "debian-s6@arm64": "build",
    }
    arm_only = _gen(gen_cli, gen_env, project, "build", "--platform", "linux/arm64", "--dry-run", "--format", "json")
    assert [p["name"] for p in json.loads(arm_only.stdout)] == ["debian-s6@arm64"]
    rebuilt = _gen(
        gen_cli,
        gen_env,
        project,
        "rebuild",
        "--registry",
        org,
        "--insecure-registry",
        "--skip-verify",
        "--no-package-check",
        "--json",
    )
    assert rebuilt.returncode == 3, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    assert [(r["name"], r["action"]) for r in json.loads(rebuilt.stdout)["results"]] == [("debian-s6", "rebuilt")]
    new_entry = json.loads((project / "gen.lock").read_text())["images"]["debian-s6"]
    for platform, unit in zip(PLATFORMS, ("debian-s6", "debian-s6@arm64"), strict=True):
        assert new_entry["platforms"][platform]["image_id"] != first[unit]["id"]
    assert new_entry["digest"] != result["digest"] == entry["digest"]
    assert {b["action"] for b in _build(gen_cli, gen_env, project).values()} == {"skipped"}


def test_bundled_base_builds_identically_twice_for_each_platform(platforms_project, gen_env, gen_cli, tmp_path):
    """Two clean builds (each from an empty storage of its own, bootstrap included) per platform.
    platforms_project only skips or fails without emulation: the test above edits its spec."""
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "debian-s6.yaml").write_text((ROOT / "specs" / "debian-s6.yaml").read_text())
    assert gen_cli(["render", "-C", str(project)], gen_env).returncode == 0
    checked = gen_cli(
        ["build", "-C", str(project), "--jobs", "2", "--check-reproducible", "debian-s6"], gen_env, timeout=1800
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert "reproducible debian-s6:" in checked.stdout and "reproducible debian-s6@arm64:" in checked.stdout, (
        checked.stdout
    )
