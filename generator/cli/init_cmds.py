"""`gen s6-overlay add-version`: teach a project the checksums of another s6-overlay release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from generator.cli.options import looked_up


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The s6-overlay provider's table of release checksums.", no_args_is_help=True)
    app.add_typer(group, name="s6-overlay")

    @group.command("add-version")
    def add_version_command(
        version: Annotated[str, typer.Argument(help="Release, e.g. 3.2.0.2.")],
        sums_from: Annotated[
            str | None,
            typer.Option(
                "--sums-from",
                help="Where the release's .sha256 files are: a mirror URL or a local directory (default: "
                "the project's GitHub releases).",
                show_default=False,
            ),
        ] = None,
        project: Annotated[
            Path,
            typer.Option(
                "--project",
                "-C",
                help="Project root: the table is its s6-overlay-checksums.json.",
                envvar="GEN_PROJECT",
                callback=looked_up,
            ),
        ] = Path("."),
        table: Annotated[
            Path | None,
            typer.Option(
                "--table",
                help="Write this table instead (e.g. gen's shipped one, when releasing gen).",
                show_default=False,
                callback=looked_up,
            ),
        ] = None,
    ) -> None:
        """Read the release's published .sha256 files and record its sums in the project, so specs
        can name the version without listing checksums. A version gen already knows must have the
        same sums (releases never change)."""
        from generator.cli import out
        from generator.files import given_path_status, write_text_atomic
        from generator.plan.init_layer import (
            add_version,
            known_checksums,
            merge_table,
            project_table_path,
            read_project_table,
        )
        from generator.rebuild.release_sums import fetch_sha256_files

        if sums_from is not None and not sums_from.startswith(("http://", "https://", "file://")):
            given_path_status(Path(sums_from), "--sums-from")  # a local directory
        path = table or project_table_path(project)
        if path.is_symlink():
            raise typer.BadParameter(f"{path} is a symlink: gen writes only the project's own files")
        entries = add_version(version, fetch_sha256_files(version, sums_from))
        merge_table(known_checksums(project), entries)  # a known release's sums must not change
        current = read_project_table(path)
        write_text_atomic(path, merge_table(current, entries))
        files = entries[version]
        out.print(f"s6-overlay {version}: {len(files)} file(s) in {path}: {', '.join(sorted(files))}")
