"""The `gen` command line: the only part of gen that prints.

Exit codes: 0 success; 1 an operation failed (or `render --check` found stale output);
2 bad input (spec errors, unknown names, bad options), with nothing changed.
"""

from __future__ import annotations

import json
import stat
import sys
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from generator import __version__
from generator.cli.options import JsonOption, ProjectOption, err, error_exit, out
from generator.errors import Diagnostic, GenError, SpecError, UsageError
from generator.files import given_path_status


def _flags_show_no_type() -> None:
    """Recent Typer prints a type beside every option, `<bool>` for flags that take no value, which
    reads as if `--json true` were needed; flags show none (older Typer has no such hook)."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "gen_flags_untyped", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.gen_flags_untyped = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_flags_show_no_type()
app = typer.Typer(
    name="gen",
    help="Turn declarative YAML specs into reproducible, s6-supervised container base images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

SpecsArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="Spec files or directories (default: specs/ of the project).", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"gen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print gen's version and exit.")
    ] = False,
) -> None:
    """gen renders specs/ to output/ (Dockerfiles and build contexts), builds them with buildah,
    and verifies the images with podman."""


# Diagnostics printed at most: a list of aliases can expand to tens of thousands of one error, and
# printing them took seconds (Rich) and buried the first ones. The count line says how many in all.
SHOWN_DIAGNOSTICS = 200


def print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    if len(diagnostics) > SHOWN_DIAGNOSTICS:
        hidden = len(diagnostics) - SHOWN_DIAGNOSTICS
        print_diagnostics(diagnostics[:SHOWN_DIAGNOSTICS])
        err.print(f"... and {hidden} more not shown (the first ones above; fix them and run again)")
        return
    for d in diagnostics:
        style = "bold red" if d.severity == "error" else "bold yellow"
        where, path, message, hint = d.parts()
        path = f"{path}: " if path else ""
        err.print(f"[{style}]{d.severity}[/]: [bold]{escape(where)}[/]: {escape(path)}{escape(message)}", markup=True)
        if hint:
            err.print(f"  [dim]hint:[/] {escape(hint)}", markup=True)


def _load(project: Path, specs: list[Path] | None):
    from generator.spec import load_project

    paths = specs or [project / "specs"]
    found = [(p, given_path_status(p, "spec")) for p in paths]
    missing = [p for p, status in found if status is None]
    if missing:
        raise UsageError(f"no such spec file or directory: {', '.join(map(str, missing))}")
    # a FIFO or a device blocks or never ends when read
    odd = [p for p, s in found if s is not None and not (stat.S_ISREG(s.st_mode) or stat.S_ISDIR(s.st_mode))]
    if odd:
        raise UsageError(f"{odd[0]} is not a regular file: give a spec's .yaml file or a directory of them")
    return load_project(paths, project)


def _memo_key(command: str, project: Path, specs: list[Path] | None, templates: Path | None = None) -> str:
    given = sorted(str(p.absolute()) for p in specs) if specs else [str(project.absolute() / "specs")]
    return json.dumps([command, given, str(templates.absolute()) if templates else None])


@app.command()
def validate(specs: SpecsArgument = None, project: ProjectOption = Path("."), as_json: JsonOption = False) -> None:
    """Check specs against the schema and each other; print every problem, change nothing."""
    from generator.memo import Memo, Outcome, recording

    memo = Memo(project)
    key = _memo_key("validate", project, specs)
    outcome = memo.lookup(key)
    if outcome is None:
        from generator.render.project import render_project

        with recording() as reads:
            loaded = _load(project, specs)
            result = render_project(loaded, plan_only=True)  # templates are not run: nothing executes
        outcome = Outcome(tuple(loaded.order()), tuple(result.warnings))
        memo.store(key, reads, outcome, None)
        memo.save()
    warnings = list(outcome.warnings)
    print_diagnostics(warnings)
    if as_json:
        out.print_json(json.dumps({"valid": list(outcome.images), "warnings": [_diagnostic_json(d) for d in warnings]}))
        return
    out.print(f"{len(outcome.images)} spec(s) valid: {', '.join(outcome.images)}")


def _diagnostic_json(d: Diagnostic) -> dict[str, object]:
    fields = ("severity", "file", "line", "column", "path", "message", "hint")
    return {f: getattr(d, f) for f in fields}


@app.command()
def render(
    specs: SpecsArgument = None,
    project: ProjectOption = Path("."),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 with a diff when output/ is stale.")
    ] = False,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", help="Your template directory, overriding the bundled templates."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Render specs to output/<name>/: Dockerfile, build context, .dockerignore, manifest.

    Only changed files are rewritten; with no SPEC given, output dirs of removed specs go too."""
    from generator.memo import Memo, Outcome, recording

    if templates is not None:
        status = given_path_status(templates, "--templates")
        if status is None or not stat.S_ISDIR(status.st_mode):
            raise UsageError(f"--templates {templates}: not a directory")
    output_dir = project / "output"
    memo = Memo(project)
    key = _memo_key("render", project, specs, templates)
    outcome = memo.lookup(key, output_dir)  # the last render's answer, when nothing changed since
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    diff = ""
    if outcome is None:
        from generator.render.shards import check_output, render_to_output

        with recording() as reads:
            loaded = _load(project, specs)
            if check:  # rendered and compared on every core
                warnings, diff = check_output(loaded, templates, output_dir, prune=not specs)
            else:  # written while the render goes on, on every core; put in place only when all rendered
                sharded = render_to_output(loaded, templates, output_dir, prune=not specs)
                warnings, written, removed = sharded.result.warnings, sharded.report.written, sharded.report.removed
        outcome = Outcome(tuple(loaded.order()), tuple(warnings))
        if not diff:  # output/ is now what this render makes
            memo.store(key, reads, outcome, output_dir)
            memo.store(_memo_key("validate", project, specs), reads, outcome, None)
            memo.save()
    print_diagnostics(list(outcome.warnings))
    images = list(outcome.images)
    if check:
        _report_check(images, diff, as_json)
    else:
        _report_render(images, written, removed, as_json)


def _report_check(images: list[str], diff: str, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"up_to_date": not diff, "images": images, "diff": diff}))
        if diff:
            raise typer.Exit(1)
        return
    if diff:
        sys.stdout.write(diff)
        err.print("[bold red]output/ is stale[/]: run `gen render` and commit the result.", markup=True)
        raise typer.Exit(1)
    out.print(f"output/ is up to date for {len(images)} image(s).")


def _report_render(images: list[str], written: tuple[str, ...], removed: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"written": list(written), "removed": list(removed), "images": images}))
        return
    changed_files = Counter(path.split("/", 1)[0] for path in written + removed)
    lines = []
    for name in images:
        changed = changed_files[name]
        lines.append(f"rendered output/{name}/ ({f'{changed} file(s) changed' if changed else 'unchanged'})")
    lines += [f"removed output/{path} (its spec is gone)" for path in removed if path.endswith("/")]
    if lines:  # one print: Rich's cost is per call, and a project may have thousands of images
        out.print("\n".join(lines), markup=False)


class GraphFormat(str, Enum):
    text = "text"
    dot = "dot"
    json = "json"


@app.command()
def graph(
    specs: SpecsArgument = None,
    project: ProjectOption = Path("."),
    format: Annotated[GraphFormat, typer.Option("--format", "-f", help="Output format.")] = GraphFormat.text,
    as_json: JsonOption = False,
) -> None:
    """Print the extends DAG: text tree, Graphviz dot, or JSON (--json, the same as --format json)."""
    format = GraphFormat.json if as_json else format
    loaded = _load(project, specs)
    edges = [(s.parent, s.name) for s in loaded.specs.values() if s.parent]
    if format is GraphFormat.json:
        nodes = [
            {"name": n, "parent": loaded.specs[n].parent, "tags": loaded.specs[n].data["tags"]} for n in loaded.order()
        ]
        out.print_json(json.dumps({"nodes": nodes, "edges": [list(e) for e in edges]}))
    elif format is GraphFormat.dot:
        lines = ["digraph gen {", "  rankdir=LR;"]
        lines += [f'  "{n}";' for n in loaded.order()]
        lines += [f'  "{p}" -> "{c}";' for p, c in edges]
        out.print("\n".join(lines + ["}"]), markup=False)
    else:

        def walk(name: str, depth: int) -> None:
            out.print("  " * depth + name, markup=False)
            for child in loaded.children(name):
                walk(child, depth + 1)

        for name in loaded.order():
            if not loaded.specs[name].parent:
                walk(name, 0)


class SchemaFormat(str, Enum):
    json = "json"
    markdown = "markdown"


@app.command()
def schema(
    format: Annotated[
        SchemaFormat, typer.Option("--format", "-f", help="json: the schema; markdown: the reference table.")
    ] = SchemaFormat.json,
) -> None:
    """Print the spec JSON Schema (draft 2020-12) for editors, or the spec reference."""
    from generator.schema import schema_text
    from generator.schema.reference import markdown_reference

    sys.stdout.write(schema_text() if format is SchemaFormat.json else markdown_reference())


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="Name of the new image (lowercase, digits, . _ -).")],
    extends: Annotated[str | None, typer.Option("--extends", help="Parent spec to build FROM.")] = None,
    project: ProjectOption = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing spec.")] = False,
) -> None:
    """Write specs/NAME.yaml: a commented starter spec that validates."""
    from generator.render.starter import write_starter
    from generator.spec.schema_check import field_problem

    # the schema's rules for a name, before any path is made of it: too long, or reserved
    for value, what, field in ((name, "NAME", "name"), (extends, "--extends", "extends")):
        if value is not None and (problem := field_problem(field, value)) is not None:
            raise UsageError(f"{what}: {problem}")
    path = write_starter(project, name, extends, force)
    out.print(f"wrote {path}; edit it, then run `gen render`.")


def _register_stage_commands() -> None:
    """Commands of the later stages live beside their stage; each module adds its own."""
    import importlib

    for module in (
        "generator.cli.build_cmds",
        "generator.cli.verify_cmds",
        "generator.cli.hints_cmds",
        "generator.cli.registry_cmds",
        "generator.cli.init_cmds",
    ):
        try:
            importlib.import_module(module).register(app)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register_stage_commands()


def main() -> None:
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer's answer to a KeyboardInterrupt inside a command, said silently
            err.print("interrupted")
        if isinstance(code, int):  # click returns the code of ctx.exit() in this mode
            sys.exit(code)
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        errors = sum(d.severity == "error" for d in exc.diagnostics)
        err.print(f"[bold red]{errors} error(s)[/]; nothing was changed.", markup=True)
        sys.exit(2)
    except GenError as exc:
        sys.exit(error_exit(exc).exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors of the CLI framework (typer vendors click, so match by behaviour, not class):
        # they print themselves and carry their exit code, 2 for bad usage.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
