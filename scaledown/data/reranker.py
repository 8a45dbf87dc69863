"""The original ScaleDown code's import path: `from scaledown.data.reranker import add_reranking_scores`
(scaledown/compat.py; the build's reranker is scaledown/build/rerank.py). Nothing in the project imports this."""

from scaledown.compat import add_reranking_scores

__all__ = ["add_reranking_scores"]
