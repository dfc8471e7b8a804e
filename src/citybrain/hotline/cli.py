"""`citybrain hotline`: train the complaint classifier on a city's own labelled messages, and try it."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from citybrain.cli_support import HomeOpt, KeyOpt, console, err_console, fail, settings_from

hotline_app = typer.Typer(help="接诉即办: the citizen hotline's complaint classifier.", no_args_is_help=True)


TextColumnOpt = Annotated[list[str] | None, typer.Option(
    "--text-column", "-t",
    help="Column holding text; repeat it to join several (the first is the title). Default: text.")]
LabelColumnOpt = Annotated[str, typer.Option("--label-column", "-l", help="Column holding the label.")]


def default_model(home: Path) -> Path:
    """Where the running hotline looks for the city's own classifier ({home}/models/…npz + .json)."""
    from citybrain.hotline.runtime import MODEL_NAME

    return settings_from(home=home).home / "models" / MODEL_NAME


@hotline_app.command()
def train(
    file: Annotated[Path, typer.Argument(help="Labelled messages: CSV (UTF-8, BOM or not) or JSON Lines.")],
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = "label",
    classifier: Annotated[str, typer.Option("--classifier", "-c", help="Classifier plug-in slug.")] = "tfidf-linear",
    folds: Annotated[int, typer.Option(min=0, help="Stratified cross-validation folds; 0 skips it.")] = 5,
    repeats: Annotated[int, typer.Option(min=1, max=20, help="Cross-validation repeats (other splits).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the splits and of the classifier.")] = 0,
    hints: Annotated[Path | None, typer.Option(
        help="Phrases per label: JSON {label: [phrase…]} or a CSV with the label first (a taxonomy file).")] = None,
    background: Annotated[Path | None, typer.Option(
        help="Unlabelled messages of the same kind (same text columns), for the term statistics.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to save the model (PATH.npz + PATH.json). Default: {home}/models/hotline-classifier.")] = None,
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """Cross-validate a classifier on a labelled file, print per-class figures, then train on all of it
    and save the model."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from citybrain.hotline.classify import (
        Background,
        check_cross_validation,
        create_classifier,
        cross_validate,
        load_classifiers,
    )
    from citybrain.hotline.labelled import read_hints, read_labelled, read_texts

    columns = text_column or ["text"]
    if classifier not in load_classifiers():
        fail(f"unknown classifier {classifier!r}; known: {', '.join(load_classifiers())}")
    if folds == 1:
        fail("--folds is 0 (no cross-validation) or at least 2")
    try:
        data = read_labelled(file, columns, label_column)
        if folds:
            check_cross_validation(data.labels, folds)
        elif len(set(data.labels)) < 2:
            raise ValueError(f"at least 2 classes are needed; found {len(set(data.labels))}")
        hint_map = read_hints(hints) if hints is not None else None
        unlabelled = read_texts(background, columns) if background is not None else None
    except ValueError as exc:
        fail(str(exc))
    classes = len(set(data.labels))
    console.print(f"{len(data.texts)} labelled messages, {classes} classes"
                  + (f" ({data.skipped} rows without a label left out)" if data.skipped else "")
                  + (f"; {sum(map(len, hint_map.values()))} hint phrases" if hint_map else "")
                  + (f"; {len(unlabelled)} background messages" if unlabelled else ""))
    shared = Background(unlabelled) if unlabelled else None
    summary = None
    if folds:
        with Progress(TextColumn("cross-validating {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task(classifier, total=folds * repeats)
            evaluation = cross_validate(
                lambda: create_classifier(classifier, seed=seed), data.texts, data.labels, folds=folds,
                repeats=repeats, seed=seed, hints=hint_map, background=shared,
                on_fold=lambda done, _total: progress.update(task, completed=done))
        table = Table(title=f"{classifier}: stratified {folds}-fold"
                            f"{f' × {repeats}' if repeats > 1 else ''} cross-validation")
        for name in ("class", "precision", "recall", "F1", "support"):
            table.add_column(name, justify="left" if name == "class" else "right")
        for label, precision, recall, f1, support in evaluation.per_class():
            table.add_row(label, f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}", str(support))
        console.print(table)
        summary = evaluation.summary()
        console.print(f"macro-F1 {summary.macro_f1:.3f} ± {summary.macro_f1_std:.3f} · accuracy "
                      f"{summary.accuracy:.3f} · {folds * repeats} folds")
    with console.status("training on every message"):
        model = create_classifier(classifier, seed=seed).fit(data.texts, data.labels, hints=hint_map,
                                                             background=shared)
    saved = model.save(out or default_model(home), cross_validation=summary, source=file.name)
    console.print(f"saved {saved.with_suffix('.npz')} and {saved.name}")


@hotline_app.command()
def classify(
    text: Annotated[str, typer.Argument(help="The message (its first line is taken as the title).")],
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Saved model (either file or their stem). Default: {home}/models/hotline-classifier.")] = None,
    top: Annotated[int, typer.Option(min=1, max=20, help="How many labels to show.")] = 3,
    home: HomeOpt = Path(".citybrain"),
) -> None:
    """The likeliest labels of a message, with confidences."""
    from citybrain.hotline.classify import load_classifier

    path = model or default_model(home)
    try:
        classifier = load_classifier(path)
    except (OSError, ValueError, KeyError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        fail(f"cannot load the model at {path}: {reason.splitlines()[0] if reason else type(exc).__name__}")
    if classifier is None:
        fail(f"no model at {path} (train one with `citybrain hotline train FILE`)")
    prediction = classifier.predict([text], top=top)[0]
    table = Table(title=f"{classifier.slug}", show_edge=False)
    table.add_column("label")
    table.add_column("confidence", justify="right")
    for label, confidence in [(prediction.label, prediction.confidence), *prediction.alternatives]:
        table.add_row(label, f"{confidence:.3f}")
    console.print(table)


@hotline_app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="A MyLA311 export (CSV) or TipDM messages (CSV with 留言编号 …).")],
    kind: Annotated[str, typer.Option(help="la311 or tipdm")] = "tipdm",
    url: Annotated[str, typer.Option(help="The running City Brain's API.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(help="Open311 API key (la311 requests are filed over Open311).")] = "",
    speed: Annotated[float | None, typer.Option(help="Replay this many times faster than the records happened; "
                                                     "default: as fast as the server takes them.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N records.")] = None,
    key: KeyOpt = "",
) -> None:
    """Replay real complaint records through a running City Brain, in the order they happened: each becomes
    a case that is classified (TipDM) or typed by its 311 request type (MyLA311), routed, dispatched and
    taken to closure as the record says. The server's own clock times the cases."""
    import csv
    import io

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from citybrain.hotline import replay as replaying

    if kind not in ("la311", "tipdm"):
        fail("--kind is la311 or tipdm")
    if not path.exists():
        fail(f"{path}: file not found")
    source = path
    if limit is not None:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(itertools.islice(csv.DictReader(handle), limit))
        if not rows:
            fail(f"{path}: no records")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        source = Path(tempfile.mkstemp(suffix=".csv")[1])
        source.write_text(buffer.getvalue(), encoding="utf-8")
    try:
        client_of = replaying.HttpClient(url, api_key=key)
    except ValueError as exc:
        fail(f"--url: {exc}")
    try:
        with client_of as client:
            try:
                if client.get("/health").status_code != 200:
                    fail(f"the City Brain at {url} is not healthy")
                if kind == "la311":
                    codes, evidence = _la311_maps(client)
                    steps = replaying.la311_steps(source, service_codes=codes, evidence=evidence)
                else:
                    steps = replaying.tipdm_steps(source)
            except (KeyError, ValueError) as exc:
                fail(f"{path}: not a {kind} file ({type(exc).__name__}: {exc})")
            except OSError as exc:
                fail(f"cannot reach the City Brain at {url}: {exc}")
            with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err_console) as progress:
                task = progress.add_task("replay", total=len(steps))
                try:
                    report = replaying.replay(client, steps, kind=kind, api_key=api_key, speed=speed,
                                              progress=lambda done: progress.update(task, completed=done))
                except OSError as exc:
                    fail(f"the City Brain at {url} stopped answering: {exc}")
    finally:
        if source is not path:
            source.unlink(missing_ok=True)
    console.print(f"{report.records:,} records: {report.opened:,} opened, {report.acted:,} steps taken, "
                  f"{len(report.failed):,} refused")
    for record, why in report.failed[:10]:
        err_console.print(f"record {record}: {why}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def _la311_maps(client: Any) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Request type → service code and service code → evidence kinds, from the server's catalogue."""
    codes: dict[str, str] = {}
    evidence: dict[str, list[str]] = {}
    cursor = None
    while True:
        page = client.get("/api/v1/catalogue", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        for spec in page["items"]:
            code = (spec.get("refs") or {}).get("open311_code") or spec["code"]
            evidence[code] = spec.get("evidence", [])
            for request_type in (spec.get("refs") or {}).get("la311", []):
                codes[request_type] = code
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return codes, evidence
