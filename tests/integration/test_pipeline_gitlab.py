"""The emitted GitLab pipeline (`gen ci gitlab`) run whole by gitlab-ci-local, as a schedule runs it,
against a docker-registry on loopback: three runs of one project of its own.

    run 1: every image built, verified and pushed, each platform's image joined into its index,
           gen.lock written (committed, as the lock job's artifact would be)
    run 2: nothing changed: the plan names no image, every level job says "is up to date", no
           digest or tag in the registry moves, gen.lock stays byte for byte
    run 3: one spec changed (mid): exactly mid and its dependent leaf are built and pushed; root
           and the sibling `other` keep their digests; the lock moves for mid and leaf only

    root (bootstrapped, linux/amd64) -> mid -> leaf
                                     -> other

gitlab-ci-local runs each job with its shell executor in a directory of its own
(--shell-isolation), so every job has its own containers storage (GEN_STORAGE_ROOT is under the
job's directory), as separate runners have: images go from job to job through the registry only.
The job directories are deleted between runs (a runner cleans its checkout); gitlab-ci-local's
cache directory stays, as a runner's cache does. gen is this checkout's own install (`--install`
puts its venv on PATH). Each run's wall time is printed and recorded as a test property.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.builder.host import Host
from generator.builder.reproduce import unmount_under
from generator.publish.signing import write_key_pair
from tests.integration.conftest import SESSION_BOOTSTRAP

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GITLAB_CI_LOCAL = ROOT / "tests" / "tools" / "gitlab-ci-local" / "node_modules" / ".bin" / "gitlab-ci-local"
# Each run: a first one bootstraps root's rootfs in every level job (under a minute each), 3 minutes in all.
PIPELINE_TIMEOUT = 1500
ORG = "pipeline"
PLATFORM = "linux/amd64"
IMAGES = ("root", "mid", "leaf", "other")
LEVELS = {"root": 0, "mid": 1, "other": 1, "leaf": 2}

# The distro's s6 with s6-log: no builder stage, so no package index at build time; root's rootfs
# is the one the suite bootstraps (tests/integration/conftest.py SESSION_BOOTSTRAP), bootstrapped
# again in each job's own storage.
ROOT_SPEC = (
    """\
name: root
tags: ["1"]
platforms: [linux/amd64]
description: the pipeline test's root
"""
    + SESSION_BOOTSTRAP
    + """\
init:
  kind: s6
logging:
  logger: s6-log
cmd: ["sh", "-c", "exec sleep infinity"]
"""
)


def _child(name: str, parent: str, stage: str) -> str:
    return (
        f'name: {name}\ntags: ["1"]\ndescription: the pipeline test\'s {name}\n'
        f"extends: {parent}\nenv: {{STAGE: {stage}}}\n"
    )


SPECS = {
    "root": ROOT_SPEC,
    "mid": _child("mid", "root", "mid"),
    "leaf": _child("leaf", "mid", "leaf"),
    "other": _child("other", "root", "other"),
}
CHANGED_MID = _child("mid", "root", "mid-changed")
CHANGED_MID_AGAIN = _child("mid", "root", "mid-changed-again")
IGNORED = ".gitlab-ci-local/\n.gen-storage/\n.gen/\nplan.json\nstale.txt\n"


def _job(image: str) -> str:
    return f"level-{LEVELS[image]}: [{image},{PLATFORM}]"


JOBS = ("plan", *(_job(i) for i in IMAGES), "lock")


def _git(project: Path, *args: str) -> str:
    got = subprocess.run(
        ["git", "-c", "user.name=gen test", "-c", "user.email=gen-test@example.invalid", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    return got.stdout


def _gen(project: Path, env: dict[str, str], *args: str) -> str:
    got = subprocess.run(
        [sys.executable, "-m", "generator", *args, "-C", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    return got.stdout


def _skopeo(env: dict[str, str], *args: str) -> str:
    got = subprocess.run(["skopeo", *args], env=env, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    return got.stdout


def _registry_state(env: dict[str, str], org: str) -> dict[str, dict]:
    """Per image: the index digest under its spec tag, the platform image's digest, every tag."""
    state = {}
    for name in IMAGES:
        repo = f"docker://{org}/{name}"
        state[name] = {
            "index": _skopeo(env, "inspect", "--tls-verify=false", "--raw", f"{repo}:1"),
            "digest": _skopeo(
                env, "inspect", "--tls-verify=false", "--no-tags", "--format", "{{.Digest}}", f"{repo}:1"
            ).strip(),
            "amd64": _skopeo(
                env, "inspect", "--tls-verify=false", "--no-tags", "--format", "{{.Digest}}", f"{repo}:1-amd64"
            ).strip(),
            "tags": sorted(json.loads(_skopeo(env, "list-tags", "--tls-verify=false", repo))["Tags"]),
        }
    return state


def _assert_signed(project: Path, env: dict[str, str], org: str, pub: Path, images: tuple[str, ...]) -> None:
    """Each image's index and platform image signed by the pipeline's key, each image with its
    provenance (the pipeline attaches no SBOM: `gen verify-image` names only that)."""
    for name in images:
        got = subprocess.run(
            [sys.executable, "-m", "generator", "verify-image", f"{org}/{name}:1", "--key", str(pub)]
            + ["--insecure-registry", "--json", "-C", str(project)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        manifests = json.loads(got.stdout)["manifests"]
        assert len(manifests) == 2, manifests  # the index and the one platform's image
        for manifest in manifests:
            assert [p for p in manifest["problems"] if not p.startswith("no SBOM")] == [], (name, manifest)


def _cache_tags(env: dict[str, str], org: str) -> list[str]:
    """The tags of the registry's layer cache repository (one per cached build step)."""
    listed = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{org}/gen-layer-cache"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return sorted(json.loads(listed.stdout)["Tags"]) if listed.returncode == 0 else []


def _lock(project: Path) -> dict[str, dict]:
    return json.loads((project / "gen.lock").read_text())["images"]


class Run:
    """One pipeline run: its wall time and each job's lines (`$ command` and `> output`)."""

    def __init__(self, seconds: float, stdout: str, stale: list[str]):
        self.seconds, self.stdout, self.stale = seconds, stdout, stale
        self.lines: dict[str, list[str]] = {job: [] for job in JOBS}
        by_length = sorted(JOBS, key=len, reverse=True)
        for line in stdout.splitlines():
            job = next((j for j in by_length if line.startswith(j + " ")), None)
            if job is not None:
                self.lines[job].append(line[len(job) :].strip())

    def output(self, job: str) -> str:
        return "\n".join(line[2:] for line in self.lines[job] if line.startswith("> "))

    def pushed(self) -> set[str]:
        """Images a level job pushed (each its platform's image)."""
        return {i for i in IMAGES if re.search(rf"^pushed {i} ", self.output(_job(i)), re.M)}

    def built(self, job: str) -> set[str]:
        """Images `gen build` built in a job (not skipped as up to date)."""
        return set(re.findall(r"^built (\S+) [0-9a-f]{12} ", self.output(job), re.M))


def _clean_jobs(project: Path) -> None:
    """What a runner keeps of a job between pipelines: nothing but its cache. Containers storage
    leaves overlay mounts (and a run root outside the job's directory for long paths)."""
    builds = project / ".gitlab-ci-local" / "builds"
    if not builds.is_dir():
        return
    for storage in builds.glob("*/.gen-storage"):
        runroot = Host.from_env(storage).runroot
        if runroot.is_dir() and not runroot.is_relative_to(builds):
            unmount_under(runroot)
            shutil.rmtree(runroot, ignore_errors=True)
    unmount_under(builds)
    shutil.rmtree(builds)


def _pipeline(project: Path, env: dict[str, str], home: Path, name: str, variables: tuple[str, ...] = ()) -> Run:
    """gitlab-ci-local on the project as a schedule starts it; the job directories of the last
    run are gone first. Artifacts (plan.json, stale.txt, gen.lock) come back to the project; the
    run's log goes beside it as pipeline-NAME.log."""
    _clean_jobs(project)
    for artifact in ("plan.json", "stale.txt", *REPORT):
        (project / artifact).unlink(missing_ok=True)
    argv = [
        str(GITLAB_CI_LOCAL),
        "--no-color",
        "--shell-isolation",
        "--home",
        str(home),
        "--variable",
        "CI_PIPELINE_SOURCE=schedule",
        "--variable",
        "GEN_INSECURE_REGISTRY=1",
        "--variable",
        f"CONTAINERS_CONF={env['CONTAINERS_CONF']}",
        *(arg for variable in variables for arg in ("--variable", variable)),
    ]
    started = time.monotonic()
    # A job's stderr (gen's progress and errors) comes on gitlab-ci-local's stderr: one stream.
    got = subprocess.run(
        argv,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=PIPELINE_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    (project.parent / f"pipeline-{name}.log").write_text(got.stdout)
    assert got.returncode == 0, got.stdout[-8000:]
    stale = (project / "stale.txt").read_text().split()
    return Run(seconds, got.stdout, stale)


def _assert_built_exactly(run: Run, images: tuple[str, ...]) -> None:
    """The plan named exactly these images; each one's level job built it alone (its ancestors
    came from the registry, none rebuilt), verified and pushed it; every other level job said it
    is up to date; the lock job joined exactly their indexes."""
    assert sorted(run.stale) == sorted(images), (run.stale, run.output("plan")[-3000:])
    for image in IMAGES:
        job, output = _job(image), run.output(_job(image))
        if image in images:
            assert run.built(job) == {image}, (job, output[-3000:])
            assert re.search(r"^all \d+ check\(s\) passed$", output, re.M), (job, output[-3000:])
        else:
            assert output.strip().endswith(f"{image} is up to date"), (job, output[-3000:])
    assert run.pushed() == set(images), run.stdout[-6000:]
    joined = re.findall(r"^pushed (\S+) sha256:", run.output("lock"), re.M)
    assert sorted(joined) == sorted(images), run.output("lock")[-3000:]


REPORT = (".gen/rebuild-report.json", ".gen/rebuild-report.md")


def _assert_report(project: Path, images: tuple[str, ...], registry: dict[str, dict]) -> None:
    """The lock job's report artifact: each image the plan named, rebuilt, with the digest the
    registry holds now and the reasons the plan gave."""
    report = json.loads((project / REPORT[0]).read_text())
    results = {r["name"]: r for r in report["results"]}
    assert sorted(results) == sorted(images), report
    for name, result in results.items():
        assert (result["action"], result["verify"]) == ("rebuilt", "passed"), result
        assert result["new_digest"] == registry[name]["digest"] and result["reasons"], result
    markdown = (project / REPORT[1]).read_text()
    assert "a run of the CI pipeline" in markdown and all(f"| {name} | rebuilt |" in markdown for name in images)


def _assert_indexes(registry: dict[str, dict]) -> None:
    """Each image's spec tag names an index of its one platform's image."""
    for name, state in registry.items():
        index = json.loads(state["index"])
        assert [m["digest"] for m in index["manifests"]] == [state["amd64"]], (name, index)
        assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}, (name, index)


@pytest.fixture
def pipeline_env(gen_env: dict[str, str]) -> dict[str, str]:
    """The environment gitlab-ci-local and its jobs start from: no storage or project of the suite's
    (the pipeline names its own), gen's containers.conf."""
    if not GITLAB_CI_LOCAL.is_file():
        pytest.skip("gitlab-ci-local did not install here (`npm ci --prefix tests/tools/gitlab-ci-local`)")
    missing = [
        what
        for what, there in (
            ("node", shutil.which("node") is not None),
            ("rsync (gitlab-ci-local copies each job's files with it)", shutil.which("rsync") is not None),
            ("git", shutil.which("git") is not None),
        )
        if not there
    ]
    if missing:
        pytest.fail(f"the pipeline test needs {', '.join(missing)}; ./tests/run installs them")
    return {k: v for k, v in gen_env.items() if not k.startswith("GEN_") and k != "REGISTRY_AUTH_FILE"}


def test_the_emitted_gitlab_pipeline_runs_as_a_schedule(
    tmp_path: Path, local_registry: str, pipeline_env: dict[str, str], record_property
):
    env = pipeline_env
    org = f"{local_registry}/{ORG}"
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    for name, text in SPECS.items():
        (project / "specs" / f"{name}.yaml").write_text(text)
    (project / ".gitignore").write_text(IGNORED)
    _git(project, "init", "-q", "-b", "main")
    _gen(project, env, "render")
    # gen from this checkout's own install: its venv first on PATH in every job.
    install = f"export PATH={Path(sys.executable).parent}:$PATH"
    _gen(project, env, "ci", "gitlab", "--registry", org, "--install", install)
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "specs, rendered output and the pipeline")
    home = tmp_path / "gitlab-ci-local-home"
    home.mkdir()
    times = {}
    try:
        # Run 1: an empty registry; everything is stale.
        # A signing key as a CI secret would give it: every push is signed, every image attested.
        key, pub = write_key_pair(tmp_path / "keys" / "release", b"pipeline secret")
        (tmp_path / "keys" / "passphrase").write_text("pipeline secret\n")
        signing = (f"GEN_SIGNING_KEY={key}", f"GEN_KEY_PASSPHRASE_FILE={tmp_path / 'keys' / 'passphrase'}")
        first = _pipeline(project, env, home, "first", signing)
        times["first"] = first.seconds
        _assert_built_exactly(first, IMAGES)
        registry = _registry_state(env, org)
        _assert_indexes(registry)
        _assert_report(project, IMAGES, registry)
        _assert_signed(project, env, org, pub, IMAGES)
        assert "pipeline secret" not in first.stdout
        lock = _lock(project)
        assert {n: lock[n]["digest"] for n in IMAGES} == {n: registry[n]["digest"] for n in IMAGES}
        assert lock["mid"]["base"]["image_id"] == lock["other"]["base"]["image_id"] == lock["root"]["image_id"]
        assert lock["leaf"]["base"]["image_id"] == lock["mid"]["image_id"]
        # What the lock job's artifact becomes on a schedule: a commit.
        _git(project, "add", "gen.lock")
        _git(project, "commit", "-q", "-m", "gen rebuild: update gen.lock")
        locked = (project / "gen.lock").read_bytes()

        # Run 2: nothing changed; the plan names no image, nothing is built or pushed, nothing moves.
        second = _pipeline(project, env, home, "unchanged", signing)
        times["unchanged"] = second.seconds
        decisions = json.loads((project / "plan.json").read_text())["decisions"]
        assert not [d for d in decisions if d["stale"] or d["adopt"]], decisions
        _assert_built_exactly(second, ())
        _assert_report(project, (), registry)
        assert _registry_state(env, org) == registry
        assert (project / "gen.lock").read_bytes() == locked
        assert _git(project, "status", "--porcelain") == ""

        # Run 3: mid's spec changes; mid and its dependent leaf are rebuilt, root and other are not.
        (project / "specs" / "mid.yaml").write_text(CHANGED_MID)
        _gen(project, env, "render")
        _git(project, "add", "-A")
        _git(project, "commit", "-q", "-m", "mid changes")
        third = _pipeline(project, env, home, "one-change", signing)
        times["one change"] = third.seconds
        _assert_built_exactly(third, ("mid", "leaf"))
        moved = _registry_state(env, org)
        _assert_indexes(moved)
        _assert_report(project, ("mid", "leaf"), moved)
        _assert_signed(project, env, org, pub, IMAGES)
        for name in ("root", "other"):
            assert moved[name] == registry[name], name
        for name in ("mid", "leaf"):
            assert moved[name]["digest"] != registry[name]["digest"], name
            assert moved[name]["amd64"] != registry[name]["amd64"], name
            # The earlier build keeps its build-id tags; the new one adds its own.
            assert set(registry[name]["tags"]) < set(moved[name]["tags"]), (name, moved[name]["tags"])
        relocked = _lock(project)
        for name in ("root", "other"):
            assert relocked[name] == lock[name], name
        for name in ("mid", "leaf"):
            assert relocked[name]["digest"] == moved[name]["digest"] != lock[name]["digest"], name
            assert relocked[name]["image_id"] != lock[name]["image_id"], name
        assert relocked["mid"]["base"]["image_id"] == lock["root"]["image_id"]
        assert relocked["leaf"]["base"]["image_id"] == relocked["mid"]["image_id"]

        # Run 4: the same kind of change without the registry layer cache (GEN_LAYER_CACHE=""):
        # the same images are rebuilt; its wall time beside run 3's is what the cache saves.
        (project / "specs" / "mid.yaml").write_text(CHANGED_MID_AGAIN)
        _gen(project, env, "render")
        _git(project, "add", "-A")
        _git(project, "commit", "-q", "-m", "mid changes again")
        cached = _cache_tags(env, org)
        assert cached, "runs 1 and 3 put their build steps into the registry's layer cache"
        fourth = _pipeline(project, env, home, "no-layer-cache", ("GEN_LAYER_CACHE=",))
        times["one change, no layer cache"] = fourth.seconds
        _assert_built_exactly(fourth, ("mid", "leaf"))
        assert _cache_tags(env, org) == cached, "a build without the layer cache pushed to it"
        _assert_report(project, ("mid", "leaf"), _registry_state(env, org))
    finally:
        _clean_jobs(project)
        summary = ", ".join(f"{run} {seconds:.0f} s" for run, seconds in times.items())
        print(f"\ngitlab-ci-local pipeline wall time: {summary}")
        for run, seconds in times.items():
            record_property(f"pipeline_seconds_{run.replace(' ', '_').replace(',', '')}", round(seconds, 1))
