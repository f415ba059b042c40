"""A spec with its parents applied: what every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.errors import Diagnostic
from generator.spec.merge import Origin
from generator.spec.yamlfile import JsonPath, SpecFile


@dataclass(frozen=True)
class ResolvedSpec:
    """name; path of its own file; own (its file's data); data (merged with its parents, every
    schema default filled in); parent (name or None); chain (SpecFiles root first, own last)."""

    name: str
    path: Path
    own: dict[str, Any]
    data: dict[str, Any]
    parent: str | None
    chain: tuple[SpecFile, ...]
    origins: dict[JsonPath, Origin]

    @property
    def file(self) -> SpecFile:
        return self.chain[-1]

    def source_of(self, path: JsonPath) -> tuple[SpecFile, JsonPath]:
        """The file that wrote the value at `path` of the resolved data, and its path there."""
        if len(path) >= 2 and path[:2] in self.origins:
            depth, own_path = self.origins[path[:2]]
            return self.chain[depth], (*own_path, *path[2:])
        best = max(reversed(self.chain), key=lambda f: f.longest_known_prefix(path))  # nearest wins ties
        return best, path

    def diagnostic(
        self, path: JsonPath, message: str, hint: str = "", severity: str = "error", *, key: bool = False
    ) -> Diagnostic:
        """A diagnostic at the line that wrote `path` (in this spec or the parent it came from)."""
        source, source_path = self.source_of(path)
        if source.longest_known_prefix(source_path) == 0:
            source = self.file
        return source.diagnostic(source_path, message, hint, key=key, severity=severity)
