"""`gen hints`: how to run an image with its sysctls and volumes set by the runtime."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from generator.cli.options import JsonOption, PrefixOption, ProjectOption


def register(app: typer.Typer) -> None:
    @app.command()
    def hints(
        name: Annotated[str, typer.Argument(help="Spec name.")],
        project: ProjectOption = Path("."),
        prefix: PrefixOption = "localhost/gen",
        as_json: JsonOption = False,
        flags_only: Annotated[
            bool,
            typer.Option(
                "--flags",
                help="Only the --sysctl run flags (volumes need your "
                'host paths), shell-quoted on one line: eval "podman run $(gen hints NAME --flags) IMAGE".',
            ),
        ] = False,
    ) -> None:
        """Print podman/docker run flags, a compose snippet and a Kubernetes securityContext
        that set the image's sysctls and volumes without --privileged."""
        from generator.cli import _load, out
        from generator.errors import UsageError
        from generator.model import build_image
        from generator.plan import image_ref
        from generator.plan.hints import runtime_hints

        loaded = _load(project, None)
        if name not in loaded.specs:
            raise UsageError(f"no spec named {name!r}; known: {', '.join(loaded.order())}")
        image = build_image(loaded.specs[name])
        h = runtime_hints(image, image_ref(image.name, image.tags[0], prefix))
        if flags_only:
            # Quoted: a multi-word value (kernel.sem=250 32000 32 128) stays one argument when pasted or eval'd.
            out.print(shlex.join(f for f in h.run_flags() if f.startswith("--sysctl=")), markup=False)
            return
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "run_flags": h.run_flags(),
                        "compose": h.compose(name),
                        "kubernetes": h.kubernetes(),
                        "node_level": dict(h.node_level),
                        "unsafe_for_kubernetes": list(h.unsafe_for_kubernetes()),
                    }
                )
            )
            return
        out.print("# podman" if h.run_as and h.volumes else "# podman / docker", markup=False)
        out.print(shlex.join(["podman", "run", *h.run_flags(), h.image_ref]), markup=False)
        out.print("\n# compose", markup=False)
        if h.run_as and h.volumes:
            uid, gid = h.run_as
            out.print(
                f"# the image runs as uid {uid}: give it the host directories (chown {uid}:{gid} DIR), "
                'or start it as root (user: "0") so its init re-owns them',
                markup=False,
            )
        out.print(_yaml(h.compose(name)), markup=False, end="")
        out.print("\n# Kubernetes pod spec", markup=False)
        out.print(_yaml(h.kubernetes()), markup=False, end="")
        if h.unsafe_for_kubernetes():
            keys = ",".join(h.unsafe_for_kubernetes())
            out.print(
                f"# not in Kubernetes' safe set: start the kubelet with --allowed-unsafe-sysctls={keys}", markup=False
            )
        for key, value in h.node_level:
            out.print(f"# node-level, set on the host: sysctl -w {key}={shlex.quote(value)}", markup=False)


def _yaml(data: dict) -> str:
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()
