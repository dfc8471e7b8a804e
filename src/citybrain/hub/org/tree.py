"""An in-memory copy of the org tree for the hot paths: validating an entity's org unit, expanding a
scope to its descendants. A district holds a few thousand units, so the whole tree fits in a few MB."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Unit:
    code: str
    name: str
    kind: str
    level: int
    parent_code: str | None


@dataclass
class OrgTree:
    units: dict[str, Unit] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    roots: list[str] = field(default_factory=list)  # the units without a parent (the districts), in load order

    @classmethod
    def build(cls, units: Iterable[Unit]) -> OrgTree:
        tree = cls()
        for unit in units:
            tree.units[unit.code] = unit
        for unit in tree.units.values():
            if unit.parent_code is not None:
                tree.children[unit.parent_code].append(unit.code)
            else:
                tree.roots.append(unit.code)
        for codes in tree.children.values():
            codes.sort()
        return tree

    def __contains__(self, code: object) -> bool:
        return code in self.units

    def __len__(self) -> int:
        return len(self.units)

    def descendants(self, code: str, *, include_self: bool = True) -> list[str]:
        """Every unit below `code` (depth-first), with `code` first when include_self."""
        out = [code] if include_self else []
        stack = list(reversed(self.children.get(code, [])))
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed(self.children.get(current, [])))
        return out

    def ancestors(self, code: str) -> list[str]:
        """From the root down to the parent of `code`."""
        chain: list[str] = []
        unit = self.units.get(code)
        while unit is not None and unit.parent_code is not None:
            chain.append(unit.parent_code)
            unit = self.units.get(unit.parent_code)
        return list(reversed(chain))

    def within(self, code: str, scope: Iterable[str]) -> bool:
        """Whether `code` is one of the scope units or below one of them."""
        scope_set = set(scope)
        return code in scope_set or any(a in scope_set for a in self.ancestors(code))
