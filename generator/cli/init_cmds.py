"""`gen s6-overlay add-version`: teach gen the checksums of another s6-overlay release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The s6-overlay provider's table of release checksums.", no_args_is_help=True)
    app.add_typer(group, name="s6-overlay")

    @group.command("add-version")
    def add_version_command(
        version: Annotated[str, typer.Argument(help="Release, e.g. 3.2.0.2.")],
        source: Annotated[Optional[str], typer.Option(
            "--source", help="Release directory: a mirror URL or a local directory holding the .sha256 files "
                             "(default: the project's GitHub releases).", show_default=False)] = None,
        table: Annotated[Optional[Path], typer.Option(
            "--table", help="Checksum table to update (default: the one shipped in gen).", show_default=False)] = None,
    ) -> None:
        """Read the release's published .sha256 files and add its sums to the checksum table.
        A version already in the table must have the same sums (releases never change)."""
        import json

        from generator.cli import out
        from generator.plan.init_layer import add_version, checksum_table, merge_table, table_path
        from generator.registry.release_sums import fetch_sha256_files

        path = table or table_path()
        current = json.loads(path.read_text()) if table is not None and path.exists() else checksum_table()
        entries = add_version(version, fetch_sha256_files(version, source))
        path.write_text(merge_table(current, entries))
        files = entries[version]
        out.print(f"s6-overlay {version}: {len(files)} file(s) in {path}: {', '.join(sorted(files))}")
