"""The one registry type behind datasets, models, pruning methods and reset modes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class NoOptions:
    """The options of an entry that takes none: any key is unknown."""


class Registry(dict[str, T]):
    """Name -> implementation. ``@REGISTRY.register("name")`` adds a function under a name
    that campaign files can then use; a name registers once (a second one is a bug).

    ``options``: a frozen dataclass declaring the entry's options (``data.options`` /
    ``model.options`` of a campaign) with their types, defaults and ranges (``annotated_types``
    constraints on the field types); campaign validation checks them and the README lists them.
    ``info``: anything else the registration declares (a dataset's sizes, see datasets.py).
    ``version``: the entry's semantics version, folded into the id of every unit that uses it
    (``trainers/versions.py``), so a store never serves a result the changed code would not
    compute: bump it in the same change that alters what the entry computes (not for a
    refactor that keeps results bit-identical)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.options: dict[str, type] = {}
        self.info: dict[str, Any] = {}
        self.versions: dict[str, int] = {}

    def register(self, name: str, options: type = NoOptions, info: Any = None, version: int = 1) -> Callable[[T], T]:
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"{self.kind} {name!r}: options must be a dataclass, got {options!r}")

        def deco(fn: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            self.options[name] = options
            self.versions[name] = version
            if info is not None:
                self.info[name] = info
            return fn

        return deco

    def parse_options(self, name: str, options: Mapping[str, Any]) -> Any:
        """``options`` as the entry's options dataclass (defaults filled). The trainers trust
        validated settings; this only refuses keys the entry does not declare."""
        cls = self.options[name]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"options: unknown {self.kind} {name!r} option(s) {unknown}; expected {sorted(known)}")
        return cls(**options)
