"""Who is calling: users with passwords (Argon2id) who get short-lived bearer tokens (HS256 JWT), and API
keys for devices and connected systems (a public id and a secret of which only the SHA-256 is kept).

Either way the caller becomes a `Context` whose actor (`user:NAME`, `key:ID`), roles and org scope every
check and every audit record use. Tokens carry the user's roles and scope; a disabled user is refused at
once, not at the token's expiry: each process keeps the users' state for `auth_cache_s` seconds.

The signing key comes from `CITYBRAIN_SECRET_KEY`, or from the file `CITYBRAIN_SECRET_KEY_FILE`, or else
from `{home}/secret.key`, made on first use with random bytes and readable by its owner only (so every
server process on the box signs with the same key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import msgspec
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session

from citybrain.core.context import ROLES, SYSTEM, Context, new_id
from citybrain.core.errors import Conflict, ErrorCollector, InvalidInput, NotFound, Unauthorized
from citybrain.governance import audit
from citybrain.governance.models import ApiKeyRow, UserRow

if TYPE_CHECKING:
    from citybrain.platform import Platform
    from citybrain.settings import Settings

ALGORITHM = "HS256"
KEY_PREFIX = "cbk"
_hasher = PasswordHasher()  # Argon2id, the library's current defaults (RFC 9106 low-memory profile)
# A hash to verify against when the user does not exist, so a wrong name costs what a wrong password costs
_NOBODY = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 12


def check_identity_fields(*, username: str | None = None, roles: list[str] | tuple[str, ...] = (),
                          org_scope: list[str] | None = None, platform: Platform | None = None) -> None:
    """Every bad field at once: the name's form, unknown roles, org units not in the tree."""
    errors = ErrorCollector()
    if username is not None and not (1 <= len(username) <= 100 and username.replace("_", "").replace(
            "-", "").replace(".", "").isalnum()):
        errors.add("username", "1-100 letters, digits, '.', '-' or '_'")
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        errors.add("roles", f"unknown: {', '.join(unknown)}; known: {', '.join(ROLES)}" if unknown
                   else f"at least one of {', '.join(ROLES)}")
    if org_scope is not None and platform is not None:
        missing = [code for code in org_scope if code not in platform.org_tree.units]
        if missing:
            errors.add("org_scope", f"not in the org tree: {', '.join(missing)}")
    errors.raise_if_any("invalid identity")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput.at("password", f"at least {MIN_PASSWORD} characters")


# ------------------------------------------------------------------------------------------------ users


def _audited(session: Session, by: Context, action: str, resource: str, at: datetime, **detail: Any) -> None:
    """Record a change of users or keys in the same transaction as the change (never a password or secret)."""
    audit.append_in(session, [audit.AuditEntry.of(by, action=action, resource=resource, outcome="ok",
                                                  client=by.actor.partition(":")[0], detail=detail)], at=at)


def add_user(platform: Platform, *, username: str, password: str, roles: list[str],
             org_scope: list[str] | None = None, display_name: str | None = None, by: Context = SYSTEM) -> UserRow:
    check_identity_fields(username=username, roles=roles, org_scope=org_scope, platform=platform)
    check_password(password)
    now = platform.clock.now()
    with platform.transaction() as session:
        if session.get(UserRow, username) is not None:
            raise Conflict(f"user {username} already exists")
        row = UserRow(username=username, display_name=display_name or username, password_hash=_hasher.hash(password),
                      roles=list(dict.fromkeys(roles)), org_scope=list(org_scope) if org_scope is not None else None,
                      disabled=False, created_at=now, password_changed_at=now)
        session.add(row)
        session.flush()
        _audited(session, by, "user.add", f"user:{username}", now, roles=row.roles, org_scope=row.org_scope)
        session.expunge(row)
    return row


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(sa.select(UserRow).order_by(UserRow.username)))


def count_users(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(UserRow)) or 0


def set_disabled(platform: Platform, username: str, disabled: bool, *, by: Context = SYSTEM) -> UserRow:
    with platform.transaction() as session:
        row = session.get(UserRow, username)
        if row is None:
            raise NotFound(f"user {username} does not exist")
        row.disabled = disabled
        session.flush()
        _audited(session, by, "user.disable" if disabled else "user.enable", f"user:{username}", platform.clock.now())
        session.expunge(row)
    return row


def set_password(platform: Platform, username: str, password: str, *, by: Context = SYSTEM) -> None:
    check_password(password)
    with platform.transaction() as session:
        row = session.get(UserRow, username)
        if row is None:
            raise NotFound(f"user {username} does not exist")
        row.password_hash = _hasher.hash(password)
        row.password_changed_at = platform.clock.now()
        _audited(session, by, "user.password", f"user:{username}", row.password_changed_at)


def authenticate(session: Session, username: str, password: str) -> UserRow:
    """The user whose password this is; Unauthorized naming no detail (which of the two was wrong)."""
    row = session.get(UserRow, username)
    try:
        _hasher.verify(row.password_hash if row is not None else _NOBODY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise Unauthorized("wrong username or password") from None
    if row is None:
        raise Unauthorized("wrong username or password")
    if row.disabled:
        raise Unauthorized(f"user {username} is disabled")
    return row


# ------------------------------------------------------------------------------------------------ tokens


# signing keys read from files, by path: read once per process, not on every request (a new key file
# takes effect when the servers restart)
_keys_read: dict[Path, bytes] = {}


def signing_key(settings: Settings) -> bytes:
    """The HS256 key (see the module docstring for where it comes from)."""
    given = settings.secret_key.get_secret_value()
    if given:
        return given.encode()
    path = Path(settings.secret_key_file) if settings.secret_key_file else settings.home / "secret.key"
    if path in _keys_read:
        return _keys_read[path]
    if settings.secret_key_file and not path.exists():
        raise InvalidInput.at("CITYBRAIN_SECRET_KEY_FILE", f"{path} does not exist")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise InvalidInput.at("secret_key", f"{path}: at least 32 characters")
    _keys_read[path] = key.encode()
    return _keys_read[path]


def issue_token(platform: Platform, user: UserRow) -> tuple[str, int]:
    """A bearer token for the user and its lifetime in seconds."""
    lifetime = int(platform.settings.token_lifetime_s)
    now = platform.clock.now()
    claims = {"sub": user.username, "roles": user.roles, "scope": user.org_scope, "iat": int(now.timestamp()),
              "exp": int((now + timedelta(seconds=lifetime)).timestamp()), "jti": secrets.token_hex(8)}
    return jwt.encode(claims, signing_key(platform.settings), algorithm=ALGORITHM), lifetime


def read_token(platform: Platform, token: str) -> dict[str, Any]:
    """The claims of a token this platform signed; Unauthorized if it is not one or has expired. Expiry is
    judged by the platform's clock (pyjwt would use the wall clock; a replay or a test runs on its own)."""
    try:
        claims = jwt.decode(token, signing_key(platform.settings), algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp", "iat"], "verify_exp": False, "verify_iat": False})
    except jwt.InvalidTokenError:
        raise Unauthorized("the token is not valid") from None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= platform.clock.now().timestamp():
        raise Unauthorized("the token has expired: sign in again")
    return claims


# ------------------------------------------------------------------------------------------------ API keys


@dataclass(frozen=True, slots=True)
class NewKey:
    row: ApiKeyRow
    secret: str  # the whole key as the holder presents it; shown once


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(platform: Platform, *, name: str, roles: list[str], org_scope: list[str] | None,
               expires_at: datetime | None = None, by: Context = SYSTEM) -> NewKey:
    """A new key made by `by`; its whole secret is in the answer, only its hash in the store."""
    check_identity_fields(roles=roles, org_scope=org_scope, platform=platform)
    if not 1 <= len(name) <= 200:
        raise InvalidInput.at("name", "1-200 characters")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    whole = f"{KEY_PREFIX}_{key_id}_{secret}"
    row = ApiKeyRow(id=key_id, name=name, secret_hash=_secret_hash(whole), roles=list(dict.fromkeys(roles)),
                    org_scope=list(org_scope) if org_scope is not None else None, created_by=by.actor,
                    created_at=platform.clock.now(), expires_at=expires_at, revoked_at=None, replaced_by=None)
    with platform.transaction() as session:
        session.add(row)
        session.flush()
        _audited(session, by, "key.create", f"key:{key_id}", row.created_at, name=name, roles=row.roles,
                 org_scope=row.org_scope)
        session.expunge(row)
    return NewKey(row, whole)


def revoke_key(platform: Platform, key_id: str, *, replaced_by: str | None = None,
               by: Context = SYSTEM) -> ApiKeyRow:
    with platform.transaction() as session:
        row = session.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFound(f"API key {key_id} does not exist")
        if row.revoked_at is None:
            row.revoked_at = platform.clock.now()
            row.replaced_by = replaced_by
            _audited(session, by, "key.revoke", f"key:{key_id}", row.revoked_at, replaced_by=replaced_by)
        session.flush()
        session.expunge(row)
    return row


def rotate_key(platform: Platform, key_id: str, *, by: Context = SYSTEM) -> NewKey:
    """A new key with the old one's name, roles and scope; the old one is revoked, pointing to it."""
    with platform.session() as session:
        old = session.get(ApiKeyRow, key_id)
        if old is None:
            raise NotFound(f"API key {key_id} does not exist")
        if old.revoked_at is not None:
            raise Conflict(f"API key {key_id} is revoked already")
        name, roles, scope, expires = old.name, old.roles, old.org_scope, old.expires_at
    fresh = create_key(platform, name=name, roles=roles, org_scope=scope, expires_at=expires, by=by)
    revoke_key(platform, key_id, replaced_by=fresh.row.id, by=by)
    return fresh


def list_keys(session: Session) -> list[ApiKeyRow]:
    return list(session.scalars(sa.select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)))


def check_key(session: Session, presented: str, now: datetime) -> ApiKeyRow:
    prefix, _, rest = presented.partition("_")
    key_id = rest.partition("_")[0]
    row = session.get(ApiKeyRow, key_id) if prefix == KEY_PREFIX and key_id else None
    if row is None or not hmac.compare_digest(row.secret_hash, _secret_hash(presented)):
        raise Unauthorized("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthorized(f"API key {row.id} was revoked" + (f" (replaced by {row.replaced_by})"
                                                                if row.replaced_by else ""))
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(f"API key {row.id} has expired")
    return row


# ------------------------------------------------------------------------------------------------ requests


class Identities:
    """Turns a request's credentials into a Context, keeping users' and keys' state a few seconds per
    process so a busy API does not read them on every request."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._users: dict[str, tuple[float, bool]] = {}  # username -> (read at, disabled or gone)
        self._keys: dict[str, tuple[float, Context | Unauthorized]] = {}

    def _fresh(self, read_at: float) -> bool:
        return time.monotonic() - read_at < self.platform.settings.auth_cache_s

    async def from_token(self, token: str) -> Context:
        claims = read_token(self.platform, token)
        username = str(claims["sub"])
        cached = self._users.get(username)
        if cached is None or not self._fresh(cached[0]):
            def state() -> bool:
                with self.platform.session() as session:
                    row = session.get(UserRow, username)
                    return row is None or row.disabled

            cached = self._users[username] = (time.monotonic(), await self.platform.run(state))
        if cached[1]:
            raise Unauthorized(f"user {username} is disabled or removed")
        scope = claims.get("scope")
        return Context(actor=f"user:{username}", roles=tuple(claims.get("roles") or ()),
                       org_scope=tuple(scope) if scope is not None else None)

    async def from_key(self, presented: str) -> Context:
        cached = self._keys.get(presented)
        if cached is None or not self._fresh(cached[0]):
            def resolve() -> Context | Unauthorized:
                with self.platform.session() as session:
                    try:
                        row = check_key(session, presented, self.platform.clock.now())
                    except Unauthorized as refusal:
                        return refusal
                    return Context(actor=f"key:{row.id}", roles=tuple(row.roles),
                                   org_scope=tuple(row.org_scope) if row.org_scope is not None else None)

            cached = self._keys[presented] = (time.monotonic(), await self.platform.run(resolve))
            if len(self._keys) > 100_000:  # many distinct wrong keys: forget them rather than grow
                self._keys.clear()
        if isinstance(cached[1], Unauthorized):
            raise Unauthorized(cached[1].detail)
        # the holder is cached, the request is not: each request gets its own context id (the audit
        # record's, answered as X-Request-Id)
        return msgspec.structs.replace(cached[1], id=new_id())
