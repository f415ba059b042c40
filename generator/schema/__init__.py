"""The JSON Schema of a spec: the one source of truth for spec fields."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from generator.platforms import Platform

# The package-manager family of each distro the schema allows; selects templates/family/<family>.j2.
FAMILY_BY_DISTRO = {
    "debian": "apt",
    "ubuntu": "apt",
    "alpine": "apk",
    "fedora": "dnf",
    "centos": "dnf",
    "rhel": "dnf",
    "rocky": "dnf",
    "almalinux": "dnf",
}
# The distros mmdebstrap bootstraps: the apt family's (other families start from an image).
BOOTSTRAP_DISTROS = tuple(distro for distro, family in FAMILY_BY_DISTRO.items() if family == "apt")


def platform_suffix(platform: str) -> str:
    """The tag suffix of a platform's own image: linux/arm64 -> arm64, linux/arm/v7 -> arm-v7."""
    return Platform.parse(platform).suffix


@cache
def spec_schema() -> dict[str, Any]:
    """The spec schema as a dict (cached; treat as read-only)."""
    text = resources.files(__package__).joinpath("spec.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def syslog_facility_code(name: str) -> int:
    """RFC 5424's number of a facility the schema allows: it lists kern to ftp (0-11), then local0
    to local7 (16-23)."""
    names = spec_schema()["properties"]["logging"]["properties"]["forward"]["properties"]["facility"]["enum"]
    index = names.index(name)
    return index if index < 12 else index + 4


def schema_text() -> str:
    """The schema file's exact text, for `gen schema` and editors."""
    return resources.files(__package__).joinpath("spec.schema.json").read_text(encoding="utf-8")
