"""Campaign files -> plain Python data, refusing what YAML allows but a campaign never needs.

Every refusal is a :class:`SpecError` naming a key path (or line), raised before the document
is constructed, so no input can make loading slow or big:

- bytes that are not UTF-8 text, and files above ``MAX_BYTES``;
- anchors and aliases that expand to more than ``MAX_NODES`` values (an alias is a reference, so
  a few hundred bytes of ``[*a, *a, ...]`` can stand for billions of values that every later
  step, validation, hashing, copying, would walk), recursive aliases, and nesting deeper than
  ``MAX_DEPTH``;
- duplicate keys (PyYAML silently keeps the last), keys that are not strings, and values that
  are not plain data (timestamps, binary, sets: JSON's types only, so settings hash canonically).
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestrator.spec_errors import SpecError

MAX_BYTES = 1 << 20  # campaign files are a few KB; a megabyte is a mistake
MAX_NODES = 20_000  # values after alias expansion (a grid of 1,000 seeds is 1,000)
MAX_DEPTH = 32  # a campaign nests about 5 deep

_TAG = "tag:yaml.org,2002:"
_PLAIN_SCALARS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_WHAT = {"timestamp": "a date/time", "binary": "binary data", "set": "a set", "omap": "an ordered map",
         "pairs": "a list of pairs"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose documents :func:`load_yaml` has checked before construction."""


def _where(path: str) -> str:
    return path or "<root>"


def _check(root: yaml.Node) -> None:
    """Walk the node graph once (each node once, however many aliases point at it); raise on the
    first problem. Sizes are memoised per node, so an exponential expansion costs linear time."""
    size: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: yaml.Node, path: str, depth: int) -> int:
        key = id(node)
        if key in size:
            return size[key]
        if key in active:
            raise SpecError([f"{_where(path)}: recursive YAML alias (a value that contains itself); "
                             "expected plain, finite data"])
        if depth > MAX_DEPTH:
            raise SpecError([f"{_where(path)}: nested more than {MAX_DEPTH} levels deep; expected a campaign "
                             "of settings (a few levels)"])
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _PLAIN_SCALARS:
                what = _WHAT.get(node.tag.removeprefix(_TAG), f"a {node.tag} value")
                raise SpecError([f"{_where(path)}: {what} at line {line} ({node.value!r}); expected a number, "
                                 "string, true/false or null (quote it to make it a string)"])
            size[key] = 1
            return 1
        if node.tag not in (_TAG + "map", _TAG + "seq"):
            what = _WHAT.get(node.tag.removeprefix(_TAG), f"a {node.tag} value")
            raise SpecError([f"{_where(path)}: {what} at line {line}; expected a mapping or a list"])
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                total += walk(child, f"{path}[{i}]", depth + 1)
        else:
            seen: dict[str, int] = {}
            for k, v in node.value:
                if k.tag == _TAG + "merge":  # "<<: *base": the merged mapping's keys join this one
                    total += walk(v, path, depth + 1)
                    continue
                if not (isinstance(k, yaml.ScalarNode) and k.tag == _TAG + "str"):
                    shown = k.value if isinstance(k, yaml.ScalarNode) else "a mapping or list"
                    raise SpecError([f"{_where(path)}: key {shown!r} at line {k.start_mark.line + 1} is not a "
                                     "string; expected string keys (quote it)"])
                name = k.value
                child_path = f"{path}.{name}" if path else name
                if name in seen:
                    raise SpecError([f"{child_path}: duplicate key {name!r} at line {k.start_mark.line + 1}; "
                                     "expected each key once (YAML would silently keep the last)"])
                seen[name] = 1
                total += walk(v, child_path, depth + 1)
        active.discard(key)
        if total > MAX_NODES:
            raise SpecError([f"{_where(path)}: expands to more than {MAX_NODES:,} values (YAML anchors and aliases "
                             f"are copied wherever used); expected a campaign of at most {MAX_NODES:,} values"])
        size[key] = total
        return total

    walk(root, "", 0)


def decode(data: bytes) -> str:
    """UTF-8 text of a campaign file (a byte-order mark is dropped)."""
    if len(data) > MAX_BYTES:
        raise SpecError([f"<file>: {len(data):,} bytes; expected a campaign file of at most {MAX_BYTES:,} bytes"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError([f"line {line}, column {col}: byte 0x{data[e.start]:02x} is not UTF-8 text; "
                         "expected a UTF-8 encoded YAML file"]) from None


def _char(c: int | str) -> str:
    return f"U+{c if isinstance(c, int) else ord(c):04X}"


def _compose(loader_cls: type, text: str) -> tuple[Any, yaml.Node | None]:
    try:
        loader = loader_cls(text)  # the Python reader refuses control characters here
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise SpecError([f"line {line}, column {col}: character {_char(e.character)} is not allowed in YAML; "
                         "expected printable text"]) from None
    try:
        return loader, loader.get_single_node()
    except BaseException:
        loader.dispose()
        raise


# libyaml's parser (C) reads a campaign ~15x faster than PyYAML's and bounds nesting itself; PyYAML's
# messages are clearer, so a file libyaml refuses is re-read by PyYAML for the message when small.
_FAST = getattr(yaml, "CSafeLoader", None)
_REREAD_BYTES = 16_384


def load_yaml(text: str) -> Any:
    """The single YAML document in ``text`` as dicts, lists and scalars (None when empty)."""
    try:
        try:
            if _FAST is None:
                raise yaml.YAMLError("libyaml not available")
            loader, root = _compose(_FAST, text)
        except yaml.YAMLError as fast_error:
            if _FAST is not None and "maximum nesting depth" in str(fast_error):
                raise SpecError([f"<root>: nested too deeply to read; expected at most {MAX_DEPTH} levels"]) from None
            if _FAST is not None and len(text) > _REREAD_BYTES:
                raise
            try:
                loader, root = _compose(_UniqueKeyLoader, text)
            except RecursionError:
                raise SpecError([f"<root>: nested too deeply to read; expected at most {MAX_DEPTH} levels"]) from None
        try:
            if root is None:
                return None
            _check(root)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<root>"
        what = e.problem or "unreadable YAML"
        if e.context and e.context_mark:
            what += f" ({e.context} started at line {e.context_mark.line + 1})"
        raise SpecError([f"{where}: YAML syntax error: {what}"]) from None
    except yaml.YAMLError as e:
        raise SpecError([f"<root>: YAML syntax error: {e}"]) from None
