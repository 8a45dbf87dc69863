"""Compressor pretraining records from plain text: auto-encoding and text continuation.

The stage that aligns a fresh compressor with the generator before fine-tuning on questions (the OSCAR paper,
section 3, after COCOM and PISCO): the generator learns to read memory embeddings on text that needs no teacher.
Each passage of a corpus becomes one record of the ordinary training format, so the same collator, loss, engines,
checkpoints and export serve both stages:
- auto-encoding: the compressor reads a passage; the generator, asked to repeat it, is trained on the passage;
- continuation: the compressor reads a passage; the generator, asked to continue it, is trained on the text
  that follows it in the corpus.
Each passage is one or the other, drawn with a fixed seed (`data.continuation_share` of them continuations).

    scaledown train --train.objective=pretrain --data.train_path=corpus.jsonl --model.max_answer_tokens=128 ...
"""

from __future__ import annotations

import random
from pathlib import Path

from scaledown.build.corpus import Problems, read_corpus
from scaledown.data.schema import DataError, Record

AUTOENCODE_QUERY = "Repeat the background text word for word."
CONTINUE_QUERY = "Continue the background text."


def pretraining_records(corpus: str | Path, tokenizer, doc_tokens: int, answer_tokens: int,
                        continuation_share: float = 0.5, seed: int = 0) -> list[Record]:
    """Records of `corpus` (any format the dataset build reads): each document cut into `doc_tokens`-token
    passages (in `tokenizer`'s tokens); a continuation's answer is the next `answer_tokens` tokens of the same
    document, so the last passage of a document can only be auto-encoded."""
    rng = random.Random(seed)
    problems = Problems()
    records = []
    for doc_id, title, text in read_corpus(corpus, problems):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for n, start in enumerate(range(0, len(ids), doc_tokens)):
            passage = tokenizer.decode(ids[start:start + doc_tokens]).strip()
            following = tokenizer.decode(ids[start + doc_tokens:start + doc_tokens + answer_tokens]).strip()
            if not passage:
                continue
            document = f"{title}\n{passage}" if title and n == 0 else passage  # document_text's form
            if following and rng.random() < continuation_share:
                records.append(Record(CONTINUE_QUERY, [document], following, id=f"{doc_id}-{n}-continue",
                                      extra={"task": "continuation"}))
            else:
                records.append(Record(AUTOENCODE_QUERY, [document], passage, id=f"{doc_id}-{n}-autoencode",
                                      extra={"task": "autoencoding"}))
    if not records:
        raise DataError(f"{corpus}: no text to pretrain on ({'; '.join(problems.messages[:3]) or 'no documents'})")
    return records
