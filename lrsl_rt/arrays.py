"""The Reranker's array methods: logits, embeddings and label similarities of texts, batched as ``predict``.

A mixin of :class:`lrsl_rt.reranker.Reranker` (it needs the Reranker's ``tokenizer``, ``manifest``,
``run_batched`` and label embeddings): texts are checked, cut into chunks of ``chunk_size``, each
tokenized once and run in the length-sorted batches of ``run_batched``.
"""

from __future__ import annotations

import numpy as np

from .defaults import DEFAULT_CHUNK_SIZE
from .rows import check_chunk_size, check_texts


class BatchedArrays:
    def logits(self, texts: list[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
        """Classifier logits, float32 (n, L)."""
        return self._stack(
            texts, chunk_size, len(self.labels), lambda rows: self.run_batched("classifier", rows)
        )

    def embed(self, texts: list[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
        """Unit-length sentence embeddings of the embedder, float32 (n, d)."""
        dim = self.manifest.embedding_dim
        return self._stack(texts, chunk_size, dim, lambda rows: self.run_batched("embedder", rows))

    def similarities(self, texts: list[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
        """Cosine similarity of each text with each label text, float32 (n, L)."""
        return self.embed(texts, chunk_size) @ self._label_embeddings_t

    def _stack(self, texts, chunk_size, width, fn) -> np.ndarray:
        texts = check_texts(texts)
        check_chunk_size(chunk_size)
        parts = [
            fn(self.tokenizer.tokenize(texts[s : s + chunk_size])) for s in range(0, len(texts), chunk_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)
