"""One contract for every registered complaint classifier (built-in or plug-in): it learns a small,
separable Chinese + English set, answers within its labels with sorted confidences in [0, 1], gives the
same answers after a save/load round trip and for the same seed, and survives empty and huge texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from citybrain.hotline.classify import (
    ClassifierManifest,
    ComplaintClassifier,
    create_classifier,
    load_classifier,
    load_classifiers,
    model_files,
    normalise,
    title_and_body,
)

ALL = load_classifiers().items()
IDS = [slug for slug, _ in ALL]

TRAIN = {
    "waste": ["垃圾桶满了没人清运", "小区垃圾堆放臭气熏天", "路边垃圾无人清理", "垃圾站污水横流",
              "Garbage bin overflowing on Main St", "Trash not collected for a week", "垃圾分类点乱扔垃圾",
              "Overflowing trash cans near the park"],
    "noise": ["工地夜间施工噪音扰民", "广场舞音响噪音太大", "KTV噪音半夜不停", "装修电钻噪音吵得睡不着",
              "Loud construction noise at night", "Neighbours playing loud music noise", "噪音污染严重影响休息",
              "Noise from the bar every night"],
    "water": ["自来水停水三天了", "水管破裂漏水严重", "自来水水质发黄", "小区供水水压太低",
              "Water main leaking on the street", "No water supply since Monday", "水表漏水没人修",
              "Tap water is brown and smells"],
}
PROBES = {"waste": ["楼下垃圾没人清运", "trash everywhere, garbage not collected"],
          "noise": ["晚上施工噪音太吵", "noise all night, too loud"],
          "water": ["停水了什么时候供水", "water pipe leaking, no water"]}


def training_set() -> tuple[list[str], list[str]]:
    texts = [text for texts in TRAIN.values() for text in texts]
    labels = [label for label, texts in TRAIN.items() for _ in texts]
    return texts, labels


def trained(slug: str, seed: int = 0) -> ComplaintClassifier:
    texts, labels = training_set()
    return create_classifier(slug, seed=seed).fit(texts, labels)


@pytest.mark.parametrize(("slug", "cls"), ALL, ids=IDS)
def test_manifest_describes_the_plugin(slug: str, cls: type[ComplaintClassifier]) -> None:
    assert isinstance(cls.manifest, ClassifierManifest)
    assert cls.manifest.slug == slug
    assert cls.manifest.languages and cls.manifest.version and cls.manifest.title


@pytest.mark.parametrize("slug", IDS)
def test_learns_a_separable_bilingual_set(slug: str) -> None:
    model = trained(slug)
    assert model.labels == sorted(TRAIN)
    for label, probes in PROBES.items():
        for probe, prediction in zip(probes, model.predict(probes), strict=True):
            assert prediction.label == label, f"{probe!r} → {prediction}"


@pytest.mark.parametrize("slug", IDS)
def test_predictions_are_labels_with_sorted_confidences(slug: str) -> None:
    model = trained(slug)
    texts = [p for probes in PROBES.values() for p in probes] + ["完全无关的一句话", "hello"]
    for prediction in model.predict(texts, top=3):
        scored = [(prediction.label, prediction.confidence), *prediction.alternatives]
        assert len(scored) == 3
        assert {label for label, _ in scored} == set(TRAIN)
        scores = [score for _, score in scored]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert [len(p.alternatives) for p in model.predict(texts[:2], top=1)] == [0, 0]


@pytest.mark.parametrize("slug", IDS)
def test_save_and_load_give_identical_predictions(slug: str, tmp_path) -> None:
    model = trained(slug)
    manifest_path = model.save(tmp_path / "models" / "m.npz", source="toy.csv")
    assert manifest_path == tmp_path / "models" / "m.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["classifier"] == slug and manifest["labels"] == sorted(TRAIN)
    assert manifest["samples"] == 24 and len(manifest["training_data_sha256"]) == 64
    again = load_classifier(tmp_path / "models" / "m")
    assert type(again) is type(model)
    texts = [p for probes in PROBES.values() for p in probes] + ["", "噪音 garbage 停水"]
    assert again.predict(texts, top=3) == model.predict(texts, top=3)


@pytest.mark.parametrize("slug", IDS)
def test_same_seed_same_model(slug: str) -> None:
    texts = [p for probes in PROBES.values() for p in probes]
    assert trained(slug, seed=7).predict(texts, top=3) == trained(slug, seed=7).predict(texts, top=3)


@pytest.mark.parametrize("slug", IDS)
def test_empty_blank_and_huge_texts(slug: str) -> None:
    model = trained(slug)
    huge = "垃圾没人清运。" * 30_000 + "noise " * 20_000
    predictions = model.predict(["", "   \n\t  ", "　　", huge, "\n\n标题\n\n正文"])
    assert len(predictions) == 5
    assert all(p.label in TRAIN and 0.0 <= p.confidence <= 1.0 for p in predictions)
    assert predictions[3].label == "waste"


@pytest.mark.parametrize("slug", IDS)
def test_fit_refuses_what_it_cannot_learn(slug: str) -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        create_classifier(slug).fit(["a", "b"], ["x", "x"])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        create_classifier(slug).fit(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="every text is empty"):
        create_classifier(slug).fit(["", " "], ["x", "y"])
    with pytest.raises(RuntimeError, match="not trained"):
        create_classifier(slug).predict(["a"])


def test_a_changed_model_file_is_refused(tmp_path) -> None:
    trained(IDS[0]).save(tmp_path / "m")
    arrays, manifest = model_files(tmp_path / "m")
    with np.load(arrays) as stored:
        content = {name: stored[name] for name in stored.files}
    content["intercept"] = content["intercept"] + 1
    np.savez_compressed(arrays, **content)
    with pytest.raises(ValueError, match="SHA-256 differs"):
        load_classifier(tmp_path / "m")
    manifest.unlink()
    with pytest.raises(FileNotFoundError, match="m.json is missing"):
        load_classifier(tmp_path / "m")
    arrays.unlink()
    assert load_classifier(tmp_path / "m") is None


def test_normalisation() -> None:
    assert normalise("ＡＢＣ１２３　全角，标点") == "abc0 全角,标点"
    assert normalise("电话13812345678_x000d_\n  第二行 ") == "电话0\n第二行"
    assert title_and_body("标题\n正文一\n正文二") == ("标题", "正文一 正文二")
    assert title_and_body("只有一行") == ("只有一行", "只有一行")


def test_seed_classifier_learns_the_catalogue_alone() -> None:
    from citybrain.disposal.catalogue.spec import EventTypeSpec
    from citybrain.hotline.classify import seed_classifier

    def spec(code: str, zh: str, en: str, department: str, keywords: list[str], examples: list[str]) -> EventTypeSpec:
        return EventTypeSpec.model_validate({
            "code": code, "name": {"zh": zh, "en": en}, "category": "city_management", "department": department,
            "sla": {"respond": "1h", "handle": "2wd", "close": "1d"},
            "keywords": {"zh": keywords, "en": []}, "examples": {"zh": examples, "en": []}})

    specs = [spec("CG-01-001", "垃圾未清运", "Uncollected waste", "chengguan", ["垃圾", "清运", "垃圾桶"],
                  ["小区垃圾三天没人清运"]),
             spec("CG-02-001", "施工噪音", "Construction noise", "shengtai", ["噪音", "施工", "扰民"], []),
             spec("SW-01-001", "供水中断", "Water outage", "shuiwu", ["停水", "供水", "水压"], ["整栋楼停水"])]
    model = seed_classifier(specs)
    assert model.labels == ["CG-01-001", "CG-02-001", "SW-01-001"]
    answers = model.predict(["楼下垃圾桶满了", "半夜施工噪音扰民", "突然停水了 water outage"])
    assert [a.label for a in answers] == ["CG-01-001", "CG-02-001", "SW-01-001"]
