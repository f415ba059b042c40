"""`gen new`: a commented starter spec, rendered from a template and checked before it is written."""

from __future__ import annotations

import os
import re
from pathlib import Path

from generator.errors import GenError, UsageError
from generator.render.templates import TemplateSet
from generator.spec.schema_check import check_against_schema
from generator.spec.yamlfile import read_spec_file

_NAME = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*$")


def starter_text(name: str, extends: str | None, schema_path: str) -> str:
    return TemplateSet().render("new-spec.yaml.j2", name=name, extends=extends, schema_path=schema_path)


def write_starter(project: Path, name: str, extends: str | None, force: bool) -> Path:
    for value, what in ((name, "NAME"), (extends, "--extends")):
        if value is not None and not _NAME.match(value):
            raise UsageError(f"{what} {value!r}: use lowercase letters and digits, separated by . _ or -")
    specs = project / "specs"
    if specs.is_symlink():
        raise UsageError(f"{specs} is a symlink (to {os.readlink(specs)}): gen writes only inside the project")
    path = specs / f"{name}.yaml"
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    if extends and not any((specs / f"{extends}{ext}").exists() for ext in (".yaml", ".yml")):
        raise UsageError(f"--extends {extends}: no specs/{extends}.yaml")
    from generator.schema import __file__ as schema_pkg

    schema = Path(schema_pkg).parent / "spec.schema.json"
    text = starter_text(name, extends, os.path.relpath(schema, specs.resolve()) if specs.exists() else str(schema))
    specs.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.new")
    draft.unlink(missing_ok=True)  # a leftover, or a link a repository committed: never written through
    with draft.open("x", encoding="utf-8") as handle:
        handle.write(text)
    spec, problems = read_spec_file(draft, str(path))
    problems += check_against_schema(spec) if spec is not None else []
    if problems:  # the template is ours: a starter that does not validate is gen's bug
        draft.unlink()
        raise GenError("the starter spec does not validate:\n" + "\n".join(p.format() for p in problems))
    draft.replace(path)
    return path
