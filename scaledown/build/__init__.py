"""The dataset job (scaledown/build/pipeline.py): corpus and query readers, SPLADE index and search (exact and
approximate), cross-encoder reranking, teacher answers, QA-set sources, and the embedded and synthetic sources.
Training never imports this room, except for compressor pretraining, which reads a corpus."""
