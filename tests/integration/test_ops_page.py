"""The ops page in a real headless Chromium, against a real worker on the embedded broker.

Chromium loads ``/ops?person=<id>`` with a virtual-time budget (its script polls ``/ops/data``
and fills the person inspector), ``--dump-dom`` gives the rendered DOM, which is checked against
what the broker says; a second run saves a screenshot under the test's ``tmp_path``.

Needs Debian's ``chromium`` (``make browser`` installs it as root). Without it the test is
skipped locally, and fails under CI (``CI`` set), where ``make test`` must have installed it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from harness import Stack, Worker, event, item

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = (
    "headless Chromium is not installed: `make browser` installs it as root "
    "(apt-get install chromium chromium-driver)"
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason=MISSING),
]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
    "--window-size=1280,1900",
)
#: Virtual time the page gets: its first poll of /ops/data and the inspector's fetches
#: (virtual time waits for pending network fetches, so this is not a wall-clock wait).
VIRTUAL_TIME_MS = 5000

CATALOGUE = [
    item("run-0", "Trail running shoes with grippy soles", "running"),
    item("run-1", "Lightweight marathon racing flats", "running"),
    item("run-2", "GPS running watch with heart rate", "running"),
    item("run-3", "Reflective running vest for night runs", "running"),
    item("run-4", "Hydration belt for long-distance runners", "running"),
    item("cook-0", "Cast iron skillet, 12 inch", "cooking"),
    item("cook-1", "Sourdough baking cookbook", "cooking"),
    item("cook-2", "Dutch oven for slow braising", "cooking"),
    item("jazz-0", "Kind of Blue — Miles Davis vinyl", "music"),
    item("jazz-1", "A Love Supreme — John Coltrane", "music"),
    item("jazz-2", "Blue Note records box set", "music"),
]


# -- a small DOM ------------------------------------------------------------------------------
@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str | Node] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def iter(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        return [
            n
            for n in self.iter()
            if n.tag == tag and (cls is None or cls in n.attrs.get("class", "").split())
        ]

    def by_id(self, ident: str) -> Node:
        for n in self.iter():
            if n.attrs.get("id") == ident:
                return n
        raise AssertionError(f"no element #{ident} in the page")


class _TreeBuilder(HTMLParser):
    VOID = frozenset({"meta", "link", "input", "br", "img", "hr", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        parent = self.stack[-1]
        parent.children.append(node)
        parent.parts.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


def parse_dom(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# -- Chromium -------------------------------------------------------------------------------
def chromium(tmp: Path, *args: str, timeout: float = 120.0) -> str:
    """Run headless Chromium once (own profile dir, own process group); its stdout."""
    assert CHROMIUM is not None, MISSING
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not finish in {timeout}s: {cmd}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # helpers it may have left behind
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{err[-3000:]}"
    return out


def http(worker: Worker, path: str) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{worker.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def person_of(stack: Stack, event_id: str) -> str:
    recs = stack.reader("recommendations")

    def triggered(rs: list[Any]) -> bool:
        return any(json.loads(r.value)["trigger"]["event_id"] == event_id for r in rs if r.value)

    recs.wait_for(triggered, timeout=90)
    (msg,) = [v for v in recs.values() if v and v["trigger"]["event_id"] == event_id]
    return str(msg["person_id"])


def cells(row: Node) -> dict[str, str]:
    out: dict[str, str] = {}
    for td in row.find_all("td"):
        for cls in td.attrs.get("class", "").split():
            out.setdefault(cls, td.text.strip())
    return out


def number(text: str) -> int:
    assert re.fullmatch(r"[0-9][0-9,]*", text), f"not a number: {text!r}"
    return int(text.replace(",", ""))


def test_ops_page_shows_lag_throughput_dlq_and_a_person(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    assert CHROMIUM is not None, MISSING  # under CI: make test must have installed it
    stack = stack_factory(lag_refresh_s="0.5")
    worker = stack.worker()
    stack.send([{**it, "platforms": []} for it in CATALOGUE], topic="items")
    wait_until(lambda: worker.stats()["items"] >= len(CATALOGUE), "catalogue indexed")

    # ann: running fan on the social app, linked to her shop account; bob: jazz on video
    social = [
        event(0, "social", "@ann", "link", link={"platform": "shop", "user_id": "ann"}),
        event(1, "social", "@ann", "like", item=CATALOGUE[0]),
        event(2, "social", "@ann", "like", item=CATALOGUE[1]),
        event(3, "social", "@ann", "share", item=CATALOGUE[5]),
    ]
    stack.send(social)
    pid = person_of(stack, "social-@ann-3")
    later: list[dict[str, Any] | bytes] = [
        event(4, "shop", "ann", "purchase", item=CATALOGUE[2]),
        event(5, "video", "bob", "view", item=CATALOGUE[8]),
        b'{"event_id": "broken", "platform": "shop"',
    ]
    stack.send(later)
    assert person_of(stack, "shop-ann-4") == pid
    bob = person_of(stack, "video-bob-5")
    n_sent = len(social) + len(later)
    events_topic = stack.topic("events")

    # the JSON the page polls, once the worker has caught up and committed
    def settled() -> dict[str, Any] | None:
        status, _, body = http(worker, "/ops/data")
        assert status == 200
        d: dict[str, Any] = json.loads(body)
        rows = d["lag"]["partitions"]
        ev = [r for r in rows if r["topic"] == events_topic]
        ok = (
            d["counters"]["events_in"] == n_sent
            and sum(r["log_end_offset"] for r in ev) == n_sent
            and all(r["lag"] == 0 for r in ev if r["log_end_offset"] > 0)
            and all(r["lag"] == 0 for r in rows if r["log_end_offset"] > 0)
            and len(d["counter_history"]["t"]) >= 2
        )
        return d if ok else None

    data: dict[str, Any] = wait_until(settled, "the worker caught up with its input")
    assert data["app_id"] == stack.prefix
    assert data["dlq"]["invalid_json"] == 1
    assert data["ready"]["ready"] is True
    assert {r["person_id"] for r in data["recent_persons"]} >= {pid, bob}

    # the read views behind the inspector
    status, _, body = http(worker, f"/persons/{pid}/recommendations")
    assert status == 200
    recs = json.loads(body)
    schema = json.loads((SCHEMAS / "recommendation.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(recs)
    assert recs["person_id"] == pid and recs["trigger"]["event_id"] == "shop-ann-4"
    profile = json.loads(http(worker, f"/persons/{pid}/profile")[2])
    assert sorted(profile["accounts"]) == ["shop:ann", "social:@ann"]
    assert http(worker, "/persons/p_00000000000000000000/recommendations")[0] == 404

    # the page: one file, nothing fetched from outside
    status, ctype, page = http(worker, "/ops")
    assert status == 200 and ctype.startswith("text/html")
    outside = set(re.findall(rb"https?://[^\s\"'<>)]+", page)) - {b"http://www.w3.org/2000/svg"}
    assert not outside, f"the page must work offline: {outside}"

    url = f"http://127.0.0.1:{worker.port}/ops?person={pid}"
    dom = parse_dom(
        chromium(tmp_path, f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", url)
    )

    assert dom.by_id("app-id").text == stack.prefix
    assert dom.by_id("ready").text == "ready"

    # lag table: real numbers from the broker, the same the JSON had
    rows = {
        (r.attrs["data-topic"], int(r.attrs["data-partition"])): cells(r)
        for r in dom.by_id("lag-rows").find_all("tr")
    }
    expected = {(r["topic"], r["partition"]): r for r in data["lag"]["partitions"]}
    assert set(rows) == set(expected)
    assert {t for t, _ in rows} == {events_topic, stack.topic("resolve"), stack.topic("persons")}
    for key, shown in rows.items():
        want = expected[key]
        assert number(shown["log-end"]) == want["log_end_offset"], (key, shown)
        if want["current_offset"] is None:
            assert shown["committed"] == shown["lag"] == "–"
        else:
            assert number(shown["committed"]) == want["current_offset"], (key, shown)
            assert number(shown["lag"]) == want["lag"] == 0
    assert sum(number(c["log-end"]) for (t, _), c in rows.items() if t == events_topic) == n_sent
    assert dom.by_id("lag-total").text == "0"
    assert dom.by_id("lag-chart").find_all("path", "line"), "no lag chart"
    assert all(r.find_all("svg") for r in dom.by_id("lag-rows").find_all("tr"))

    # throughput from the worker's counter samples
    assert dom.by_id("total-in").text == f"{n_sent} total"
    assert re.fullmatch(r"[0-9.]+", dom.by_id("rate-in").text), dom.by_id("rate-in").text
    assert dom.by_id("total-rej").text == "1 total"

    # DLQ reasons
    dlq = {r.attrs["data-reason"]: cells(r) for r in dom.by_id("dlq-rows").find_all("tr")}
    assert dlq["invalid_json"]["num"] == "1"
    assert dlq["raw_identifier"]["num"] == "0"

    # person inspector: linked accounts, interests with labels and weights, recommendations
    accounts = {c.text for c in dom.by_id("person-accounts").find_all("span", "chip")}
    assert accounts == {"shop:ann", "social:@ann"}
    interests = dom.by_id("person-interests").find_all("tbody")[0].find_all("tr")
    assert interests, "no interests shown"
    labels = [cells(r)["label"] for r in interests]
    weights = [float(cells(r)["weight"]) for r in interests]
    assert any("running" in label for label in labels), labels
    assert all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)
    items = dom.by_id("person-recs").find_all("li")
    assert len(items) == len(recs["items"])
    assert all("because:" in li.text for li in items)
    assert recs["items"][0]["item_id"] in items[0].text
    recent = {a.text for a in dom.by_id("recent").find_all("a")}
    assert {pid, bob} <= recent

    # a screenshot to look at
    shot = tmp_path / "ops-page.png"
    chromium(tmp_path, f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
    print(f"ops page screenshot: {shot}")
