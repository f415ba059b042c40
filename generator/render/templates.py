"""The layered template set: a user's directory over the bundled templates.

A user file with the same name as a bundled one replaces it; to override a single block, the
user's file extends the bundled one through the `bundled/` prefix, e.g.
`{% extends "bundled/family/apt.j2" %}{% block packages %}...{% endblock %}`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
import traceback
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.runtime
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from generator.errors import GenError

# What one operator of a user's template may build: `'x' * 10**10` would otherwise ask for 10 GB.
MAX_SEQUENCE_ITEMS = 10_000_000
MAX_INTEGER_BITS = 100_000


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox for a user's templates, with `*` and `**` refusing results too large to hold."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if _result_too_large(operator, left, right):
            raise SecurityError(f"{operator!r} would build a value too large to render")
        return super().call_binop(context, operator, left, right)


def _result_too_large(operator: str, left: object, right: object) -> bool:
    if isinstance(left, int) and isinstance(right, int):
        if operator == "**":
            return abs(left) > 1 and right > 0 and abs(left).bit_length() * right > MAX_INTEGER_BITS
        return left.bit_length() + right.bit_length() > MAX_INTEGER_BITS
    for sequence, count in ((left, right), (right, left)):
        if operator == "*" and isinstance(sequence, (str, bytes, list, tuple)) and isinstance(count, int):
            return len(sequence) * count > MAX_SEQUENCE_ITEMS
    return False


def bundled_dir() -> Path:
    return Path(str(resources.files("generator.templates")))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # the schema rejects them first; this is the last guard


def dockerfile_quote(value: object) -> str:
    """A double-quoted word for ENV and LABEL: no spec value can expand or end the line.

    Newlines and control characters are rejected by the schema before this point."""
    text = str(value)
    if _CONTROL.search(text):
        raise GenError(f"refusing to render a control character into a Dockerfile: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def exec_form(items: Iterable[str]) -> str:
    """A JSON array, the exec form Dockerfile parsers read as JSON (so escapes are JSON's)."""
    return json.dumps(list(items), ensure_ascii=False)


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


class TemplateSet:
    """Jinja environment over [user dir, bundled], plus a content hash of everything it can load."""

    def __init__(self, user_dir: Path | None = None) -> None:
        self.user_dir = user_dir
        bundled = jinja2.FileSystemLoader(str(bundled_dir()))
        loaders: list[jinja2.BaseLoader] = []
        if user_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(user_dir)))
        loaders += [bundled, jinja2.PrefixLoader({"bundled": bundled})]
        # A user's templates (from a repository anyone may change) run sandboxed: they reach only
        # the values they are given, never Python's internals (cycler.__init__.__globals__ and
        # such). gen's own templates are gen's code and skip the sandbox's per-attribute checks.
        environment = BoundedSandbox if user_dir is not None else jinja2.Environment
        self.env = environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,  # one render never sees a template change: no stat per get_template
        )
        self.env.filters.update(shell_quote=shlex.quote, dockerfile_quote=dockerfile_quote, exec_form=exec_form)

    def render(self, template: str, **context: object) -> str:
        try:
            return self.env.get_template(template).render(**context)
        except Exception as exc:  # noqa: BLE001 - whatever a template does wrong is one line, never a traceback
            where, line = getattr(exc, "filename", None), getattr(exc, "lineno", None)
            if where is None:  # a run-time error (a sandbox refusal, 1/0): the innermost template frame
                where, line = self._template_frame(exc) or (template, None)
            what = str(exc) if isinstance(exc, (jinja2.TemplateError, GenError)) else f"{type(exc).__name__}: {exc}"
            raise GenError(f"template {where}{':' + str(line) if line else ''}: {what}") from None

    def _template_frame(self, exc: BaseException) -> tuple[str, int] | None:
        """(template name, line) of the innermost frame of exc's traceback that runs a template:
        jinja2 rewrites those frames to name the template's file and line."""
        roots = [r for r in (self.user_dir, bundled_dir()) if r is not None]
        found = None
        for frame, line in traceback.walk_tb(exc.__traceback__):
            path = Path(frame.f_code.co_filename)
            for root in roots:
                if path.is_relative_to(root):
                    found = (path.relative_to(root).as_posix(), line)
                    break
        return found

    @functools.cache  # noqa: B019 - templates do not change during a render
    def file(self, source: Path) -> tuple[bytes, int]:
        """A template file's bytes and mode as rendered (0o755 or 0o644), read once per render."""
        return source.read_bytes(), 0o755 if _is_executable(source) else 0o644

    @functools.cache  # noqa: B019 - one TemplateSet lives for one render
    def tree(self, prefix: str) -> list[tuple[str, Path]]:
        """Files under `prefix` (e.g. "init/s6"), user files shadowing bundled ones, as
        (relative name, source path)."""
        found: dict[str, Path] = {}
        for root in [bundled_dir()] + ([self.user_dir] if self.user_dir else []):
            for path in _files_under(root / prefix):
                found[path.relative_to(root / prefix).as_posix()] = path
        return sorted(found.items())

    @functools.cache  # noqa: B019 - templates do not change during a render
    def digest(self, parts: tuple[str, ...]) -> str:
        """sha256 over the name, mode bit and bytes of the template files an output uses, user
        files included. parts are file names or, ending in "/", directories (relative to a root);
        templates an output does not use (another family, CI pipelines) do not change it."""
        h = hashlib.sha256()
        for label, root in (("bundled", bundled_dir()), ("user", self.user_dir)):
            if root is None:
                continue
            for path in _files_under(root):
                rel = path.relative_to(root).as_posix()
                if not any(rel == part or (part.endswith("/") and rel.startswith(part)) for part in parts):
                    continue
                h.update(f"{label}/{path.relative_to(root).as_posix()}\0{_is_executable(path)}\0".encode())
                h.update(path.read_bytes())
        return h.hexdigest()


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o100)
