"""Evaluation as the paper reports it: answer metrics on gold answers, the LLM judge, nDCG@10 of the rerank head.

Metrics (each the best over a record's gold aliases, as in the reference evaluation, bergen's metrics.py):
  - accuracy: the normalised gold answer is a substring of the normalised prediction (the paper's main metric);
  - exact_match and f1: SQuAD v1.1's official definitions;
  - rouge_l: ROUGE-L F-measure from Google's `rouge-score`;
  - teacher_f1: token F1 against the teacher's answer (`answer`), when the records carry gold answers too;
  - judge: an LLM's verdict (Correct 1 / Partially correct 0.5 / Wrong 0), read from the probabilities of the
    first generated token, as in the reference;
  - ndcg@10 of the `<RR>` head's ranking against graded relevance (gain 2^rel - 1, log2 discount).
Normalisation (SQuAD's): lower case, ASCII punctuation removed, articles removed, whitespace collapsed.

    python -m scaledown.eval --model EXPORT --data eval.jsonl --uncompressed [--judge]
    torchrun --nproc_per_node 8 -m scaledown.eval ...     # records sharded by rank, metrics gathered
"""

from scaledown.eval.answers import METRICS, ndcg_at_k, references, score_records, summarize
from scaledown.eval.evaluate import answer_ce, generate_answers, generate_uncompressed

__all__ = ["METRICS", "answer_ce", "generate_answers", "generate_uncompressed", "ndcg_at_k", "references",
           "score_records", "summarize"]
