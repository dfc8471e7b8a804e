"""Personal data shown to a reader by the roles of their context (the masking policy decides per role and
kind): free text through detection, contact fields by their known kind. A context with no role (an
unauthenticated API call until the governance layer attaches roles) gets the most restrictive action."""

from __future__ import annotations

import functools
from collections.abc import Callable

from citybrain.core.context import Context
from citybrain.hotline.pii import find_pii, mask_record, mask_text

CONTACT_KINDS = {"name": "name", "email": "email"}


@functools.lru_cache(maxsize=20_000)
def _masked(text: str, roles: tuple[str, ...]) -> str:
    # A case's description is shown again with every step taken on it: detection runs once per reader kind.
    return mask_text(text, roles)


def text_masker(ctx: Context) -> Callable[[str], str]:
    roles = tuple(sorted(ctx.roles))

    def mask(text: str) -> str:
        return _masked(text, roles) if text else text

    return mask


def contact_masker(ctx: Context) -> Callable[[dict[str, str | None]], dict[str, str | None]]:
    roles = ctx.roles

    def mask(contact: dict[str, str | None]) -> dict[str, str | None]:
        phone = contact.get("phone")
        kinds = dict(CONTACT_KINDS)
        if phone:
            found = find_pii(phone)
            kinds["phone"] = found[0].kind if found else "mobile"
        return mask_record(contact, kinds, roles)

    return mask
