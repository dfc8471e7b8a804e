"""`citybrain catalogue …`: validate catalogue files, import them into the store, export and list it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.table import Table

from citybrain.cli_support import DbOpt, HomeOpt, console, err_console, fail, open_store
from citybrain.core.errors import InvalidInput

if TYPE_CHECKING:
    from citybrain.disposal.catalogue.service import Catalogue, Located
    from citybrain.disposal.catalogue.spec import EventTypeSpec

catalogue_app = typer.Typer(
    help="The event catalogue (一张清单): which event types exist, who handles them, how fast. Scenarios ship "
         "a starting catalogue; a city validates, imports and exports its own as YAML.",
    no_args_is_help=True,
)

FilesArg = Annotated[
    list[Path], typer.Argument(help="Catalogue YAML files (a `version` and a list of `event_types`).")
]
CategoryOpt = Annotated[
    list[str] | None, typer.Option("--category", help="Only this category (repeatable), e.g. fire_safety.")
]


def _read(paths: list[Path]) -> list[Located]:
    """The files' entries, checked together; every problem one line on stderr and exit 2."""
    from citybrain.disposal.catalogue import service

    texts = []
    for path in paths:
        if not path.is_file():
            fail(f"{path}: file not found")
        try:
            texts.append((str(path), path.read_text(encoding="utf-8"), f"import:{path.name}"))
        except UnicodeDecodeError:
            fail(f"{path}: not UTF-8 text")
    try:
        return service.read_files(texts)
    except InvalidInput as exc:
        _refuse(exc)


def _refuse(exc: InvalidInput) -> NoReturn:
    for error in exc.errors or []:
        err_console.print(f"[red]error:[/red] {error.field}: {error.reason}", highlight=False, soft_wrap=True)
    if not exc.errors:
        err_console.print(f"[red]error:[/red] {exc.detail}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _check_filters(categories: Iterable[str], department: str | None = None) -> None:
    from citybrain.disposal.catalogue.spec import CATEGORIES, DEPARTMENT_SLUGS

    for category in categories:
        if category not in CATEGORIES:
            fail(f"--category: unknown category {category!r}; known: {', '.join(CATEGORIES)}")
    if department is not None and department not in DEPARTMENT_SLUGS:
        fail(f"--department: unknown department {department!r}; known: {', '.join(sorted(DEPARTMENT_SLUGS))}")


def _summary(catalogue: Catalogue) -> Table:
    from citybrain.disposal.catalogue.spec import CATEGORIES

    table = Table(title=f"{len(catalogue)} event types")
    table.add_column("counted by")
    table.add_column("value")
    table.add_column("event types", justify="right")
    counts = catalogue.counts()
    for field in ("category", "department", "level", "priority"):
        for value, count in sorted(counts[field].items(), key=lambda item: (-item[1], item[0])):
            label = f"{value} ({CATEGORIES[value][0]})" if field == "category" else value
            table.add_row(field, label, str(count))
        table.add_section()
    return table


@catalogue_app.command("validate")
def validate(files: FilesArg) -> None:
    """Check catalogue files without a store: each entry against the schema, and the files together
    (codes, Open311 codes and 311/TipDM references unique; sensing triggers naming rules that exist;
    emergencies timed on the clock). Prints counts per category, department, level and priority; or one
    line per problem, `<file>: <field path>: <reason>`, and exits 2. Conflicts with entries already in a
    store are checked by `import`."""
    from citybrain.disposal.catalogue.service import Catalogue

    located = _read(files)
    console.print(_summary(Catalogue(item.entry for item in located)))
    console.print(f"valid: {len(located)} event types in {len(files)} file(s)")


@catalogue_app.command("import")
def import_catalogue(files: FilesArg, db: DbOpt = "", home: HomeOpt = Path(".citybrain")) -> None:
    """Validate the files (as `validate` does), then write their event types into the store's catalogue,
    replacing stored types of the same code (the scenarios' too). Nothing is written when any file, or
    the catalogue they would make with the stored types, has a problem (exit 2)."""
    from citybrain.disposal.catalogue import flows

    located = _read(files)
    platform = open_store(db, home)
    try:
        outcome = flows.import_entries(platform, located)
    except InvalidInput as exc:
        _refuse(exc)
    finally:
        platform.dispose()
    console.print(f"{len(located)} event types imported: {outcome.written} written, "
                  f"{outcome.unchanged} unchanged")


@catalogue_app.command("export")
def export_catalogue(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    category: CategoryOpt = None,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Write the store's catalogue (enabled types, by code) as YAML that `import` reads back to the same
    types; a fresh store holds the scenarios' catalogue."""
    from citybrain.disposal.catalogue import service

    categories = category or []
    _check_filters(categories)
    specs = [spec for spec in _stored(db, home) if not categories or spec.category in categories]
    if not specs:
        fail("no event type matches")
    text = service.dump_file(specs)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"{len(specs)} event types written to {output}")


@catalogue_app.command("list")
def list_catalogue(
    category: CategoryOpt = None,
    department: Annotated[
        str | None, typer.Option("--department", help="Only types this department leads or assists on.")
    ] = None,
    db: DbOpt = "",
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """A table of the store's event types: code, names, lead and assisting departments, level, priority
    and the time limits (respond / handle / close; `wd` = working days)."""
    categories = category or []
    _check_filters(categories, department)
    specs = [spec for spec in _stored(db, home)
             if (not categories or spec.category in categories)
             and (department is None or department == spec.department or department in spec.assisting)]
    table = Table(title=f"{len(specs)} event types")
    table.add_column("code", no_wrap=True)
    for column in ("名称", "name", "category", "departments", "level", "priority", "SLA"):
        table.add_column(column)
    for spec in specs:
        departments = spec.department + (f" + {', '.join(spec.assisting)}" if spec.assisting else "")
        table.add_row(spec.code, spec.name.zh, spec.name.en, spec.category, departments, spec.level,
                      spec.priority, f"{spec.sla.respond} / {spec.sla.handle} / {spec.sla.close}")
    console.print(table)


def _stored(db: str, home: Path) -> list[EventTypeSpec]:
    """The store's catalogue (seeded from the scenarios when fresh)."""
    from citybrain.disposal.catalogue import flows

    platform = open_store(db, home)
    try:
        return list(flows.load(platform))
    finally:
        platform.dispose()
