"""Spec values cannot break out of their place in a Dockerfile.

`docker_unquote` follows the Dockerfile word lexer for a double-quoted word (a backslash
escapes only `"`, `$` and itself there); exec forms are JSON. Every value that the schema lets
through must come back exactly, and nothing may expand or end the line.
"""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator.errors import GenError
from generator.render.templates import dockerfile_quote, exec_form

one_line = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(map(chr, range(32))) + "\x7f")
)


def docker_unquote(word: str) -> str:
    assert word[0] == '"' and word[-1] == '"', word
    body, out, i = word[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in '"$\\':
            out.append(body[i + 1])
            i += 2
            continue
        assert c not in '"$', f"unescaped {c!r} in {word!r}"
        out.append(c)
        i += 1
    return "".join(out)


@given(one_line)
def test_env_and_label_values_round_trip(value):
    quoted = dockerfile_quote(value)
    assert "\n" not in quoted
    assert docker_unquote(quoted) == value


@pytest.mark.parametrize("value", ['a"b', "$HOME", "${X:-y}", "back\\slash\\", "\\$", 'end\\"', "ünï €"])
def test_hostile_examples(value):
    assert docker_unquote(dockerfile_quote(value)) == value


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "nul\0", "cr\r"])
def test_control_characters_are_refused(value):
    with pytest.raises(GenError):
        dockerfile_quote(value)


def test_nothing_a_spec_gives_expands():
    assert dockerfile_quote("${BASE_IMAGE}") == '"\\${BASE_IMAGE}"'


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")), min_size=1))
def test_exec_form_is_one_json_line(argv):
    text = exec_form(argv)
    assert "\n" not in text and "\r" not in text
    assert json.loads(text) == argv
