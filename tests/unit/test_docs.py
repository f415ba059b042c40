"""The docs follow the schema: README's spec reference is the generated one."""

from pathlib import Path

from generator.schema import spec_schema
from generator.schema.reference import BEGIN, END, markdown_reference

ROOT = Path(__file__).resolve().parents[2]


def test_readme_reference_matches_schema():
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] + "\n" == markdown_reference(), "run: gen schema --format markdown, paste into README"


def test_every_schema_field_is_in_the_reference():
    reference = markdown_reference()
    for key in spec_schema()["properties"]:
        assert f"| `{key}` |" in reference


def test_readme_names_the_two_setup_commands_that_exist():
    readme = (ROOT / "README.md").read_text()
    for command in ("./build-examples", "./tests/run"):
        assert f"    {command}\n" in readme
        assert (ROOT / command).stat().st_mode & 0o111
    assert "./tests/run" in (ROOT / ".ci" / "run").read_text()
