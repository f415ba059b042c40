"""How a child spec's fields combine with its parent's (the table in README.md), and schema defaults.

merge() also records, for every list entry of the result, which file and which own index it came
from, so a diagnostic about a merged entry points at the line that wrote it.
"""

from __future__ import annotations

from typing import Any

from generator.schema import spec_schema
from generator.spec.yamlfile import JsonPath

MERGE_RULES = ("not-inherited", "replaced", "merged-map", "appended", "keyed", "own-only")


def merge_rules() -> dict[str, str]:
    """Each top-level field's rule, from the schema's `x-gen-merge` annotation (the one place it is
    written; keyed lists name their key in `x-gen-merge-key`). checks.py keeps a child's
    platforms within its parent's and refuses a child's base."""
    return {field: str(prop["x-gen-merge"]) for field, prop in spec_schema()["properties"].items()}


def _fields(rule: str) -> tuple[str, ...]:
    return tuple(field for field, r in merge_rules().items() if r == rule)


NOT_INHERITED = _fields("not-inherited")
MERGED_MAPS = _fields("merged-map")
APPENDED_LISTS = _fields("appended")
KEYED_LISTS = {field: str(spec_schema()["properties"][field]["x-gen-merge-key"]) for field in _fields("keyed")}
OWN_ONLY = _fields("own-only")

# Where a merged list entry came from: (index of the spec in the chain, path in that spec's own data).
Origin = tuple[int, JsonPath]


def _copy(value: Any) -> Any:
    """A deep copy of plain spec data (dicts, lists, immutable scalars): five times cheaper than
    copy.deepcopy, which keeps a memo for shared and cyclic objects that spec data never has."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _merge_maps(parent: dict, child: dict) -> dict:
    result = _copy(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge_maps(result[key], value)
        else:
            result[key] = _copy(value)
    return result


def _append_unique(field: str, parent: list, child: list, parent_origins: dict, depth: int, origins: dict) -> list:
    result: list = []
    for item, origin in [(item, parent_origins[(field, i)]) for i, item in enumerate(parent)] + [
        (item, (depth, (field, i))) for i, item in enumerate(child)
    ]:
        if item not in result:
            origins[(field, len(result))] = origin
            result.append(item)
    return result


def _merge_keyed(
    field: str, key: str, parent: list, child: list, parent_origins: dict, depth: int, origins: dict
) -> list:
    result = [_copy(item) for item in parent]
    for index in range(len(parent)):
        origins[(field, index)] = parent_origins[(field, index)]
    positions = {item.get(key): i for i, item in enumerate(result)}
    for index, item in enumerate(child):
        at = positions.setdefault(item.get(key), len(result))
        if at == len(result):
            result.append(None)
        result[at] = _copy(item)
        origins[(field, at)] = (depth, (field, index))
    return result


def own_origins(data: dict, depth: int) -> dict[JsonPath, Origin]:
    """Origins of a spec's own list entries: each is where it is written."""
    return {
        (field, i): (depth, (field, i))
        for field, value in data.items()
        if isinstance(value, list)
        for i in range(len(value))
    }


def merge(
    parent: dict, parent_origins: dict[JsonPath, Origin], child: dict, depth: int
) -> tuple[dict, dict[JsonPath, Origin]]:
    """The resolved data of a child at chain position `depth`, from its parent's resolved data.

    parent_origins must cover every top-level list entry of parent; the result's origins do too.
    """
    result = {k: _copy(v) for k, v in parent.items() if k not in NOT_INHERITED + OWN_ONLY}
    origins = {path: origin for path, origin in parent_origins.items() if path[0] in result and path[0] not in child}
    for field, value in child.items():
        if field in MERGED_MAPS and isinstance(value, dict) and isinstance(parent.get(field, {}), dict):
            result[field] = _merge_maps(parent.get(field, {}), value)
        elif field in APPENDED_LISTS and isinstance(value, list):
            result[field] = _append_unique(field, parent.get(field, []), value, parent_origins, depth, origins)
        elif field in KEYED_LISTS and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            result[field] = _merge_keyed(
                field, KEYED_LISTS[field], parent.get(field, []), value, parent_origins, depth, origins
            )
        else:
            result[field] = _copy(value)
            if isinstance(value, list):
                origins.update(own_origins({field: value}, depth))
    return result, origins


def _definition(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref", "")
    return spec_schema()["$defs"][ref.rsplit("/", 1)[1]] if ref.startswith("#/$defs/") else node


def _defaults_whole(node: dict[str, Any]) -> bool:
    """An object left out is created from its defaults, unless it needs a field or a choice
    (`oneOf`: e.g. readiness is a check or a notification, and none is not a default)."""
    return node.get("type") == "object" and "properties" in node and not node.get("required") and "oneOf" not in node


def _object_form(items: dict[str, Any]) -> dict[str, Any]:
    """The object form of list items given as a one-of string-or-object (rootfs: DIR or {src,
    dest}); the items themselves otherwise."""
    return next((o for o in items.get("oneOf", []) if _definition(o).get("type") == "object"), items)


def _fill_properties(node: dict[str, Any], value: dict[str, Any]) -> None:
    for key, prop in node["properties"].items():
        if key not in value:
            if "default" in prop:
                value[key] = _copy(prop["default"])
            elif _defaults_whole(_definition(prop)):
                value[key] = {}
        if key in value:
            _fill(prop, value[key])


def _fill(node: dict[str, Any], value: Any) -> None:
    node = _definition(node)
    if isinstance(value, dict):
        if "properties" in node:
            _fill_properties(node, value)
        entries = node.get("additionalProperties")
        if isinstance(entries, dict):  # a map's values (each profile) get their own defaults
            for key, entry in value.items():
                if key not in node.get("properties", {}):
                    _fill(entries, entry)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for entry in value:
            if isinstance(entry, dict):  # a string entry keeps its short form: it is the user's text
                _fill(_object_form(node["items"]), entry)


def _node_at(path: JsonPath) -> dict[str, Any]:
    """The schema of the field at path: keys name properties or map entries, indexes list items
    (in their object form)."""
    node = spec_schema()
    for step in path:
        node = _definition(node)
        if isinstance(step, int):
            node = _object_form(node["items"])
        else:
            node = node.get("properties", {}).get(step) or node["additionalProperties"]
    return node


def with_defaults(data: dict) -> dict:
    """A copy of resolved data with every schema default filled in, objects created where needed."""
    result = _copy(data)
    _fill(spec_schema(), result)
    return result


def with_defaults_at(path: JsonPath, value: dict) -> dict:
    """A copy of value, as the object at path, with its schema defaults filled in: an object the
    spec left out (("logging", "forward"), {"to": ""}) or gave in a short form (("rootfs", 0),
    {"src": DIR})."""
    result = _copy(value)
    _fill(_node_at(path), result)
    return result
