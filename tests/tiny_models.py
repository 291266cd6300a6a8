"""Tiny Hugging Face models with real architectures, built and saved by the tests themselves (no hub).

A byte-level BPE tokenizer trained with `tokenizers` on the demo corpus's Korean lines, a 2-layer
GPT-NeoX causal LM (polyglot-ko's architecture: rotary_pct 0.5, EOS and no pad token, as the checkpoint)
and a 2-layer RoBERTa encoder with a pooler (KoSimCSE's architecture). Random weights: the numbers are
meaningless, the code paths are the real ones.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path


def korean_lines(limit: int = 600) -> list[str]:
    demo = resources.files("koquality") / "data" / "demo"
    lines = []
    for row in json.loads((demo / "alpaca.json").read_text(encoding="utf-8")):
        lines += [row["instruction"], row["input"], row["output"]]
    with open(str(demo / "qa.csv"), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            lines += [row["question"], row["answer"]]
    return [line for line in lines if line.strip()][:limit]


def _bpe(special: list[str], vocab_size: int, lines: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines or korean_lines(), trainer)
    return tok


def build_causal_lm(path: Path, vocab_size: int = 600, seed: int = 0, lines: list[str] | None = None,
                    embedding_rows: int | None = None, **shape) -> Path:
    """`vocab_size` is the tokenizer's; `embedding_rows` pads the model's vocabulary as checkpoints do
    (polyglot-ko: 30,080 rows). `shape` overrides the tiny GPT-NeoX shape, e.g. polyglot-ko-1.3b's:
    hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_bpe(["<|endoftext|>"], vocab_size, lines),
                                        eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, rotary_pct=0.5,
                  max_position_embeddings=2048, vocab_size=max(len(tokenizer), embedding_rows or 0))
    config.update(shape)
    config = GPTNeoXConfig(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, **config)
    GPTNeoXForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_encoder(path: Path, vocab_size: int = 600, seed: int = 0, lines: list[str] | None = None,
                  embedding_rows: int | None = None, **shape) -> Path:
    """`shape` overrides the tiny RoBERTa shape, e.g. roberta-base's: hidden_size=768, num_hidden_layers=12,
    num_attention_heads=12, intermediate_size=3072."""
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = _bpe(special, vocab_size, lines)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                        sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    torch.manual_seed(seed)
    config = dict(vocab_size=max(len(tokenizer), embedding_rows or 0), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=514)
    config.update(shape)
    config = RobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **config)
    RobertaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_sentence_transformer(encoder_path: Path, path: Path) -> Path:
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    word = Transformer(str(encoder_path), max_seq_length=128)
    dim = word.get_embedding_dimension() if hasattr(word, "get_embedding_dimension") else word.get_word_embedding_dimension()
    SentenceTransformer(modules=[word, Pooling(dim, pooling_mode="mean")], device="cpu").save(str(path))
    return path
