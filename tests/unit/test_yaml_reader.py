"""The spec reader (libyaml's events, ruamel's YAML 1.2 scalar rules) means what ruamel.yaml's
round-trip loader, gen's reader before it, meant: the same data and the same line and column for
every key and value, on the bundled specs and on generated documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from generator.spec.yamlfile import read_spec_file

ROOT = Path(__file__).resolve().parents[2]


def _ruamel_reading(text: str) -> tuple[Any, dict, dict] | None:
    """What ruamel's round-trip loader makes of text: (data, value positions, key positions), or
    None when it refuses the text."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(text)
    except (YAMLError, ValueError, IndexError):  # IndexError: ruamel on "-_" or "0x_" (an int it cannot build)
        return None
    values: dict = {(): (1, 1)}
    keys: dict = {}

    def plain(node: Any, path: tuple) -> Any:
        if isinstance(node, CommentedMap):
            out = {}
            for key, value in node.items():
                line, column = node.lc.key(key)
                vline, vcolumn = node.lc.value(key)
                keys[(*path, key)] = (line + 1, column + 1)
                values[(*path, key)] = (vline + 1, vcolumn + 1)
                out[key] = plain(value, (*path, key))
            return out
        if isinstance(node, CommentedSeq):
            out_list = []
            for index, value in enumerate(node):
                line, column = node.lc.item(index)
                values[(*path, index)] = (line + 1, column + 1)
                out_list.append(plain(value, (*path, index)))
            return out_list
        for plain_type in (bool, str, int, float):
            if isinstance(node, plain_type):
                return plain_type(node)
        return node

    return plain(document, ()), values, keys


def _gen_reading(tmp_path: Path, text: str):
    """gen's reading in the same shape, or the first problem's diagnostic when it refuses text."""
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    spec, problems = read_spec_file(path, "spec.yaml")
    if spec is None or problems:
        return problems[0]
    return spec.data, spec.value_positions, spec.key_positions


def _without_empty_value_positions(reading):
    """An empty value (`key:` and nothing) is null; ruamel places it at the next token, libyaml
    where it would have been, on the key's line. Neither is compared."""
    data, values, keys = reading

    def at(path):
        node = data
        for part in path:
            node = node[part]
        return node

    return data, {path: pos for path, pos in values.items() if at(path) is not None}, keys


def test_every_bundled_spec_reads_the_same_as_with_ruamel(tmp_path):
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    assert specs
    for spec in specs:
        text = spec.read_text()
        assert _gen_reading(tmp_path, text) == _ruamel_reading(text), spec.name


# Plain scalars whose meaning differs between YAML 1.1 and 1.2, or between loaders.
TRICKY = [
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "0750",
    "0o750",
    "0x1F",
    "1_000",
    "1e3",
    "1.5e-3",
    ".inf",
    "-.inf",
    ".nan",
    "~",
    "null",
    "Null",
    "NULL",
    "true",
    "True",
    "FALSE",
    "12:30",
    "12:30:45",
    "2024-01-01",
    "-0",
    "+1",
    "0b101",
    "1:2:3",
    "''",
    '""',
    "'a''b'",
    '"a\\tb"',
    "a b",
    "a#b",
    "a #b",
    "-",
    "--",
    "1.",
    ".5",
    "0.",
    "1_0.5",
    "0xfF",
    "@x",
    "`x",
    "a: b",
    "[a, 1]",
    "{a: 1, b: [no, 0750]}",
    "!",
    "*a",
    "&a x",
    "-_",
    "0x_",
]

scalar_text = st.one_of(
    st.sampled_from(TRICKY), st.text(st.sampled_from("0123456789.:-+_eExXoObB#~ ynfa'\"\\t"), min_size=1, max_size=8)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.filterwarnings("ignore::ruamel.yaml.error.ReusedAnchorWarning")
@given(values=st.lists(scalar_text, min_size=1, max_size=4), flow=st.booleans())
def test_generated_documents_read_the_same_as_with_ruamel(tmp_path, values, flow):
    """When ruamel reads a document, gen reads the same data at the same positions. (gen refuses
    more: tags, merge keys, non-string keys; those are not compared.)"""
    if flow:
        text = (
            "name: x\nlist: ["
            + ", ".join(values)
            + "]\nmap: {"
            + ", ".join(f"k{i}: {v}" for i, v in enumerate(values))
            + "}\n"
        )
    else:
        text = (
            "name: x\nlist:\n"
            + "".join(f"  - {v}\n" for v in values)
            + "".join(f"k{i}: {v}\n" for i, v in enumerate(values))
        )
    ours, theirs = _gen_reading(tmp_path, text), _ruamel_reading(text)
    if isinstance(ours, tuple) and theirs is not None:
        assert _without_empty_value_positions(ours) == _without_empty_value_positions(theirs), text
    elif not isinstance(ours, tuple):
        # Refused: never silently, always one line that says where. libyaml follows YAML 1.1's
        # syntax, so a few 1.2-only plain scalars in flow collections ([:]) are refused too.
        assert ours.line > 0 and ours.column > 0, (text, ours)
