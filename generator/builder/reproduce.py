"""`gen build --check-reproducible`: build twice from empty storage, compare, explain differences.

Each round gets a storage root of its own (bootstrap included), so nothing is shared but the
inputs. On a mismatch both images are copied to OCI layouts with skopeo and their layers compared
entry by entry (path, type, mode, owner, mtime, size, link target, content hash); diffoscope, when
installed, writes a full report of the first differing layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from generator.builder.engine import Builder, BuildOptions
from generator.builder.events import EventHandler, ignore_event
from generator.builder.host import Host
from generator.builder.proc import Cancel, ToolError, run_quiet


@dataclass(frozen=True)
class ReproResult:
    name: str
    first_id: str
    second_id: str
    differences: tuple[str, ...] = ()  # "layer N: path: what differs"
    diffoscope_report: Path | None = None

    @property
    def reproducible(self) -> bool:
        return self.first_id == self.second_id


@dataclass
class ReproReport:
    results: list[ReproResult] = field(default_factory=list)
    work_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return all(r.reproducible for r in self.results)


ROUNDS = ("a", "b")


def _round_host(host: Host, root: Path) -> Host:
    return Host(storage_root=root, driver=host.driver, state_dir=root / "gen", base_env=host.base_env)


def round_hosts(host: Host, work_dir: Path) -> list[Host]:
    """The two isolated storages check_reproducible builds in (kept with keep=True)."""
    return [_round_host(host, work_dir / label) for label in ROUNDS]


def check_reproducible(
    host: Host,
    output_dir: Path,
    project_root: Path,
    names: list[str],
    options: BuildOptions,
    work_dir: Path,
    on_event: EventHandler = ignore_event,
    cancel: Cancel | None = None,
    keep: bool = False,
) -> ReproReport:
    """Build names (and ancestors) twice in fresh storage under work_dir and compare image ids."""
    cancel = cancel or Cancel()
    rounds = []
    for round_host in round_hosts(host, work_dir):
        reset_storage(round_host)
        builder = Builder(round_host, output_dir, project_root, options, on_event, cancel)
        report = builder.build(names)
        if not report.ok:
            raise report.failed[0] if report.failed else RuntimeError("build failed")
        rounds.append((round_host, {b.name: b for b in report.built}))
    (host_a, first), (host_b, second) = rounds
    result = ReproReport(work_dir=work_dir)
    for name, built in first.items():
        other = second[name]
        if built.image_id == other.image_id:
            result.results.append(ReproResult(name, built.image_id, other.image_id))
            continue
        diffs, diff_report = explain(host_a, host_b, built.tags[0], work_dir / "diff" / name)
        result.results.append(ReproResult(name, built.image_id, other.image_id, tuple(diffs), diff_report))
    if not keep:
        for round_host, _ in rounds:
            reset_storage(round_host)
    return result


def reset_storage(host: Host) -> None:
    """Empty an isolated storage root gen created (never the user's storage)."""
    assert host.storage_root is not None
    if host.storage_root.exists():
        if (host.storage_root / "libpod").is_dir():  # podman's state is this storage's own
            run_quiet(["podman", *host.podman_flags(), "system", "reset", "--force"], host.env, check=False)
        else:
            # Made by an older gen: podman's database names /run/libpod as its state directory,
            # and `system reset` deletes that whatever --tmpdir says (measured with podman 4.3).
            unmount_under(host.storage_root, host.env)
        shutil.rmtree(host.storage_root, ignore_errors=True)
        shutil.rmtree(host.runroot, ignore_errors=True)  # may live outside the root (a short path)


def unmount_under(directory: Path, env: dict[str, str] | None = None) -> None:
    """Lazily unmount what containers storage left mounted below directory, deepest first, so it
    can be deleted (also used by the tests and bench for their own storages)."""
    env = dict(os.environ) if env is None else env
    prefix = str(directory.resolve()) + "/"
    points = [line.split()[4].replace("\\040", " ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        run_quiet(["umount", "-l", point], env, check=False)


def export_oci(host: Host, ref: str, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    run_quiet(["skopeo", "copy", "--quiet", host.skopeo_ref(ref), f"oci:{dest}:image"], host.env)
    return dest


def oci_layers(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(_blob(layout, manifest_digest).read_text())
    return [_blob(layout, layer["digest"]) for layer in manifest["layers"]]


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


def tar_entries(path: Path) -> dict[str, tuple]:
    """Every entry of a layer tar: what a reproducible build must keep identical."""
    entries = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            content = ""
            if member.isfile():
                handle = tar.extractfile(member)
                content = hashlib.sha256(handle.read()).hexdigest() if handle else ""
            entries[member.name] = (
                member.type,
                oct(member.mode),
                member.uid,
                member.gid,
                int(member.mtime),
                member.size,
                member.linkname,
                content,
                tuple(sorted((member.pax_headers or {}).items())),
            )
    return entries


_FIELDS = ("type", "mode", "uid", "gid", "mtime", "size", "link", "content", "pax headers")


def diff_layers(first: list[Path], second: list[Path]) -> list[str]:
    """Entry-level differences between two images' layers, layer by layer."""
    diffs = []
    if len(first) != len(second):
        diffs.append(f"layer count differs: {len(first)} vs {len(second)}")
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a.name == b.name:
            continue  # same digest, same bytes
        entries_a, entries_b = tar_entries(a), tar_entries(b)
        for path in sorted(set(entries_a) | set(entries_b)):
            ea, eb = entries_a.get(path), entries_b.get(path)
            if ea is None or eb is None:
                diffs.append(f"layer {index}: {path}: only in {'second' if ea is None else 'first'} build")
            elif ea != eb:
                fields = [f for f, x, y in zip(_FIELDS, ea, eb, strict=True) if x != y]
                diffs.append(f"layer {index}: {path}: {', '.join(fields)} differ")
        if list(entries_a) != list(entries_b) and set(entries_a) == set(entries_b):
            diffs.append(f"layer {index}: same entries in a different order")
    return diffs


def explain(host_a: Host, host_b: Host, ref: str, work: Path) -> tuple[list[str], Path | None]:
    """Why ref differs between two storages: layer entry differences, or the config if none."""
    layout_a = export_oci(host_a, ref, work / "first")
    layout_b = export_oci(host_b, ref, work / "second")
    layers_a, layers_b = oci_layers(layout_a), oci_layers(layout_b)
    diffs = diff_layers(layers_a, layers_b)
    if not diffs:
        diffs.append("layers are identical: the image configuration differs (labels, env, history)")
    report = None
    differing = [(a, b) for a, b in zip(layers_a, layers_b, strict=False) if a.name != b.name]
    if differing and shutil.which("diffoscope"):
        report = work / "diffoscope.txt"
        try:  # diffoscope exits 1 when it found differences, which is the point
            run_quiet(
                ["diffoscope", "--text", str(report), str(differing[0][0]), str(differing[0][1])],
                dict(os.environ),
                timeout=600,
                check=False,
            )
        except ToolError:
            report = None  # timed out or could not run: the layer list above still says what differs
    return diffs, report
