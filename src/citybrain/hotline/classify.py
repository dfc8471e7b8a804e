"""Complaint classifiers: which category a citizen's message belongs to, with a confidence.

A classifier is a subclass of `ComplaintClassifier` registered with `@classifiers.register("slug")` and
described by a `ClassifierManifest`. Labels are whatever the city uses: TipDM first-level classes, catalogue
event-type codes (`CG-01-003`), 311 request types. Texts are Chinese, English or both; by convention a
text's first line is its title (a message's subject) and the rest its body — a one-line text is both.

Besides labelled texts, `fit` takes two optional, label-free aids:

* `hints` — phrases per label from domain knowledge: a taxonomy's second- and third-level terms, the
  catalogue's keywords. Plug-ins may learn from them (the built-in ones do, as weighted pseudo-documents
  and as keyword counts).
* `background` — unlabelled messages of the same kind (a hotline's backlog). The built-in plug-in takes
  its IDF statistics from them, which no label touches.

A trained classifier is saved as two files side by side: `NAME.npz` (NumPy arrays only, loaded without
pickle, so a model file cannot run code) and `NAME.json` (`ModelManifest`: classifier and version, labels,
when, on how many samples, the cross-validated figures, the SHA-256 of the training data and of the
model file).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from citybrain.core.registry import Registry

if TYPE_CHECKING:
    from citybrain.disposal.catalogue.spec import EventTypeSpec


BUILTIN_MODULES = ("citybrain.hotline.linear",)
MAX_CHARS = 20_000  # the intake API's limit; longer texts are cut (a complaint's gist is at its start)
MODEL_FORMAT = 1


# -- text -------------------------------------------------------------------------------------------------

_EXCEL_ESCAPE = re.compile(r"_x000[dDaA9]_")  # CR/LF/TAB as Excel writes them into exported cells
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"[^\S\n]+")


def normalise(text: str) -> str:
    """One form for every way a message is typed: full-width → half-width and compatibility forms (NFKC),
    lower case, Excel's `_x000d_` escapes gone, every run of digits one `0` (phone numbers, dates, house
    numbers and amounts tell nothing about the category and would each be a feature of their own), runs of
    spaces one space. Line breaks are kept: the first line is the title."""
    text = _EXCEL_ESCAPE.sub("\n", text[:MAX_CHARS])
    text = unicodedata.normalize("NFKC", text).lower()
    text = _DIGITS.sub("0", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def title_and_body(text: str) -> tuple[str, str]:
    """(title, body) of a normalised text: its first line and the rest; a one-line text is both."""
    title, _, body = text.partition("\n")
    return title, (body.replace("\n", " ") or title)


def hint_terms(phrase: str) -> list[str]:
    """The terms of a hint phrase: split at spaces and list punctuation (`,`、`;`/`|`)."""
    return [term for term in re.split(r"[\s,;/|、，；]+", normalise(phrase)) if term]


def training_data_sha256(texts: Sequence[str], labels: Sequence[str]) -> str:
    """SHA-256 of the training pairs in order (UTF-8 JSON lines), so a model names the data it learned."""
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update(json.dumps([text, label], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class Background:
    """Unlabelled messages, normalised once; plug-ins keep statistics of them (per feature set) here, so
    the cross-validation folds that share a background compute them once."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = [normalise(t) for t in texts]
        self._cache: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def statistic(self, key: Any, compute: Callable[[list[str]], Any]) -> Any:
        """`compute(texts)`, computed once per key."""
        if key not in self._cache:
            self._cache[key] = compute(self.texts)
        return self._cache[key]


# -- the kind ---------------------------------------------------------------------------------------------


class ClassifierManifest(BaseModel):
    """What a classifier plug-in is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slug: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    title: str
    languages: list[str] = Field(min_length=1, description="BCP 47 codes of the languages it handles")
    version: str = Field(description="Changes when the features or the saved arrays change")
    description: str = ""


class CrossValidated(BaseModel):
    """Stratified k-fold figures of a configuration on its training data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    folds: int
    repeats: int
    seed: int
    macro_f1: float
    macro_f1_std: float
    accuracy: float
    accuracy_std: float


class ModelManifest(BaseModel):
    """The JSON file next to a saved model."""

    model_config = ConfigDict(extra="forbid")

    format: int = MODEL_FORMAT
    classifier: str
    classifier_version: str
    labels: list[str]
    trained_at: datetime
    samples: int
    training_data_sha256: str
    source: str | None = Field(None, description="Where the training data came from (a file name)")
    cross_validation: CrossValidated | None = None
    model_file: str
    model_sha256: str
    settings: dict[str, Any] = Field(default_factory=dict, description="The plug-in's parameters and state")


@dataclass(frozen=True, slots=True)
class Prediction:
    """The likeliest label, its confidence in [0, 1], and the next labels with theirs (best first)."""

    label: str
    confidence: float
    alternatives: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Trained:
    """What `fit` records about the data it learned from."""

    samples: int
    training_data_sha256: str
    trained_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ComplaintClassifier(ABC):
    """Base of every complaint classifier plug-in; subclasses set `manifest` and implement the four
    underscored methods. `fit`, `predict`, `save` and `load` validate, normalise and keep the records."""

    manifest: ClassVar[ClassifierManifest]

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self.labels: list[str] = []
        self.trained: Trained | None = None

    @property
    def slug(self) -> str:
        return self.manifest.slug

    def fit(self, texts: Sequence[str], labels: Sequence[str], *,
            hints: Mapping[str, Sequence[str]] | None = None,
            background: Background | Iterable[str] | None = None) -> Self:
        """Learn from labelled texts (and, if the plug-in uses them, hints and unlabelled background)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        labels = [str(label).strip() for label in labels]
        if any(not label for label in labels):
            raise ValueError("a label is empty")
        known = sorted(set(labels))
        if len(known) < 2:
            raise ValueError(f"at least 2 classes are needed to learn from; found {len(known)}")
        normalised = [normalise(t or "") for t in texts]
        if not any(normalised):
            raise ValueError("every text is empty")
        if background is not None and not isinstance(background, Background):
            background = Background(background)
        kept_hints = {label: [p for p in phrases if normalise(p)]
                      for label, phrases in (hints or {}).items() if label in known}
        self.labels = known
        self._fit(normalised, labels, hints={k: v for k, v in kept_hints.items() if v}, background=background)
        self.trained = Trained(len(texts), training_data_sha256(list(texts), labels))
        return self

    def predict(self, texts: Sequence[str], *, top: int = 5) -> list[Prediction]:
        """For each text its likeliest label, with up to `top - 1` alternatives."""
        if not self.labels:
            raise RuntimeError(f"classifier {self.slug!r} is not trained")
        if not texts:
            return []
        probabilities = np.clip(self._probabilities([normalise(t or "") for t in texts]), 0.0, 1.0)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :max(1, top)]
        predictions = []
        for row, ranked in zip(probabilities, order, strict=True):
            scored = [(self.labels[i], round(float(row[i]), 6)) for i in ranked]
            predictions.append(Prediction(scored[0][0], scored[0][1], tuple(scored[1:])))
        return predictions

    def save(self, path: Path | str, *, cross_validation: CrossValidated | None = None,
             source: str | None = None) -> Path:
        """Write `path.npz` and `path.json` (any suffix of `path` is replaced); return the manifest's path."""
        if self.trained is None:
            raise RuntimeError(f"classifier {self.slug!r} is not trained")
        model_path, manifest_path = model_files(path)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        arrays, settings = self._state()
        with model_path.open("wb") as handle:
            np.savez_compressed(handle, labels=np.array(self.labels), **arrays)
        manifest = ModelManifest(
            classifier=self.slug, classifier_version=self.manifest.version, labels=self.labels,
            trained_at=self.trained.trained_at, samples=self.trained.samples,
            training_data_sha256=self.trained.training_data_sha256, source=source,
            cross_validation=cross_validation, model_file=model_path.name,
            model_sha256=hashlib.sha256(model_path.read_bytes()).hexdigest(),
            settings={"seed": self.seed, **settings})
        manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return manifest_path

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """The classifier saved at `path` (either file, or their common stem)."""
        model_path, manifest_path = model_files(path)
        manifest = ModelManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        if manifest.classifier != cls.manifest.slug:
            raise ValueError(f"{manifest_path} holds a {manifest.classifier!r} model, not {cls.manifest.slug!r}")
        if manifest.classifier_version != cls.manifest.version:
            raise ValueError(f"{manifest_path}: model of {manifest.classifier} version "
                             f"{manifest.classifier_version}; this is version {cls.manifest.version} — retrain it")
        raw = model_path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != manifest.model_sha256:
            raise ValueError(f"{model_path} is not the model file {manifest_path.name} describes (SHA-256 differs)")
        with np.load(model_path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        settings = dict(manifest.settings)
        model = cls(seed=int(settings.pop("seed", 0)))
        model.labels = [str(label) for label in arrays.pop("labels")]
        model._restore(arrays, settings)
        model.trained = Trained(manifest.samples, manifest.training_data_sha256, manifest.trained_at)
        return model

    # -- what a plug-in implements (texts arrive normalised) ------------------------------------------------

    @abstractmethod
    def _fit(self, texts: list[str], labels: list[str], *, hints: dict[str, list[str]],
             background: Background | None) -> None:
        """Learn; `self.labels` is already the sorted label set and `hints` only name labels in it."""

    @abstractmethod
    def _probabilities(self, texts: list[str]) -> np.ndarray:
        """(len(texts), len(self.labels)) scores in [0, 1], each row summing to 1."""

    @abstractmethod
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What `save` writes: NumPy arrays (no object arrays) and JSON-serialisable settings."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray], settings: dict[str, Any]) -> None:
        """Rebuild from what `_state` returned."""


classifiers: Registry[type[ComplaintClassifier]] = Registry("complaint classifier")


def load_classifiers() -> Registry[type[ComplaintClassifier]]:
    """Import the built-in and installed (`citybrain.classifiers` entry points) classifier plug-ins
    (idempotent) and return the registry."""
    return classifiers.load(BUILTIN_MODULES, "citybrain.classifiers")


def create_classifier(slug: str, *, seed: int = 0) -> ComplaintClassifier:
    """A new, untrained classifier of a registered kind (KeyError naming the known ones otherwise)."""
    return load_classifiers().get(slug)(seed=seed)


def model_files(path: Path | str) -> tuple[Path, Path]:
    """(model arrays, manifest) for a path given with either suffix or none."""
    stem = Path(path)
    if stem.suffix in (".npz", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def load_classifier(path: Path | str) -> ComplaintClassifier | None:
    """The classifier saved at `path`, whichever plug-in made it; None when nothing was saved there."""
    model_path, manifest_path = model_files(path)
    if not manifest_path.exists() and not model_path.exists():
        return None
    if not manifest_path.exists() or not model_path.exists():
        missing = manifest_path if not manifest_path.exists() else model_path
        raise FileNotFoundError(f"{missing} is missing (a model is two files: .npz and .json)")
    slug = json.loads(manifest_path.read_text(encoding="utf-8")).get("classifier", "")
    return load_classifiers().get(slug).load(path)


def seed_classifier(specs: Sequence[EventTypeSpec], *, slug: str = "tfidf-linear") -> ComplaintClassifier:
    """A classifier over the catalogue's event types learnt from the catalogue alone: each type's examples
    and names are its training texts, its keywords and names its hints. What a fresh install classifies
    with until the city trains on its own labelled complaints."""
    texts: list[str] = []
    labels: list[str] = []
    hints: dict[str, list[str]] = {}
    for spec in specs:
        names = [spec.name.zh, spec.name.en]
        for example in [*spec.examples.zh, *spec.examples.en, *names]:
            texts.append(example)
            labels.append(spec.code)
        hints[spec.code] = [*spec.keywords.zh, *spec.keywords.en, *names]
    return create_classifier(slug).fit(texts, labels, hints=hints)


# -- evaluation -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Evaluation:
    """Repeated stratified k-fold results: per-fold figures, and over all repeats pooled, the confusion
    matrix (rows true, columns predicted, in `labels` order) and per-class precision, recall and F1."""

    labels: list[str]
    folds: int
    repeats: int
    seed: int
    fold_macro_f1: list[float]
    fold_accuracy: list[float]
    confusion: np.ndarray
    fit_seconds: float
    fit_samples: int
    predict_seconds: float
    predict_samples: int

    @property
    def macro_f1(self) -> float:
        return float(np.mean(self.fold_macro_f1))

    @property
    def macro_f1_std(self) -> float:
        return float(np.std(self.fold_macro_f1))

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))

    def per_class(self) -> list[tuple[str, float, float, float, int]]:
        """(label, precision, recall, F1, support per repeat) from the pooled confusion matrix."""
        rows = []
        for i, label in enumerate(self.labels):
            hits = float(self.confusion[i, i])
            predicted = float(self.confusion[:, i].sum())
            actual = float(self.confusion[i].sum())
            precision = hits / predicted if predicted else 0.0
            recall = hits / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append((label, precision, recall, f1, int(actual) // self.repeats))
        return rows

    def summary(self) -> CrossValidated:
        return CrossValidated(folds=self.folds, repeats=self.repeats, seed=self.seed,
                              macro_f1=round(self.macro_f1, 4), macro_f1_std=round(self.macro_f1_std, 4),
                              accuracy=round(self.accuracy, 4),
                              accuracy_std=round(float(np.std(self.fold_accuracy)), 4))


def check_cross_validation(labels: Sequence[str], folds: int) -> None:
    """ValueError unless stratified `folds`-fold cross-validation can run on these labels."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise ValueError(f"at least 2 classes are needed; found {len(counts)}")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
    small = sorted((n, label) for label, n in counts.items() if n < folds)
    if small:
        shown = ", ".join(f"{label!r} ({n})" for n, label in small[:5])
        raise ValueError(f"{len(small)} classes have fewer samples than the {folds} folds: {shown}"
                         f"{' …' if len(small) > 5 else ''}")


def cross_validate(make: Callable[[], ComplaintClassifier], texts: Sequence[str], labels: Sequence[str], *,
                   folds: int = 5, repeats: int = 1, seed: int = 0,
                   hints: Mapping[str, Sequence[str]] | None = None,
                   background: Background | Iterable[str] | None = None,
                   on_fold: Callable[[int, int], None] | None = None) -> Evaluation:
    """Repeated stratified k-fold cross-validation of `make()`. Each fold's model is fitted on that fold's
    training part only (hints and background carry no labels of the held-out part); `on_fold(done, total)`
    after each fold."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    labels = [str(label).strip() for label in labels]
    check_cross_validation(labels, folds)
    if background is not None and not isinstance(background, Background):
        background = Background(background)
    known = sorted(set(labels))
    index = {label: i for i, label in enumerate(known)}
    truth = np.array(labels, dtype=object)
    confusion = np.zeros((len(known), len(known)), dtype=np.int64)
    fold_f1: list[float] = []
    fold_accuracy: list[float] = []
    fit_seconds = predict_seconds = 0.0
    fit_samples = predict_samples = 0
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    total = folds * repeats
    for done, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels), start=1):
        model = make()
        started = time.perf_counter()
        model.fit([texts[i] for i in train], [labels[i] for i in train], hints=hints, background=background)
        fit_seconds += time.perf_counter() - started
        started = time.perf_counter()
        predicted = [p.label for p in model.predict([texts[i] for i in test], top=1)]
        predict_seconds += time.perf_counter() - started
        fit_samples += len(train)
        predict_samples += len(test)
        expected = truth[test].tolist()
        fold_f1.append(float(f1_score(expected, predicted, labels=known, average="macro", zero_division=0)))
        fold_accuracy.append(float(accuracy_score(expected, predicted)))
        for want, got in zip(expected, predicted, strict=True):
            confusion[index[want], index[got]] += 1
        if on_fold is not None:
            on_fold(done, total)
    return Evaluation(known, folds, repeats, seed, fold_f1, fold_accuracy, confusion, fit_seconds, fit_samples,
                      predict_seconds, predict_samples)
