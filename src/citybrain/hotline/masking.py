"""Personal data shown to a reader by the roles of their context (the masking policy decides per role and
kind): free text through detection, contact fields by their known kind. A context with no role (an
unauthenticated API call until the governance layer attaches roles) gets the most restrictive action."""

from __future__ import annotations

from collections.abc import Callable

from citybrain.core.context import Context
from citybrain.hotline.pii import find_pii, mask_record, mask_text

CONTACT_KINDS = {"name": "name", "email": "email"}


def text_masker(ctx: Context) -> Callable[[str], str]:
    roles = ctx.roles

    def mask(text: str) -> str:
        return mask_text(text, roles) if text else text

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
