"""Offline tooling: export the sentence encoder to ONNX and check its parity with PyTorch.

Importing this package is cheap; torch is imported only when an export actually runs.
"""

from export.encoder_export import (
    ExportError,
    default_source,
    ensure_encoder,
    export_encoder,
    main,
    parity_corpus,
    read_manifest,
)

__all__ = [
    "ExportError",
    "default_source",
    "ensure_encoder",
    "export_encoder",
    "main",
    "parity_corpus",
    "read_manifest",
]
