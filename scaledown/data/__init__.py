"""Training records, collation and sampling; the dataset build (corpus, index, rerank, teacher, merge)."""


def __getattr__(name):
    if name == "ScaleDownDataset":  # the original ScaleDown code's import path (scaledown/compat.py)
        from scaledown.compat import ScaleDownDataset

        return ScaleDownDataset
    raise AttributeError(f"module 'scaledown.data' has no attribute {name!r}")
