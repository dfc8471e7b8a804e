"""One registry pattern for every extension kind: a base class, `@registry.register("slug")`, a manifest.

Connectors, rules, detectors, classifiers, signal controllers, maskers and scenarios all use it, and each
kind has one contract test that runs over everything registered.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points
from typing import Generic, Self, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A named collection of plug-ins of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, slug: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            self.add(slug, item)
            return item

        return decorator

    def load(self, modules: Iterable[str] = (), group: str | None = None) -> Self:
        """Import the modules whose `@register` decorators fill this registry, then the installed plug-ins
        of an entry-point group; idempotent (imports are cached). A plug-in that fails to import is
        logged and skipped, so one broken package does not take the others down."""
        for name in modules:
            importlib.import_module(name)
        for entry in entry_points(group=group) if group else ():
            try:
                entry.load()
            except Exception:
                log.exception("%s plug-in %s failed to load; it is skipped", self.kind, entry.name)
        return self

    def add(self, slug: str, item: T) -> None:
        if slug in self._items and self._items[slug] is not item:
            raise ValueError(f"{self.kind} {slug!r} is already registered")
        self._items[slug] = item

    def get(self, slug: str) -> T:
        try:
            return self._items[slug]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {slug!r}; known: {known}") from None

    def __contains__(self, slug: object) -> bool:
        return slug in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __len__(self) -> int:
        return len(self._items)
