"""The JSON Schema is the one source of the spec's fields and merge rules: the model, the merge
and the README follow it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from generator.model import Image
from generator.schema import spec_schema
from generator.spec.merge import MERGE_RULES, merge_rules

ROOT = Path(__file__).resolve().parents[2]
# The model's own names for what the spec calls otherwise, and what it adds.
MODEL_NAMES = {"extends": "parent"}
MODEL_ONLY = {"spec_path"}


def test_the_model_has_a_field_for_every_schema_property_and_no_other():
    schema = {MODEL_NAMES.get(name, name) for name in spec_schema()["properties"]}
    model = {f.name for f in dataclasses.fields(Image)} - MODEL_ONLY
    assert schema == model, f"schema only: {sorted(schema - model)}; model only: {sorted(model - schema)}"


def test_every_field_names_its_merge_rule_and_a_keyed_list_its_key():
    properties = spec_schema()["properties"]
    assert set(merge_rules()) == set(properties)
    for field, rule in merge_rules().items():
        assert rule in MERGE_RULES, f"{field}: x-gen-merge {rule!r}"
        if rule == "keyed":
            key = properties[field]["x-gen-merge-key"]
            items = properties[field]["items"]
            item = spec_schema()["$defs"][items["$ref"].rsplit("/", 1)[1]] if "$ref" in items else items
            assert key in item.get("required", ()), f"{field}: its key {key!r} is not required in every entry"


README_RULES = {  # the words of README's merge table -> the schema's rule
    "not inherited": "not-inherited",
    "inherited whole": "replaced",
    "a child may narrow": "replaced",
    "replaced": "replaced",
    "maps merge key by key": "merged-map",
    "appended, de-duplicated": "appended",
    "replaces it in place": "keyed",
    "own overlays only": "own-only",
}


def test_the_readme_merge_table_says_what_the_schema_does():
    text = (ROOT / "README.md").read_text()
    table = text.split("## How specs merge", 1)[1].split("\n\n", 3)[2]
    seen = set()
    for row in table.splitlines()[2:]:
        fields_cell, rule_cell = row.strip("|").split("|", 1)
        fields = re.findall(r"`([a-z_]+)`", re.sub(r"\(by `\w+`\)", "", fields_cell))
        expected = next(rule for words, rule in README_RULES.items() if words in rule_cell)
        for field in fields:
            assert merge_rules()[field] == expected, f"README says {field} is {expected}"
        seen.update(fields)
    assert seen == set(merge_rules()), f"README's merge table lacks {sorted(set(merge_rules()) - seen)}"
