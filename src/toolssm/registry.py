"""Name -> object registries for tasks, tools and models, open to other packages through entry points.

A package adds a task, a tool or a model by declaring an entry point in its ``pyproject.toml``::

    [project.entry-points."toolssm.tasks"]
    reverse = "mypkg.tasks"          # importing mypkg.tasks registers the task "reverse" (@register)

The groups are ``toolssm.tasks``, ``toolssm.tools`` and ``toolssm.models``. Each registry loads its group
once, the first time a name is looked up or listed, so a plugin costs nothing until it is asked for.

- Registering a name twice is a one-line error naming both places (a plugin cannot silently replace a
  built-in task, nor two plugins each other).
- A plugin that fails to import is named in a one-line warning on stderr and left out; the other tasks,
  tools and models still work.

This module is the bottom layer: it imports nothing of toolssm.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class DuplicateName(ValueError):
    """A name registered twice. The message is one line naming both places."""


def where(obj: object) -> str:
    """Where an object is defined, ``module.Name``, for error messages."""
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    package = f"package {dist.name}, " if dist is not None and getattr(dist, "name", None) else ""
    return f"{package}entry point {ep.group}:{ep.name} = {ep.value}"


class Registry(Generic[T]):
    """Names of one kind (``task``, ``tool``, ``model``) to their objects, plus the plugins of one entry-point
    group. ``failed`` holds the plugins that did not load (entry point name -> one-line reason)."""

    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}
        self._where: dict[str, str] = {}
        self._plugins_loaded = False
        self._loading: str | None = None  # the entry point being loaded, named in what it registers
        self._error: DuplicateName | None = None  # a plugin's duplicate name: every later lookup fails the same way
        self.failed: dict[str, str] = {}

    def add(self, name: str, obj: T, place: str | None = None) -> None:
        place = place or where(obj)
        if self._loading:
            place = f"{place} ({self._loading})"
        if name in self._items:
            raise DuplicateName(f"{self.kind} {name!r} is registered twice: by {self._where[name]} and by {place}")
        self._items[name] = obj
        self._where[name] = place

    def load_plugins(self) -> None:
        """Import every entry point of the group (once). A duplicate name raises `DuplicateName`; any other
        failure is a one-line warning and the plugin is left out."""
        if self._error is not None:
            raise self._error
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        seen = set()
        for ep in entry_points(group=self.group):
            if (ep.name, ep.value) in seen:  # the same distribution found twice on the path
                continue
            seen.add((ep.name, ep.value))
            with self._plugin(ep):
                try:
                    ep.load()
                except DuplicateName as e:
                    self._error = e
                    raise
                except Exception as e:  # noqa: BLE001 - any failure of someone else's code: warn, go on
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    why = f"{type(e).__name__}: {first}" if first else type(e).__name__
                    self.failed[ep.name] = why
                    print(f"toolssm: warning: {self.kind} plugin {ep.name!r} ({_origin(ep)}) failed to load, "
                          f"left out: {why}", file=sys.stderr)  # fmt: skip
                    continue
            if ep.name not in self._items:
                self.failed[ep.name] = f"it registered no {self.kind} named {ep.name!r}"
                print(f"toolssm: warning: {self.kind} plugin {ep.name!r} ({_origin(ep)}) registered no {self.kind} "
                      f"named {ep.name!r}", file=sys.stderr)  # fmt: skip

    @contextmanager
    def _plugin(self, ep: EntryPoint) -> Iterator[None]:
        self._loading = _origin(ep)
        try:
            yield
        finally:
            self._loading = None

    def get(self, name: str) -> T:
        self.load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r} (choose from: {', '.join(self.names())})") from None

    def __contains__(self, name: str) -> bool:
        self.load_plugins()
        return name in self._items

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._items)
