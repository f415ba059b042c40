"""The container-structure-test config of an image: what its spec promises, as checks users can run.

The config covers the resolved spec (a child's test also checks what it inherits). Command tests
run with the init layer bypassed (container-structure-test replaces the entrypoint), and their
regexes must allow the trailing newline commands print.
"""

from __future__ import annotations

import re
from typing import Any

from generator.model import Image
from generator.plan import SPEC_PATH, SPEC_PRINTER, Plan, SetEnv, SetLabels
from generator.plan.accounts import account_ids

SCHEMA_VERSION = "2.0.0"


def _exact(text: str) -> str:
    """A regex matching exactly text plus the newline a command prints after it."""
    return f"^{re.escape(text)}\\n?$"


def _ownership_test(name: str, path: str, uid: int, gid: int, mode: str | None = None) -> dict[str, Any]:
    """Owner (and mode) checked by running stat in the container: podman's Docker-API archive
    endpoint reports files as owned by the caller, and volumes are not in a created container's
    file tree, so fileExistenceTests' uid/gid fields cannot be trusted there."""
    expected = f"{uid}:{gid}" + (f" {int(mode, 8):o}" if mode else "")
    fmt = "%u:%g" + (" %a" if mode else "")
    return {"name": name, "command": "stat", "args": ["-c", fmt, path], "expectedOutput": [_exact(expected)]}


def _account_tests(image: Image) -> list[dict[str, Any]]:
    tests = []
    gids = account_ids(image)[1]
    for user in image.users:
        tests.append(
            {
                "name": f"user {user.name}: uid, gid, home and shell",
                "command": "getent",
                "args": ["passwd", user.name],
                "expectedOutput": [
                    _exact(f"{user.name}:x:{user.uid}:{gids[user.group]}::{user.home}:{user.shell}").replace(
                        "::", ":[^:]*:"
                    )
                ],
            }
        )
        tests.append(
            {
                "name": f"user {user.name}: groups",
                "command": "id",
                "args": ["-nG", user.name],
                # Go's regexp: $ is the end of the text, after the newline the command prints.
                "expectedOutput": [f"(^| ){re.escape(g)}( |\\n|$)" for g in (user.group, *user.groups)],
            }
        )
    for group in image.groups:
        tests.append(
            {
                "name": f"group {group.name}: gid",
                "command": "getent",
                "args": ["group", group.name],
                "expectedOutput": [f"^{re.escape(group.name)}:x:{group.gid}:"],
            }
        )
    return tests


def _package_tests(image: Image, plan: Plan) -> list[dict[str, Any]]:
    if image.family != "apt":
        return []  # dpkg-query is the apt family's database; apk and rpm differ (see README)
    names = sorted({p.split("=", 1)[0] for p in (*image.packages, *(plan.init.packages if plan.init else ()))})
    # Not dpkg-query -f '${Status}': container-structure-test expands ${...} in arguments.
    return [
        {
            "name": f"package {name} installed",
            "command": "dpkg",
            "args": ["-s", name],
            "expectedOutput": ["(?m)^Status: install ok installed$"],
        }
        for name in names
    ]


def _ownership_tests(image: Image, plan: Plan) -> list[dict[str, Any]]:
    uids, gids = account_ids(image)
    tests = [_ownership_test(f"home of {u.name}", u.home, u.uid, gids[u.group]) for u in image.users]
    tests += [_ownership_test(f"volume {v.path}", v.path, uids[v.owner], gids[v.group], v.mode) for v in image.volumes]
    if plan.init is not None:
        # PID 1's user owns it, group 0 (an arbitrary uid's group) shares it.
        tests.append(_ownership_test("log directory", image.logging.dir, uids[image.runs_as], 0, "2775"))
    return tests


def _file_tests(plan: Plan) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = []
    if plan.init is not None:
        tests.append(
            {
                "name": "init layer entrypoint",
                "path": plan.init.entrypoint[0],
                "shouldExist": True,
                "isExecutableBy": "owner",
            }
        )
    tests.append({"name": "embedded spec", "path": f"/{SPEC_PATH}", "shouldExist": True, "permissions": "-rw-r--r--"})
    tests.append({"name": "spec printer", "path": f"/{SPEC_PRINTER}", "shouldExist": True, "isExecutableBy": "any"})
    return tests


def _metadata_test(plan: Plan) -> dict[str, Any]:
    env = next((s.pairs for s in plan.steps if isinstance(s, SetEnv)), ())
    labels = next((s.pairs for s in plan.steps if isinstance(s, SetLabels)), ())
    meta = plan.metadata
    test: dict[str, Any] = {
        "envVars": [{"key": k, "value": v} for k, v in env],
        "labels": [{"key": k, "value": v} for k, v in labels],
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
        "commandTests": _account_tests(image)
        + _ownership_tests(image, plan)
        + _package_tests(image, plan)
        + [
            {
                "name": "embedded spec printed by gen-spec",
                "command": f"/{SPEC_PRINTER}",
                "expectedOutput": [f'"name": "{image.name}"'],
            }
        ],
        "fileExistenceTests": _file_tests(plan),
        "metadataTest": _metadata_test(plan),
    }
