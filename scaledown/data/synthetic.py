"""A small generated RAG dataset: fictional facts, one gold passage and distractors per question.

For the default run and the tests on machines without a corpus or a teacher model. Every answer is in exactly
one of the query's documents, so a model can only answer well by reading its compressed documents.

    python -m scaledown.data.synthetic --out runs/data --train 512 --eval 64
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from scaledown.data.schema import write_jsonl

_SYLLABLES = ["ka", "lo", "mi", "ren", "dor", "vel", "sa", "tu", "ni", "bra", "quo", "zel", "fa", "rin", "os", "ta"]
_RELATIONS = [
    ("country", "capital", "What is the capital of {e}?", "The capital of {e} is {v}. It lies on a wide river."),
    ("book", "author", "Who wrote {e}?", "{e} is a novel written by {v} in the old style."),
    ("river", "source", "Where does the {e} river start?", "The {e} river starts in {v} and flows to the sea."),
    ("painter", "teacher", "Who taught the painter {e}?", "The painter {e} was taught by {v} as a child."),
]


def _name(rng: random.Random, used: set[str]) -> str:
    """A name not used before in this dataset: in a pooled corpus, a repeated name would make two passages
    answer the same question differently (two syllables while they last, then longer ones)."""
    for attempt in range(200):
        name = "".join(rng.choice(_SYLLABLES) for _ in range(2 + attempt // 20)).capitalize()
        if name not in used:
            used.add(name)
            return name
    raise RuntimeError("ran out of synthetic names")


def make_records(n: int, seed: int = 0, num_documents: int = 5, used: set[str] | None = None) -> list[dict]:
    """`used`: names already taken (share one set between calls whose passages end up in one corpus)."""
    rng = random.Random(seed)
    used = set() if used is None else used
    records = []
    for i in range(n):
        facts = []
        for _ in range(num_documents):
            kind, _, question, passage = rng.choice(_RELATIONS)
            entity, value = _name(rng, used), _name(rng, used)
            facts.append((kind, question.format(e=entity), passage.format(e=entity, v=value), value, entity))
        gold = facts[0]
        order = list(range(num_documents))
        rng.shuffle(order)
        documents = [{"title": facts[j][4], "text": facts[j][2]} for j in order]
        scores = [round(4.0 + rng.uniform(-1, 1), 3) if j == 0 else round(-4.0 + rng.uniform(-1, 1), 3)
                  for j in order]
        records.append({"id": f"syn-{seed}-{i}", "query": gold[1], "documents": documents, "answer": gold[3],
                        "reranking_scores": scores})
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--eval", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", type=int, default=5, help="passages per question (one holds the answer)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    train = make_records(args.train, args.seed, args.documents, used)
    evals = make_records(args.eval, args.seed + 1, args.documents, used)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(evals, out / "eval.jsonl")
    # The same facts as a corpus and a query list, for the dataset builder (launchers/build_dataset.py).
    corpus = [{"id": f"{r['id']}-{j}", "title": d["title"], "text": d["text"]}
              for r in train + evals for j, d in enumerate(r["documents"])]
    write_jsonl(corpus, out / "corpus.jsonl")
    for name, rows in (("queries.jsonl", train), ("eval_queries.jsonl", evals)):
        write_jsonl([{"id": r["id"], "query": r["query"], "answer": r["answer"]} for r in rows], out / name)
    print(f"wrote {args.train} training and {args.eval} eval records, {len(corpus)} corpus passages and "
          f"their queries (queries.jsonl, eval_queries.jsonl) to {out}")


if __name__ == "__main__":
    main()
