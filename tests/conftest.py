"""Shared fixtures. Integration tests get one isolated containers storage per session (never the
user's images), gen's containers.conf, and one bootstrapped Debian bookworm rootfs for everyone.

    def test_something(gen_env, gen_host, bootstrapped_base):
        subprocess.run(["podman", *gen_host.podman_flags(), "run", "--rm", bootstrapped_base, "true"],
                       env=gen_env, check=True)

gen_env holds the environment (CONTAINERS_CONF, GEN_STORAGE_ROOT) for `gen` and podman/buildah
subprocesses; `gen` reads GEN_STORAGE_ROOT itself, podman and buildah need gen_host.global_flags().
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from generator.builder.host import Host, gen_containers_conf
from generator.builder.reproduce import unmount_under

BUILD_TOOLS = ("buildah", "podman")
SESSION_EPOCH = 1700000000
# The bootstrap every example chain starts from: Debian bookworm minbase with the distro's s6.
SESSION_BASE = {
    "kind": "bootstrap",
    "distro": "debian",
    "release": "bookworm",
    "variant": "minbase",
    "components": ["main"],
    "include": ["execline", "s6"],
    "snapshot": None,
    "source_date_epoch": SESSION_EPOCH,
}


def bootstrap_key(base: dict) -> str:
    """The key render gives a bootstrap base (generator.render.project.bootstrap_key): a hash of
    what decides the rootfs content, so rendered examples find the session's rootfs by tag."""
    params = {
        k: base[k] for k in ("distro", "release", "variant", "components", "include", "snapshot", "source_date_epoch")
    }
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_manifest(base: dict = SESSION_BASE) -> dict:
    """A manifest `base` entry for a bootstrap, with the image reference render would write."""
    ref = f"localhost/gen/rootfs-{base['distro']}-{base['release']}:{bootstrap_key(base)}"
    return dict(base, image=ref)


ROOT = Path(__file__).resolve().parents[1]
# The bundled base spec's platforms; its children inherit them.
BUNDLED_PLATFORMS = "platforms: [linux/amd64, linux/arm64]\n"


def copy_bundled_specs(dest: Path, *names: str) -> None:
    """Copy the bundled specs (all, or the named ones) into dest, narrowed to the build host's
    platform: only the multi-platform tests pay for emulated arm64 builds."""
    if names:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy2(ROOT / "specs" / f"{name}.yaml", dest)
    else:
        shutil.copytree(ROOT / "specs", dest)
    base = dest / "debian-s6.yaml"
    if base.exists():
        text = base.read_text()
        assert BUNDLED_PLATFORMS in text, "specs/debian-s6.yaml no longer lists both platforms: update the tests"
        base.write_text(text.replace(BUNDLED_PLATFORMS, ""))


# A root spec for two platforms and its child: the shape the multi-platform unit tests render.
TWO_PLATFORM_ROOT_SPEC = """\
name: root
tags: ["1", latest]
platforms: [linux/amd64, linux/arm64]
base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}
"""
CHILD_SPEC = """\
name: child
tags: ["2"]
extends: root
"""


def render_specs(project: Path, **specs: str) -> Path:
    """Write project/specs/<name>.yaml for each keyword and render them as `gen render` does;
    returns project/output."""
    from generator.render import write_outputs
    from generator.render.project import render_project
    from generator.spec import load_project

    (project / "specs").mkdir(exist_ok=True)
    for name, text in specs.items():
        (project / "specs" / f"{name}.yaml").write_text(textwrap.dedent(text))
    write_outputs(project / "output", render_project(load_project([project / "specs"], project)).images, prune=True)
    return project / "output"


def missing_build_tools() -> list[str]:
    return [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_build_tools()
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"integration tests need {', '.join(missing)} installed (not found on PATH)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_last(items: list[pytest.Item]) -> None:
    """The fresh-machine rehearsal runs in the background from the first integration test on; its
    test goes last, after everything it runs beside."""
    items.sort(key=lambda item: item.name == "test_the_readme_commands_work_on_a_fresh_machine")


@pytest.fixture(scope="session", autouse=True)
def _unmount_storage_at_exit(tmp_path_factory: pytest.TempPathFactory):
    """Containers storage keeps overlay mounts under the tests' temporary directories; unmount
    them at the end so pytest can delete old runs (it warns "Device or resource busy" otherwise)."""
    yield
    unmount_under(tmp_path_factory.getbasetemp())


GEN_LOG_SOURCE = Path(__file__).resolve().parents[1] / "templates" / "logger" / "gen-log.c"
# The builder stage's flags, plus warnings as errors: a warning in gen-log fails the tests here.
GEN_LOG_CFLAGS = (
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-pthread",
    "-fPIE",
    "-pie",
    "-fstack-protector-strong",
    "-D_FORTIFY_SOURCE=2",
    "-Wl,-z,relro,-z,now",
)


@pytest.fixture(scope="session")
def gen_log_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gen-log compiled on this host, as the image's builder stage compiles it."""
    out = tmp_path_factory.mktemp("gen-log") / "gen-log"
    subprocess.run(["gcc", *GEN_LOG_CFLAGS, "-o", str(out), str(GEN_LOG_SOURCE)], check=True, timeout=120)
    return out


@pytest.fixture(scope="session")
def gen_storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gen-storage")


@pytest.fixture(scope="session")
def gen_env(gen_storage_root: Path) -> dict[str, str]:
    """Environment for gen/podman/buildah subprocesses: isolated storage, gen's containers.conf for
    it (podman's locks kept in the storage, not in the machine's table, which deleted test storages
    used to fill: "exceeded num_locks (2048)")."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(gen_containers_conf(isolated=True))
    env["GEN_STORAGE_ROOT"] = str(gen_storage_root)
    return env


@pytest.fixture(scope="session")
def gen_host(gen_env: dict[str, str], gen_storage_root: Path) -> Host:
    """The Host for the session storage: global_flags() for podman/buildah, env for subprocesses."""
    return Host.from_env(gen_storage_root, env=gen_env)


@pytest.fixture(scope="session")
def bootstrapped_base(gen_host: Host, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Reference of the session's Debian bookworm minbase rootfs (with s6 and execline), bootstrapped
    once into the session storage; the same reference rendered examples use."""
    from generator.builder.bootstrap import bootstrap_base
    from generator.builder.outputs import OutputImage
    from generator.builder.proc import Cancel
    from generator.contract import base_from_json

    base = base_manifest()
    holder = OutputImage(
        "session-base",
        tmp_path_factory.mktemp("session-base"),
        ("x",),
        None,
        base_from_json(base, Path("session-base")),
        SESSION_EPOCH,
        "",
        (),
    )
    bootstrap_base(gen_host, holder, Cancel(), lambda event: None)
    return str(base["image"])


@pytest.fixture(scope="session")
def bootstrapped_base_id(gen_host: Host, bootstrapped_base: str) -> str:
    from generator.builder.storage import inspect

    found = inspect(gen_host, bootstrapped_base)
    assert found is not None
    return found.id


def write_output_dir(
    output_dir: Path,
    name: str,
    dockerfile_body: str,
    *,
    parent: str | None = None,
    tags: tuple[str, ...] = ("latest",),
    base: dict | None = None,
    files: dict[str, str] | None = None,
    epoch: int = SESSION_EPOCH,
) -> Path:
    """Write output/<name>/ as render does (Dockerfile header, ARGs, manifest) around a body."""
    from generator.contract import MANIFEST_VERSION

    directory = output_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    if parent:
        base_entry = {"kind": "parent", "image": f"localhost/gen/{parent}:latest"}
    else:
        base_entry = base or base_manifest()
    header = (
        f"# TAGS {' '.join(tags)}\n# Generated by gen from specs/{name}.yaml; do not edit.\n"
        f"ARG BASE_IMAGE={base_entry['image']}\nFROM ${{BASE_IMAGE}}\n"
        f"ARG SOURCE_DATE_EPOCH={epoch}\n"
    )
    (directory / "Dockerfile").write_text(header + dockerfile_body)
    for rel, text in (files or {}).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "tags": list(tags),
        "spec": f"specs/{name}.yaml",
        "parent": parent,
        "base": base_entry,
        "source_date_epoch": epoch,
        "overlays": [f"specs/overlays/{name}"],
    }
    (directory / "gen-manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return rehash_output_dir(directory)


def rehash_output_dir(directory: Path) -> Path:
    """Record an output folder's files in its manifest, as a render would after a test edits them
    (build refuses a folder whose files disagree with its manifest)."""
    from generator.builder.outputs import folder_digests
    from generator.contract import MANIFEST

    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["context_sha256"] = folder_digests(directory)[0]
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


@pytest.fixture
def write_output():
    """write_output(output_dir, name, dockerfile_body, parent=..., tags=..., files=...) -> Path."""
    return write_output_dir
