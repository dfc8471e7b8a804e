"""The district's catalogue: seeded from the scenarios on first load, overridden by what the city imports,
and kept in memory per platform until the store changes."""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from citybrain.core.errors import ErrorCollector
from citybrain.disposal.catalogue import service
from citybrain.disposal.catalogue.service import Catalogue, Located

if TYPE_CHECKING:
    from citybrain.platform import Platform

# Per platform: the store's fingerprint and the catalogue built from it. Weak, so a disposed platform
# (tests make many) takes its catalogue with it.
_cache: weakref.WeakKeyDictionary[Platform, tuple[tuple[Any, ...], Catalogue]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@functools.cache
def shipped() -> Catalogue:
    """The scenarios' catalogue (package data: read and checked once per process)."""
    from citybrain.scenarios import scenario_catalogue

    return scenario_catalogue()


def seed(platform: Platform) -> int:
    """Write the shipped event types the store lacks or holds in an older release's version; the city's
    imported entries stay. Returns how many rows were written (0 costs one read, no write lock)."""
    entries = list(shipped().entries.values())
    with platform.session() as session:
        plan = service.seed_plan(service.stored_entries(session), entries)
    if not plan:
        return 0
    with platform.transaction() as session:
        # Planned again inside the write lock: another process may have seeded in between.
        plan = service.seed_plan(service.stored_entries(session), entries)
        return service.upsert(session, entries=plan, now=platform.clock.now())


def load(platform: Platform) -> Catalogue:
    """The district's catalogue (enabled entries), seeding the store on first use. Rebuilt only when the
    store's fingerprint changed since the last call on this platform."""
    with platform.session() as session:
        current = service.fingerprint(session)
    cached = _cache.get(platform)
    if cached is not None and cached[0] == current:
        return cached[1]
    with _lock:
        if cached is None:
            seed(platform)
        with platform.session() as session:
            current = service.fingerprint(session)
            catalogue = Catalogue(e for e in service.stored_entries(session) if e.enabled)
        _cache[platform] = (current, catalogue)
        return catalogue


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    written: int
    unchanged: int


def import_entries(platform: Platform, located: list[Located]) -> ImportOutcome:
    """Upsert parsed entries into the store, all or nothing: the catalogue they make together with the
    stored one must pass `service.check` (a reference the new entries share with a stored type of another
    code is refused). Imported entries replace stored ones of the same code, shipped or not."""
    load(platform)  # seeds, so an import never races the first seeding of a fresh store
    new_codes = {item.entry.spec.code for item in located}
    with platform.transaction() as session:
        kept = [Located(entry, f"stored {entry.spec.code} ({entry.source})")
                for entry in service.stored_entries(session) if entry.spec.code not in new_codes]
        problems = service.check([*located, *kept], rules=service.sensing_rules())
        if problems:
            ErrorCollector(errors=problems).raise_if_any(f"the import has {len(problems)} problems")
        written = service.upsert(session, entries=[item.entry for item in located], now=platform.clock.now())
    _cache.pop(platform, None)  # a frozen test clock can leave the fingerprint as it was
    return ImportOutcome(written=written, unchanged=len(located) - written)
