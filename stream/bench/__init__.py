"""Benchmarks: ``crossprofile bench encoder`` and ``crossprofile bench pipeline``.

* :mod:`stream.bench.texts` — a deterministic corpus of realistic event texts.
* :mod:`stream.bench.encoder_bench` — the seed method vs batched PyTorch vs the ONNX encoder.
* :mod:`stream.bench.pipeline_bench` — end to end through the broker and a real worker.
* :mod:`stream.bench.plot` — a dependency-free PNG of sentences/s against batch size.
* :mod:`stream.bench.cli` — the ``crossprofile bench`` dispatcher.
"""
