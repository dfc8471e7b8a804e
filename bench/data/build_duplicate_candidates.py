#!/usr/bin/env python3
"""Candidate pairs for the labelled duplicate sample (`hotline_duplicate_pairs.csv`), by several routes.

This script only *proposes* pairs; every label in the CSV was given by reading both messages. It is
deterministic, but the committed sample came from a first version that iterated sets in hash order, so a
rerun proposes a similar, not the identical, list. It needs the TipDM messages from
`../shared/data/complaints/` and writes a review file with the text to a path outside the repository (the
licence of the messages is unknown, so their text never enters the repo):

    python bench/data/build_duplicate_candidates.py /tmp/dup_review.txt                     # first round
    python bench/data/build_duplicate_candidates.py /tmp/dup_review2.txt --hard-negatives   # second round

Routes (a pair keeps the first route that found it):

- `high_sim`   cosine ≥ 0.45 of character-bigram TF-IDF (subject + details);
- `place`      both mention the same rare place-like token (estate, company, school, road …), any similarity;
- `subject`    share a rare subject word (jieba) with cosine 0.15–0.45: same topic, maybe not same problem;
- `medium_sim` cosine 0.25–0.45 at random: hard negatives and paraphrased duplicates;
- `random`     uniformly random pairs;
- `hard_neg`   (second round) middling similarity and no shared place token — see `hard_negatives`.
"""

from __future__ import annotations

import csv
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import sparse

SHARED = Path(__file__).resolve().parents[3] / "shared"
MESSAGES = SHARED / "data" / "complaints" / "tipdm2020c_messages_unlabelled.csv"
PLACE = re.compile(r"[\u4e00-\u9fa5A-Za-z0-9]{2,10}?(?:小区|花园|家园|公寓|苑|广场|大厦|公司|学校|中学|小学|幼儿园|医院|"
                   r"市场|商城|城|湾|府|村|路|街|大道|社区|项目|楼盘|工业园|园)")
GENERIC = {"A市", "小区", "公司", "学校", "中学", "小学", "医院", "市场", "社区", "村", "马路", "道路", "本村",
           "我们小区", "该小区", "这个小区", "所在小区", "这个公司", "该公司", "我们村"}


def load() -> list[dict[str, str]]:
    with MESSAGES.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def bigram_tfidf(texts: list[str]) -> sparse.csr_matrix:
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        counts: dict[int, int] = defaultdict(int)
        for j in range(len(text) - 1):
            counts[vocab.setdefault(text[j:j + 2], len(vocab))] += 1
        for col, n in counts.items():
            rows.append(i)
            cols.append(col)
            vals.append(1 + np.log(n))
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)))
    df = np.bincount(m.indices, minlength=len(vocab))
    m = m.multiply(np.log((1 + len(texts)) / (1 + df)) + 1).tocsr()
    norms = np.sqrt(m.multiply(m).sum(axis=1)).A1
    return sparse.diags(1 / np.maximum(norms, 1e-12)) @ m


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dup_review.txt")
    rng = random.Random(20240611)
    rows = load()
    texts = [re.sub(r"\s+", "", r["留言主题"] + r["留言详情"]) for r in rows]
    m = bigram_tfidf(texts)
    sim = (m @ m.T).toarray()
    np.fill_diagonal(sim, 0)
    n = len(rows)
    pairs: dict[tuple[int, int], str] = {}

    def keep(i: int, j: int, route: str) -> None:
        key = (min(i, j), max(i, j))
        if i != j and key not in pairs:
            pairs[key] = route

    iu = np.triu_indices(n, 1)
    flat = sim[iu]
    high = np.flatnonzero(flat >= 0.45)
    for k in rng.sample(list(high), min(len(high), 190)):
        keep(int(iu[0][k]), int(iu[1][k]), "high_sim")

    places: dict[str, set[int]] = defaultdict(set)
    for i, text in enumerate(texts):
        for token in sorted(place_tokens(text)):
            places[token].add(i)
    place_pairs = [(i, j) for token, ids in places.items() if 2 <= len(ids) <= 6
                   for i in sorted(ids) for j in sorted(ids) if i < j]
    for i, j in rng.sample(place_pairs, min(len(place_pairs), 130)):
        keep(i, j, "place")

    import jieba  # only for the subject-word route
    words: dict[str, set[int]] = defaultdict(set)
    for i, r in enumerate(rows):
        for w in sorted(set(jieba.lcut(r["留言主题"]))):
            if len(w) >= 2 and not w.startswith("A"):
                words[w].add(i)
    subject_pairs = [(i, j) for w, ids in words.items() if 2 <= len(ids) <= 15
                     for i in sorted(ids) for j in sorted(ids) if i < j and 0.15 <= sim[i, j] < 0.45]
    for i, j in rng.sample(subject_pairs, min(len(subject_pairs), 70)):
        keep(i, j, "subject")

    medium = np.flatnonzero((flat >= 0.25) & (flat < 0.45))
    for k in rng.sample(list(medium), min(len(medium), 70)):
        keep(int(iu[0][k]), int(iu[1][k]), "medium_sim")

    for _ in range(50):
        keep(rng.randrange(n), rng.randrange(n), "random")

    write_review(out, rows, sorted(pairs.items(), key=lambda kv: rng.random()), sim)
    print(f"{len(pairs)} pairs → {out}", {route: list(pairs.values()).count(route) for route in set(pairs.values())})


def write_review(out: Path, rows: list[dict[str, str]], order: list[tuple[tuple[int, int], str]],
                 sim: np.ndarray) -> None:
    """The review file shows neither the route nor the similarity, so that labels come from reading alone;
    they go to a side file (`….routes.tsv`) that the CSV's `route` column is filled from afterwards."""
    with out.with_suffix(".routes.tsv").open("w", encoding="utf-8") as handle:
        for (i, j), route in order:
            handle.write(f"{rows[i]['留言编号']}\t{rows[j]['留言编号']}\t{route}\t{sim[i, j]:.3f}\n")
    with out.open("w", encoding="utf-8") as handle:
        for number, ((i, j), _route) in enumerate(order):
            handle.write(f"### {number} {rows[i]['留言编号']} {rows[j]['留言编号']}\n")
            for r in (rows[i], rows[j]):
                details = re.sub(r"\s+", " ", r["留言详情"])[:260]
                handle.write(f"  [{r['留言编号']}] {r['留言时间']} {r['留言用户']} | {r['留言主题']}\n     {details}\n")


def place_tokens(text: str) -> set[str]:
    """Place-like tokens (…小区, …公司, …路) minus the generic ones."""
    return {t for t in PLACE.findall(text) if t not in GENERIC and not t.startswith(("A市", "我", "该", "这"))}


def hard_negatives(out: Path, count: int = 130, seed: int = 20240612) -> None:
    """Second round (`hard_neg` route): pairs of middling similarity (cosine 0.15–0.5) that share no rare
    place-like token, excluding the first round's pairs. They are mostly the same kind of complaint about
    different places, which the first round had too few of; every one was still labelled by reading."""
    rng = random.Random(seed)
    rows = load()
    texts = [re.sub(r"\s+", "", r["留言主题"] + r["留言详情"]) for r in rows]
    m = bigram_tfidf(texts)
    sim = (m @ m.T).toarray()
    labelled = Path(__file__).with_name("hotline_duplicate_pairs.csv")
    with labelled.open(encoding="utf-8") as handle:
        seen = {(r["id_a"], r["id_b"]) for r in csv.DictReader(handle) if r["route"] != "hard_neg"}
    places = [place_tokens(text) for text in texts]
    iu = np.triu_indices(len(rows), 1)
    flat = sim[iu]
    middle = [k for k in np.flatnonzero((flat >= 0.15) & (flat < 0.5))
              if not places[iu[0][k]] & places[iu[1][k]]]
    chosen = []
    for k in rng.sample(middle, len(middle)):
        i, j = int(iu[0][k]), int(iu[1][k])
        key = tuple(sorted((rows[i]["留言编号"], rows[j]["留言编号"]), key=int))
        if key not in seen:
            seen.add(key)
            chosen.append((i, j))
        if len(chosen) == count:
            break
    write_review(out, rows, [(pair, "hard_neg") for pair in chosen], sim)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--hard-negatives":
        hard_negatives(Path(sys.argv[1]))
    else:
        main()
