"""What every command module shares: the consoles, the one-line failure, the --db/--home/--bus options and
opening a platform (settings from flags and CITYBRAIN_* variables, migrated, state loaded).

Kept apart from `citybrain.cli` so capability CLIs import it without importing each other."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from citybrain.core.errors import CityBrainError
from citybrain.settings import Settings

if TYPE_CHECKING:
    from citybrain.platform import Platform

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[
    str, typer.Option("--db", help="Store URL: empty = SQLite under --home; postgresql://user@host/db")
]
HomeOpt = Annotated[Path, typer.Option("--home", help="Folder for embedded state (SQLite file, lake).")]
BusOpt = Annotated[str, typer.Option("--bus", show_default=False, help=(
    "'memory' (in-process) or nats://host:4222 (JetStream); default CITYBRAIN_BUS, else memory."))]
# Commands that call a running City Brain over HTTP sign in with an API key (`citybrain key create`)
KeyOpt = Annotated[str, typer.Option(
    "--key", envvar="CITYBRAIN_API_KEY", show_default=False,
    help="API key of the running City Brain (`citybrain key create`), sent as X-API-Key; or CITYBRAIN_API_KEY.")]


def key_headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key} if key else {}


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: how every command refuses bad input."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def settings_from(**overrides: Any) -> Settings:
    """Settings from CITYBRAIN_* variables with the given flags on top (empty flags are left out); a bad
    value is one line naming the variable."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None and v != ""})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            name = f"CITYBRAIN_{where.upper()}" if where else "settings"
            problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        fail("; ".join(problems))


def open_platform(settings: Settings) -> Platform:
    """A platform on the settings' store, migrated and with its org tree and types loaded."""
    from citybrain.platform import Platform

    try:
        platform = Platform(settings)
        platform.migrate()
        platform.load_state()
    except CityBrainError as exc:
        fail(exc.detail)
    except Exception as exc:  # noqa: BLE001 - a wrong URL, an unreachable server: one line, not a traceback
        fail(f"cannot open the store at {settings.database_url_shown}: {type(exc).__name__}: "
             f"{settings.scrub(str(exc).splitlines()[0])}")
    return platform


def open_store(db: str, home: Path, **overrides: Any) -> Platform:
    """`open_platform` for a command's --db and --home flags."""
    return open_platform(settings_from(db=db, home=home, **overrides))


def read_json_items(path: Path) -> list[Any]:
    """A JSON array, or NDJSON (one JSON value a line), read from a file; a bad file is one line."""
    import orjson

    if not path.exists():
        fail(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        if raw.lstrip().startswith(b"["):
            return list(orjson.loads(raw))
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        fail(f"{path}: not JSON or NDJSON: {exc}")


def moment_option(text: str | None, name: str, *, required: bool = False) -> Any:
    """A time given on the command line (ISO 8601 with its zone, `Z` allowed) as an aware datetime; None
    when absent and not required; one line naming the option otherwise."""
    from datetime import datetime

    if text is None:
        if required:
            fail(f"--{name} is required (e.g. 2026-12-01T08:00:00Z)")
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--{name}: not a time: {text!r} (e.g. 2026-12-01T08:00:00Z)")
    if moment.tzinfo is None:
        fail(f"--{name}: give the zone too (e.g. 2026-12-01T08:00:00+08:00)")
    return moment
