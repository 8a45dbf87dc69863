"""Teacher answers and cross-encoder reranking for the dataset build.

The teacher sees the same prompt shape as the generator in training (instruction, background documents as
text, question: scaledown.data.collate.generator_messages) and answers greedily, batched with left padding;
prompts are sorted by length first (length bucketing) so batches carry little padding.
"""

from __future__ import annotations

import torch

from scaledown.data.collate import generator_messages
from scaledown.data.schema import document_text


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers to chat-templated prompts, batched with left padding, shortest prompts batched together."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            answers[i] = text.strip()
    return answers


class CrossEncoderReranker:
    """sentence-transformers' CrossEncoder: score (query, passage) pairs, keep the best `top_n`."""

    def __init__(self, name_or_path: str, device: str | None = None, trust_remote_code: bool = False):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(name_or_path, device=device, trust_remote_code=trust_remote_code)

    def rerank(self, query: str, passages: list[dict], top_n: int) -> tuple[list[dict], list[float]]:
        scores = self.model.predict([(query, document_text(p)) for p in passages], show_progress_bar=False)
        order = sorted(range(len(passages)), key=lambda i: (-float(scores[i]), i))[:top_n]
        return [passages[i] for i in order], [float(scores[i]) for i in order]


class HFTeacher:
    """A Hugging Face causal LM with a chat template, greedy decoding."""

    def __init__(self, name_or_path: str, instruction: str, max_new_tokens: int = 128, batch_size: int = 8,
                 dtype: str = "bfloat16", trust_remote_code: bool = False):
        from scaledown.models.generator import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(name_or_path, trust_remote_code)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = dtype if device == "cuda" else "float32"
        self.model = load_causal_lm(name_or_path, dtype, trust_remote_code=trust_remote_code).to(device).eval()
        self.instruction, self.max_new_tokens, self.batch_size = instruction, max_new_tokens, batch_size

    def prompt(self, query: str, documents: list[dict]) -> str:
        background = [document_text(d) for d in documents]
        return self.tokenizer.apply_chat_template(generator_messages(self.instruction, query, background),
                                                  tokenize=False, add_generation_prompt=True)

    def answer(self, items: list[tuple[str, list[dict]]]) -> list[str]:
        prompts = [self.prompt(q, docs) for q, docs in items]
        return greedy_answers(self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size)


class VLLMTeacher(HFTeacher):
    """The same prompts through vLLM (install it separately; used only when asked for)."""

    def __init__(self, name_or_path: str, instruction: str, max_new_tokens: int = 128, batch_size: int = 8,
                 dtype: str = "bfloat16", trust_remote_code: bool = False):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise SystemExit("teacher backend 'vllm' asked for, but vllm is not installed (pip install vllm)")
        from scaledown.models.generator import load_tokenizer

        self.tokenizer = load_tokenizer(name_or_path, trust_remote_code)
        self.llm = LLM(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.instruction, self.max_new_tokens, self.batch_size = instruction, max_new_tokens, batch_size

    def answer(self, items):
        outputs = self.llm.generate([self.prompt(q, d) for q, d in items], self.params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]


class GoldAnswers:
    """No teacher model: each query's gold answer from the query source (quick runs, data with answers)."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def answer(self, items):
        missing = [q for q, _ in items if not self.answers.get(q)]
        if missing:
            raise KeyError(f"no gold answer for query {missing[0]!r}")
        return [self.answers[q] for q, _ in items]
