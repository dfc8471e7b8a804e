"""`citybrain hotline train | classify` on small files written here, and the one-line refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from tests.hotline.conftest import SHARED
from tests.hotline.test_classify_contract import TRAIN

TIPDM_LABELLED = SHARED / "data" / "complaints" / "tipdm2020c_messages_labelled.csv"

runner = CliRunner()


def write_csv(path: Path, rows: list[dict[str, str]], *, bom: bool = True) -> Path:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def labelled_rows() -> list[dict[str, str]]:
    return [{"subject": text[:6], "details": text, "category": label}
            for label, texts in TRAIN.items() for text in texts]


def test_train_then_classify(tmp_path) -> None:
    source = write_csv(tmp_path / "mine.csv", labelled_rows())
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps({"noise": ["噪音 扰民"], "elsewhere": ["not a label here"]}), encoding="utf-8")
    home = ["--home", str(tmp_path / "home")]
    trained = runner.invoke(app, ["hotline", "train", str(source), "-t", "subject", "-t", "details",
                                  "-l", "category", "--folds", "4", "--hints", str(hints), *home])
    assert trained.exit_code == 0, trained.output
    assert "24 labelled messages, 3 classes" in trained.output
    assert "macro-F1" in trained.output and "precision" in trained.output
    for label in TRAIN:
        assert label in trained.output
    manifest = json.loads((tmp_path / "home" / "models" / "hotline-classifier.json").read_text(encoding="utf-8"))
    assert manifest["cross_validation"]["folds"] == 4 and manifest["source"] == "mine.csv"
    assert 0.0 <= manifest["cross_validation"]["macro_f1"] <= 1.0

    answer = runner.invoke(app, ["hotline", "classify", "半夜施工噪音太吵了", "--top", "2", *home])
    assert answer.exit_code == 0, answer.output
    lines = [line for line in answer.output.splitlines() if any(label in line for label in TRAIN)]
    assert len(lines) == 2 and lines[0].split()[0] == "noise"


def test_train_on_jsonl_without_cross_validation(tmp_path) -> None:
    source = tmp_path / "mine.jsonl"
    source.write_text("\n".join(json.dumps({"text": r["details"], "label": r["category"]}, ensure_ascii=False)
                                for r in labelled_rows()), encoding="utf-8")
    out = tmp_path / "model"
    trained = runner.invoke(app, ["hotline", "train", str(source), "--folds", "0", "--classifier", "char-svm",
                                  "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    assert "macro-F1" not in trained.output
    answer = runner.invoke(app, ["hotline", "classify", "停水了", "--model", str(out) + ".json"])
    assert answer.exit_code == 0 and answer.output.splitlines()[-3].split()[0] == "water", answer.output


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    good = write_csv(tmp_path / "good.csv", labelled_rows(), bom=False)
    one_class = write_csv(tmp_path / "one.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    small = write_csv(tmp_path / "small.csv", [*({"text": f"t{i}", "label": "x"} for i in range(6)),
                                               {"text": "y1", "label": "y"}, {"text": "y2", "label": "y"}])
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("text,label\n垃圾,waste\n".encode("gbk"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "x"}\n{"text": ', encoding="utf-8")
    return [
        (["train", str(tmp_path / "absent.csv")], "file not found"),
        (["train", str(good)], "no column 'text', 'label'; it has subject, details, category"),
        (["train", str(good), "-t", "details", "-l", "kind"], "no column 'kind'"),
        (["train", str(one_class)], "at least 2 classes are needed; found 1"),
        (["train", str(one_class), "--folds", "0"], "at least 2 classes are needed; found 1"),
        (["train", str(small)], "1 classes have fewer samples than the 5 folds: 'y' (2)"),
        (["train", str(gbk)], "not UTF-8"),
        (["train", str(broken)], "not JSON Lines"),
        (["train", str(good), "-t", "details", "-l", "category", "--classifier", "bert"], "unknown classifier 'bert'"),
        (["train", str(good), "-t", "details", "-l", "category", "--folds", "1"], "--folds is 0"),
        (["classify", "hello", "--model", str(tmp_path / "none")], "no model at"),
        (["classify", "hello", "--model", str(good)], "no model at"),
        (["classify", "hello", "--model", str(tmp_path / "junk")], "cannot load the model"),
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    (tmp_path / "junk.json").write_text('{"classifier": "tfidf-linear", "labels": [', encoding="utf-8")
    for args, message in bad_inputs(tmp_path):
        result = runner.invoke(app, ["hotline", *args, "--home", str(tmp_path / "home")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, (args, result.output)


@pytest.mark.parametrize("command", [["hotline"], ["hotline", "train"], ["hotline", "classify"]])
def test_hotline_commands_explain_themselves(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.csv"], "nope.csv: file not found"),
        (["--kind", "nyc", "x.csv"], "--kind is la311 or tipdm"),
        (["--url", "http://127.0.0.1:9", "--limit", "2", str(TIPDM_LABELLED)], "cannot reach the City Brain"),
    ],
)
def test_replay_refuses_in_one_line(args: list[str], message: str) -> None:
    if str(TIPDM_LABELLED) in args and not TIPDM_LABELLED.exists():
        pytest.skip(f"{TIPDM_LABELLED} is absent")
    result = runner.invoke(app, ["hotline", "replay", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
