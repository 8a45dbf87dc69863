"""Teacher answers for the dataset build: a Hugging Face model, vLLM, or the gold answers.

The teacher reads the paper's prompt (scaledown/data/prompts.py: the system turn, then "Background:" with one
numbered "Document i:" line per document, then the question) and answers greedily, batched with left padding;
prompts are sorted by length first (length bucketing) so batches carry little padding.
"""

from __future__ import annotations

import os

import torch

from scaledown.build.corpus import Query
from scaledown.data.prompts import SYSTEM_PROMPT, USER_TEMPLATE, teacher_prompt
from scaledown.data.schema import document_text
from scaledown.models.generation import greedy_answers, local_device


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
