"""Turn records into the compressor batch and the generator batch.

Compressor rows (B x k of them, all compressed in one call), left-padded (prompts.py has the exact text):
    decoder compressor: [bos] \\nQuery:\\n query Document:\\n document <MEM0> ... <MEM{l-1}> [<RR>]
    encoder compressor: [CLS] query [SEP] document [SEP] <MEM0> ... <MEM{l-1}> [<RR>]
with the query cut to max_query_tokens and the document to max_doc_tokens.
Generator rows, left-padded, built with the tokenizer's chat template:
    system:    the paper's system prompt (merged into the user turn where the template has no system role)
    user:      Background:\\n <MEM>*l <MEM>*l ... \\n\\nQuestion: query
    assistant: answer </s>          (training only; labels are -100 everywhere else)
The k*l `<MEM>` placeholders are overwritten with the compressed embeddings in the model. A record with fewer
than k documents gets empty slots whose placeholders are masked out of the generator's attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scaledown.data.prompts import chat_prompt, encode_chat, encode_text, split_template
from scaledown.data.schema import Record

MEMORY_TOKEN = "<MEM{}>"
RERANK_TOKEN = "<RR>"
PLACEHOLDER_TOKEN = "<MEM>"
IGNORE_INDEX = -100


def label_window(labels: torch.Tensor) -> int:
    """Positions whose logits the loss needs: from the one before the first labelled column (of any row) to the
    end. Answers close every left-padded row, so the LM head and the log-softmax can skip the prompt."""
    first = int(labels.ne(IGNORE_INDEX).any(0).int().argmax())
    return min(labels.shape[1] - first + 1, labels.shape[1])


def memory_tokens(n: int) -> list[str]:
    return [MEMORY_TOKEN.format(i) for i in range(n)]


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


@dataclass
class Collator:
    """Callable for a DataLoader: list[Record] -> dict of tensors (see the module docstring)."""

    tokenizer: object
    """The generator's tokenizer, extended with `<MEM>`."""
    compressor_tokenizer: object
    """The compressor's tokenizer (the generator's for n_layers), extended with `<MEM{i}>` and `<RR>`."""
    num_memory_tokens: int
    max_doc_tokens: int
    max_query_tokens: int
    max_answer_tokens: int
    system_prompt: str
    user_template: str
    doc_separator: str
    compressor_template: str
    num_documents: int | None = None
    """k; None uses the largest document count in the batch (inference)."""
    rerank: bool = False
    with_answers: bool = True
    encoder_pairs: bool = False
    """An encoder compressor: `[CLS] query [SEP] document [SEP]` instead of `compressor_template`."""
    cut_prompt_query = True  # the generator prompt's query is cut to max_query_tokens too

    def __post_init__(self):
        ctok = self.compressor_tokenizer
        self.memory_ids = ctok.convert_tokens_to_ids(memory_tokens(self.num_memory_tokens))
        self.rerank_id = ctok.convert_tokens_to_ids(RERANK_TOKEN) if self.rerank else None
        self.placeholder_id = self.tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKEN)
        if self.encoder_pairs:
            # An encoder reads the (query, document) pair as BERT-style tokenizers encode pairs.
            first = ctok.cls_token_id if ctok.cls_token_id is not None else ctok.bos_token_id
            sep = ctok.sep_token_id if ctok.sep_token_id is not None else ctok.eos_token_id
            self.comp_pieces = ([first], [sep], [sep])
        else:
            bos = [ctok.bos_token_id] if ctok.bos_token_id is not None else []
            head, middle, tail = (ctok(piece, add_special_tokens=False)["input_ids"]
                                  for piece in split_template(self.compressor_template, "query", "document"))
            self.comp_pieces = (bos + head, middle, tail)

    @property
    def slot_ids(self) -> list[int]:
        """The generator-prompt token ids that the memory embeddings overwrite."""
        return [self.placeholder_id]

    def compressor_batch(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return left_pad(rows, self.compressor_tokenizer.pad_token_id)

    def compressor_row(self, query: str, document: str) -> list[int]:
        ctok = self.compressor_tokenizer
        head, middle, tail = self.comp_pieces
        # Queries and documents are data: a `<MEM0>` or `</s>` in them stays text (encode_text).
        doc = encode_text(ctok, document, self.max_doc_tokens) if document else []
        memory = list(self.memory_ids) + ([self.rerank_id] if self.rerank else [])
        return head + encode_text(ctok, query, self.max_query_tokens) + middle + doc + tail + memory

    def slots(self, k: int) -> str:
        return "".join(PLACEHOLDER_TOKEN * self.num_memory_tokens + self.doc_separator for _ in range(k))

    def prompt(self, query: str, k: int) -> str:
        """The generator prompt text with k memory slots, up to the assistant's turn."""
        return chat_prompt(self.tokenizer, self.system_prompt,
                           self.user_template.format(docs=self.slots(k), question=query))

    def generator_row(self, query: str, k: int, answer: str | None) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one generator row; the query and the answer are tokenized as text."""
        tok = self.tokenizer
        if self.cut_prompt_query:
            query = tok.decode(encode_text(tok, query, self.max_query_tokens))
        ids = encode_chat(tok, self.system_prompt, self.user_template, {"docs": self.slots(k), "question": query},
                          user_fields=("question",))
        labels = [IGNORE_INDEX] * len(ids)
        if answer is not None:
            answer_ids = encode_text(tok, answer, self.max_answer_tokens) + [tok.eos_token_id]
            ids += answer_ids
            labels += answer_ids
        return ids, labels

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor]:
        k = self.num_documents or max(len(r.documents) for r in records)
        l = self.num_memory_tokens
        comp_rows, gen_rows, label_rows = [], [], []
        doc_mask = torch.zeros(len(records), k, dtype=torch.bool)
        scores = torch.zeros(len(records), k, dtype=torch.float32)
        for b, rec in enumerate(records):
            docs = rec.documents[:k]
            doc_mask[b, :len(docs)] = torch.tensor([bool(d.strip()) for d in docs])  # empty text: a masked slot
            if rec.reranking_scores is not None:
                scores[b, :len(docs)] = torch.tensor(rec.reranking_scores[:k])
            for j in range(k):
                comp_rows.append(self.compressor_row(rec.query, docs[j] if j < len(docs) else ""))
            ids, labels = self.generator_row(rec.query, k, rec.answer if self.with_answers else None)
            gen_rows.append(ids)
            label_rows.append(labels)
        comp_ids, comp_mask = self.compressor_batch(comp_rows)
        gen_ids, gen_mask = left_pad(gen_rows, self.tokenizer.pad_token_id)
        labels, _ = left_pad(label_rows, IGNORE_INDEX)
        placeholder = torch.isin(gen_ids, torch.tensor(self.slot_ids))
        counts = placeholder.sum(-1)
        if not torch.all(counts == k * l):
            raise ValueError(f"generator prompt has {counts.tolist()} memory slots, expected {k * l} per row: the "
                             "chat template or tokenizer split a slot token")
        # Empty document slots: hide their placeholders from the generator's attention.
        slot_of = (placeholder.long().cumsum(-1) - 1).clamp(min=0) // l
        hidden = placeholder & ~doc_mask.gather(1, slot_of.clamp(max=k - 1))
        gen_mask = gen_mask.masked_fill(hidden, 0)
        batch = {
            "comp_input_ids": comp_ids, "comp_attention_mask": comp_mask,
            "gen_input_ids": gen_ids, "gen_attention_mask": gen_mask,
            "doc_mask": doc_mask,
        }
        if self.with_answers:
            batch["labels"] = labels
        if self.rerank:
            batch["reranking_scores"] = scores
            batch["has_scores"] = torch.tensor([r.reranking_scores is not None for r in records])
        return batch

