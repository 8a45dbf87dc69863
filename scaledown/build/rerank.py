"""Cross-encoder reranking for the dataset build: the scores are the cross-encoder's raw logits (no sigmoid), the
targets the reference distils."""

from __future__ import annotations

import torch

from scaledown.data.schema import document_text
from scaledown.models.generation import local_device


class CrossEncoderReranker:
    """sentence-transformers' CrossEncoder: score (query, passage) pairs, keep the best `top_n`."""

    def __init__(self, name_or_path: str, device: str | None = None, trust_remote_code: bool = False,
                 batch_size: int = 64):
        from sentence_transformers import CrossEncoder

        self.name = name_or_path
        self.batch_size = batch_size
        self.model = CrossEncoder(name_or_path, device=device or str(local_device()),
                                  trust_remote_code=trust_remote_code)

    def rerank(self, queries: list[str], passages: list[list[dict]], top_n: int) -> list[tuple[list[dict], list]]:
        """For each query, its best `top_n` passages and their raw logits; every pair of the chunk in one call."""
        pairs = [(q, document_text(p)) for q, ps in zip(queries, passages) for p in ps]
        if not pairs:
            return [([], []) for _ in queries]
        # Identity: the raw logits, not the model's default activation (a sigmoid for one-label models).
        flat = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                  activation_fn=torch.nn.Identity())
        out, start = [], 0
        for ps in passages:
            scores = [float(s) for s in flat[start:start + len(ps)]]
            start += len(ps)
            order = sorted(range(len(ps)), key=lambda i: (-scores[i], i))[:top_n]
            out.append(([ps[i] for i in order], [scores[i] for i in order]))
        return out
