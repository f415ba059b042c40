"""Render a whole project: every resolved spec through model and plan to rendered files.

All problems found on the way (a missing overlay directory, a node-level sysctl) are collected
and raised together as one SpecError, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from generator.contract import (
    Base,
    BootstrapBase,
    EmbeddedSpec,
    InitPins,
    LocalBase,
    Manifest,
    ParentBase,
    RegistryBase,
)
from generator.errors import Diagnostic, GenError, SpecError, SpecFieldError, UsageError
from generator.files import first_link, is_dir
from generator.model import Image, build_image
from generator.plan import make_plan
from generator.plan.init_layer import FetchStage, known_checksums
from generator.plan.sysctl import node_level_keys
from generator.render import RenderedImage, render_image, templates_used
from generator.render.templates import TemplateSet
from generator.spec import Project, ResolvedSpec
from generator.spec.project import outside_project


@dataclass(frozen=True)
class ProjectRender:
    images: list[RenderedImage]  # in build order, parents first
    warnings: list[Diagnostic]


def _sha256_json(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def bootstrap_key(image: Image) -> str:
    """Names the bootstrapped rootfs by what decides its content; the mirror is a build input and
    deliberately left out, so output/ is the same on every machine."""
    b = image.base.bootstrap
    if b is None:
        return ""
    params = {
        "distro": image.base.distro,
        "release": image.base.release,
        "variant": b.variant,
        "components": list(b.components),
        "include": list(b.include),
        "snapshot": b.snapshot,
        "source_date_epoch": b.source_date_epoch,
    }
    return _sha256_json(params)[:12]


def _base(image: Image, base_kind: str, base_image: str) -> Base:
    b = image.base.bootstrap
    if base_kind == "bootstrap" and b is not None:
        return BootstrapBase(
            image=base_image,
            distro=image.base.distro,
            release=image.base.release,
            variant=b.variant,
            components=tuple(b.components),
            include=tuple(b.include),
            snapshot=b.snapshot,
            source_date_epoch=b.source_date_epoch,
            mirror=b.mirror,
        )
    if base_kind == "image":
        return RegistryBase(base_image)
    return LocalBase(base_image) if base_kind == "local" else ParentBase(base_image)


def _relative(path: Path, real_root: Path) -> str:
    """path relative to the project (real_root is the root resolved, once per render: a resolve
    is an lstat per path component)."""
    try:
        return path.resolve().relative_to(real_root).as_posix()
    except ValueError:
        return path.as_posix()


def _foreign(directory: Path, root: Path, what: str) -> tuple[str, str] | None:
    """(message, hint) when a directory leads out of the project or holds a symlink: gen would
    copy (or run) whatever it points at, /etc or another user's files included."""
    if (why := outside_project(directory, root)) is not None:
        return f"{what} {why}", "keep it inside the project, as a real directory"
    link = first_link(directory)
    if link is not None:
        return (
            f"{what} {directory} holds a symlink, {link.relative_to(directory)} -> "
            f"{os.readlink(link)}, which gen does not follow",
            "replace it with the file itself, or create the link in the image (a RUN step of "
            "your template); gen copies only regular files",
        )
    return None


def _foreign_tree(spec: ResolvedSpec, field: tuple, directory: Path, root: Path, what: str) -> Diagnostic | None:
    """_foreign's problem at the spec field that names the directory."""
    if (problem := _foreign(directory, root, what)) is None:
        return None
    return spec.diagnostic(field, *problem)


def _check_templates_option(templates_dir: Path, root: Path) -> None:
    """--templates gets the spec field's check, before any template runs: a link in it (or the
    directory itself a link out) would render a file from anywhere into every Dockerfile. Said
    as a spec error is (with its hint), from the parent or a forked child alike."""
    if (problem := _foreign(templates_dir, root, "template directory")) is not None:
        raise SpecError([Diagnostic("--templates", 0, 0, "", *problem)])


def _check_image(spec: ResolvedSpec, image: Image, root: Path) -> tuple[list[Diagnostic], list[Diagnostic]]:
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    for key in node_level_keys(image):
        diag = spec.diagnostic(
            ("sysctls", "values", key),
            f"{key} is a node-level sysctl: the kernel does not namespace it, so no container can set it",
            "set it on the host (sysctl -w / /etc/sysctl.d), or set sysctls.node_level: warn to keep it "
            "as a documented requirement",
            severity="error" if image.sysctls.node_level == "error" else "warning",
        )
        (errors if diag.severity == "error" else warnings).append(diag)
    for path, overlay in image.overlays():
        if not is_dir(overlay.src):
            errors.append(
                spec.diagnostic(
                    path,
                    f"overlay directory {overlay.src} does not exist or is not a directory",
                    "create it, or fix the path (relative to the spec file)",
                )
            )
        elif (problem := _foreign_tree(spec, path, overlay.src, root, "overlay")) is not None:
            errors.append(problem)
        elif not any(entry.is_file() for entry in overlay.src.rglob("*")):
            # git keeps no empty directory: a fresh clone would lack it, and the build's COPY fails
            errors.append(
                spec.diagnostic(
                    path,
                    f"overlay directory {_relative(overlay.src, root.resolve())} holds no files",
                    "put the files to copy in it, or remove it from the list",
                )
            )
    if image.templates is not None and not is_dir(image.templates):
        errors.append(
            spec.diagnostic(
                ("templates",), f"template directory {image.templates} does not exist", "create it or remove the field"
            )
        )
    elif (
        image.templates is not None
        and (problem := _foreign_tree(spec, ("templates",), image.templates, root, "template directory")) is not None
    ):
        errors.append(problem)
    return errors, warnings


def _init_pins(kind: str, fetch: FetchStage | None) -> InitPins:
    """What the lock records of the init layer: the release files the build verifies, by sha256."""
    if fetch is None:
        return InitPins(kind)
    return InitPins(kind, fetch.version, tuple((f.name, f.sha256) for f in fetch.files))


def render_project(
    project: Project,
    templates_dir: Path | None = None,
    *,
    plan_only: bool = False,
    on_rendered: Callable[[RenderedImage], None] | None = None,
    share: Collection[str] | None = None,
) -> ProjectRender:
    """Render every spec of the project. templates_dir (the CLI's --templates) wins over a spec's own.
    plan_only: decide every image's plan (all the checks) but render no template (`gen validate`).
    on_rendered: given each image as soon as it is rendered (an OutputWriter's add), before the
    whole project is known to be free of errors.
    share: the names of the images to render (one process's share, see render.shards), all when
    None; every image is still checked and planned (a child's plan needs its parent's), so
    errors and warnings are the whole project's, but for templates that fail."""
    if templates_dir is not None:
        _check_templates_option(templates_dir, project.root)
    template_sets: dict[Path | None, TemplateSet] = {}
    s6_overlay_sums = known_checksums(project.root)
    real_root = project.root.resolve()
    images: dict[str, Image] = {}
    rendered: list[RenderedImage] = []
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    for name in project.order():
        spec = project.specs[name]
        image = build_image(spec)
        images[name] = image
        errs, warns = _check_image(spec, image, project.root)
        errors += errs
        warnings += warns
        if errs:
            continue
        parent = images.get(spec.parent) if spec.parent else None
        spec_file = spec.file.display  # the spec's path relative to the project
        resolved_spec_json = EmbeddedSpec(spec.data).to_json()  # baked into the image; its sha256 in the manifest
        try:
            plan = make_plan(
                image,
                parent,
                spec_file=spec_file,
                resolved_spec_json=resolved_spec_json,
                bootstrap_key=bootstrap_key(image),
                s6_overlay_sums=s6_overlay_sums,
            )
        except SpecFieldError as exc:
            errors.append(spec.diagnostic(exc.path, exc.message, exc.hint))
            continue
        if plan_only or (share is not None and name not in share):
            continue
        user_dir = templates_dir or image.templates
        if user_dir not in template_sets:  # one Jinja environment per template directory, not per image
            template_sets[user_dir] = TemplateSet(user_dir)
        templates = template_sets[user_dir]
        fetch = plan.init.fetch_stage if plan.init is not None else None
        manifest = Manifest(
            name=name,
            tags=tuple(image.tags),
            spec=spec_file,
            resolved_spec_sha256=hashlib.sha256(resolved_spec_json.encode()).hexdigest(),
            templates_sha256=templates.digest(templates_used(plan)),
            parent=spec.parent,
            base=_base(image, plan.base_kind, plan.base_image),
            source_date_epoch=plan.source_date_epoch,
            overlays=tuple(_relative(o.src, real_root) for _, o in image.overlays()),
            platforms=tuple(image.platforms) if image.platforms else None,
            served_dirs=(("S6_OVERLAY_BASE_URL", fetch.local_dir),) if fetch is not None and fetch.local_dir else (),
            platform_build_args=tuple(
                (p, (("S6_OVERLAY_ARCH", a),)) for p, a in (fetch.platform_archs if fetch is not None else ())
            ),
            init=_init_pins(image.init.kind, fetch),
            image_format=plan.image_format,
        )
        try:
            rendered.append(render_image(plan, templates, manifest))
        except GenError as exc:
            # bad input the image names (an overlay's file) carries its own fix; else a template failed
            hint = "" if isinstance(exc, UsageError) else "fix the template named above"
            errors.append(Diagnostic(spec_file, 0, 0, "", str(exc), hint))
            continue
        if on_rendered is not None:
            on_rendered(rendered[-1])
    warnings = list(dict.fromkeys(warnings))  # a parent's line inherited by children is said once
    if errors:
        raise SpecError(sorted(errors, key=lambda d: (d.file, d.line, d.column)) + warnings)
    return ProjectRender(rendered, warnings)
