"""Teacher answers and cross-encoder reranking for the dataset build.

The teacher reads the paper's prompt (scaledown/data/prompts.py: the system turn, then "Background:" with one
numbered "Document i:" line per document, then the question) and answers greedily, batched with left padding;
prompts are sorted by length first (length bucketing) so batches carry little padding. Reranking scores are the
cross-encoder's raw logits (no sigmoid), the targets the reference distils.
"""

from __future__ import annotations

import os

import torch

from scaledown.data.corpus import Query
from scaledown.data.prompts import SYSTEM_PROMPT, USER_TEMPLATE, encode_chat, text_documents
from scaledown.data.schema import document_text


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                   **generate_kwargs) -> list[str]:
    """Greedy answers to tokenized prompts, batched with left padding, shortest prompts batched together."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
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


def teacher_prompt(tokenizer, system_prompt: str, user_template: str, query: str, documents: list[str]) -> list[int]:
    """The paper's prompt with the documents as numbered text lines (the teacher, the uncompressed baseline)."""
    fields = {"docs": text_documents(documents), "question": query}
    return encode_chat(tokenizer, system_prompt, user_template, fields, user_fields=("docs", "question"))


def local_device() -> torch.device:
    """This process's GPU under torchrun (LOCAL_RANK), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def int8_arguments(device: torch.device) -> dict:
    """from_pretrained arguments for an 8-bit teacher (bitsandbytes' LLM.int8, CUDA only), or a clear refusal."""
    if device.type != "cuda":
        raise SystemExit("an 8-bit teacher (--teacher_8bit / --teacher-8bit) needs a CUDA GPU: bitsandbytes' int8 "
                         f"kernels do not run on {device.type}; drop the flag to load the teacher in bf16/fp32")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SystemExit("an 8-bit teacher needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": device.index or 0}}


class CrossEncoderReranker:
    """sentence-transformers' CrossEncoder: score (query, passage) pairs, keep the best `top_n`."""

    def __init__(self, name_or_path: str, device: str | None = None, trust_remote_code: bool = False,
                 batch_size: int = 64):
        from sentence_transformers import CrossEncoder

        self.name = name_or_path
        self.batch_size = batch_size
        self.model = CrossEncoder(name_or_path, device=device or str(local_device()),
                                  trust_remote_code=trust_remote_code)

    def rerank(self, queries: list[str], passages: list[list[dict]], top_n: int) -> list[tuple[list[dict], list]]:
        """For each query, its best `top_n` passages and their raw logits; every pair of the chunk in one call."""
        pairs = [(q, document_text(p)) for q, ps in zip(queries, passages) for p in ps]
        if not pairs:
            return [([], []) for _ in queries]
        # Identity: the raw logits, not the model's default activation (a sigmoid for one-label models).
        flat = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                  activation_fn=torch.nn.Identity())
        out, start = [], 0
        for ps in passages:
            scores = [float(s) for s in flat[start:start + len(ps)]]
            start += len(ps)
            order = sorted(range(len(ps)), key=lambda i: (-scores[i], i))[:top_n]
            out.append(([ps[i] for i in order], [scores[i] for i in order]))
        return out


class HFTeacher:
    """A Hugging Face causal LM with a chat template, greedy decoding, on this rank's GPU."""

    def __init__(self, name_or_path: str, system_prompt: str = SYSTEM_PROMPT, user_template: str = USER_TEMPLATE,
                 max_new_tokens: int = 128, batch_size: int = 8, dtype: str = "bfloat16",
                 trust_remote_code: bool = False, load_in_8bit: bool = False):
        from scaledown.models.generator import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(name_or_path, trust_remote_code)
        device = local_device()
        dtype = dtype if device.type == "cuda" else "float32"
        if load_in_8bit:
            self.model = load_causal_lm(name_or_path, dtype, trust_remote_code=trust_remote_code,
                                        **int8_arguments(device)).eval()
        else:
            self.model = load_causal_lm(name_or_path, dtype, trust_remote_code=trust_remote_code).to(device).eval()
        self.system_prompt, self.user_template = system_prompt, user_template
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def prompt(self, query: str, documents: list) -> list[int]:
        """Token ids of the teacher's prompt; the query and documents are tokenized as text."""
        return teacher_prompt(self.tokenizer, self.system_prompt, self.user_template, query,
                              [document_text(d) for d in documents])

    def answer(self, items: list[tuple[Query, list[dict]]]) -> list[str]:
        prompts = [self.prompt(q.text, docs) for q, docs in items]
        return greedy_answers(self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size)


class VLLMTeacher(HFTeacher):
    """The same prompts through vLLM (install it separately; used only when asked for), one engine per process.

    Under torchrun each process shows vLLM only its LOCAL_RANK GPU (CUDA_VISIBLE_DEVICES, read by vLLM's own
    worker process). Prompts go in as token ids: the chat template already wrote the BOS, and vLLM would add a
    second one to a text prompt."""

    def __init__(self, name_or_path: str, system_prompt: str = SYSTEM_PROMPT, user_template: str = USER_TEMPLATE,
                 max_new_tokens: int = 128, batch_size: int = 8, dtype: str = "bfloat16",
                 trust_remote_code: bool = False):
        if "LOCAL_RANK" in os.environ and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["LOCAL_RANK"]
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise SystemExit("teacher backend 'vllm' asked for, but vllm is not installed (pip install vllm)")
        from scaledown.models.generator import load_tokenizer

        self.tokenizer = load_tokenizer(name_or_path, trust_remote_code)
        self.llm = LLM(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.system_prompt, self.user_template = system_prompt, user_template
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def answer(self, items):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=self.prompt(q.text, d)) for q, d in items]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]


class GoldAnswers:
    """No teacher model: each query's first gold answer, looked up by query id (quick runs, data with answers)."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    def answer(self, items):
        missing = [q.id for q, _ in items if not self.answers.get(q.id)]
        if missing:
            raise KeyError(f"no gold answer for query id {missing[0]!r}")
        return [self.answers[q.id][0] for q, _ in items]


def __getattr__(name):
    if name == "generate_teacher_answers":  # the original ScaleDown code's import path (scaledown/compat.py)
        from scaledown.compat import generate_teacher_answers

        return generate_teacher_answers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
