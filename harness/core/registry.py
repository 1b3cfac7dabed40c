"""Name → object registries for backbones and tasks, filled lazily.

An entry is a name and a ``"module:object"`` target, imported the first time the name is used,
so a module whose optional dependency is missing breaks only its own entries. Entries come from
two places:

* the project's own packages: each module's ``@ARCHITECTURES.register("name")`` lines are read
  from its source without importing it, so adding a backbone or a task is one new file;
* installed plugins: a package declares ``[project.entry-points."harness.architectures"]`` (or
  ``"harness.tasks"``) with ``name = "module:object"``, and needs no edit to this repository.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class UnknownName(LookupError):
    """A name that is not registered; the message suggests the closest registered ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str], note: str = ""):
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        choices = ", ".join(sorted(known))
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {choices}){note}")

    def __str__(self) -> str:  # LookupError would quote the message
        return self.args[0]


class EntryUnavailable(ImportError):
    """A registered entry whose module cannot be imported (e.g. a missing optional dependency)."""

    def __str__(self) -> str:
        return self.args[0]


def suggest(kind: str, name: str, known: Iterable[str]) -> None:
    """Raise UnknownName unless ``name`` is one of ``known``."""
    known = list(known)
    if name not in known:
        raise UnknownName(kind, name, known)


def _declared(path: Path, symbol: str) -> Iterable[tuple[str, str]]:
    """(name, object) for each ``@<symbol>.register("name")`` decorating a top-level object."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        for deco in getattr(node, "decorator_list", ()):
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "register" and isinstance(deco.func.value, ast.Name)
                    and deco.func.value.id == symbol and deco.args
                    and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
                yield deco.args[0].value, node.name


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, symbol: str, group: str):
        #: what an entry is ("architecture"), the package scanned, the registry's name in its
        #: modules' source, and the entry-point group plugins use
        self.kind, self.package, self.symbol, self.group = kind, package, symbol, group
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        #: name → every target that claims it, where more than one does (none of them is used)
        self._conflicts: dict[str, list[str]] = {}
        #: modules whose source could not be read, with why (their entries are unknown)
        self.unreadable: dict[str, str] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on a class in the registry's package."""
        def add(obj: T) -> T:
            if name in self._loaded and self._loaded[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._loaded[name] = obj
            self._targets.setdefault(name, f"{obj.__module__}:{obj.__qualname__}")
            obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return add

    def add(self, name: str, target: str) -> None:
        """Register ``name`` as ``"module:object"``, imported on first use."""
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} is not 'module:object'")
        known = self._targets.get(name)
        if known is not None and known != target:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({known} and {target})")
        self._targets[name] = target

    def _discover(self) -> None:
        """Read the package's sources and the installed plugins once. A file that cannot be read
        or a name claimed twice is kept aside and reported where it matters, so the other entries
        still work."""
        if self._discovered:
            return
        found: list[tuple[str, str]] = []
        spec = importlib.util.find_spec(self.package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(root).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                module = ".".join((self.package, *parts))
                try:
                    found += [(name, f"{module}:{obj}") for name, obj in _declared(path, self.symbol)]
                except (SyntaxError, UnicodeDecodeError, OSError) as err:
                    self.unreadable[module] = f"{type(err).__name__}: {err}"
        found += [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=self.group)]
        for name, target in found:
            if name in self._conflicts:
                self._conflicts[name].append(target)
                continue
            try:
                self.add(name, target)
            except ValueError:
                self._conflicts[name] = [self._targets.pop(name), target] if name in self._targets else [target]
        self._discovered = True

    def get(self, name: str) -> T:
        self._discover()
        if name in self._conflicts:
            raise EntryUnavailable(f"{self.kind} {name!r} is registered by more than one module "
                                   f"({', '.join(self._conflicts[name])}): rename one of them")
        note = "".join(f"; {module} could not be read ({why})" for module, why in self.unreadable.items())
        if name not in self._targets:
            raise UnknownName(self.kind, name, self._targets, note)
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")
            try:
                obj = getattr(importlib.import_module(module), attr)
            except Exception as err:  # a missing dependency, a broken module: only this entry
                raise EntryUnavailable(f"{self.kind} {name!r} ({self._targets[name]}) cannot be "
                                       f"loaded: {type(err).__name__}: {err}") from err
            obj.registered_name = name
            self._loaded[name] = obj
        return self._loaded[name]

    def names(self) -> list[str]:
        """Every usable name (a name claimed by two modules is left out: ``get`` says why)."""
        self._discover()
        return sorted(self._targets)

    def problems(self) -> list[str]:
        """What keeps entries out: names claimed twice, modules that cannot be read."""
        self._discover()
        return ([f"{self.kind} {n!r} is registered by more than one module ({', '.join(t)})"
                 for n, t in sorted(self._conflicts.items())]
                + [f"{module} could not be read: {why}" for module, why in sorted(self.unreadable.items())])

    def target(self, name: str) -> str:
        """The ``"module:object"`` an entry points at."""
        self._discover()
        suggest(self.kind, name, self._targets)
        return self._targets[name]

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._targets


ARCHITECTURES: Registry = Registry("architecture", "architectures", "ARCHITECTURES", "harness.architectures")
TASKS: Registry = Registry("task", "tasks", "TASKS", "harness.tasks")


def selected_tasks(names: list[str]) -> list[str]:
    """``["all"]``: every registered task that needs no input of its own (``in_all``);
    otherwise the names as given."""
    if names == ["all"]:
        return [n for n in TASKS.names() if TASKS.get(n).in_all]
    return names
