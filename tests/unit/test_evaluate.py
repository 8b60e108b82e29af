"""The evaluation harness: metric formulas, test-before-learn ordering, atomic-file datasets, and a
small end-to-end run (random item vectors stand in for the encoder)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.evaluate import cli as eval_cli
from stream.evaluate import data as datasets
from stream.evaluate.data import EvalData, build_stream, read_atomic, sample_users
from stream.evaluate.methods import (
    METHODS,
    ItemKNN,
    Popularity,
    RecentItemKNN,
    make_methods,
    top_k,
)
from stream.evaluate.protocol import Tally, ndcg_at, run_prequential, split_index, summarise
from stream.evaluate.run import evaluate
from stream.models import Item
from stream.movielens import Movie, Rating
from stream.profile import InterestProfile
from stream.recommend import ItemIndex, Signals
from stream.settings import Settings

GENRES = ["Action", "Comedy", "Drama", "Horror"]


def write_atomic(root: Path, users: int = 12, items: int = 16, per_user: int = 10) -> Path:
    """A small dataset in RecBole's atomic format (tab-separated, ``name:type`` headers)."""
    rng = random.Random(3)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    t = 1_000_000
    for u in range(users):
        for i in rng.sample(range(items), per_user):
            t += rng.randrange(1, 50)
            lines.append(f"u{u}\tm{i}\t{rng.choice([1, 2, 3, 4, 4, 5, 5])}\t{t}")
    (root / "toy.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items_txt = ["item_id:token\tmovie_title:token_seq\tgenre:token_seq"]
    for i in range(items):
        items_txt.append(f"m{i}\tMovie number {i}\t{GENRES[i % 4]} {GENRES[(i + 1) % 4]}")
    (root / "toy.item").write_text("\n".join(items_txt) + "\n", encoding="utf-8")
    (root / "toy.user").write_text(
        "user_id:token\tage:float\n" + "".join(f"u{u}\t30\n" for u in range(users)),
        encoding="utf-8",
    )
    return root


def toy_stream(tmp_path: Path) -> EvalData:
    movies, ratings, n_users = read_atomic(write_atomic(tmp_path / "toy"))
    assert n_users == 12
    return build_stream("toy", movies, ratings, sample={"kind": "full"})


def random_embeddings(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# --- metrics ------------------------------------------------------------------------------------


def test_ndcg_of_one_relevant_item() -> None:
    assert ndcg_at(0) == 1.0
    assert ndcg_at(1) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(9) == pytest.approx(1 / math.log2(11))
    assert ndcg_at(None) == 0.0


def test_tally_recall_and_ndcg() -> None:
    t = Tally()
    for rank in (0, None, 2, None):
        t.add(rank)
    r = t.report()
    assert r["events"] == 4
    assert r["recall@10"] == pytest.approx(0.5)
    assert r["ndcg@10"] == pytest.approx((1.0 + 0.5) / 4, abs=1e-5)


def test_top_k_excludes_and_orders() -> None:
    scores = np.array([0.5, 0.9, 0.1, 0.9, -np.inf])
    assert top_k(scores, np.array([1]), 3) == [3, 0, 2]  # tie 1/3 broken by row, 1 excluded
    assert top_k(scores, np.array([], dtype=np.int64), 10) == [1, 3, 0, 2]  # no -inf rows
    assert top_k(scores[:0], np.array([], dtype=np.int64), 3) == []


def test_split_index_is_the_last_fifth() -> None:
    assert split_index(10) == 8
    assert split_index(11) == 9  # ceil: the report slice never grows past 20 %


# --- the protocol ---------------------------------------------------------------------------------


class Spy:
    """Records every call; recommends the rows it was told are candidates, in order."""

    name = "spy"

    def __init__(self, data: EvalData) -> None:
        self.data = data
        self.learned: list[int] = []
        self.asks: list[dict[str, Any]] = []

    def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
        self.asks.append(
            {
                "i": i,
                "person": person,
                "n": n,
                "exclude": set(exclude.tolist()),
                "learned": list(self.learned),
            }
        )
        return [r for r in range(n) if r not in set(exclude.tolist())][:k]

    def learn(self, i: int, person: int) -> None:
        self.learned.append(i)


def test_prequential_tests_before_learning_and_never_leaks(tmp_path: Path) -> None:
    data = toy_stream(tmp_path)
    spy = Spy(data)
    result = run_prequential(data, spy)
    assert spy.learned == list(range(len(data)))  # every event learned, in order
    assert [a["i"] for a in spy.asks] == result.asked
    for ask in spy.asks:
        i = ask["i"]
        assert data.positive[i]
        assert ask["learned"] == list(range(i)), "asked before learning its own event"
        # candidates: rows seen strictly before event i
        assert ask["n"] == (max(data.item[:i]) + 1 if i else 0)
        # excluded: exactly what this person consumed before i
        mine = {data.item[j] for j in range(i) if data.person[j] == ask["person"]}
        assert ask["exclude"] == mine
        assert data.item[i] not in mine
    assert sum(data.positive) >= len(result.asked) > 0


def test_a_hit_is_scored_at_its_rank(tmp_path: Path) -> None:
    data = toy_stream(tmp_path)

    class Oracle(Spy):
        name = "oracle"

        def recommend(self, i: int, person: int, n: int, exclude: np.ndarray, k: int) -> list[int]:
            return [self.data.item[i]]  # cheats on purpose: the held-out item, first

    result = run_prequential(data, Oracle(data))
    res = summarise(data, result)
    assert res["recall@10"] == 1.0 and res["ndcg@10"] == 1.0
    assert set(res) >= {"recall@10", "ndcg@10", "coverage", "events", "seconds", "last_20"}
    assert set(res["last_20"]) >= {"recall@10", "ndcg@10", "coverage", "events", "ms_per_event"}
    # the report slice's cost counts exactly the events past the cut
    assert result.learned_tail == len(data) - split_index(len(data))
    assert 0 < result.seconds_tail <= result.seconds_recommend + result.seconds_learn


def test_popularity_baseline_by_hand() -> None:
    """Three persons; the third is asked about item b after two people took b (and one took a)."""
    movies = {k: Movie(k, k.upper(), ("G",)) for k in ("a", "b", "c")}
    ratings = [
        Rating("u1", "b", 5, 10),
        Rating("u2", "b", 5, 20),
        Rating("u2", "a", 2, 30),
        Rating("u3", "b", 5, 40),
    ]
    data = build_stream("hand", movies, ratings)
    pop = Popularity(data)
    res = run_prequential(data, pop)
    by_event = dict(zip(res.asked, res.ranks, strict=True))
    last = len(data) - 1
    assert data.item[last] == data.item[0]  # u3 takes b
    assert by_event[last] == 0  # b is the most popular: a hit at rank 0
    assert by_event[0] == -1  # the very first event: nothing is known yet


def test_recent_item_knn_lets_only_the_latest_items_vote() -> None:
    """u1 took a then b; u2 took c then d. u3 took a long ago and c just now: whole-history kNN
    ties b and d; with only the last item voting, d (which went with c) wins."""
    movies = {k: Movie(k, k.upper(), ("G",)) for k in ("a", "b", "c", "d", "e")}
    ratings = [
        Rating("u1", "a", 5, 10),
        Rating("u1", "b", 5, 11),
        Rating("u2", "c", 5, 20),
        Rating("u2", "d", 5, 21),
        Rating("u3", "a", 5, 30),
        Rating("u3", "c", 5, 31),
        Rating("u3", "e", 5, 40),  # the question: u3's next item
    ]
    data = build_stream("hand", movies, ratings)
    row = {it.id: n for n, it in enumerate(data.items)}
    whole, recent = ItemKNN(data), RecentItemKNN(data, recent=1)
    for method in (whole, recent):
        for i in range(len(data) - 1):
            method.learn(i, data.person[i])
    u3 = data.person[len(data) - 1]
    exclude = np.array([row["a"], row["c"]])
    n = len(data.items)
    assert recent.recommend(0, u3, n, exclude, 1) == [row["d"]]
    top2 = whole.recommend(0, u3, n, exclude, 2)
    assert set(top2) == {row["b"], row["d"]}


# --- datasets -----------------------------------------------------------------------------------


def test_atomic_directory_becomes_the_demo_stream(tmp_path: Path) -> None:
    data = toy_stream(tmp_path)
    assert len(data) == 12 * 10
    assert sorted(data.platforms) == ["shop", "social", "video"]
    assert data.ts == sorted(data.ts)
    assert len(data.items) == 16
    assert {it.category for it in data.items} >= {"Action|Comedy", "Horror|Action"}
    assert data.items[0].title.startswith("Movie number")
    assert data.positive == [r >= 4 for r in data.rating]
    assert 0 < len(data.joined_users) < 12  # the demo joins about 70 % of the users
    for u in data.joined_users:  # a joined user is one person across their accounts
        assert len({data.person[i] for i in range(len(data)) if data.user[i] == u}) == 1
    unjoined = set(range(len(data.users))) - data.joined_users
    u = next(iter(unjoined))
    accounts = {data.account[i] for i in range(len(data)) if data.user[i] == u}
    persons = {data.person[i] for i in range(len(data)) if data.user[i] == u}
    assert len(persons) == len(accounts)
    ev = data.event(0)
    assert ev.item is data.items[data.item[0]] and ev.ts == data.ts[0]


def test_user_sample_keeps_whole_users() -> None:
    ratings = [Rating(f"u{u}", "m", 4, t) for u in range(10) for t in range(u + 1)]
    out, desc = sample_users(ratings, users=3, limit=None, seed=1)
    users = {r.user for r in out}
    assert len(users) == 3 and desc["users"] == 3
    for u in users:  # all of each sampled user's ratings
        assert sum(r.user == u for r in out) == int(u[1:]) + 1
    again, _ = sample_users(ratings, users=3, limit=None, seed=1)
    assert again == out  # deterministic
    out, desc = sample_users(ratings, users=None, limit=12, seed=1)
    assert len(out) >= 12 and desc["kind"] == "users"


def test_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(datasets.DataError, match="unknown dataset"):
        datasets.load_source(str(tmp_path / "nope"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(datasets.DataError, match=r"no \*\.inter"):
        read_atomic(tmp_path / "empty")


# --- crossprofile's blend -----------------------------------------------------------------------


def test_signals_prior_follows_co_visitation() -> None:
    index = ItemIndex(2)
    for it in ("a", "b", "c", "d"):
        index.upsert(Item(it), np.array([1.0, 0.0], dtype=np.float32))
    signals = Signals(popularity=0.0)
    for person, seq in enumerate([["a", "b"], ["a", "b"], ["c", "d"]]):
        p = InterestProfile()
        for n, it in enumerate(seq):
            signals.learn(p, index, it, ts=n)
            p.learn({"event_id": f"{person}-{n}", "item_id": it, "ts": n})
    q = InterestProfile()
    q.learn({"event_id": "q", "item_id": "a", "ts": 9})
    prior = signals.prior(q, index)
    assert int(np.argmax(prior)) == index.row("b")
    assert prior[index.row("d")] == 0.0
    assert np.allclose(signals.prior(None, index), 0.0)  # popularity weight 0


def test_recommend_blends_a_prior_and_excludes() -> None:
    index = ItemIndex(2)
    vecs = {"x": [1.0, 0.0], "y": [0.9, 0.1], "z": [0.0, 1.0]}
    for it, v in vecs.items():
        v_ = np.array(v, dtype=np.float32)
        index.upsert(Item(it), v_ / np.linalg.norm(v_))
    p = InterestProfile()
    p.learn({"event_id": "e", "embedding": index.vector("x"), "weight": 1.0, "ts": 0})
    plain = [s.item_id for s in index.recommend(p, 3)]
    assert plain[0] == "x"
    prior = np.array([0.0, 0.0, 5.0])  # z strongly preferred by the collaborative evidence
    blended = [s.item_id for s in index.recommend(p, 3, prior=prior, content_weight=0.3)]
    assert blended[0] == "z"
    assert "x" not in [s.item_id for s in index.recommend(p, 3, exclude=["x"])]


# --- end to end ---------------------------------------------------------------------------------


def test_small_run_reports_every_method_and_the_uplift(tmp_path: Path) -> None:
    data = toy_stream(tmp_path)
    emb = random_embeddings(len(data.items))
    settings = Settings(data_dir=tmp_path / "data")
    report = evaluate(data, emb, settings, methods=list(METHODS), uplift=True, jobs=1)
    assert list(report["methods"]) == list(METHODS)
    for r in report["methods"].values():
        for key in ("recall@10", "ndcg@10", "coverage", "events", "seconds"):
            assert key in r
        assert 0.0 <= r["ndcg@10"] <= r["recall@10"] <= 1.0
        assert r["events"] == report["methods"]["popularity"]["events"]
    assert report["verdict"]["best_baseline"] != "crossprofile"
    up = report["cross_platform"]
    assert up["headline"]["platform"] == "shop"
    assert up["headline"]["events"] > 0
    assert set(up["per_platform"]) == {"shop"}
    assert up["headline"]["joined"]["events"] == up["headline"]["not_joined"]["events"]
    every = evaluate(data, emb, settings, methods=["crossprofile"], uplift_platform="all")
    assert set(every["cross_platform"]["per_platform"]) == {"video", "social", "shop"}
    assert every["cross_platform"]["headline"]["events"] == sum(
        p["events"] for p in every["cross_platform"]["per_platform"].values()
    )
    with pytest.raises(ValueError, match="no platform"):
        evaluate(data, emb, settings, methods=["crossprofile"], uplift_platform="fax")


def test_the_cli_writes_json_and_a_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_atomic(tmp_path / "toy")
    monkeypatch.setenv("CROSSPROFILE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(
        datasets, "item_embeddings", lambda items, settings: random_embeddings(len(items))
    )
    out, png = tmp_path / "out" / "r.json", tmp_path / "out" / "r.png"
    code = eval_cli.main(
        [
            "--dataset",
            str(root),
            "--users",
            "8",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--methods",
            "popularity,item-knn,crossprofile",
            "--params",
            '{"crossprofile": {"content": 0}, "item-knn": {"alpha": 0.7}}',
            "--no-uplift",
            "--jobs",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["sample"]["users"] == 8 and report["sample"]["kind"] == "users"
    assert set(report["methods"]) == {"popularity", "item-knn", "crossprofile"}
    assert report["config"]["crossprofile"]["content"] == 0  # the override, over the defaults
    assert report["config"]["crossprofile"]["collaborative"] == 1.0
    assert report["config"]["overrides"] == {"item-knn": {"alpha": 0.7}}
    assert "cross_platform" not in report
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "| crossprofile |" in capsys.readouterr().out


def test_the_cli_lists_every_method() -> None:
    assert eval_cli.METHODS == METHODS


def test_make_methods_rejects_unknown_names(tmp_path: Path) -> None:
    data = toy_stream(tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        make_methods(data, random_embeddings(len(data.items)), ["magic"])
