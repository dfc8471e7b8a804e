"""Masking actions: the plug-ins a masking policy names (`partial`, `hash`, `redact`, `none`).

A masker turns one span of personal data into what a reader may see. Each declares in its manifest how
much it reveals (`permissiveness`: 0 shows nothing, higher shows more); when a reader holds several roles,
the most permissive of their actions applies. Third-party maskers subclass `Masker`, set `manifest` and
register with `@maskers.register("slug")`; the contract test runs over every registered one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from citybrain.core.registry import Registry
from citybrain.hotline.pii.detect import PiiKind, PiiSpan

log = logging.getLogger(__name__)

# Used when no key is configured (development and tests). Hashes made with it link records but are not
# secret: anyone can recompute them for a guessed phone number, so deployments set CITYBRAIN_PII_HASH_KEY.
DEVELOPMENT_KEY = b"citybrain-development-pii-key"

LABELS: dict[PiiKind, tuple[str, str]] = {
    "mobile": ("手机号", "phone"),
    "landline": ("电话", "phone"),
    "id_card": ("身份证号", "id number"),
    "plate": ("车牌号", "plate"),
    "email": ("邮箱", "email"),
    "us_phone": ("电话", "phone"),
    "bank_card": ("银行卡号", "card number"),
    "name": ("姓名", "name"),
}


class MaskerManifest(BaseModel):
    """What a masking action is, for the registry, policies and the contract test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str = Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")
    title: str
    description: str = ""
    permissiveness: int = Field(ge=0, le=100, description="0 reveals nothing; higher reveals more")
    reveals_value: bool = Field(False, description="The output may contain the whole original value")


@dataclass(frozen=True, slots=True)
class MaskContext:
    """What a masker may need besides the span: the hash key and the language of the labels."""

    key: bytes = DEVELOPMENT_KEY
    lang: Literal["zh", "en"] = "zh"

    def label(self, kind: PiiKind) -> str:
        zh, en = LABELS[kind]
        return zh if self.lang == "zh" else en


class Masker:
    """Base of every masking action: `mask` returns the replacement text of one span."""

    manifest: ClassVar[MaskerManifest]

    def mask(self, span: PiiSpan, context: MaskContext) -> str:
        raise NotImplementedError


maskers: Registry[type[Masker]] = Registry("masker")


def normalized_value(span: PiiSpan) -> str:
    """The value with its formatting removed, so that the same phone, card or plate written differently
    (spaces, dashes, +86, lower case) hashes the same."""
    text = unicodedata.normalize("NFKC", span.text)
    if span.kind in ("mobile", "landline", "us_phone", "bank_card"):
        digits = "".join(ch for ch in text if ch.isdigit())
        if span.kind == "mobile" and len(digits) > 11:
            digits = digits[-11:]
        if span.kind == "landline":
            digits = digits.removeprefix("0086").removeprefix("86").lstrip("0")
        if span.kind == "us_phone" and len(digits) == 11:
            digits = digits[1:]
        return digits
    if span.kind in ("id_card", "plate"):
        return "".join(ch for ch in text if ch.isalnum()).upper()
    if span.kind == "email":
        return text.lower()
    return "".join(text.split())


@maskers.register("none")
class NoMasking(Masker):
    """Show the value as written (auditors; a reader entitled to the full record)."""

    manifest = MaskerManifest(slug="none", title="No masking", permissiveness=100, reveals_value=True,
                              description="The original text, unchanged")

    def mask(self, span: PiiSpan, context: MaskContext) -> str:
        return span.text


def _stars(n: int) -> str:
    return "*" * max(n, 1)


@maskers.register("partial")
class PartialMasking(Masker):
    """Keep the parts people use to recognise a value, star the rest: 138****5678, 310***********1234,
    沪A·***45, z***@example.com, 张*."""

    manifest = MaskerManifest(slug="partial", title="Partial", permissiveness=50,
                              description="Keeps a recognisable prefix/suffix of the value, stars the rest")

    def mask(self, span: PiiSpan, context: MaskContext) -> str:
        value = normalized_value(span)
        kind = span.kind
        if kind == "mobile" and len(value) == 11:
            return f"{value[:3]}****{value[-4:]}"
        if kind == "landline":
            area = value[:2] if value[:2] in ("10",) or value[0] == "2" else value[:3]
            return f"0{area}-{_stars(len(value) - len(area) - 4)}{value[-4:]}"
        if kind == "us_phone":
            return f"(***) ***-{value[-4:]}"
        if kind == "id_card":
            return f"{value[:3]}{_stars(len(value) - 7)}{value[-4:]}"
        if kind == "bank_card":
            return f"{value[:4]}{_stars(len(value) - 8)}{value[-4:]}"
        if kind == "plate":
            if value.startswith("使"):
                return f"使***{value[-3:]}"
            return f"{value[:2]}·{_stars(len(value) - 4)}{value[-2:]}"
        if kind == "email":
            local, _, domain = span.text.partition("@")
            return f"{local[:1]}***@{domain}"
        if kind == "name":
            if value.isascii():
                return " ".join(f"{word[:1]}{_stars(len(word) - 1)}" for word in span.text.split())
            return f"{value[:1]}{_stars(len(value) - 1)}"
        return _stars(len(value))


@maskers.register("hash")
class HashMasking(Masker):
    """A keyed HMAC-SHA256 of the normalised value, shortened: [手机号#3f2a9c1b7d4e]. The same value gives
    the same tag under the same key, so analysts can link cases of one caller without seeing the number."""

    manifest = MaskerManifest(slug="hash", title="Keyed hash", permissiveness=20,
                              description="HMAC-SHA256 of the normalised value (12 hex digits), stable per key")

    def mask(self, span: PiiSpan, context: MaskContext) -> str:
        return f"[{context.label(span.kind)}#{pii_hash(span, context.key)}]"


def pii_hash(span: PiiSpan, key: bytes) -> str:
    """The 12-hex-digit keyed hash of a span's normalised value (kind included, so a phone and a card with
    the same digits do not collide)."""
    message = f"{span.kind}:{normalized_value(span)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:12]


@maskers.register("redact")
class Redaction(Masker):
    """Replace the value by its kind: [手机号], [phone]."""

    manifest = MaskerManifest(slug="redact", title="Redact", permissiveness=0,
                              description="Only the kind of data remains")

    def mask(self, span: PiiSpan, context: MaskContext) -> str:
        return f"[{context.label(span.kind)}]"
