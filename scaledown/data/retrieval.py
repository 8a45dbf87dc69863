"""The original ScaleDown code's import path: `from scaledown.data.retrieval import SPLADERetriever`
(scaledown/compat.py; the build's retrieval is scaledown/build/retrieval.py). Nothing in the project imports this."""

from scaledown.compat import SPLADERetriever

__all__ = ["SPLADERetriever"]
