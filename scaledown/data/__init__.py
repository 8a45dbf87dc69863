"""What training reads: the record schema, the training set on disk (read by batch), the sampler, collation and prompts.
The dataset build lives in scaledown/build/; `retrieval.py`, `teacher.py`, `reranker.py`, `prepare_dataset.py` here
are the original ScaleDown code's import paths, leaves that nothing in the project imports."""


def __getattr__(name):
    if name == "ScaleDownDataset":  # the original ScaleDown code's import path (scaledown/compat.py)
        from scaledown.compat import ScaleDownDataset

        return ScaleDownDataset
    raise AttributeError(f"module 'scaledown.data' has no attribute {name!r}")
