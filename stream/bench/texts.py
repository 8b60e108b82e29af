"""A deterministic corpus of realistic event texts for the encoder benchmark.

What the stream encodes is short: product titles, short reviews, search queries, social posts,
some Chinese and some mixed-language text. :func:`event_texts` draws ``n`` *distinct* such texts
from a seeded generator (so no cache or duplicate can flatter a method), and — given a token
counter — keeps only those whose token count, special tokens included, lies in
``[min_tokens, max_tokens]`` (10–40 by default).

>>> texts = event_texts(300)
>>> len(texts), len(set(texts)), texts == event_texts(300)
(300, 300, True)
>>> event_texts(100) == texts[:100]
True
>>> sorted(kind_counts(300))
['chinese', 'mixed', 'post', 'query', 'review', 'title']
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Final

#: Share of each kind of text (sums to 1), roughly what a shop + social + video stream sends.
KIND_WEIGHTS: Final[dict[str, float]] = {
    "title": 0.30,
    "review": 0.22,
    "query": 0.20,
    "post": 0.10,
    "chinese": 0.12,
    "mixed": 0.06,
}
DEFAULT_SEED: Final = 20261122

TokenCounter = Callable[[Sequence[str]], Sequence[int]]

_BRANDS = (
    "Acme", "Northpeak", "Lumo", "Kestrel", "Orbit", "Zenith", "Mako", "Aurora", "Vanta",
    "Hollis", "Brightwell", "Tern", "Quill", "Solace", "Ridgeway", "Pico",
)  # fmt: skip
_ADJECTIVES = (
    "lightweight", "waterproof", "premium", "budget", "ergonomic", "portable", "vintage",
    "eco-friendly", "compact", "heavy-duty", "ultra-thin", "best-selling", "refurbished",
    "wireless", "foldable", "stainless", "breathable", "insulated", "adjustable", "rechargeable",
)  # fmt: skip
_PRODUCTS = (
    "running shoes", "trail running sneakers", "wireless earbuds", "noise cancelling headphones",
    "water bottle", "yoga mat", "mechanical keyboard", "4K monitor", "espresso machine",
    "cast iron skillet", "hiking backpack", "down jacket", "smartwatch", "kids bicycle",
    "LED desk lamp", "green tea", "dog food", "phone case", "gaming mouse", "air purifier",
    "electric toothbrush", "camping tent", "board game", "robot vacuum", "rain jacket",
    "office chair", "bluetooth speaker", "coffee grinder", "sleeping bag", "cycling helmet",
    "e-reader", "blender", "wool socks", "sunglasses", "laptop stand", "baby stroller",
)  # fmt: skip
_COLOURS = ("black", "blue", "red", "white", "green", "grey", "navy", "olive", "sand", "pink")
_EXTRAS = (
    "size {n}", "{n} pack", "{n} litres", "model {code}", "{n} W", "{n} inch", "men's",
    "women's", "for kids", "with carry case", "2 year warranty", "gift edition",
)  # fmt: skip
_OPENINGS = (
    "I bought this for my daughter and",
    "After two weeks of daily use,",
    "Honestly,",
    "Five stars:",
    "Disappointed.",
    "Arrived late but",
    "Works exactly as described and",
    "Not worth the price;",
    "Second one I have bought,",
    "Great value:",
)
_BODIES = (
    "the battery lasts all day.",
    "it broke after a month and support never answered.",
    "the fit is perfect, true to size.",
    "the sound is much better than I expected for the price.",
    "the colour is slightly different from the photos.",
    "setup took five minutes, no app needed.",
    "it is too loud at night, returning it.",
    "my whole family uses it every morning.",
    "the straps feel cheap.",
    "shipping was fast and the box was intact.",
    "would buy again.",
    "it runs a bit small, order one size up.",
)
_QUERY_STARTS = (
    "best", "cheap", "where to buy", "how to clean", "reviews of", "is the", "compare",
    "discount code for", "how long does a", "what size", "alternatives to", "second hand",
)  # fmt: skip
_QUERY_ENDS = (
    "under 50 euros", "near me", "for beginners", "2026", "with free delivery", "for small flats",
    "that lasts", "for marathon training", "for travel", "reddit", "vs the old model",
    "for a gift",
)  # fmt: skip
_HEADLINES = (
    "Central bank holds rates steady as inflation cools",
    "Local team wins the championship after a dramatic final",
    "New study links sleep quality to memory in older adults",
    "Storm warning issued for the northern coast this weekend",
    "Startup unveils a battery that charges in five minutes",
    "City council approves new bike lanes downtown",
    "Trailer for the sequel breaks viewing records",
    "Chef shares a ten-minute weeknight pasta",
)
_POST_BITS = (
    "just watched this",
    "can't stop thinking about the ending",
    "who else is going?",
    "unpopular opinion:",
    "finally!",
    "weekend plans sorted",
)
_EMOJI = ("🔥", "👍", "😍", "🎉", "💯", "🏃‍♀️", "☕", "📦")
_CHINESE = (
    "这款跑步鞋非常轻便，适合长跑。",
    "无线耳机的音质很好，但是电池续航一般。",
    "请问明天北京的天气怎么样？",
    "我最近在学习机器学习和深度学习。",
    "这家餐厅的火锅味道很正宗，服务也很热情。",
    "手机壳质量不错，价格也便宜。",
    "周末我们去山里露营，风景特别美。",
    "新款笔记本电脑的屏幕分辨率更高了。",
    "推荐一些适合初学者的编程书籍。",
    "快递太慢了，等了一个星期才到。",
    "这部电影的结局让人意想不到。",
    "咖啡机很好用，每天早上都离不开它。",
    "宝宝很喜欢这辆推车，折叠也很方便。",
    "买了两次了，包装很好，物流很快。",
)
_CHINESE_SHORT = ("好评", "推荐", "性价比高", "还会回购", "一般般", "颜色很正", "尺码偏小")


class _Maker:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[str]) -> str:
        return options[self.rng.randrange(len(options))]

    def extra(self, template: str | None = None) -> str:
        n = self.rng.choice((2, 3, 4, 6, 12, 20, 38, 40, 42, 44, 500, 750, 1000))
        code = f"{self.pick('ABCDKXZ')}{self.rng.randint(100, 9999)}"
        return (template or self.pick(_EXTRAS)).format(n=n, code=code)

    def title(self) -> str:
        r = self.rng
        words = [self.pick(_BRANDS), self.pick(_ADJECTIVES)]
        if r.random() < 0.4:
            words.append(self.pick(_ADJECTIVES))
        words.append(self.pick(_PRODUCTS))
        text = " ".join(words)
        for template in r.sample(_EXTRAS, k=r.randint(0, 3)):
            text += f", {self.extra(template)}"
        return f"{text} - {self.pick(_COLOURS)}"

    def review(self) -> str:
        bodies = self.rng.sample(_BODIES, k=self.rng.randint(1, 3))
        stars = f" {self.rng.randint(1, 5)}/5" if self.rng.random() < 0.3 else ""
        return f"{self.pick(_OPENINGS)} {' '.join(bodies)}{stars}"

    def query(self) -> str:
        r = self.rng
        parts = [self.pick(_QUERY_STARTS)]
        if r.random() < 0.5:
            parts.append(self.pick(_ADJECTIVES))
        parts.append(self.pick(_PRODUCTS))
        parts.append(self.pick(_QUERY_ENDS))
        if r.random() < 0.4:
            parts.append(self.pick(_BRANDS).lower())
        if r.random() < 0.3:
            parts.append(self.extra())
        text = " ".join(parts)
        return text.upper() if r.random() < 0.05 else text

    def post(self) -> str:
        r = self.rng
        tags = " ".join(f"#{self.pick(_PRODUCTS).split()[-1]}" for _ in range(r.randint(1, 3)))
        return f"{self.pick(_POST_BITS)} {self.pick(_HEADLINES)} {self.pick(_EMOJI)} {tags}"

    def chinese(self) -> str:
        text = "".join(self.rng.sample(_CHINESE, k=self.rng.randint(1, 2)))
        if self.rng.random() < 0.5:
            text += self.pick(_CHINESE_SHORT) + "！"
        return text

    def mixed(self) -> str:
        return f"{self.pick(_CHINESE_SHORT)} {self.title()}"


def _stream(seed: int) -> Iterator[tuple[str, str]]:
    """Distinct ``(kind, text)`` pairs, endlessly; the sequence depends on ``seed`` only."""
    rng = random.Random(seed)
    maker = _Maker(rng)
    makers: dict[str, Callable[[], str]] = {k: getattr(maker, k) for k in KIND_WEIGHTS}
    names = list(KIND_WEIGHTS)
    weights = [KIND_WEIGHTS[k] for k in names]
    seen: set[str] = set()
    misses = 0
    while misses < 10_000:  # the lists allow far more distinct texts than any benchmark needs
        kind = rng.choices(names, weights=weights)[0]
        text = makers[kind]()
        if text in seen:
            misses += 1
            continue
        seen.add(text)
        yield kind, text


def generate(n: int, *, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """The first ``n`` distinct ``(kind, text)`` pairs for ``seed`` (prefix-stable in ``n``)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    out = list(itertools.islice(_stream(seed), n))
    if len(out) < n:  # pragma: no cover
        raise ValueError(f"could not draw {n} distinct texts")
    return out


def labelled_texts(
    n: int,
    *,
    seed: int = DEFAULT_SEED,
    count_tokens: TokenCounter | None = None,
    min_tokens: int = 10,
    max_tokens: int = 40,
) -> list[tuple[str, str]]:
    """Like :func:`event_texts`, as ``(kind, text)`` pairs."""
    if min_tokens > max_tokens:
        raise ValueError("min_tokens must be <= max_tokens")
    if count_tokens is None:
        return generate(n, seed=seed)
    stream = _stream(seed)
    kept: list[tuple[str, str]] = []
    while len(kept) < n:
        chunk = list(itertools.islice(stream, 256))
        if not chunk:  # pragma: no cover
            raise ValueError(f"only {len(kept)} texts of {min_tokens}-{max_tokens} tokens")
        counts = count_tokens([text for _kind, text in chunk])
        kept += [p for p, c in zip(chunk, counts, strict=True) if min_tokens <= c <= max_tokens]
    return kept[:n]


def event_texts(
    n: int,
    *,
    seed: int = DEFAULT_SEED,
    count_tokens: TokenCounter | None = None,
    min_tokens: int = 10,
    max_tokens: int = 40,
) -> list[str]:
    """``n`` distinct realistic event texts; with ``count_tokens``, all within the token range.

    ``count_tokens`` maps texts to token counts (special tokens included), e.g.
    :meth:`stream.encoder.Encoder.token_lengths`. Without it, no length filter is applied.
    The result for ``n`` is a prefix of the result for any larger ``n``.
    """
    pairs = labelled_texts(
        n, seed=seed, count_tokens=count_tokens, min_tokens=min_tokens, max_tokens=max_tokens
    )
    return [text for _kind, text in pairs]


def kind_counts(n: int, *, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """How many texts of each kind :func:`generate` draws (without a length filter)."""
    return dict(Counter(kind for kind, _text in generate(n, seed=seed)))


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains a CJK unified ideograph."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


__all__ = ["KIND_WEIGHTS", "event_texts", "generate", "has_cjk", "kind_counts", "labelled_texts"]
