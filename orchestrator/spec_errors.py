"""Refusals of a campaign: :class:`SpecError` and pydantic errors as ``"<key path>: <problem>"``."""

from __future__ import annotations

import re

from pydantic import ConfigDict, ValidationError


class SpecError(ValueError):
    """A campaign spec that cannot run. ``messages``: one ``"<key path>: <problem>"`` each."""

    def __init__(self, messages: list[str], source: str = "campaign"):
        self.messages = list(dict.fromkeys(messages))  # de-duplicated, order kept
        self.source = source
        super().__init__(f"{source}: invalid campaign spec\n" + "\n".join(f"  {m}" for m in self.messages))


def key_path(loc: tuple) -> str:
    """("grid", "lr", 1) -> "grid.lr[1]"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def renamed(path: str, rename: dict[str, str] | None) -> str:
    """``path`` with its first matching prefix replaced: a grid value's errors name the axis
    entry it came from (``train.lr`` -> ``grid.lr[1]``)."""
    for old, new in (rename or {}).items():
        if path == old or path.startswith(old + ".") or path.startswith(old + "["):
            return new + path[len(old):]
    return path


_PYTHON_WORDS = {"list_type": "Input should be a valid list", "tuple_type": "Input should be a valid list",
                 "dict_type": "Input should be a valid dictionary"}
_YAML_TEXT_NUMBER = re.compile(r"[-+]?[0-9.]+[eE][-+]?[0-9]+")  # 1e-3, 1.0e5: numbers to people, text to YAML 1.1
_SHORT = 200  # characters of a refused input quoted in a message


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _SHORT else text[:_SHORT] + f"... ({len(text)} characters)"


def messages(err: ValidationError, prefix: str = "", rename: dict[str, str] | None = None) -> list[str]:
    out = []
    for e in err.errors():
        path = key_path(tuple(e["loc"]))
        path = renamed(f"{prefix}.{path}" if prefix and path else (prefix or path), rename) or "<root>"
        msg, kind = e["msg"], e["type"]
        if kind == "value_error":
            msg = msg.removeprefix("Value error, ")
            sub, sep, rest = msg.partition(": ")
            if sep and re.fullmatch(r"[A-Za-z_][\w.]*", sub):  # "layer_rates.output: must be ..."
                path, msg = (f"{path}.{sub}" if path != "<root>" else sub), rest
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key"
        elif kind in ("missing", "missing_argument"):
            msg = "required key missing"
        elif kind in ("dataclass_type", "dataclass_exact_type", "model_type", "model_attributes_type"):
            msg = f"expected a mapping of settings, got {_shown(e.get('input'))}"
        elif kind in _PYTHON_WORDS:  # validation runs on JSON; users wrote YAML lists and mappings
            msg = f"{_PYTHON_WORDS[kind]}, got {_shown(e.get('input'))}"
        elif kind == "finite_number":
            msg = f"expected a finite number, got {_shown(e.get('input'))}"
        elif "input" in e and kind != "value_error":
            msg += f", got {_shown(e['input'])}"
            if kind == "float_type" and _YAML_TEXT_NUMBER.fullmatch(str(e["input"])):
                mantissa, _, exp = str(e["input"]).lower().partition("e")
                msg += (f" (text: YAML reads a number without a dot as text; write {mantissa}.0e{exp})"
                        if "." not in mantissa else f" (text: YAML needs a sign in the exponent; write "
                        f"{mantissa}e{exp if exp[0] in '+-' else '+' + exp})")
        out.append(f"{path}: {msg}")
    return out


# How every campaign value is validated (the settings' types and ranges are on the dataclasses of
# trainers/config.py and the registries' option declarations). Validation runs on the JSON text of
# the YAML data, where pydantic's strict mode still builds dataclasses from mappings and tuples from
# lists. strict: a quoted "0.1" is a typo worth refusing; allow_inf_nan: no setting is infinite.
SETTINGS_CONFIG = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
