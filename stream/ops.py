"""The ops page's data: lag history, the latest recommendations per person, one JSON snapshot.

No Faust here: :mod:`stream.web` feeds these from the running app and serves them as
``/ops/data`` (polled by the page ``stream/static/ops.html``) and
``/persons/{id}/recommendations``.

- :class:`LatestRecommendations` — person id → the last recommendation message this worker sent
  for that person, bounded (least recently updated persons fall out), stored as compact JSON.
- :class:`LagHistory` — the lag readings of the last minutes, per partition, for sparklines;
  :class:`CounterHistory` — samples of the event counters, for throughput.
- :func:`lag_rows`, :func:`snapshot` — the JSON the page draws.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from .faust_compat import json_bytes
from .ingest import REASONS
from .lag import GroupLag

__all__ = [
    "HISTORY_WINDOW_S",
    "MAX_HISTORY_POINTS",
    "MAX_LATEST_RECOMMENDATIONS",
    "CounterHistory",
    "LagHistory",
    "LatestRecommendations",
    "lag_rows",
    "ops_page",
    "snapshot",
]

#: Persons whose latest recommendation a worker keeps for the read view (~2-5 kB each).
MAX_LATEST_RECOMMENDATIONS = 5_000
#: How far back the lag sparklines go.
HISTORY_WINDOW_S = 15 * 60.0
#: At most this many lag readings are kept, whatever the refresh interval.
MAX_HISTORY_POINTS = 900
#: Persons listed under "recent" on the ops page.
RECENT_PERSONS = 12


class LatestRecommendations:
    """Person id → latest recommendation message, bounded by ``max_persons``.

    >>> latest = LatestRecommendations(max_persons=2)
    >>> for pid in ("p_a", "p_b", "p_c"):
    ...     latest.put(pid, {"person_id": pid, "generated_at": 1, "items": []})
    >>> latest.get("p_a") is None, latest.get("p_c")["person_id"], len(latest)
    (True, 'p_c', 2)
    >>> [r["person_id"] for r in latest.recent(5)]
    ['p_c', 'p_b']
    >>> latest.pop("p_b"); len(latest)
    1
    >>> latest.put("p_d", b'{"person_id":"p_d","items":[]}')  # as the topic carries it
    >>> latest.get("p_d")["person_id"], "p_c" in latest
    ('p_d', True)
    """

    def __init__(self, max_persons: int = MAX_LATEST_RECOMMENDATIONS) -> None:
        self.max_persons = max_persons
        self._by_person: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_person)

    def __contains__(self, person_id: object) -> bool:
        return person_id in self._by_person

    def put(self, person_id: str, message: Mapping[str, Any] | bytes) -> None:
        """Remember ``message`` (a recommendation message, or its JSON as the recommendations
        topic carries it) as the person's latest."""
        if self.max_persons <= 0:
            return
        encoded = message if isinstance(message, bytes) else json_bytes(message)
        self._by_person[person_id] = encoded
        self._by_person.move_to_end(person_id)
        while len(self._by_person) > self.max_persons:
            self._by_person.popitem(last=False)

    def get(self, person_id: str) -> dict[str, Any] | None:
        raw = self._by_person.get(person_id)
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def pop(self, person_id: str) -> None:
        """Forget the person (erased, merged away)."""
        self._by_person.pop(person_id, None)

    def recent(self, n: int = RECENT_PERSONS) -> list[dict[str, Any]]:
        """Summaries of the ``n`` persons updated last, newest first."""
        out: list[dict[str, Any]] = []
        for pid in reversed(self._by_person):
            if len(out) >= n:
                break
            msg = self.get(pid) or {}
            trigger = msg.get("trigger") or {}
            out.append(
                {
                    "person_id": pid,
                    "generated_at": msg.get("generated_at"),
                    "platform": msg.get("platform"),
                    "items": len(msg.get("items") or []),
                    "trigger": {k: trigger.get(k) for k in ("platform", "user_id", "type")},
                }
            )
        return out


PartitionKey = tuple[str, int]


class LagHistory:
    """Lag readings of the last ``window_s`` seconds, per (topic, partition).

    Feed it with :meth:`record` (a reading already recorded is skipped, so it can be sampled
    more often than the lag is read); :meth:`to_json` gives one time axis and one series per
    partition, ``None`` where that partition had no reading or no committed offset.

    >>> from stream.lag import PartitionLag
    >>> h = LagHistory(window_s=60)
    >>> def reading(at: float, lag: int) -> GroupLag:
    ...     return GroupLag("g", (PartitionLag("g", "t", 0, 10 - lag, 10),), read_at=at)
    >>> [h.record(reading(at, lag)) for at, lag in ((0.0, 5), (30.0, 3), (30.0, 3), (90.0, 0))]
    [True, True, False, True]
    >>> h.to_json()
    {'window_s': 60, 't': [30000, 90000], 'series': [{'topic': 't', 'partition': 0, 'lag': [3, 0]}]}
    """

    def __init__(
        self, window_s: float = HISTORY_WINDOW_S, max_points: int = MAX_HISTORY_POINTS
    ) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, dict[PartitionKey, int | None]]] = deque(
            maxlen=max(2, max_points)
        )

    def __len__(self) -> int:
        return len(self._points)

    def record(self, lag: GroupLag | None) -> bool:
        """Append ``lag`` unless it is None or already the last point; True if appended."""
        if lag is None or (self._points and self._points[-1][0] >= lag.read_at):
            return False
        self._points.append((lag.read_at, {(p.topic, p.partition): p.lag for p in lag.partitions}))
        while self._points and self._points[0][0] < lag.read_at - self.window_s:
            self._points.popleft()
        return True

    def to_json(self) -> dict[str, Any]:
        keys: set[PartitionKey] = set()
        for _, lags in self._points:
            keys.update(lags)
        return {
            "window_s": round(self.window_s),
            "t": [round(t * 1000) for t, _ in self._points],
            "series": [
                {
                    "topic": topic,
                    "partition": part,
                    "lag": [lags.get((topic, part)) for _, lags in self._points],
                }
                for topic, part in sorted(keys)
            ],
        }


class CounterHistory:
    """Samples of monotonically growing counters over the last ``window_s`` seconds; the page
    turns the deltas between samples into rates (events in / out / rejected per second).

    >>> h = CounterHistory(window_s=10)
    >>> for t, n in ((0.0, 0), (5.0, 10), (12.0, 24)):
    ...     h.record(t, {"events_in": n})
    >>> h.to_json()
    {'window_s': 10, 't': [5000, 12000], 'counters': {'events_in': [10, 24]}}
    """

    def __init__(
        self, window_s: float = HISTORY_WINDOW_S, max_points: int = MAX_HISTORY_POINTS
    ) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, dict[str, int]]] = deque(maxlen=max(2, max_points))

    def __len__(self) -> int:
        return len(self._points)

    def record(self, t: float, counters: Mapping[str, int]) -> None:
        """Append a sample taken at ``t`` (seconds since the epoch)."""
        self._points.append((t, dict(counters)))
        while self._points and self._points[0][0] < t - self.window_s:
            self._points.popleft()

    def to_json(self) -> dict[str, Any]:
        names: dict[str, None] = {}
        for _, sample in self._points:
            names.update(dict.fromkeys(sample))
        return {
            "window_s": round(self.window_s),
            "t": [round(t * 1000) for t, _ in self._points],
            "counters": {n: [s.get(n) for _, s in self._points] for n in names},
        }


def lag_rows(
    lag: GroupLag | None, is_stalled: Callable[[tuple[str, str, int]], bool]
) -> list[dict[str, Any]]:
    """The lag table of the page: one row per partition of the last reading."""
    if lag is None:
        return []
    return [
        {
            "topic": p.topic,
            "partition": p.partition,
            "current_offset": p.current_offset,
            "log_end_offset": p.log_end_offset,
            "lag": p.lag,
            "stalled": is_stalled((p.group, p.topic, p.partition)),
        }
        for p in sorted(lag.partitions, key=lambda p: (p.topic, p.partition))
    ]


def snapshot(
    *,
    app_id: str,
    stats: Mapping[str, Any],
    ready: Mapping[str, Any],
    lag: GroupLag | None,
    lag_age_s: float | None,
    lag_errors: int,
    stalled: Iterable[tuple[str, str, int]],
    history: LagHistory,
    counter_history: CounterHistory,
    latest: LatestRecommendations,
    now_ms: int,
    monotonic_s: float,
) -> dict[str, Any]:
    """Everything ``/ops/data`` returns (see ``docs/operations.md``)."""
    stalled_set = set(stalled)
    rejected = {reason: 0 for reason in REASONS} | dict(stats.get("events_rejected") or {})
    rows = lag_rows(lag, stalled_set.__contains__)
    return {
        "app_id": app_id,
        "now_ms": now_ms,
        "monotonic_s": round(monotonic_s, 3),
        "ready": dict(ready),
        "lag": {
            "group": app_id,
            "read_at_ms": None if lag is None else round(lag.read_at * 1000),
            "age_s": None if lag_age_s is None else round(lag_age_s, 2),
            "read_errors": lag_errors,
            "total": sum(r["lag"] or 0 for r in rows),
            "stalled": len(stalled_set),
            "partitions": rows,
        },
        "lag_history": history.to_json(),
        "counter_history": counter_history.to_json(),
        "counters": {
            "events_in": stats.get("events_in", 0),
            "recommendations_out": stats.get("recommendations_out", 0),
            "events_rejected": sum(rejected.values()),
            "duplicates": stats.get("duplicates", 0),
            "merges": stats.get("merges", 0),
            "erased": stats.get("erased", 0),
        },
        "dlq": dict(sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
        "state": {
            "profiles": stats.get("profiles", 0),
            "persons": stats.get("persons", 0),
            "accounts": stats.get("accounts", 0),
            "items": stats.get("items", 0),
            "recommendations_held": len(latest),
        },
        "encoder": dict(stats.get("encoder") or {}),
        "recent_persons": latest.recent(),
    }


def ops_page() -> bytes:
    """The page itself (``stream/static/ops.html``, package data)."""
    return resources.files("stream").joinpath("static", "ops.html").read_bytes()
