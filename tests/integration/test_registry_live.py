"""The registry stage against a real registry: Debian's docker-registry on 127.0.0.1 with a free
port and a temporary storage dir (never a mock). The example chain is built under a prefix of this
module's own, so moving its tags cannot disturb the other tests' images.

    push -> lock -> rebuild (nothing) -> retag -> pull -> changed parent published -> rebuild
    (dependents only) -> rebuild (nothing) -> spec change of the leaf -> rebuild (leaf only)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from generator.builder.host import Host
from generator.schema import platform_suffix
from tests.conftest import copy_bundled_specs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "localhost/gen-regtest"
CHAIN = ("debian-s6", "runtime", "app-base")


def _skopeo_digest(env: dict[str, str], ref: str) -> str:
    got = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--no-tags", "--format", "{{.Digest}}", f"docker://{ref}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def _list_tags(env: dict[str, str], repository: str) -> list[str] | None:
    """The repository's tags; None when skopeo cannot list them (it does not exist)."""
    got = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{repository}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return sorted(json.loads(got.stdout)["Tags"]) if got.returncode == 0 else None


def _tags(env: dict[str, str], repository: str) -> list[str]:
    tags = _list_tags(env, repository)
    assert tags is not None, f"cannot list the tags of {repository}"
    return tags


def _repository_exists(env: dict[str, str], repository: str) -> bool:
    return _list_tags(env, repository) is not None


def _artifact_payload(env: dict[str, str], ref: str, directory: Path) -> bytes:
    """The only layer of a registry artifact, fetched with skopeo."""
    subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"dir:{directory}"],
        env=env,
        check=True,
        timeout=120,
    )
    manifest = json.loads((directory / "manifest.json").read_text())
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cyclonedx+json"
    return (directory / layer["digest"].split(":")[1]).read_bytes()


@pytest.fixture(scope="module")
def chain_project(tmp_path_factory, gen_env, bootstrapped_base, gen_cli) -> Path:
    """The example specs rendered and built under PREFIX in the session storage."""
    project = tmp_path_factory.mktemp("registry-project")
    copy_bundled_specs(project / "specs")
    rendered = gen_cli(["render", "-C", str(project)], gen_env)
    assert rendered.returncode == 0, rendered.stderr
    built = gen_cli(["build", "-C", str(project), "--prefix", PREFIX], gen_env, timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    return project


def _stored_names(host: Host, env: dict[str, str]) -> list[str]:
    listed = subprocess.run(
        ["podman", *host.podman_flags(), "images", "--format", "{{.Repository}}:{{.Tag}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


def _gen(gen_cli, env, project: Path, *args: str, timeout: float = 900):
    return gen_cli([*args, "-C", str(project), "--prefix", PREFIX], env, timeout=timeout)


def _rebuild(gen_cli, env, project: Path, registry: str):
    # Verify runs the init-layer checks of another stage; here the registry stage's decisions are
    # under test, and package checks would depend on the live Debian index.
    got = _gen(
        gen_cli,
        env,
        project,
        "rebuild",
        "--registry",
        registry,
        "--insecure-registry",
        "--skip-verify",
        "--no-package-check",
        "--json",
    )
    assert got.returncode in (0, 3), got.stdout[-3000:] + got.stderr[-3000:]
    return got.returncode, json.loads(got.stdout)


def test_registry_round_trip_and_rebuild(
    chain_project: Path, local_registry: str, gen_env, gen_host: Host, gen_cli, tmp_path: Path
):
    org = f"{local_registry}/team"
    # Push: every tag, build-id tag included, all with one digest.
    pushed = _gen(gen_cli, gen_env, chain_project, "push", "--registry", org, "--insecure-registry", "--json")
    assert pushed.returncode == 0, pushed.stderr
    results = {r["name"]: r for r in json.loads(pushed.stdout)}
    assert set(results) == set(CHAIN)
    for name, result in results.items():
        tags = _tags(gen_env, f"{org}/{name}")
        assert any(t.startswith("gen-") for t in tags), tags
        assert {_skopeo_digest(gen_env, f"{org}/{name}:{t}") for t in tags} == {result["digest"]}

    # Without --insecure-registry the plain-HTTP loopback registry is refused (TLS is the default).
    refused = _gen(gen_cli, gen_env, chain_project, "push", "runtime", "--registry", org)
    assert refused.returncode == 1 and "--insecure-registry" in refused.stderr

    locked = _gen(gen_cli, gen_env, chain_project, "lock", "--update", "--registry", org, "--insecure-registry")
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((chain_project / "gen.lock").read_text())
    assert {n: lock["images"][n]["digest"] for n in CHAIN} == {n: results[n]["digest"] for n in CHAIN}
    assert "s6" in lock["images"]["debian-s6"]["packages"]
    assert (
        lock["images"]["debian-s6"]["base"]["kind"] == "bootstrap" and lock["images"]["debian-s6"]["base"]["image_id"]
    )

    code, report = _rebuild(gen_cli, gen_env, chain_project, org)
    assert code == 0 and not report["results"], report

    # The SBOM goes beside its image under cosign's tag scheme, byte for byte.
    assert _gen(gen_cli, gen_env, chain_project, "sbom", "runtime").returncode == 0
    again = _gen(gen_cli, gen_env, chain_project, "push", "runtime", "--registry", org, "--insecure-registry", "--json")
    assert again.returncode == 0, again.stderr
    sbom_tag = json.loads(again.stdout)[0]["sbom_tag"]
    assert sbom_tag == f"sha256-{results['runtime']['digest'].split(':')[1]}.sbom"
    assert (
        _artifact_payload(gen_env, f"{org}/runtime:{sbom_tag}", tmp_path / "sbom")
        == (chain_project / "output" / "runtime.sbom.cdx.json").read_bytes()
    )

    # Retag: every tag to another organization, digests unchanged.
    other = f"{local_registry}/other"
    moved = gen_cli(["retag", "-C", str(chain_project), "--from", org, "--to", other, "--insecure-registry"], gen_env)
    assert moved.returncode == 0, moved.stderr
    for name in CHAIN:
        tags = _tags(gen_env, f"{org}/{name}")
        assert _tags(gen_env, f"{other}/{name}") == tags
        for tag in tags:
            assert _skopeo_digest(gen_env, f"{other}/{name}:{tag}") == _skopeo_digest(gen_env, f"{org}/{name}:{tag}")

    # Pull into an empty storage: same image ids, so gen build there has nothing to do.
    fresh = dict(gen_env, GEN_STORAGE_ROOT=str(tmp_path / "fresh-storage"))
    pulled = _gen(gen_cli, fresh, chain_project, "pull", "--registry", org, "--insecure-registry")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    fresh_host = Host.from_env(tmp_path / "fresh-storage", env=fresh)
    for name in CHAIN:
        ids = [
            subprocess.run(
                ["podman", *h.podman_flags(), "image", "inspect", "--format", "{{.Id}}", f"{PREFIX}/{name}:latest"],
                env=e,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            for h, e in ((gen_host, gen_env), (fresh_host, fresh))
        ]
        assert ids[0] == ids[1] != "", (name, ids)
    # ... and without the root's bootstrapped rootfs there (a CI job's storage): it is not needed.
    plan = _gen(gen_cli, fresh, chain_project, "build", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert {entry["action"] for entry in json.loads(plan.stdout)} == {"skip"}, plan.stdout
    assert not any("rootfs" in name for name in _stored_names(fresh_host, fresh)), "a rootfs was bootstrapped"

    # Someone publishes a changed debian-s6 under the same tag: its dependents are rebuilt on it.
    flags = gen_host.global_flags()
    container = subprocess.run(
        ["buildah", *flags, "from", f"{PREFIX}/debian-s6:bookworm"],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    subprocess.run(
        ["buildah", *flags, "config", "--label", "published.by=someone-else", container],
        env=gen_env,
        check=True,
        timeout=60,
    )
    subprocess.run(
        [
            "buildah",
            *flags,
            "commit",
            "-q",
            "--format",
            "oci",
            "--rm",
            container,
            "localhost/regtest-upstream/debian-s6:changed",
        ],
        env=gen_env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            gen_host.skopeo_ref("localhost/regtest-upstream/debian-s6:changed"),
            f"docker://{org}/debian-s6:bookworm",
        ],
        env=gen_env,
        check=True,
        timeout=300,
    )
    published = _skopeo_digest(gen_env, f"{org}/debian-s6:bookworm")

    code, report = _rebuild(gen_cli, gen_env, chain_project, org)
    actions = {r["name"]: r["action"] for r in report["results"]}
    assert code == 3 and actions == {"debian-s6": "adopted", "runtime": "rebuilt", "app-base": "rebuilt"}, report
    reasons = {d["name"]: [r["code"] for r in d["reasons"]] for d in report["decisions"]}
    assert reasons["runtime"] == ["base-moved"] and reasons["app-base"] == ["parent-rebuilt"]
    new_lock = json.loads((chain_project / "gen.lock").read_text())
    assert new_lock["images"]["debian-s6"]["digest"] == published
    for name in ("runtime", "app-base"):
        result = next(r for r in report["results"] if r["name"] == name)
        assert result["old_digest"] == results[name]["digest"] != result["new_digest"]
        assert _skopeo_digest(gen_env, f"{org}/{name}:latest") == result["new_digest"]
        assert new_lock["images"][name]["digest"] == result["new_digest"]
    rebuilt_runtime = next(r for r in report["results"] if r["name"] == "runtime")["new_digest"]
    assert f"sha256-{rebuilt_runtime.split(':')[1]}.sbom" in _tags(gen_env, f"{org}/runtime")
    markdown = (chain_project / ".gen" / "rebuild-report.md").read_text()
    assert "parent debian-s6 changed in the registry" in markdown

    code, report = _rebuild(gen_cli, gen_env, chain_project, org)
    assert code == 0 and report["results"] == [], report

    # A spec-only change of the leaf rebuilds the leaf alone.
    spec = chain_project / "specs" / "app-base.yaml"
    spec.write_text(spec.read_text().replace("workdir: /home/app", 'workdir: /home/app\nenv:\n  REGTEST: "1"'))
    rendered = gen_cli(["render", "-C", str(chain_project)], gen_env)
    assert rendered.returncode == 0, rendered.stderr
    code, report = _rebuild(gen_cli, gen_env, chain_project, org)
    assert code == 3 and [(r["name"], r["action"]) for r in report["results"]] == [("app-base", "rebuilt")], report
    assert [r["code"] for d in report["decisions"] if d["name"] == "app-base" for r in d["reasons"]] == ["changed"]


def test_insecure_registry_refused_for_remote_host(chain_project: Path, gen_env, gen_cli):
    got = _gen(
        gen_cli, gen_env, chain_project, "push", "--registry", "registry.example.com/team", "--insecure-registry"
    )
    assert got.returncode == 2 and "loopback" in got.stderr


def test_layer_cache_is_shared_through_the_registry(
    chain_project: Path, local_registry: str, gen_env, gen_cli, tmp_path: Path
):
    """Two runners with empty storages: the second takes the first's build steps from the registry."""
    org = f"{local_registry}/cachetest"
    pushed = _gen(gen_cli, gen_env, chain_project, "push", "debian-s6", "--registry", org, "--insecure-registry")
    assert pushed.returncode == 0, pushed.stderr
    ids, logs = [], []
    for runner in ("first", "second"):
        env = dict(gen_env, GEN_STORAGE_ROOT=str(tmp_path / runner))
        pulled = _gen(gen_cli, env, chain_project, "pull", "debian-s6", "--registry", org, "--insecure-registry")
        assert pulled.returncode == 0, pulled.stderr
        built = _gen(
            gen_cli,
            env,
            chain_project,
            "build",
            "runtime",
            "--layer-cache",
            f"{org}/gen-layer-cache",
            "--insecure-registry",
            "--format",
            "json",
        )
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        ids.append(next(b["id"] for b in json.loads(built.stdout)["images"] if b["name"] == "runtime"))
        logs.append((Host.from_env(tmp_path / runner, env=env).logs_dir / "runtime.log").read_text())
    assert ids[0] == ids[1]
    assert "Setting up " in logs[0], "the first runner installed the packages itself"
    cached = _tags(gen_env, f"{org}/gen-layer-cache")
    assert len(cached) >= 5, cached  # one entry per build step
    assert "Setting up " not in logs[1] and "Using cache" in logs[1], logs[1][-3000:]


def test_pushed_images_are_signed_with_provenance_and_verify_image_checks_every_manifest(
    chain_project: Path, local_registry: str, gen_env, gen_host: Host, gen_cli, tmp_path: Path
):
    """With GEN_SIGNING_KEY, `gen push` signs each manifest it pushes (the index and each
    platform's image) in cosign's scheme and attaches a signed SLSA provenance statement to each
    image; `gen verify-image` accepts them with the key's .pub, checks the provenance against the
    committed spec and gen.lock and the SBOM, and names what is unsigned or signed by another key.
    Pushing again adds no second signature. `gen trust`'s policy makes skopeo refuse the unsigned, and
    `gen pull` under it checks the signatures itself: unsigned or swapped images pull nothing. `gen
    retag` with the key signs for the new repository."""
    from generator.publish.signing import write_key_pair

    org = f"{local_registry}/signed"
    key, pub = write_key_pair(tmp_path / "keys" / "release", b"pass phrase")
    _, other_pub = write_key_pair(tmp_path / "keys" / "other", b"x")
    signing = {**gen_env, "GEN_SIGNING_KEY": str(key), "GEN_KEY_PASSPHRASE": "pass phrase"}
    assert _gen(gen_cli, gen_env, chain_project, "sbom", "debian-s6").returncode == 0
    pushed = _gen(
        gen_cli, signing, chain_project, "push", "debian-s6", "--registry", org, "--insecure-registry", "--json"
    )
    assert pushed.returncode == 0, pushed.stderr
    (result,) = json.loads(pushed.stdout)
    images = list((result["platforms"] or {}).values()) or [result["digest"]]
    assert sorted(result["signed"]) == sorted({result["digest"], *images})
    assert sorted(result["provenance"]) == sorted(images)
    assert "pass phrase" not in pushed.stdout + pushed.stderr

    def verify(*args: str) -> dict[str, list[str]]:
        got = gen_cli(
            ["verify-image", *args, "--insecure-registry", "--json", "-C", str(chain_project)], gen_env, timeout=300
        )
        report = json.loads(got.stdout)
        assert got.returncode == (1 if not report["verified"] else 0), got.stderr
        return {m["digest"]: m["problems"] for m in report["manifests"]}

    trusted = verify(f"{org}/debian-s6:bookworm", "--key", str(pub))
    assert sorted(trusted) == sorted({result["digest"], *images}) and not any(trusted.values()), trusted

    wrong = verify(f"{org}/debian-s6:bookworm", "--key", str(other_pub))
    assert all("signature: signed by another key" in problems for problems in wrong.values()), wrong
    assert all("provenance: none signed by this key" in wrong[d] for d in images), wrong

    unsigned = _gen(gen_cli, gen_env, chain_project, "push", "runtime", "--registry", org, "--insecure-registry")
    assert unsigned.returncode == 0, unsigned.stderr
    missing = verify(f"{org}/runtime:1.0", "--key", str(pub))
    assert missing and all("signature: no signature" in problems for problems in missing.values()), missing

    again = _gen(gen_cli, signing, chain_project, "push", "debian-s6", "--registry", org, "--insecure-registry")
    assert again.returncode == 0, again.stderr
    signature = f"{org}/debian-s6:sha256-{result['digest'].split(':')[1]}.sig"
    subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{signature}", f"dir:{tmp_path / 'sig'}"],
        env=gen_env,
        check=True,
        timeout=120,
    )
    layers = json.loads((tmp_path / "sig" / "manifest.json").read_text())["layers"]
    assert [layer["mediaType"] for layer in layers] == ["application/vnd.dev.cosign.simplesigning.v1+json"]
    assert "dev.cosignproject.cosign/signature" in layers[0]["annotations"]

    # A wrong passphrase is one clear line, and nothing is pushed.
    wrong_passphrase = {**signing, "GEN_KEY_PASSPHRASE": "not it"}
    refused_push = _gen(
        gen_cli, wrong_passphrase, chain_project, "push", "runtime", "--registry", f"{local_registry}/never"
    )
    assert refused_push.returncode == 2 and "the passphrase does not open this key" in refused_push.stderr
    assert not _repository_exists(gen_env, f"{local_registry}/never/runtime")

    # Tampered: another image pushed under the signed tag, with the old signature copied beside it.
    tampered = f"{org}/debian-s6:bookworm"
    subprocess.run(
        ["skopeo", "copy", "-q", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
        + [f"docker://{org}/runtime:1.0", f"docker://{tampered}"],
        env=gen_env,
        check=True,
        timeout=300,
    )
    new_digest = _skopeo_digest(gen_env, tampered)
    subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{signature}"]
        + [f"docker://{org}/debian-s6:sha256-{new_digest.split(':')[1]}.sig"],
        env=gen_env,
        check=True,
        timeout=120,
    )
    forged = verify(tampered, "--key", str(pub))
    assert forged[new_digest][0] == (
        f"signature: a valid signature for {org}/debian-s6@{result['digest']}, not this image"
    ), forged

    # The key and its passphrase are in no output, report or lock.
    secret = key.read_text().splitlines()[1]
    for path in [chain_project / "gen.lock", *(chain_project / ".gen").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"pass phrase" not in data, path

    # gen trust: skopeo with its policy refuses the unsigned image of the signed registry.
    trust = gen_cli(["trust", str(pub), "--registry", org, "--dir", str(tmp_path / "trust")], gen_env)
    assert trust.returncode == 0, trust.stderr
    refused = subprocess.run(
        [
            "skopeo",
            "--policy",
            str(tmp_path / "trust" / "policy.json"),
            "copy",
            "--src-tls-verify=false",
            "--registries.d",
            str(tmp_path / "trust" / "registries.d"),
            f"docker://{org}/runtime:1.0",
            f"dir:{tmp_path / 'refused'}",
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "A signature was required, but no signature exists" in refused.stderr

    # gen pull under that policy: gen checks the signatures Debian's skopeo cannot, before anything
    # is copied, and copies what it checked by digest. Unsigned and swapped images pull nothing.
    policy = ["--policy", str(tmp_path / "trust" / "policy.json")]
    puller = dict(gen_env, GEN_STORAGE_ROOT=str(tmp_path / "pulled"))
    pulled_host = Host.from_env(tmp_path / "pulled", env=puller)

    def stored_ids(host: Host, env: dict[str, str], *refs: str) -> list[str]:
        listed = subprocess.run(
            ["podman", *host.podman_flags(), "image", "inspect", "--format", "{{.Id}}", *refs],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return listed.stdout.split()

    refused_pull = _gen(
        gen_cli, puller, chain_project, "pull", "runtime", "--registry", org, "--insecure-registry", *policy
    )
    assert refused_pull.returncode == 1, refused_pull.stderr
    (said,) = [line for line in refused_pull.stderr.splitlines() if line.startswith("error:")]
    assert "refused: no signature (required by" in said and "nothing was pulled" in said, refused_pull.stderr

    # debian-s6's image (one platform's, when built for several) swapped for runtime's under all its
    # tags, with its genuine signature copied beside it.
    signed_again = _gen(
        gen_cli, signing, chain_project, "push", "debian-s6", "--registry", org, "--insecure-registry", "--json"
    )
    assert signed_again.returncode == 0, signed_again.stderr
    pushed_again = json.loads(signed_again.stdout)[0]
    platform, genuine = next(iter((pushed_again["platforms"] or {"": pushed_again["digest"]}).items()))
    suffix = f"-{platform_suffix(platform)}" if platform else ""
    for tag in ("bookworm", "latest"):
        subprocess.run(
            ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]
            + [f"docker://{org}/runtime:1.0{suffix}", f"docker://{org}/debian-s6:{tag}{suffix}"],
            env=gen_env,
            check=True,
            timeout=300,
        )
    swapped = _skopeo_digest(gen_env, f"{org}/debian-s6:bookworm{suffix}")
    subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]
        + [f"docker://{org}/debian-s6:sha256-{genuine.split(':')[1]}.sig"]
        + [f"docker://{org}/debian-s6:sha256-{swapped.split(':')[1]}.sig"],
        env=gen_env,
        check=True,
        timeout=120,
    )
    swapped_pull = _gen(
        gen_cli, puller, chain_project, "pull", "debian-s6", "--registry", org, "--insecure-registry", *policy
    )
    assert swapped_pull.returncode == 1, swapped_pull.stderr
    assert f"a valid signature for {org}/debian-s6@{genuine}, not this image" in swapped_pull.stderr
    assert stored_ids(pulled_host, puller, f"{PREFIX}/debian-s6:bookworm", f"{PREFIX}/runtime:1.0") == []

    # Pushed again, signed: the pull is admitted, every platform's image arrives as built.
    restored = _gen(gen_cli, signing, chain_project, "push", "debian-s6", "--registry", org, "--insecure-registry")
    assert restored.returncode == 0, restored.stderr
    admitted = _gen(
        gen_cli, puller, chain_project, "pull", "debian-s6", "--registry", org, "--insecure-registry", *policy
    )
    assert admitted.returncode == 0, admitted.stderr
    ref = f"{PREFIX}/debian-s6:bookworm"
    assert stored_ids(pulled_host, puller, ref) == stored_ids(gen_host, gen_env, ref) != []

    # gen retag to another organization: a signature names its repository, so the copied ones do
    # not hold there; with the key, retag signs every manifest for the new repository.
    moved = f"{local_registry}/moved"
    retag = ["retag", "debian-s6", "--from", org, "--to", moved, "--insecure-registry", "-C", str(chain_project)]
    copied = gen_cli(retag, gen_env, timeout=900)
    assert copied.returncode == 0, copied.stderr
    stale = verify(f"{moved}/debian-s6:bookworm", "--key", str(pub))
    assert stale and all(f"signature: a valid signature for {org}/debian-s6@" in p[0] for p in stale.values()), stale
    resigned = gen_cli([*retag, "--json"], signing, timeout=900)
    assert resigned.returncode == 0, resigned.stderr
    assert sorted(json.loads(resigned.stdout)[0]["signed"]) == sorted(stale)
    assert not any(verify(f"{moved}/debian-s6:bookworm", "--key", str(pub)).values())
