"""Benchmarks: ``crossprofile bench encoder`` and ``crossprofile bench pipeline``.

* :mod:`stream.bench.texts` — a deterministic corpus of realistic event texts.
* :mod:`stream.bench.encoder_bench` — the seed method vs batched PyTorch vs the ONNX encoder.
* :mod:`stream.bench.pipeline_bench` — end to end through the broker and a real worker: options,
  the run, the report table and the command line; its parts:
* :mod:`stream.bench.streams` — synthetic unique and Zipf event streams (pure).
* :mod:`stream.bench.stats` — rates, percentiles and targets (pure maths).
* :mod:`stream.bench.in_process` — raw encoder, profile state size and pure per-event costs,
  measured in this process.
* :mod:`stream.bench.rig` — the worker process, the topic watcher and the rig around them.
* :mod:`stream.bench.phases` — the idle, max-rate and latency phases driving the rig.
* :mod:`stream.bench.plot` — a dependency-free PNG of sentences/s against batch size.
* :mod:`stream.bench.cli` — the ``crossprofile bench`` dispatcher.
"""
