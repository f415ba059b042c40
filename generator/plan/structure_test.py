"""The container-structure-test config of an image: what its spec promises, as checks users can run.

The config covers the resolved spec (a child's test also checks what it inherits). Command tests
run with the init layer bypassed (container-structure-test replaces the entrypoint), and their
regexes must allow the trailing newline commands print.
"""

from __future__ import annotations

import re
import stat
from typing import Any

from generator.model import Image
from generator.plan import SPEC_PATH, SPEC_PRINTER, BuildArgRef, Plan, SetEnv, SetLabels
from generator.spec.checks import base_accounts

SCHEMA_VERSION = "2.0.0"


def _exact(text: str) -> str:
    """A regex matching exactly text plus the newline a command prints after it."""
    return f"^{re.escape(text)}\\n?$"


def _go_permissions(mode: str) -> str:
    """Go prints setuid/setgid/sticky as leading letters (e.g. 'dgrwxrwxr-x'), not in the triplets."""
    bits = int(mode, 8)
    prefix = "d" + ("u" if bits & 0o4000 else "") + ("g" if bits & 0o2000 else "") + ("t" if bits & 0o1000 else "")
    return prefix + stat.filemode(stat.S_IFREG | (bits & 0o777))[1:]


def _ids(image: Image) -> tuple[dict[str, int], dict[str, int]]:
    """uid by user name and gid by group name: the spec's own, then the base's fixed ones."""
    base_users, base_groups = base_accounts(image.family)
    uids = {"root": 0, **base_users, **{u.name: u.uid for u in image.users}}
    gids = {"root": 0, **base_groups, **{g.name: g.gid for g in image.groups}}
    return uids, gids


def _account_tests(image: Image) -> list[dict[str, Any]]:
    tests = []
    gids = _ids(image)[1]
    for user in image.users:
        tests.append({
            "name": f"user {user.name}: uid, gid, home and shell",
            "command": "getent",
            "args": ["passwd", user.name],
            "expectedOutput": [_exact(f"{user.name}:x:{user.uid}:{gids[user.group]}::{user.home}:{user.shell}")
                               .replace("::", ":[^:]*:")],
        })
        tests.append({
            "name": f"user {user.name}: groups",
            "command": "id",
            "args": ["-nG", user.name],
            "expectedOutput": [f"(^| ){re.escape(g)}( |$)" for g in (user.group, *user.groups)],
        })
    for group in image.groups:
        tests.append({
            "name": f"group {group.name}: gid",
            "command": "getent",
            "args": ["group", group.name],
            "expectedOutput": [f"^{re.escape(group.name)}:x:{group.gid}:"],
        })
    return tests


def _package_tests(image: Image, plan: Plan) -> list[dict[str, Any]]:
    if image.family != "apt":
        return []  # dpkg-query is the apt family's database; apk and rpm differ (see README)
    names = sorted({p.split("=", 1)[0] for p in (*image.packages, *(plan.init.packages if plan.init else ()))})
    return [{
        "name": f"package {name} installed",
        "command": "dpkg-query",
        "args": ["-W", "-f", "${Status}", name],
        "expectedOutput": ["^install ok installed$"],
    } for name in names]


def _file_tests(image: Image, plan: Plan) -> list[dict[str, Any]]:
    uids, gids = _ids(image)
    tests: list[dict[str, Any]] = []
    for user in image.users:
        tests.append({"name": f"home of {user.name}", "path": user.home, "shouldExist": True,
                      "uid": user.uid, "gid": gids[user.group]})
    for volume in image.volumes:
        tests.append({"name": f"volume {volume.path}", "path": volume.path, "shouldExist": True,
                      "permissions": _go_permissions(volume.mode), "uid": uids[volume.owner],
                      "gid": gids[volume.group]})
    if plan.init is not None:
        tests.append({"name": "log directory", "path": image.logging.dir, "shouldExist": True,
                      "permissions": _go_permissions("2775"), "uid": 0, "gid": 0})
        entry = plan.init.entrypoint[0]
        tests.append({"name": "init layer entrypoint", "path": entry, "shouldExist": True,
                      "isExecutableBy": "owner"})
    tests.append({"name": "embedded spec", "path": f"/{SPEC_PATH}", "shouldExist": True,
                  "permissions": "-rw-r--r--", "uid": 0, "gid": 0})
    tests.append({"name": "spec printer", "path": f"/{SPEC_PRINTER}", "shouldExist": True,
                  "isExecutableBy": "any"})
    return tests


def _metadata_test(plan: Plan) -> dict[str, Any]:
    env = next((s.pairs for s in plan.steps if isinstance(s, SetEnv)), ())
    labels = next((s.pairs for s in plan.steps if isinstance(s, SetLabels)), ())
    meta = plan.steps[-1]
    test: dict[str, Any] = {
        "envVars": [{"key": k, "value": v} for k, v in env],
        "labels": [{"key": k, "value": v} for k, v in labels if not isinstance(v, BuildArgRef)],
        "entrypoint": list(meta.entrypoint or ()),
        "cmd": list(meta.cmd or ()),
        "exposedPorts": list(meta.expose),
        "volumes": list(meta.volumes),
    }
    if meta.workdir:
        test["workdir"] = meta.workdir
    if meta.user:
        test["user"] = meta.user
    return test


def structure_test(plan: Plan) -> dict[str, Any]:
    """The config for output/<name>/structure-test.yaml."""
    image = plan.image
    return {
        "schemaVersion": SCHEMA_VERSION,
        "commandTests": _account_tests(image) + _package_tests(image, plan) + [{
            "name": "embedded spec printed by gen-spec",
            "command": f"/{SPEC_PRINTER}",
            "expectedOutput": [f'"name": "{image.name}"'],
        }],
        "fileExistenceTests": _file_tests(image, plan),
        "metadataTest": _metadata_test(plan),
    }
