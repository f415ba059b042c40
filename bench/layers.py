"""Layer ordering: what one changed overlay file costs to rebuild, gen's order against the same
instructions naively ordered (overlay COPY before the package install).

One spec on the bundled debian-s6 image (a `local:` base, so gen's RUN steps switch to root
first) installs python3 (a smoke run: the tiny `hello`) and copies an application overlay. gen
renders it; the naive Dockerfile is gen's own with the
overlay COPY moved up to just after FROM, built with the same buildah flags. Each side is built
once, then one overlay file is changed and each side rebuilt: the rebuild's wall time and the
bytes of layers the new image does not share with the old one are compared. Before the numbers
count, both rebuilt images are checked to hold the changed file.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import WORK, Section, Size, Storage, bundled_examples, median, run, size_from_argv, stored, timed

CHANGED_FILE = "srv/app/settings.conf"


@dataclass(frozen=True)
class Params:
    rounds: int  # overlay changes, each rebuilt on both sides; medians taken
    packages: tuple[str, ...]  # what the package step installs (re-run by the naive side)


PARAMS = {Size.SMOKE: Params(1, ("hello",)), Size.QUICK: Params(2, ("python3",)), Size.FULL: Params(3, ("python3",))}


def spec_text(base: str, packages: tuple[str, ...]) -> str:
    return (
        f'name: layered\ntags: ["1"]\nbase: {{distro: debian, release: bookworm, local: {base}}}\n'
        f"init: {{kind: none}}\npackages: [{', '.join(packages)}]\nrootfs: [app]\n"
        "cmd: [python3, /srv/app/main.py]\n"
    )


def write_overlay(root: Path, setting: str) -> None:
    app = root / "srv" / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "main.py").write_text("print(open('/srv/app/settings.conf').read())\n")
    for i in range(50):
        (app / f"module{i:02d}.py").write_text(f"VALUE = {i}\n" * 200)
    (root / CHANGED_FILE).write_text(f"setting = {setting}\n")


def instructions(dockerfile: str) -> list[str]:
    """Dockerfile instructions with their continuation lines; comments and blank lines dropped."""
    found: list[str] = []
    continued = False
    for line in dockerfile.splitlines():
        if not continued and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if continued:
            found[-1] += "\n" + line
        else:
            found.append(line)
        continued = line.endswith("\\")
    return found


def naive_order(dockerfile: str) -> str:
    """The same instructions with the overlay COPY moved to right after the FROM's ARGs."""
    steps = instructions(dockerfile)
    overlay = [s for s in steps if s.startswith('COPY ["rootfs/')]
    rest = [s for s in steps if s not in overlay]
    first_run = next(i for i, s in enumerate(rest) if s.startswith("RUN"))
    return "\n".join(rest[:first_run] + overlay + rest[first_run:]) + "\n"


def manifest_layers(storage: Storage, ref: str) -> dict[str, int]:
    data = json.loads(
        run(["buildah", *storage.host.global_flags(), "inspect", "--type", "image", ref], env=storage.env).stdout
    )
    return {layer["digest"]: layer["size"] for layer in json.loads(data["Manifest"])["layers"]}


def new_bytes(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes a push after the rebuild sends: layers the old image did not have."""
    return sum(size for digest, size in after.items() if digest not in before)


def rebuilt_bytes(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes of layers the rebuild wrote again: the first layer that differs and every one after it
    (buildah's cache misses cascade), even where a re-run step reproduced an identical layer."""
    old, new = list(before), list(after)
    first = next((i for i, digest in enumerate(new) if i >= len(old) or old[i] != digest), len(new))
    return sum(after[digest] for digest in new[first:])


def check_holds(storage: Storage, ref: str, setting: str) -> None:
    got = storage.podman("run", "--rm", "--entrypoint", "cat", ref, f"/{CHANGED_FILE}", timeout=120).stdout
    if got != f"setting = {setting}\n":
        raise AssertionError(f"{ref} holds {got!r}, not the changed overlay file")


def forget_earlier_runs(storage: Storage) -> None:
    """Remove the images of earlier runs and the layers only they held. Both sides build with
    buildah's layer cache, and a cached layer of an earlier run once failed the commit of this
    one ("file integrity checksum failed" while reusing its blob): each run starts clean."""
    listed = run(["buildah", *storage.host.global_flags(), "images", "--format", "{{.Name}}:{{.Tag}}"], env=storage.env)
    ours = sorted(
        {r for r in listed.stdout.split() if r.startswith(("localhost/gen/layered:", "localhost/bench/naive-"))}
    )
    if ours:
        run(["buildah", *storage.host.global_flags(), "rmi", "-f", *ours], env=storage.env, timeout=300)
    run(["buildah", *storage.host.global_flags(), "rmi", "--prune"], env=storage.env, timeout=300)


def naive_build(storage: Storage, context: Path, base_id: str, tag: str) -> None:
    run(
        [
            "buildah",
            *storage.host.global_flags(),
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "--format",
            "oci",
            "--pull=never",
            "--timestamp",
            "1700000000",
            "--build-arg",
            f"BASE_IMAGE={base_id}",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "-t",
            tag,
            "-f",
            str(context / "Dockerfile"),
            str(context),
        ],
        env=storage.env,
        timeout=900,
    )


def one_round(storage: Storage, project: Path, naive: Path, base_id: str, setting: str) -> dict[str, tuple]:
    """Change the overlay file on both sides, rebuild both; (build seconds, process seconds, rebuilt
    bytes, new bytes) per side. gen's build seconds are its report's time for the image (the buildah
    run), comparable with the naive side's one `buildah bud`."""
    results = {}
    for side, ref in (("gen", "localhost/gen/layered:1"), ("naive", "localhost/bench/naive-layered:1")):
        before = manifest_layers(storage, ref)
        if side == "gen":
            write_overlay(project / "specs" / "app", setting)
            storage.gen("render", project=project)
            process, proc = timed(
                lambda: storage.gen("build", "layered", "--format", "json", project=project, timeout=900)
            )
            seconds = next(b["seconds"] for b in json.loads(proc.stdout)["images"] if b["name"] == "layered")
        else:
            write_overlay(naive / "rootfs" / "01-app", setting)
            seconds, _ = timed(lambda: naive_build(storage, naive, base_id, ref))  # noqa: B023 (run in this iteration)
            process = seconds
        check_holds(storage, ref, setting)
        after = manifest_layers(storage, ref)
        results[side] = (seconds, process, rebuilt_bytes(before, after), new_bytes(before, after))
    return results


def measure(size: Size) -> Section:
    params = PARAMS[size]
    examples = bundled_examples(size)
    storage = examples.storage
    base = examples.ref("debian-s6")
    base_id = stored(storage, base).id
    project, naive = WORK / "layers-project", WORK / "layers-naive"
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(naive, ignore_errors=True)
    forget_earlier_runs(storage)
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "layered.yaml").write_text(spec_text(base, params.packages))
    write_overlay(project / "specs" / "app", "initial")
    storage.gen("render", project=project)
    storage.gen("build", "layered", project=project, timeout=900)
    shutil.copytree(project / "output" / "layered", naive)
    overlay_dirs = [p.name for p in (naive / "rootfs").iterdir()]
    if overlay_dirs != ["01-app"]:
        raise AssertionError(f"unexpected overlay directories {overlay_dirs}")
    (naive / "Dockerfile").write_text(naive_order((naive / "Dockerfile").read_text()))
    naive_build(storage, naive, base_id, "localhost/bench/naive-layered:1")
    # A fresh value each round, so no side finds the changed layer in buildah's cache from an earlier run.
    rounds = [one_round(storage, project, naive, base_id, uuid.uuid4().hex) for _ in range(params.rounds)]
    section = Section(
        f"Layer ordering: rebuild after one overlay file changed (median of {len(rounds)})",
        [
            "ordering",
            "build (s)",
            "whole process (s)",
            "layer bytes rebuilt",
            "new bytes to push",
            "time vs naive",
            "rebuilt bytes vs naive",
        ],
    )
    medians = {side: [median([r[side][i] for r in rounds]) for i in range(4)] for side in ("gen", "naive")}
    naive_s, naive_rebuilt = medians["naive"][0], medians["naive"][2]
    for side, label in (("gen", "gen (packages, then overlay)"), ("naive", "naive (overlay COPY first)")):
        seconds, process, rebuilt, pushed = medians[side]
        section.rows.append(
            [
                label,
                round(seconds, 2),
                round(process, 2),
                f"{int(rebuilt):,}",
                f"{int(pushed):,}",
                f"{seconds / naive_s:.0%}",
                f"{rebuilt / naive_rebuilt:.1%}",
            ]
        )
    time_share, byte_share = medians["gen"][0] / naive_s, medians["gen"][2] / naive_rebuilt
    section.notes.append(
        f"Target: at most 10% of the naive rebuild in time and bytes: {time_share:.0%} and {byte_share:.1%} "
        f"({'met' if time_share <= 0.1 and byte_share <= 0.1 else 'missed'}). The time left on gen's side is "
        "buildah's fixed cost per build (a few COPY and metadata steps); it stays the same while the "
        f"package step grows, so heavier package sets than {', '.join(params.packages)} push the share down."
    )
    section.notes.append(
        "New bytes to push are equal: the naive side re-runs apt, but gen's cleanup makes that "
        "layer bit-identical, so only the overlay layer is new on either side."
    )
    return section


if __name__ == "__main__":
    print(measure(size_from_argv(sys.argv)).markdown())
