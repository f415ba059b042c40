"""`gen verify NAME|IMAGE`: run the image with podman and print a pass/fail table.

Exit codes: 0 every check passed (or does not apply); 1 a check failed; 2 bad input (no such
image or spec, unknown check name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from generator.builder.host import Host
from generator.cli.options import JsonOption, PrefixOption, ProjectOption, StorageOption, err, error_exit, out
from generator.errors import GenError
from generator.naming import DEFAULT_PREFIX

MARKS = {"pass": "[green]PASS[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}


def results_table(ref: str, results) -> Table:
    table = Table("check", "result", "detail", "time", title=f"gen verify {ref}", title_justify="left")
    for r in results:
        table.add_row(r.name, MARKS[r.status.value], escape(r.detail), f"{r.duration:.1f} s")
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def verify(
        target: Annotated[
            str,
            typer.Argument(
                help="A spec name (verifies <prefix>/NAME:<first tag>) or an image reference.", metavar="NAME|IMAGE"
            ),
        ],
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        check: Annotated[
            list[str] | None,
            typer.Option(
                "--check", help="Run only this check (repeatable); see the table's names.", show_default=False
            ),
        ] = None,
        platform: Annotated[
            str,
            typer.Option(
                "--platform",
                help="For a spec name: verify its image for this platform (e.g. linux/arm64), run "
                "under qemu emulation when foreign.",
                metavar="OS/ARCH",
            ),
        ] = "",
        as_json: JsonOption = False,
    ) -> None:
        """Run the image with podman and check its init layer: PID 1, log rotation, exit codes,
        stop time, reaping, arguments, read-only and arbitrary uid, users, volumes and sysctls.
        Expectations come from the spec embedded in the image. Exit 1 if any check fails."""
        from generator.verify import Podman, resolve_ref, verify_image

        host = Host.from_env(storage_root, project)
        podman = Podman(host)
        try:
            ref = resolve_ref(target, project, prefix.rstrip("/"), podman, platform)
            if as_json:
                results = verify_image(host, ref, podman=podman, only=check, output_dir=project / "output")
            else:
                with err.status(f"verifying {ref}") as status:

                    def progress(result) -> None:
                        status.update(f"verifying {ref}: {result.name} done")

                    results = verify_image(
                        host, ref, podman=podman, only=check, on_result=progress, output_dir=project / "output"
                    )
        except GenError as exc:
            raise error_exit(exc) from None
        failures = [r for r in results if not r.passed]
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "image": ref,
                        "ok": not failures,
                        "checks": [
                            {
                                "name": r.name,
                                "status": r.status.value,
                                "detail": r.detail,
                                "seconds": round(r.duration, 2),
                            }
                            for r in results
                        ],
                    }
                )
            )
        else:
            out.print(results_table(ref, results))
            summary = (
                f"{len(failures)} of {len(results)} check(s) failed"
                if failures
                else f"all {len(results)} check(s) passed"
            )
            out.print(f"[bold red]{summary}[/]" if failures else f"[green]{summary}[/]", markup=True)
        if failures:
            raise typer.Exit(1)
