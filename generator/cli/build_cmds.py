"""`gen build`, `gen images`, `gen doctor`: the build stage's commands, with a live progress display.

Exit codes: 0 ok; 1 a build (or check) failed; 2 bad input (unknown image, bad option); 130 interrupted.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from generator.builder.host import Host
from generator.cli.options import (
    INSECURE_ENV,
    JsonOption,
    PrefixOption,
    ProjectOption,
    StorageOption,
    err,
    error_exit,
    out,
    signals_cancel,
)
from generator.errors import GenError, UsageError
from generator.naming import DEFAULT_PREFIX

if TYPE_CHECKING:
    from generator.builder import Builder, BuildEvent, Cancel
    from generator.builder.doctor import Check


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class Backend(str, Enum):
    buildah = "buildah"
    podman = "podman"


def _builder(
    project: Path,
    storage_root: Path | None,
    prefix: str,
    jobs: int = 1,
    backend: str = "buildah",
    on_event=None,
    cancel: Cancel | None = None,
    layer_cache: str | None = None,
    insecure_registry: bool = False,
    platforms: tuple[str, ...] = (),
) -> Builder:
    from generator.builder import Builder, BuildOptions

    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: give 1 or more")
    host = Host.from_env(storage_root, project)
    cache, verify = None, True
    if layer_cache:
        from generator.publish.target import parse_registry

        target = parse_registry(layer_cache, insecure_registry, option="--layer-cache")
        if not target.org:
            raise UsageError(f"--layer-cache {layer_cache!r}: name a repository, e.g. {target.host}/team/gen-cache")
        cache, verify = f"{target.host}/{target.org}", target.tls_verify
    elif insecure_registry and not os.environ.get(INSECURE_ENV):  # the variable serves a whole CI job
        raise UsageError("--insecure-registry applies to --layer-cache; give --layer-cache HOST/REPO too")
    options = BuildOptions(
        prefix=prefix.rstrip("/"),
        jobs=jobs,
        backend=backend,
        layer_cache=cache,
        layer_cache_tls_verify=verify,
        platforms=platforms,
    )
    kwargs = {"on_event": on_event} if on_event else {}
    return Builder(host, project / "output", project, options, cancel=cancel, **kwargs)


class _Display:
    """One progress row per image: name, current step, elapsed time; finished images print a line."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: BuildEvent) -> None:
        from generator.builder import Phase

        if event.phase in (Phase.STARTED, Phase.BOOTSTRAP, Phase.STEP):
            task = self._task(event.image)
            step = event.step or event.phase.value
            self.progress.update(task, step=step[:90])
        elif event.phase == Phase.TAGGED:
            self._finish(event.image, f"[green]built[/] {event.image} {event.message[:12]} ({event.elapsed:.1f} s)")
        elif event.phase == Phase.SKIPPED:
            self._finish(event.image, f"[dim]skipped[/] {event.image}: {escape(event.message)}")
        elif event.phase == Phase.FAILED:
            self._finish(event.image, f"[bold red]failed[/] {event.image}")

    def _task(self, name: str) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, step="")
        return self.tasks[name]

    def _finish(self, name: str, line: str) -> None:
        if name in self.tasks:
            self.progress.remove_task(self.tasks.pop(name))
        self.progress.console.print(line, markup=True, highlight=False)


def _print_plan(planned, as_json: bool) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "action": p.action,
                        "reasons": list(p.reasons),
                        "build_id": p.build_id,
                        "tags": list(p.tags),
                        "parent": p.parent,
                    }
                    for p in planned
                ]
            )
        )
        return
    for p in planned:
        verb = {"build": "[bold]build[/]", "skip": "[dim]skip[/]", "retag": "[bold]retag[/]"}[p.action]
        out.print(f"{verb} {p.name}: {escape(', '.join(p.reasons))}", markup=True, highlight=False)
    count = sum(p.action != "skip" for p in planned)
    out.print(
        f"{count} of {len(planned)} image(s) would be built or retagged"
        if count
        else "nothing to build: every image is up to date"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def build(
        names: Annotated[
            list[str] | None, typer.Argument(help="Images to build (default: all rendered).", show_default=False)
        ] = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        jobs: Annotated[int, typer.Option("--jobs", "-j", help="Build up to N independent images at once.")] = 1,
        backend: Annotated[Backend, typer.Option("--backend", help="Tool that runs the builds.")] = Backend.buildah,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and why; build nothing.")] = False,
        since: Annotated[
            str | None,
            typer.Option(
                "--since",
                help="Build the images whose spec, templates or overlays changed in (REV, HEAD], and their dependents.",
                metavar="REV",
            ),
        ] = None,
        check_reproducible: Annotated[
            bool,
            typer.Option(
                "--check-reproducible", help="Build twice from empty storage; compare digests, name differing files."
            ),
        ] = False,
        as_json: JsonOption = False,
        format: Annotated[
            OutputFormat, typer.Option("--format", hidden=True, help="Same as --json with json (kept for scripts).")
        ] = OutputFormat.text,
        layer_cache: Annotated[
            str | None,
            typer.Option(
                "--layer-cache",
                envvar="GEN_LAYER_CACHE",
                metavar="HOST/REPO",
                help="Registry repository of cached build steps: read before running a step, written after "
                "(buildah --cache-from/--cache-to), so CI runners share layers.",
            ),
        ] = None,
        insecure_registry: Annotated[
            bool,
            typer.Option(
                "--insecure-registry",
                help="Plain HTTP for --layer-cache; loopback registries only.",
                envvar=INSECURE_ENV,
            ),
        ] = False,
        platform: Annotated[
            list[str] | None,
            typer.Option(
                "--platform",
                help="Only this platform's images (repeatable; one CI job per platform). Default: every "
                "platform the specs name.",
                metavar="OS/ARCH",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Build rendered images (and missing or stale parents) with buildah, parents first,
        skipping what is up to date; tag each under --prefix plus an immutable gen-<id> tag."""
        as_json = as_json or format is OutputFormat.json
        from generator.builder import Cancel

        cancel = Cancel()
        try:
            with Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[step]}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as progress:
                display = _Display(progress)
                builder = _builder(
                    project,
                    storage_root,
                    prefix,
                    jobs,
                    backend.value,
                    display,
                    cancel,
                    layer_cache,
                    insecure_registry,
                    tuple(platform or ()),
                )
                wanted = list(names or [])
                if since:
                    from generator.builder import affected_images, changed_paths

                    chosen = affected_images(builder.images, changed_paths(project, since))
                    unknown = [n for n in wanted if n not in builder.images]
                    if unknown:
                        raise UsageError(f"unknown image {', '.join(unknown)}")
                    wanted = sorted(chosen & set(wanted)) if wanted else sorted(chosen)
                    if not wanted:
                        progress.stop()
                        out.print(f"no image changed since {since}")
                        return
                problems = builder.platform_problems(wanted)
                if problems:
                    progress.stop()
                    _print_problems(problems, fatal=not dry_run)
                    if not dry_run:
                        raise typer.Exit(2)
                if dry_run:
                    planned = builder.plan(wanted)
                    progress.stop()
                    _print_plan(planned, as_json)
                    return
                with signals_cancel(cancel):
                    if check_reproducible:
                        _check(builder, wanted, display, cancel, as_json)
                        return
                    report = builder.build(wanted)
        except GenError as exc:
            raise error_exit(exc) from None
        _print_report(report, as_json)
        if not report.ok:
            raise typer.Exit(1)

    @app.command()
    def images(
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        as_json: JsonOption = False,
        format: Annotated[
            OutputFormat, typer.Option("--format", hidden=True, help="Same as --json with json (kept for scripts).")
        ] = OutputFormat.text,
    ) -> None:
        """List rendered images: tags, digest, size, layers, build id, and whether each is up to date."""
        from generator.builder.status import image_statuses

        try:
            rows = image_statuses(_builder(project, storage_root, prefix))
        except GenError as exc:
            raise error_exit(exc) from None
        if as_json or format is OutputFormat.json:
            out.print_json(
                json.dumps(
                    [
                        {
                            "name": r.name,
                            "tags": list(r.tags),
                            "id": r.id,
                            "digest": r.digest,
                            "up_to_date": r.up_to_date,
                            "reasons": list(r.reasons),
                            "size": r.size,
                            "layers": r.layers,
                            "build_id": r.build_id,
                            "platform": r.platform,
                        }
                        for r in rows
                    ]
                )
            )
            return
        table = Table("image", "platform", "tags", "id", "size", "layers", "build id", "status")
        for r in rows:
            status = "[green]up to date[/]" if r.up_to_date else f"[yellow]{', '.join(r.reasons)}[/]"
            size = f"{r.size / 1e6:.1f} MB" if r.size is not None else "-"
            table.add_row(
                r.name,
                r.platform,
                " ".join(t.rsplit(":", 1)[1] for t in r.tags) or "-",
                (r.id or "-")[:12],
                size,
                str(r.layers or "-"),
                r.build_id or "-",
                status,
            )
        out.print(table)

    @app.command()
    def doctor(
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Check what gen needs on this host; print each problem with the exact fix (exit 1 if any)."""
        from generator.builder.doctor import probe_image, rendered_foreign_platforms, run_checks

        host = Host.from_env(storage_root, project)
        checks = run_checks(host, probe_image(host), rendered_foreign_platforms(project / "output"))
        problems = [c for c in checks if c.problem]
        if as_json:
            fields = ("name", "status", "detail", "fix", "platform")
            report = {"checks": [{f: getattr(c, f) for f in fields} for c in checks], "problems": len(problems)}
            out.print_json(json.dumps(report))
            if problems:
                raise typer.Exit(1)
            return
        marks = {"ok": "green", "problem": "bold red", "warning": "yellow", "info": "blue"}
        for check in checks:
            label = "PROBLEM" if check.problem else check.status  # padded before styling, so columns align
            out.print(
                f"[{marks[check.status]}]{label:>8}[/] {check.name}: {escape(check.detail)}",
                markup=True,
                highlight=False,
            )
            if check.fix and check.status != "ok":
                out.print(f"         fix: {check.fix}", markup=False, highlight=False)
        out.print(f"{len(problems)} problem(s)" if problems else "no problems found")
        if problems:
            raise typer.Exit(1)


def _print_problems(problems: list[Check], fatal: bool) -> None:
    """One line per problem with its fix; a dry run only warns (it builds nothing)."""
    label = "[bold red]error:[/]" if fatal else "[yellow]warning:[/]"
    for check in problems:
        err.print(f"{label} {escape(check.problem_line())}", markup=True, highlight=False)


def _print_report(report, as_json: bool) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "ok": report.ok,
                    "images": [
                        {
                            "name": b.name,
                            "action": b.action,
                            "reasons": list(b.reasons),
                            "id": b.image_id,
                            "build_id": b.build_id,
                            "tags": list(b.tags),
                            "seconds": round(b.elapsed, 1),
                        }
                        for b in report.built
                    ],
                    "failed": [
                        {"name": f.image, "step": f.step, "log": str(f.log) if f.log else None} for f in report.failed
                    ],
                    "skipped_after_failure": report.skipped_after_failure,
                }
            )
        )
    else:
        built = [b for b in report.built if b.action != "skipped"]
        for b in report.built:
            out.print(f"{b.action} {b.name} ({', '.join(b.reasons)})", highlight=False)
        if not built and report.ok:
            out.print("nothing to build: every image is up to date")
    for failure in report.failed:
        err.print(f"[bold red]error:[/] {escape(str(failure))}", markup=True, highlight=False)
    for name in report.skipped_after_failure:
        err.print(f"not built: {name} (a parent failed)")


def _check(builder: Builder, wanted: list[str], display, cancel: Cancel, as_json: bool) -> None:
    from generator.builder.outputs import load_outputs
    from generator.builder.reproduce import check_reproducible, reset_storage, round_hosts
    from generator.rebuild.provenance import provenance_differences

    work = builder.host.state_dir / "reproduce"
    result = check_reproducible(
        builder.host,
        builder.output_dir,
        builder.project_root,
        wanted,
        builder.options,
        work,
        display,
        cancel,
        keep=True,
    )
    try:  # the provenance each storage's image would get: its deterministic part must be the same bytes
        hosts = round_hosts(builder.host, work)
        names = [r.name for r in result.results if r.reproducible]
        images = load_outputs(builder.output_dir)  # the images, not their platforms' build units
        provenance = provenance_differences(hosts[0], hosts[1], images, names, builder.options.prefix)
    finally:
        for host in round_hosts(builder.host, work):
            reset_storage(host)
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "reproducible": r.reproducible,
                        "first": r.first_id,
                        "second": r.second_id,
                        "differences": list(r.differences),
                        "provenance_differences": provenance.get(r.name, []),
                    }
                    for r in result.results
                ]
            )
        )
    for r in result.results:
        if r.reproducible and not provenance.get(r.name):
            if not as_json:
                out.print(
                    f"[green]reproducible[/] {r.name}: {r.first_id[:12]}, provenance's build definition identical",
                    markup=True,
                    highlight=False,
                )
            continue
        if r.reproducible:
            err.print(f"[bold red]provenance differs[/] {r.name}: {'; '.join(provenance[r.name])}", markup=True)
            continue
        err.print(f"[bold red]NOT reproducible[/] {r.name}: {r.first_id[:12]} vs {r.second_id[:12]}", markup=True)
        for line in r.differences[:50]:
            err.print(f"  {line}", markup=False, highlight=False)
        if len(r.differences) > 50:
            err.print(f"  ... {len(r.differences) - 50} more")
        if r.diffoscope_report:
            err.print(f"  diffoscope report: {r.diffoscope_report}")
    if not result.ok or any(provenance.values()):
        raise typer.Exit(1)
