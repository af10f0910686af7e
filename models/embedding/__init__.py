"""Case embeddings for "similar past cases": export (ONNX), tokenisers, in-process and
served embedders, training of our n-gram embedder, and its evaluation.

    from models.embedding import OnnxEmbedder, export_case_embedder
    embedder = OnnxEmbedder(export_case_embedder())
    vectors = embedder.embed(["路灯不亮了", ...])  # float32 [n, 64], unit rows

The live stream's embedder (Triton or in-process, from the repository ``make train``
writes) is ``models.embedding.serving.build_case_embedder`` (not imported here: it pulls
in the dispatch serving code).
"""

from __future__ import annotations

from models.embedding.encode import BackendEmbedder, Embedder, OnnxEmbedder
from models.embedding.export import MODEL_NAME, export_case_embedder, export_use

__all__ = [
    "MODEL_NAME",
    "BackendEmbedder",
    "Embedder",
    "OnnxEmbedder",
    "export_case_embedder",
    "export_use",
]
