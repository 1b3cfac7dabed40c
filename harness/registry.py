"""Name → class registries for backbones and tasks.

Each registry imports every module of its package on first use, so adding a backbone or a task
is one new file with one ``@REGISTRY.register("name")`` line.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class UnknownName(LookupError):
    """A name that is not registered; the message suggests the closest registered ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        choices = ", ".join(sorted(known))
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {choices})")

    def __str__(self) -> str:  # LookupError would quote the message
        return self.args[0]


def suggest(kind: str, name: str, known: Iterable[str]) -> None:
    """Raise UnknownName unless ``name`` is one of ``known``."""
    known = list(known)
    if name not in known:
        raise UnknownName(kind, name, known)


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return add

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self._load()
        suggest(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


ARCHITECTURES: Registry = Registry("architecture", "architectures")
TASKS: Registry = Registry("task", "tasks")


def selected_tasks(names: list[str]) -> list[str]:
    """``["all"]``: every registered task that needs no input of its own (``in_all``);
    otherwise the names as given."""
    if names == ["all"]:
        return [n for n in TASKS.names() if TASKS.get(n).in_all]
    return names
