"""Batched greedy generation with a Hugging Face causal LM, and the device of this rank: shared by the teacher of
the dataset build and the text baselines of the evaluation."""

from __future__ import annotations

import os

import torch

from scaledown.log import progress


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                   **generate_kwargs) -> list[str]:
    """Greedy answers to tokenized prompts, batched with left padding, shortest prompts batched together."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in progress(range(0, len(order), batch_size), "answers"):
        idx = order[start:start + batch_size]
        enc = tokenizer.pad({"input_ids": [prompts[i] for i in idx]}, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             **generate_kwargs)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            answers[i] = text.strip()
    return answers


def local_device() -> torch.device:
    """This process's GPU under torchrun (LOCAL_RANK), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device
