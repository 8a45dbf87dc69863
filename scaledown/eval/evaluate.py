"""What the loop and the `scaledown eval` command share: greedy answers of the compressed model and of the text
baselines, and the CE of a reference answer."""

from __future__ import annotations

from dataclasses import replace

import torch

from scaledown.data.schema import Record
from scaledown.log import progress

@torch.no_grad()
def generate_answers(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32,
                     num_documents: int | None = None, **generate_kwargs) -> list[str]:
    """Greedy answers of the compressed model, batched; each record reads its first `num_documents` documents."""
    predictions = []
    was_training = model.training
    model.eval()
    for i in progress(range(0, len(records), batch_size), "answers"):
        chunk = records[i:i + batch_size]
        predictions += model.generate([r.query for r in chunk], [r.documents[:num_documents] for r in chunk],
                                      max_new_tokens=max_new_tokens, **generate_kwargs)
    model.train(was_training)
    return predictions


def text_prompt(model, record: Record, num_documents: int | None) -> list[int]:
    """The prompt of the text baselines: the documents as numbered lines (the teacher's prompt), or, with
    `num_documents=0`, the reference's prompt without retrieval."""
    from scaledown.data.prompts import SYSTEM_PROMPT_NO_DOCS, USER_TEMPLATE_NO_DOCS, encode_chat
    from scaledown.data.prompts import teacher_prompt

    if num_documents == 0:
        return encode_chat(model.tokenizer, SYSTEM_PROMPT_NO_DOCS, USER_TEMPLATE_NO_DOCS, {"question": record.query},
                           user_fields=("question",))
    c = model.config
    return teacher_prompt(model.tokenizer, c.system_prompt, c.user_template, record.query,
                          record.documents[:num_documents])


@torch.no_grad()
def generate_uncompressed(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32,
                          num_documents: int | None = None, **generate_kwargs) -> list[str]:
    """The baseline: the base generator (LoRA off) reading the documents as text, in the teacher's prompt
    (`num_documents=0`: no documents at all)."""
    from scaledown.models.generation import greedy_answers

    prompts = [text_prompt(model, r, num_documents) for r in records]
    with model.generator.disable_adapter():
        return greedy_answers(model.generator, model.tokenizer, prompts, max_new_tokens, batch_size,
                              **generate_kwargs)


def reference_answer(record: Record, reference: str) -> str | None:
    """The answer a CE is measured on: the teacher's (`answer`) or the first gold alias."""
    if reference == "teacher":
        return record.answer
    return record.gold_answers[0] if record.gold_answers else None


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> tuple[float, int]:
    """Summed next-token CE over the labelled positions of the rows in `keep`, and their count."""
    labels = labels[:, 1:].masked_fill(~keep[:, None], -100)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                           ignore_index=-100, reduction="sum")
    return float(ce), int((labels != -100).sum())


@torch.no_grad()
def answer_ce(model, records: list[Record], reference: str, batch_size: int = 8,
              num_documents: int | None = None, text: bool = False) -> tuple[float, int]:
    """(summed CE, answer tokens) of the reference answers: given the compressed documents, or with `text=True`
    given the base generator's text prompt (`num_documents=0`: no documents). Sums all-reduce across ranks.
    Records without that reference are run too (with a stand-in answer, not counted): every rank runs as many
    batches as it has records, which ZeRO-3's collective forwards need."""
    from scaledown.data.collate import IGNORE_INDEX, left_pad
    from scaledown.data.prompts import encode_text
    from scaledown.models.compressor import position_ids_from_mask

    chosen = [replace(r, answer=reference_answer(r, reference) or "-", documents=r.documents[:num_documents])
              for r in records]
    counted = torch.tensor([bool(reference_answer(r, reference)) for r in records])
    was_training = model.training
    model.eval()
    device = model.generator.get_input_embeddings().weight.device
    total, count = 0.0, 0
    for i in progress(range(0, len(chosen), batch_size), f"CE of {reference} answers"):
        chunk = chosen[i:i + batch_size]
        if text:
            tok = model.tokenizer
            rows, label_rows = [], []
            for r in chunk:
                prompt = text_prompt(model, r, num_documents)
                answer = encode_text(tok, r.answer, model.config.max_answer_tokens) + [tok.eos_token_id]
                rows.append(prompt + answer)
                label_rows.append([IGNORE_INDEX] * len(prompt) + answer)
            ids, mask = left_pad(rows, tok.pad_token_id)
            labels, _ = left_pad(label_rows, IGNORE_INDEX)
            ids, mask = ids.to(device), mask.to(device)
            with model.generator.disable_adapter():
                logits = model.generator(input_ids=ids, attention_mask=mask,
                                         position_ids=position_ids_from_mask(mask)).logits
        else:
            batch = {k: v.to(device) for k, v in model.collator(num_documents)(chunk).items()}
            logits, labels = model.logits(batch), batch["labels"]
        ce, n = _ce_sum(logits, labels.to(logits.device), counted[i:i + batch_size].to(logits.device))
        total, count = total + ce, count + n
    model.train(was_training)
    return total, count
