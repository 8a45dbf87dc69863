"""The LLM judge of the paper: Correct 1 / Partially correct 0.5 / Wrong 0, read from the probabilities of the
first generated token, as in the reference."""

from __future__ import annotations

import torch

from scaledown.data.prompts import supports_system
from scaledown.data.schema import Record
from scaledown.eval.answers import references

# The reference's judge (bergen, config/evaluator/default_multi_qa.yaml), with the paper's judge model.
JUDGE_MODEL = "upstage/SOLAR-10.7B-Instruct-v1.0"
JUDGE_OPTIONS = {"Correct": 1.0, "Partially correct": 0.5, "Wrong": 0.0}
JUDGE_SYSTEM = "You are an evaluation tool. Answer with one of \n {rubric}."
JUDGE_USER = ("Here is a question, a golden answer and an AI-generated answer. Can you judge whether the "
              "AI-generated answer is correct according to the question and golden answer, simply answer with one "
              "of {rubric}.\n Question: {question}. \nGolden answer: {answer} \n Generated answer: {prediction}")
JUDGE_USER_ALONE = ("You are an evaluation tool. Just answer as following {rubric}. Here is a question, a golden "
                    "answer and an AI-generated answer. Judge whether the AI-generated answer is correct according "
                    "to the question and golden answer, answer with {rubric}.\nQuestion: {question}.\nGolden "
                    "answer: {answer}\nGenerated answer: {prediction}")


class Judge:
    """An LLM judge: the expected score under the softmax over the options' first tokens, at the first answer
    position (one batched forward pass per batch; the reference reads the same logits from `generate`)."""

    def __init__(self, name_or_path: str = JUDGE_MODEL, device: torch.device | str = "cpu",
                 dtype: str | None = None, batch_size: int = 8):
        from scaledown.models.generator import load_causal_lm, load_tokenizer

        device = torch.device(device)
        self.tok = load_tokenizer(name_or_path)
        self.lm = load_causal_lm(name_or_path, dtype or ("bfloat16" if device.type == "cuda" else "float32"))
        self.lm = self.lm.to(device).eval()
        self.batch_size = batch_size
        names = sorted(JUDGE_OPTIONS)
        self.option_ids = [self.tok.encode(n, add_special_tokens=False)[0] for n in names]
        self.values = torch.tensor([JUDGE_OPTIONS[n] for n in names])
        self.rubric = ", ".join(JUDGE_OPTIONS)
        self.with_system = supports_system(self.tok)

    def prompt(self, question: str, golds: list[str], prediction: str) -> str:
        # The reference formats the list of gold labels as Python prints it.
        fields = {"rubric": self.rubric, "question": question, "answer": str(golds), "prediction": prediction}
        if self.with_system:
            messages = [{"role": "system", "content": JUDGE_SYSTEM.format(**fields)},
                        {"role": "user", "content": JUDGE_USER.format(**fields)}]
        else:
            messages = [{"role": "user", "content": JUDGE_USER_ALONE.format(**fields)}]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def scores(self, records: list[Record], predictions: list[str]) -> list[float]:
        from scaledown.models.compressor import position_ids_from_mask

        out: list[float] = []
        prompts = [self.prompt(r.query, references(r), p) for r, p in zip(records, predictions)]
        for start in range(0, len(prompts), self.batch_size):
            enc = self.tok(prompts[start:start + self.batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(self.lm.device)
            logits = self.lm(**enc, position_ids=position_ids_from_mask(enc["attention_mask"])).logits[:, -1]
            probs = logits[:, self.option_ids].float().softmax(-1).cpu()
            out += (probs @ self.values).tolist()
        return out
