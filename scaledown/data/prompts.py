"""The paper's prompts (OSCAR, arXiv 2504.07109, appendix; NAVER's bergen is the reference implementation).

Generator (compressed), teacher and uncompressed baseline share one chat prompt:
    system: SYSTEM_PROMPT
    user:   "Background:\\n{docs}\\n\\nQuestion: {question}"
`docs` is, for the compressed generator, the k memory slots (l placeholders each, each slot followed by
`doc_separator`, empty in the reference); for the teacher and the uncompressed baseline, one line
"Document i: text\\n" per document (whitespace collapsed). Chat templates without a system role (Mistral-Instruct
v0.2 raises; others drop it silently) get the system text merged into the user turn: "system\\nuser", as the
reference does. The compressor reads COMPRESSOR_TEMPLATE (decoder compressors) or `[CLS] query [SEP] document
[SEP]` (encoders), followed by the memory tokens.
"""

from __future__ import annotations

import re

from jinja2.exceptions import TemplateError

SYSTEM_PROMPT = ("You are a helpful assistant. Your task is to extract relevant information from provided documents "
                 "and to answer to questions as briefly as possible.")
USER_TEMPLATE = "Background:\n{docs}\n\nQuestion: {question}"
COMPRESSOR_TEMPLATE = "\nQuery:\n{query}Document:\n{document}"
# The reference's prompt without retrieval (the no-documents baseline).
SYSTEM_PROMPT_NO_DOCS = "You are a helpful assistant. Answer the questions as briefly as possible."
USER_TEMPLATE_NO_DOCS = "Question: {question}"
# Prompts without a chat template (base LMs): the reference appends this after the user text.
RESPONSE_CUE = "\nResponse:\n"


def text_documents(documents: list[str]) -> str:
    """The teacher's (and uncompressed baseline's) background: numbered lines, empty documents skipped."""
    docs = [" ".join(d.split()) for d in documents if d.strip()]
    return "".join(f"Document {i}: {d}\n" for i, d in enumerate(docs, start=1))


def _render(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_SYSTEM_SUPPORT: dict[str, bool] = {}  # by template text: the collator asks once per record


def supports_system(tokenizer) -> bool:
    """Whether the chat template renders a system turn (Mistral-Instruct v0.2 raises; some drop it silently)."""
    template = tokenizer.chat_template
    if template is None:
        return False
    if template not in _SYSTEM_SUPPORT:
        probe = "\ue000system probe\ue001"
        try:
            rendered = _render(tokenizer, [{"role": "system", "content": probe}, {"role": "user", "content": "u"}])
            _SYSTEM_SUPPORT[template] = probe in rendered
        except TemplateError:
            _SYSTEM_SUPPORT[template] = False
    return _SYSTEM_SUPPORT[template]


def chat_prompt(tokenizer, system: str, user: str) -> str:
    """The prompt text up to the assistant's turn, rendered with the tokenizer's chat template; without a system
    role the system text is merged into the user turn ("system\nuser"), as the reference does."""
    if tokenizer.chat_template is None:
        return (tokenizer.bos_token or "") + (f"{system}\n" if system else "") + user + RESPONSE_CUE
    if not system:
        return _render(tokenizer, [{"role": "user", "content": user}])
    if supports_system(tokenizer):
        return _render(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user}])
    return _render(tokenizer, [{"role": "user", "content": f"{system}\n{user}"}])


def split_template(template: str, *fields: str) -> list[str]:
    """The literal pieces around `{field}`s, in order: "a{x}b{y}c" -> ["a", "b", "c"]."""
    pieces, rest = [], template
    for name in fields:
        head, sep, rest = rest.partition("{" + name + "}")
        if not sep:
            raise ValueError(f"template {template!r} has no {{{name}}} (fields in order: {list(fields)})")
        pieces.append(head)
    return pieces + [rest]


def special_strings(tokenizer) -> list[str]:
    """Every string the tokenizer turns into one special or added token (`</s>`, `<MEM>`, `<RR>`, ...)."""
    return sorted(set(tokenizer.all_special_tokens) | set(tokenizer.added_tokens_encoder), key=len, reverse=True)


def encode_text(tokenizer, text: str, limit: int | None = None) -> list[int]:
    """Token ids of user text (a query, a document, an answer): special-token strings in it stay text."""
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids[:limit] if limit else ids


_SENTINEL = re.compile("\ue000(\\d+)\ue001")


def encode_chat(tokenizer, system: str, user_template: str, fields: dict[str, str], user_fields: tuple[str, ...],
                ) -> list[int]:
    """Token ids of `chat_prompt(system, user_template.format(**fields))`, where the `user_fields` are data:
    should one spell a special token (`</s>`, `<MEM>`), it is cut out with a sentinel and tokenized as text.
    Prompts without such strings (all real ones) are tokenized whole, exactly as the reference does."""
    specials = special_strings(tokenizer)
    unsafe = [name for name in user_fields if any(sp in fields[name] for sp in specials)]
    if not unsafe:
        return tokenizer(chat_prompt(tokenizer, system, user_template.format(**fields)),
                         add_special_tokens=False)["input_ids"]
    marked = dict(fields, **{name: f"\ue000{i}\ue001" for i, name in enumerate(unsafe)})
    pieces = _SENTINEL.split(chat_prompt(tokenizer, system, user_template.format(**marked)))
    ids: list[int] = []
    for j, piece in enumerate(pieces):  # template text, sentinel index, template text, ...
        if j % 2:
            ids += encode_text(tokenizer, fields[unsafe[int(piece)]])
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


def teacher_prompt(tokenizer, system_prompt: str, user_template: str, query: str, documents: list[str]) -> list[int]:
    """The paper's prompt with the documents as numbered text lines (the teacher, the uncompressed baseline)."""
    fields = {"docs": text_documents(documents), "question": query}
    return encode_chat(tokenizer, system_prompt, user_template, fields, user_fields=("docs", "question"))
