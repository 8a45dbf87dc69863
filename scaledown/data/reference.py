"""The reference input format (`model.input_format=reference`): the token rows NAVER's OSCAR code builds (bergen's
query-dependent `collate_fn` and the released models' modeling file), for models imported from NAVER's releases
(scaledown/models/oscar_import.py) and for runs that must match them token for token.

What differs from ScaleDown's own format (scaledown/data/collate.py), and why ScaleDown's is the default:
- Compressor rows: `"\\nQuery:\\n" + query + "Document:\\n" + document` is tokenized as one string with the
  tokenizer's special tokens (BOS where it adds one), truncated as a whole to max_query_tokens + max_doc_tokens +
  l tokens (the query is never cut on its own, so a long query eats the document's budget), padded to that width
  on the tokenizer's padding side, and the memory tokens follow the padding. An encoder compressor (the
  released `BertCompressor`) reads the tokenizer's own (query, document) pair, only the document cut, to
  max_doc_tokens + 3 tokens, left-padded to that width, memory tokens after the padding (no token type ids).
  Positions run 0..width-1 over the padding too. ScaleDown cuts query and document apart and puts the memory
  tokens right after the text (the paper's figure: query, document, memory), with positions counted from the
  first real token, so a row's embeddings do not depend on its padding.
- Generator prompts: each document's slot is `<MEM0>..<MEM{l-1}>` followed by `model.doc_separator` (`<SEP>` for
  the released models, `sep=True`) and the memory embeddings overwrite the `<MEMi>` tokens themselves; the
  query is not cut. ScaleDown writes l `<MEM>` placeholders per document.
- Tokens: the generator's tokenizer gains `<MEM0>..<MEM{l-1}>`, `<AE>`, `<ENC>`, `<SEP>` in that order (the
  released models' ids); a tokenizer without a pad token pads with BOS.
- Training rows: answer + EOS as labels, as ScaleDown's. bergen's own training rows append a second end-of-turn
  token and, through an off-by-one, leave the answer's first token unlabelled; that is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scaledown.data.collate import Collator, memory_tokens

# Added to the generator's tokenizer after <MEM0..l-1>, in this order (the released models' token ids).
REFERENCE_TOKENS = ["<AE>", "<ENC>", "<SEP>"]


@dataclass
class ReferenceCollator(Collator):
    cut_prompt_query = False

    def __post_init__(self):
        super().__post_init__()
        if self.rerank:
            raise ValueError("model.input_format=reference: a rerank head has no reference format here")
        self.generator_memory_ids = self.tokenizer.convert_tokens_to_ids(memory_tokens(self.num_memory_tokens))
        # The reference's widths: an encoder's pair plus its three special tokens; a decoder's query, document
        # and a margin of l tokens.
        self.text_width = (self.max_doc_tokens + 3 if self.encoder_pairs
                           else self.max_query_tokens + self.max_doc_tokens + self.num_memory_tokens)

    @property
    def slot_ids(self) -> list[int]:
        return self.generator_memory_ids

    def slots(self, k: int) -> str:
        return "".join("".join(memory_tokens(self.num_memory_tokens)) + self.doc_separator for _ in range(k))

    def compressor_row(self, query: str, document: str) -> list[int]:
        """The text part only (special tokens as the tokenizer adds them, cut to the text width): an encoder
        reads the tokenizer's (query, document) pair with only the document cut, a decoder the template's text."""
        if self.encoder_pairs:
            return self.compressor_tokenizer(query, document, add_special_tokens=True, truncation="only_second",
                                             max_length=self.text_width)["input_ids"]
        text = self.compressor_template.format(query=query, document=document)
        return self.compressor_tokenizer(text, add_special_tokens=True, truncation=True,
                                         max_length=self.text_width)["input_ids"]

    def compressor_batch(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row padded to the text width on the tokenizer's side (an encoder's: the left), then the memory
        tokens."""
        pad, width = self.compressor_tokenizer.pad_token_id, self.text_width
        left = self.encoder_pairs or self.compressor_tokenizer.padding_side == "left"
        ids = torch.full((len(rows), width + self.num_memory_tokens), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            start = width - len(row) if left else 0
            ids[i, start:start + len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, start:start + len(row)] = 1
        ids[:, width:] = torch.tensor(self.memory_ids, dtype=torch.long)
        mask[:, width:] = 1
        return ids, mask
