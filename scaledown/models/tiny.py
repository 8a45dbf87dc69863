"""Small models built from configs (random init), for tests and the default run on machines without weights.

`make_tiny_generator(path)` writes a Llama-architecture causal LM and a byte-level BPE tokenizer with a
Mistral-style chat template to `path`; `make_tiny_encoder(path)` writes a small BERT encoder with the same
tokenizer. Both folders load with the ordinary `from_pretrained` code paths the real models use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, BertConfig, BertModel, LlamaConfig,
                          PreTrainedTokenizerFast)

# Mistral-Instruct's prompt shape: no system role, [INST] user [/INST] assistant</s>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

_TOKENIZER_TEXT = """
Answer the question using the background documents. Be concise and only use relevant information.
Background: Question: What is the capital of the country? Who wrote the book? When was the bridge built?
Which river flows through the city? How many people live in the town? The answer is in the document.
The city lies on the river and was founded in the year by a king. The museum holds paintings and maps.
A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z
0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ' " ( ) - [ ] / INST
"""


def make_tiny_tokenizer(vocab_size: int = 512, extra_text: str = "", chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE (no unknown tokens: any UTF-8 text encodes) trained on a fixed English sample."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_TOKENIZER_TEXT * 4, extra_text], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    if chat:  # encoders (SPLADE, cross-encoders) have none: sentence-transformers would route pairs through it
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_generator(path: str | Path, hidden_size: int = 64, num_layers: int = 4, num_heads: int = 4,
                        num_kv_heads: int = 2, intermediate_size: int = 128, vocab_size: int = 512,
                        seed: int = 0, extra_text: str = "", initializer_range: float = 0.2) -> Path:
    """Write a random-init Llama-architecture causal LM and its tokenizer to `path`; return the path.

    The init is wider than Llama's 0.02: with a frozen random LM head of width 64, logits of std 0.02 could
    never get sharp, and LoRA (which leaves the head frozen, as in the paper) could not fit anything.
    """
    path = Path(path)
    tokenizer = make_tiny_tokenizer(vocab_size, extra_text)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_kv_heads, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
                         initializer_range=initializer_range)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_encoder(path: str | Path, hidden_size: int = 48, num_layers: int = 2, num_heads: int = 4,
                      vocab_size: int = 512, seed: int = 0) -> Path:
    """Write a random-init BERT encoder (a stand-in for ModernBERT) and a tokenizer to `path`."""
    path = Path(path)
    tokenizer = make_tiny_tokenizer(vocab_size)
    config = _tiny_bert_config(tokenizer, hidden_size, num_layers, num_heads)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny_bert_config(tokenizer, hidden_size: int = 32, num_layers: int = 1, num_heads: int = 2) -> BertConfig:
    return BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, intermediate_size=2 * hidden_size,
                      max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)


def make_tiny_splade(path: str | Path, seed: int = 0) -> Path:
    """A random-init SPLADE (BERT masked-LM + max pooling) saved as a sentence-transformers SparseEncoder."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import SpladePooling, Transformer
    from transformers import BertForMaskedLM

    path = Path(path)
    tokenizer = make_tiny_tokenizer(chat=False)
    torch.manual_seed(seed)
    BertForMaskedLM(_tiny_bert_config(tokenizer)).save_pretrained(path / "mlm")
    tokenizer.save_pretrained(path / "mlm")
    encoder = SparseEncoder(modules=[Transformer(str(path / "mlm"), transformer_task="fill-mask"),
                                     SpladePooling("max")], device="cpu")
    encoder.save(str(path / "encoder"))
    return path / "encoder"


def make_tiny_cross_encoder(path: str | Path, seed: int = 0) -> Path:
    """A random-init BERT cross-encoder (one relevance logit) loadable by sentence-transformers' CrossEncoder."""
    from transformers import BertForSequenceClassification

    path = Path(path)
    tokenizer = make_tiny_tokenizer(chat=False)
    config = _tiny_bert_config(tokenizer)
    config.num_labels = 1
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Write small random-init models for tests and the default run.")
    parser.add_argument("--out", required=True, help="folder for the generator")
    parser.add_argument("--encoder-out", default=None, help="also write a small encoder here")
    parser.add_argument("--retrieval-out", default=None,
                        help="also write a small SPLADE (retrieval-out/splade) and cross-encoder (retrieval-out/ce)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args(argv)
    if (Path(args.out) / "config.json").exists():
        print(f"{args.out}: exists, kept")
    else:
        make_tiny_generator(args.out, hidden_size=args.hidden_size, num_layers=args.layers)
        print(f"wrote a {args.layers}-layer, width-{args.hidden_size} generator to {args.out}")
    if args.encoder_out and not (Path(args.encoder_out) / "config.json").exists():
        make_tiny_encoder(args.encoder_out)
    if args.retrieval_out and not (Path(args.retrieval_out) / "ce" / "config.json").exists():
        make_tiny_splade(Path(args.retrieval_out) / "splade")
        make_tiny_cross_encoder(Path(args.retrieval_out) / "ce")
        print(f"wrote a small SPLADE and cross-encoder to {args.retrieval_out}")


if __name__ == "__main__":
    main()
