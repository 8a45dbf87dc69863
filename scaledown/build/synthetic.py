"""A small generated RAG dataset: facts about fictional people and places, one gold passage and distractors per
question. For the default run, the learning benchmark and the tests, on machines without a corpus or a teacher.

Two subsets, reported apart:
- `word`: answers are ordinary words the model already knows (cities, colours, professions, years, ...), drawn
  at random per fact, so a model without the documents sits near chance: it measures reading.
- `nonce`: answers are made-up names the model has never seen, so it must also spell them from the compressed
  document: harder.
A question's distractors state the same relation about other entities with other values, so the answer is in
exactly one of its documents and a model must match the question's entity to the right passage.

    python -m scaledown.build.synthetic --out runs/data --train 512 --eval 64 --nonce-share 0.25
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

from scaledown.data.schema import write_jsonl

FIRST_NAMES = """Anna Maria Laura Sofia Emma Julia Clara Alice Helen Sarah Rachel Hannah Lucy Grace Chloe Olivia Emily
Susan Karen Linda Nancy Betty Diana Fiona Irene Jane Kate Lisa Mona Nina Paula Ruth Tina Vera Wendy Zoe Amy Beth
Carol Donna Ellen Frida Gloria Heidi Ingrid Joan Kim Lena Mia Nora Olga Petra Rita Sara Tara Ursula Yvonne Agnes
Bianca Dora Elsa Greta Hilda Ida Jenny Lara Molly Naomi Peter John David Michael James Robert William Thomas Daniel
Paul Mark Steven Kevin Brian George Edward Richard Charles Joseph Henry Frank Walter Arthur Albert Oscar Victor Hugo
Felix Max Leo Adam Simon Martin Lucas Oliver Samuel Jacob Ethan Noah Liam Owen Ryan Sean Ivan Igor Boris Carlos Pedro
Diego Marco Luca Pablo Omar Ali Hassan Raj Ravi Arjun Kenji Hiro Tom Jack Harry Fred Carl Karl Otto Hans Erik Lars
Sven Nils Anton Felipe Mateo Andre Louis Pierre""".split()
LAST_NAMES = """Smith Johnson Williams Jones Miller Davis Wilson Anderson Moore Jackson Martin Thompson Harris Clark
Lewis Robinson Walker Young Allen King Wright Scott Hill Adams Nelson Carter Mitchell Roberts Phillips Campbell Parker
Evans Edwards Collins Stewart Morris Rogers Reed Morgan Bell Murphy Bailey Rivera Cooper Richardson Cox Howard Ward
Torres Peterson Ramirez James Watson Brooks Kelly Sanders Price Bennett Wood Barnes Ross Henderson Coleman Jenkins
Perry Powell Long Patterson Hughes Flores Washington Butler Simmons Foster Gonzales Bryant Alexander Russell Griffin
Diaz Hayes Myers Ford Hamilton Graham Sullivan Wallace West Cole Jordan Reynolds Fisher Ellis Harrison Gibson
Mcdonald Cruz Marshall Ortiz Gomez Murray Freeman Wells Webb Simpson Stevens Tucker Porter Hunter Hicks Crawford
Henry Boyd Mason Morales Kennedy Warren Dixon Ramos Reyes Burns Gordon Shaw Holmes Rice Robertson Hunt Palmer
Wagner Schmidt Weber Fischer Becker Schulz Keller Richter Wolf Neumann Schwarz Zimmermann Hoffmann Kruger
Lange Werner Krause Meier Lehmann Dubois Moreau Laurent Simon Michel Lefebvre Leroy Roux Fournier Girard Bonnet
Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti Costa Nakamura Tanaka Sato
Suzuki Yamamoto Kobayashi Ivanov Petrov Novak Kowalski Nowak Lindqvist Johansson Larsen Hansen Jensen""".split()
"""Entities of both subsets: real first and last names (none of them a value of a `word` relation)."""

_SYLLABLES = ["ka", "lo", "mi", "ren", "dor", "vel", "sa", "tu", "ni", "bra", "quo", "zel", "fa", "rin", "os", "ta"]


@dataclass(frozen=True)
class Relation:
    name: str
    question: str
    passage: str
    values: tuple[str, ...] = ()
    """The answers drawn from; empty: a made-up name (the nonce subset)."""


_NONCE = [
    Relation("teacher", "Who taught {e} to paint?", "{e} learned to paint from {v} as a child."),
    Relation("friend", "What is the name of the best friend of {e}?", "The best friend of {e} is called {v}."),
    Relation("village", "In which village does {e} live?", "{e} lives in the village of {v} near the hills."),
    Relation("boat", "What is the name of the boat of {e}?", "The boat of {e} is called {v} and is painted."),
]
_WORD = [
    Relation("city", "In which city was {e} born?", "{e} was born in the city of {v} and grew up there.",
             ("Paris", "London", "Madrid", "Rome", "Berlin", "Vienna", "Cairo", "Tokyo", "Moscow", "Dublin",
              "Lisbon", "Athens", "Prague", "Warsaw", "Chicago", "Boston", "Sydney", "Toronto", "Istanbul", "Oslo")),
    Relation("colour", "What is the favourite colour of {e}?", "The favourite colour of {e} is {v}, since childhood.",
             ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey")),
    Relation("job", "What does {e} work as?", "{e} works as a {v} in a small town by the coast.",
             ("teacher", "doctor", "lawyer", "farmer", "pilot", "nurse", "baker", "engineer", "chef", "dentist",
              "plumber", "writer", "singer", "judge", "soldier", "librarian")),
    Relation("year", "In which year did {e} retire?", "{e} retired in {v} after a long career.",
             tuple(str(y) for y in range(1950, 2021, 3))),
    Relation("children", "How many children does {e} have?", "{e} has {v} children and a large garden.",
             ("two", "three", "four", "five", "six", "seven", "eight", "nine")),
    Relation("language", "Which language does {e} speak at home?", "At home {e} speaks {v} with the family.",
             ("French", "Spanish", "German", "Italian", "Russian", "Arabic", "Hindi", "Japanese", "Chinese",
              "Portuguese", "Dutch", "Greek", "Swedish", "Polish", "Turkish")),
    Relation("instrument", "Which instrument does {e} play?", "{e} plays the {v} in a local band.",
             ("piano", "guitar", "violin", "drums", "flute", "cello", "trumpet", "harp", "saxophone", "clarinet")),
    Relation("sport", "Which sport does {e} play?", "{e} plays {v} every weekend with old friends.",
             ("tennis", "football", "golf", "hockey", "baseball", "cricket", "rugby", "basketball", "volleyball")),
    Relation("pet", "What pet does {e} have?", "{e} has a pet {v} that sleeps by the door.",
             ("dog", "cat", "parrot", "rabbit", "horse", "turtle", "hamster", "goldfish", "snake", "pig")),
]
SUBSETS = {"word": _WORD, "nonce": _NONCE}


def _name(rng: random.Random, used: set[str]) -> str:
    """A made-up name (a nonce answer) not used before in this dataset: in a pooled corpus, a repeated name would
    make two passages answer the same question differently (two syllables while they last, then longer ones)."""
    for attempt in range(400):
        name = "".join(rng.choice(_SYLLABLES) for _ in range(2 + attempt // 20)).capitalize()
        if name not in used:
            used.add(name)
            return name
    raise RuntimeError("ran out of synthetic names")


def _person(rng: random.Random, used: set[str]) -> str:
    """A first and last name not used before in this dataset. Real names are ordinary, distinct tokens: two people
    may share a first or a last name but never both, so telling the question's person from the distractors is
    reading, not spelling (made-up names made retrieval return near-identical ones: "Dorquo" beside "Dorquoos")."""
    for _ in range(1000):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        if name not in used:
            used.add(name)
            return name
    raise RuntimeError(f"ran out of person names ({len(FIRST_NAMES) * len(LAST_NAMES)} combinations)")


def _value(relation: Relation, rng: random.Random, used: set[str], taken: set[str]) -> str:
    """A value for `relation` that none of `taken` (the question's other documents) states."""
    if not relation.values:
        return _name(rng, used)
    return rng.choice([v for v in relation.values if v not in taken])


def question(rng: random.Random, subset: str, num_documents: int, used: set[str], qid: str,
             same_relation: bool = True) -> dict:
    """One question: its gold passage and `num_documents - 1` distractors about other entities, of the same
    relation (or, with `same_relation=False`, of any relation of the subset: less alike passages), whose values
    all differ from the answer (the answer is in exactly one document)."""
    relation = rng.choice(SUBSETS[subset])
    facts, values = [], set()
    for j in range(num_documents):
        rel = relation if same_relation or j == 0 else rng.choice(SUBSETS[subset])
        entity = _person(rng, used)
        value = _value(rel, rng, used, values)
        values.add(value)
        facts.append((entity, value, rel))
    entity, value = facts[0][:2]
    order = list(range(num_documents))
    rng.shuffle(order)
    documents = [{"title": facts[j][0], "text": facts[j][2].passage.format(e=facts[j][0], v=facts[j][1])}
                 for j in order]
    scores = [round(4.0 + rng.uniform(-1, 1), 3) if j == 0 else round(-4.0 + rng.uniform(-1, 1), 3) for j in order]
    return {"id": qid, "query": relation.question.format(e=entity), "documents": documents, "answer": value,
            "gold_answers": [value], "reranking_scores": scores, "subset": subset, "relation": relation.name,
            "gold_document": order.index(0)}


def make_records(n: int, seed: int = 0, num_documents: int = 5, used: set[str] | None = None,
                 nonce_share: float = 1.0, same_relation: bool = True) -> list[dict]:
    """`n` questions, a share `nonce_share` of them from the nonce subset (the rest `word`). `used`: names already
    taken (share one set between calls whose passages end up in one corpus)."""
    rng = random.Random(seed)
    used = set() if used is None else used
    nonce = round(n * nonce_share)
    subsets = ["nonce"] * nonce + ["word"] * (n - nonce)
    rng.shuffle(subsets)
    return [question(rng, subset, num_documents, used, f"{subset}-{seed}-{i}", same_relation)
            for i, subset in enumerate(subsets)]


def corpus_id(record: dict, j: int) -> str:
    return f"{record['id']}-{j}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--eval", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", type=int, default=5, help="passages per question (one holds the answer)")
    parser.add_argument("--nonce-share", type=float, default=1.0,
                        help="share of questions whose answers are made-up names (the rest: ordinary words)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    train = make_records(args.train, args.seed, args.documents, used, args.nonce_share)
    evals = make_records(args.eval, args.seed + 1, args.documents, used, args.nonce_share)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(evals, out / "eval.jsonl")
    # The same facts as a corpus and a query list, for the dataset builder (launchers/build_dataset.py).
    corpus = [{"id": corpus_id(r, j), "title": d["title"], "text": d["text"]}
              for r in train + evals for j, d in enumerate(r["documents"])]
    write_jsonl(corpus, out / "corpus.jsonl")
    gold = {r["id"]: corpus_id(r, r["gold_document"]) for r in train + evals}
    (out / "gold_passages.json").write_text(json.dumps(gold))
    query_files = {"queries.jsonl": train, "eval_queries.jsonl": evals}
    for subset in SUBSETS:
        if 0 < args.nonce_share < 1:  # both subsets present: their held-out questions also apart
            query_files[f"eval_queries-{subset}.jsonl"] = [r for r in evals if r["subset"] == subset]
    for name, rows in query_files.items():
        write_jsonl([{"id": r["id"], "query": r["query"], "answer": r["answer"]} for r in rows], out / name)
    print(f"wrote {args.train} training and {args.eval} eval records, {len(corpus)} corpus passages and "
          f"their queries ({', '.join(query_files)}) to {out}")


if __name__ == "__main__":
    main()
