"""Schema validation of one spec file, with messages a person can act on.

jsonschema finds every error; this module turns each into a Diagnostic at the exact key or value,
with the schema's own descriptions as hints and a did-you-mean for misspelt keys and enum values.
"""

from __future__ import annotations

import datetime
import difflib
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from generator.errors import Diagnostic
from generator.schema import spec_schema
from generator.spec.yamlfile import SpecFile

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    type(None): "null (empty)",
}


# JSON Schema counts 1000.0 as an integer; YAML keeps it a float, and a uid or a size of 1000.0
# would reach useradd or the init as "1000.0". Integers are ints here (never booleans).
_StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


@cache
def _validator() -> Draft202012Validator:
    schema = spec_schema()
    Draft202012Validator.check_schema(schema)
    return _StrictValidator(schema)


def _described(schema: dict[str, Any]) -> str:
    """The description of a schema node, following a $ref to its definition."""
    if "description" in schema:
        return str(schema["description"])
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return str(spec_schema()["$defs"][ref.rsplit("/", 1)[1]].get("description", ""))
    return ""


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_keys(error: ValidationError, spec: SpecFile) -> list[Diagnostic]:
    allowed = sorted(error.schema.get("properties", {}))
    path = tuple(error.absolute_path)
    result = []
    for key in sorted(set(error.instance) - set(allowed)):
        hint = f"{_suggest(key, allowed)}Allowed here: {', '.join(allowed)}"
        result.append(spec.diagnostic((*path, key), f"unknown field {key!r}", hint, key=True))
    return result


def _message(error: ValidationError) -> tuple[str, str]:
    """(message, hint) for one jsonschema error."""
    keyword, value, schema = error.validator, error.instance, error.schema
    described = _described(schema)
    if keyword == "required":
        missing = [k for k in error.validator_value if k not in value]
        field = missing[0] if missing else "?"
        return f"missing required field {field!r}", _described(schema.get("properties", {}).get(field, {}))
    if keyword == "enum":
        choices = [str(c) for c in error.validator_value]
        return (
            f"{_short(value)} is not one of: {', '.join(choices)}",
            _suggest(str(value), choices).rstrip() or described,
        )
    if keyword == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        if isinstance(value, datetime.date):  # YAML reads 2001-12-14 as a date: show it as written
            got, shown = "a date", value.isoformat()
        else:
            got, shown = _TYPE_NAMES.get(type(value), type(value).__name__), _short(value)
        hint = described
        if expected == "string" and isinstance(value, (int, float, bool, datetime.date)):
            hint = "quote the value (YAML read it as a number, boolean or date)" + (
                f"; {described}" if described else ""
            )
        return f"expected {expected}, got {got} {shown}", hint
    if keyword == "pattern":
        return f"{_short(value)} is not valid here", described or f"must match {error.validator_value}"
    if keyword == "not":
        return f"{_short(value)} is reserved for gen's own use", described
    if keyword in ("oneOf", "anyOf"):
        inner = best_match(error.context) if error.context else None
        detail = f" ({inner.message})" if inner is not None and len(inner.message) < 120 else ""
        return f"{_short(value)} is not valid here{detail}", described
    if keyword == "uniqueItems":
        return "list has duplicate entries", "list each entry once"
    if keyword == "minItems":
        return (
            f"list needs at least {error.validator_value} entr{'y' if error.validator_value == 1 else 'ies'}",
            described,
        )
    if keyword in ("minimum", "maximum"):
        bound = "at least" if keyword == "minimum" else "at most"
        return f"{_short(value)} is out of range: must be {bound} {error.validator_value}", described
    if keyword in ("minLength", "maxLength"):
        bound = "at least" if keyword == "minLength" else "at most"
        return (
            f"{_short(value)} is too {'short' if keyword == 'minLength' else 'long'}: "
            f"{bound} {error.validator_value} characters",
            described,
        )
    return error.message, described


def _is_key_error(error: ValidationError) -> bool:
    return "propertyNames" in error.relative_schema_path


# A file with thousands of problems (one wrong value aliased everywhere) is reported by its first
# ones: more lines help nobody, and each costs time.
MAX_PROBLEMS = 100


def check_against_schema(spec: SpecFile) -> list[Diagnostic]:
    """The file's schema problems, sorted by position: every one, or the first MAX_PROBLEMS found
    and a line at the top of the file saying there are more."""
    result: list[Diagnostic] = []
    for error in _validator().iter_errors(spec.data):
        if len(result) >= MAX_PROBLEMS:
            more = spec.diagnostic((), f"more than {MAX_PROBLEMS} problems: only the first are shown")
            return [more, *sorted(result, key=_by_position)]
        if error.validator == "additionalProperties":
            result.extend(_unknown_keys(error, spec))
            continue
        if _type_guard(error):
            continue
        path = tuple(error.absolute_path)
        if _is_key_error(error):  # jsonschema reports the key as the instance, at the mapping's path
            why = "is reserved for gen's own use" if error.validator == "not" else "is not valid here"
            result.append(
                spec.diagnostic(
                    (*path, error.instance), f"key {_short(error.instance)} {why}", _described(error.schema), key=True
                )
            )
            continue
        message, hint = _message(error)
        result.append(spec.diagnostic(path, message, hint))
    return sorted(result, key=_by_position)


def _by_position(diagnostic: Diagnostic) -> tuple[int, int, str, str]:
    return diagnostic.line, diagnostic.column, diagnostic.path, diagnostic.message


def field_problem(field: str, value: Any) -> str | None:
    """What is wrong with one top-level field's value, as `message; hint` (a name `gen new` was
    given, before any file is written); None when the schema allows it."""
    for error in _validator().iter_errors({field: value}):
        if tuple(error.absolute_path)[:1] == (field,) and not _type_guard(error):
            message, hint = _message(error)
            return f"{message}; {hint}" if hint else message
    return None


def _type_guard(error: ValidationError) -> bool:
    """A `not` that guards a string's pattern, failing for a value that is no string at all
    (`name: 2001-12-14`, a date): the type error at the same place says what is wrong."""
    return error.validator == "not" and not isinstance(error.instance, str)


def first_schema_problem(data: Any) -> str | None:
    """The first schema problem of a document that has no file behind it (a spec embedded in an
    image), as `path: message`; None when it is valid."""
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))), None)
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "the document"
    return f"{where}: {_message(error)[0]}"
