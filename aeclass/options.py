"""Options declared once, as dataclass fields with metadata; checks and command-line flags come from them.

    @dataclass
    class SemiOptions:
        confidence: float = option(0.95, "top-class probability needed for a pseudo-label", low=0, high=1)

`option()` records the help text, the help group, the domain (low / high / choices / `positive`) and whether the
option only says where or how a run executes (`runtime`: it may change between a run and its resume without
changing what it learns; the device and the precision change only the rounding). `check_fields` validates an
instance against its annotations and domains with one-line errors naming the flag; `add_flags` turns the fields
into argparse flags. TrainConfig, every strategy's options and the CLI all go through these two functions, so a
new option is one line in one place.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING, field, fields

from .errors import ConfigError

GROUPS = ("data", "model", "strategy", "optimisation", "speed", "run")


def option(default=MISSING, help: str = "", group: str = "strategy", *, runtime: bool = False, low=None, high=None,
           low_open: bool = False, high_open: bool = False, choices=None, flag: str | None = None,
           convert=None, default_factory=MISSING):
    """A dataclass field with the metadata above. `low`/`high` bound numbers (inclusive unless *_open);
    `choices` is a tuple or a zero-argument callable (a registry); `flag` overrides the --name; `convert` reads
    a value given as text (e.g. --labels all) before it is checked."""
    meta = {"help": help, "group": group, "runtime": runtime, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "choices": choices, "flag": flag, "convert": convert}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base_type(annotation) -> tuple[type, bool]:
    """(the type, whether None is allowed) of an annotation such as `int | None` (strings resolved)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"dict": dict, "list": list, "tuple": tuple})  # our own annotations only
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else object), type(None) in args
    return typing.get_origin(annotation) or annotation, False


def choices_of(f: dataclasses.Field):
    c = f.metadata.get("choices")
    return tuple(c() if callable(c) else c) if c is not None else None


def _expected(kind: type, f) -> str:
    parts = {object: "a number", bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "a mapping",
             list: "a list", tuple: "a list"}.get(kind, kind.__name__)
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if kind is int and low == 1 and high is None:
        return "a positive integer"
    if low is not None and high is not None:
        parts += f" in {'(' if f.metadata.get('low_open') else '['}{low}, {high}{')' if f.metadata.get('high_open') else ']'}"
    elif low is not None:
        parts += f" {'>' if f.metadata.get('low_open') else '>='} {low}"
    elif high is not None:
        parts += f" {'<' if f.metadata.get('high_open') else '<='} {high}"
    return parts


def check_value(f: dataclasses.Field, value, where: str | None = None):
    """The value, checked against the field's type and domain (ints are accepted as floats); else ConfigError."""
    name = where or flag_name(f)
    if f.metadata.get("convert") is not None:
        value = f.metadata["convert"](value)
    kind, nullable = _base_type(f.type)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{name}: expected {_expected(kind, f)}, got nothing (null)")
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str), dict: lambda v: isinstance(v, dict),
          list: lambda v: isinstance(v, (list, tuple)), tuple: lambda v: isinstance(v, (list, tuple))}.get(kind)
    if ok is not None and not ok(value):
        raise ConfigError(f"{name}: expected {_expected(kind, f)}, got {value!r}")
    if kind is float:
        value = float(value)
    low, high, m = f.metadata.get("low"), f.metadata.get("high"), f.metadata
    if low is not None and (value < low or (m.get("low_open") and value == low)):
        raise ConfigError(f"{name}: expected {_expected(kind, f)}, got {value!r}")
    if high is not None and (value > high or (m.get("high_open") and value == high)):
        raise ConfigError(f"{name}: expected {_expected(kind, f)}, got {value!r}")
    allowed = choices_of(f)
    if allowed is not None and value not in allowed:
        raise choice_error(value, allowed, name)
    return value


def choice_error(value, allowed, what: str) -> ConfigError:
    """"WHAT: expected one of A, B, C, got 'X' (did you mean 'B'?)"."""
    near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return ConfigError(f"{what}: expected one of {', '.join(map(str, allowed))}, got '{value}'{hint}")


def check_fields(obj, prefix: str = "") -> None:
    """Validate every field of a dataclass instance in place (floats normalised); ConfigError on the first bad one."""
    for f in fields(obj):
        where = f"{prefix}{f.name}" if prefix else None
        setattr(obj, f.name, check_value(f, getattr(obj, f.name), where))


def unknown_key_error(keys, known, what: str) -> ConfigError:
    """"WHAT: unknown option 'X'; did you mean 'Y'?" for the first of `keys` (or the known ones listed)."""
    key = str(sorted(keys)[0])
    near = difflib.get_close_matches(key, sorted(map(str, known)), n=1)
    hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(sorted(map(str, known)))}"
    return ConfigError(f"{what}: unknown option '{key}'{hint}")


def parse_bool(text: str) -> bool:
    v = str(text).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not MISSING:
        d = f.default
        return "" if d is None else f" (default: {str(d).lower() if isinstance(d, bool) else d})"
    return ""


def add_flags(parser, groups: dict, flds, seen: set, owner: str | None = None) -> None:
    """Add an argparse flag per field (default None so presets and config files show through), into the
    argument group of its metadata. Booleans take --x / --no-x, and --x true|false as before. A field whose
    flag is in `seen` already (an option two strategies share) is skipped."""
    for f in flds:
        flag = flag_name(f)
        if flag in seen:
            continue
        seen.add(flag)
        kind, _ = _base_type(f.type)
        helptext = (f"{owner}: " if owner else "") + f.metadata.get("help", "") + _default_text(f)
        grp = groups[f.metadata.get("group", "strategy")]
        dest = f.name
        if f.metadata.get("convert") is not None:
            grp.add_argument(flag, dest=dest, type=str, help=helptext)
        elif kind is bool:
            grp.add_argument(flag, dest=dest, nargs="?", const=True, type=parse_bool, metavar="true|false",
                             help=helptext)
            grp.add_argument("--no-" + flag[2:], dest=dest, action="store_const", const=False,
                             help=argparse.SUPPRESS)
        elif kind in (int, float):
            grp.add_argument(flag, dest=dest, type=kind, help=helptext, metavar=f.name.split("_")[-1].upper())
        elif kind is str:
            grp.add_argument(flag, dest=dest, type=str, help=helptext)
