"""Masking policies as data, and the engine that applies them to text and records.

A `MaskingPolicy` says, per role and per kind of personal data, which masking action (a registered
`Masker`) a reader gets; `"*"` is a role's action for kinds it does not name; `unknown_role` applies to
roles the policy does not know. It is a plain Pydantic model, so a policy is written in YAML or JSON
(`MaskingPolicy.from_yaml`, `to_yaml`) and checked on load: every action must be a registered masker.

A reader with several roles gets, per kind, the most permissive action among them (by the maskers'
`permissiveness`): roles add rights, they never take them away. A reader with no known role gets
`unknown_role`, which the default policy sets to the most restrictive action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citybrain.hotline.pii.detect import KINDS, PiiKind, PiiSpan, find_pii
from citybrain.hotline.pii.maskers import DEVELOPMENT_KEY, MaskContext, maskers
from citybrain.settings import get_settings

ROLES = ("district_leader", "dispatcher", "department_handler", "village_station", "analyst", "auditor", "system")
_HAN_START, _HAN_END = "\u4e00", "\u9fff"


class MaskingPolicy(BaseModel):
    """Per role and kind → masking action. See the module docstring for how roles combine."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    roles: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="role → {kind or '*' → masker slug}")
    unknown_role: str = Field("redact", description="Action for readers none of whose roles the policy names")

    @field_validator("roles")
    @classmethod
    def _known_kinds_and_actions(cls, roles: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for role, actions in roles.items():
            for kind, action in actions.items():
                if kind != "*" and kind not in KINDS:
                    raise ValueError(f"role {role!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
                if action not in maskers:
                    raise ValueError(f"role {role!r}, kind {kind!r}: unknown action {action!r}; "
                                     f"actions: {', '.join(maskers)}")
        return roles

    @model_validator(mode="after")
    def _unknown_role_action_exists(self) -> MaskingPolicy:
        if self.unknown_role not in maskers:
            raise ValueError(f"unknown_role: unknown action {self.unknown_role!r}")
        return self

    def action(self, roles: Iterable[str] | str, kind: PiiKind) -> str:
        """The action for a reader holding `roles` on data of `kind`."""
        if isinstance(roles, str):
            roles = (roles,)
        found = []
        for role in roles:
            actions = self.roles.get(role)
            if actions is not None:
                found.append(actions.get(kind, actions.get("*", self.unknown_role)))
        if not found:
            return self.unknown_role
        return max(found, key=lambda slug: maskers.get(slug).manifest.permissiveness)

    @classmethod
    def from_yaml(cls, text: str) -> MaskingPolicy:
        return cls.model_validate(yaml.safe_load(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), allow_unicode=True, sort_keys=False)


CONTACT_KINDS = ("mobile", "landline", "us_phone", "email", "name")

def default_policy() -> MaskingPolicy:
    """The shipped policy. Why each role gets what it gets:

    - dispatcher (takes the call, creates and dispatches the case): must recognise a caller (尾号5678的张先生)
      and check a plate or ID number against what the caller says, but calls back through the platform, so
      never needs a whole number → `partial`; bank cards never matter to dispatching → `redact`.
    - department_handler (resolves the case, must reach the citizen for 回访 and site visits): contacts in
      full (`none`), ID numbers and plates `partial` (to match its own records), bank cards `redact`.
    - village_station (community workers know the neighbours, and complaints are often about a neighbour;
      knowing who complained invites retaliation): contacts `partial`, everything else `redact`.
    - district_leader (reads overviews and escalations, not contact lists): contacts `partial`, rest `redact`.
    - analyst (hotspots, repeat callers, recurring problems): linkage without identity → `hash`.
    - system (automated processing: de-duplication, classification, exports to the lake): linkage only →
      `hash`; a process that must send an SMS reads the number from the store under its own grant.
    - auditor (reconstructs what happened and who saw what; its own reads are audited) → `none`.
    - any other role → `redact`, the most restrictive action.
    """
    return MaskingPolicy(
        roles={
            "dispatcher": {"*": "partial", "bank_card": "redact"},
            "department_handler": {**{k: "none" for k in CONTACT_KINDS}, "*": "partial", "bank_card": "redact"},
            "village_station": {**{k: "partial" for k in CONTACT_KINDS}, "*": "redact"},
            "district_leader": {**{k: "partial" for k in CONTACT_KINDS}, "*": "redact"},
            "analyst": {"*": "hash"},
            "system": {"*": "hash"},
            "auditor": {"*": "none"},
        },
        unknown_role="redact",
    )


DEFAULT_POLICY = default_policy()


def hash_key() -> bytes:
    """The HMAC key for `hash` masking: the `pii_hash_key` setting (CITYBRAIN_PII_HASH_KEY), or a fixed
    development key when unset (stable, so links survive restarts, but not secret)."""
    value = get_settings().pii_hash_key.get_secret_value()
    return value.encode() if value else DEVELOPMENT_KEY


def _lang(text: str) -> Literal["zh", "en"]:
    return "zh" if any(_HAN_START <= ch <= _HAN_END for ch in text) else "en"


def apply_masks(text: str, spans: Iterable[PiiSpan], roles: Iterable[str] | str, policy: MaskingPolicy,
                *, key: bytes | None = None, lang: Literal["zh", "en"] | None = None) -> str:
    """Replace each span of `text` by its masked form (spans must not overlap). Labels are Chinese when
    the text has Chinese characters, English otherwise, unless `lang` says."""
    context = MaskContext(key=key if key is not None else hash_key(), lang=lang or _lang(text))
    roles = tuple((roles,) if isinstance(roles, str) else roles)
    out, pos = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        out.append(text[pos:span.start])
        out.append(maskers.get(policy.action(roles, span.kind))().mask(span, context))
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


def mask_text(text: str, roles: Iterable[str] | str, policy: MaskingPolicy = DEFAULT_POLICY,
              *, key: bytes | None = None) -> str:
    """`text` with every piece of personal data masked as `policy` says for a reader holding `roles`."""
    return apply_masks(text, find_pii(text), roles, policy, key=key)


def mask_record(record: Mapping[str, Any], field_kinds: Mapping[str, str], roles: Iterable[str] | str,
                policy: MaskingPolicy = DEFAULT_POLICY, *, key: bytes | None = None,
                lang: Literal["zh", "en"] = "zh") -> dict[str, Any]:
    """A copy of `record` with its personal fields masked.

    `field_kinds` maps a field to a kind of personal data (`{"contact_phone": "mobile", "name": "name"}`):
    the whole value is masked as that kind. The kind `"text"` marks free text (the complaint itself), which
    is searched with `find_pii`. Fields not listed, and empty values, are copied as they are. Labels of
    structured fields are in `lang` (a phone field reads [手机号] even though its value is all digits).
    """
    roles = tuple((roles,) if isinstance(roles, str) else roles)
    out = dict(record)
    for field, kind in field_kinds.items():
        value = out.get(field)
        if value is None or value == "":
            continue
        text = str(value)
        if kind == "text":
            out[field] = mask_text(text, roles, policy, key=key)
        elif kind in KINDS:
            span = PiiSpan(kind, 0, len(text), text)  # type: ignore[arg-type]
            out[field] = apply_masks(text, [span], roles, policy, key=key, lang=lang)
        else:
            raise ValueError(f"field {field!r}: unknown kind {kind!r}; kinds: text, {', '.join(KINDS)}")
    return out
