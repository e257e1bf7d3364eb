"""A tiny randomly initialised BERT checkpoint with a character WordPiece tokenizer, built in seconds,
so the hybrid and finetune backends can be tested without the 470 MB e5 checkpoint."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def build_tiny_bert(folder: Path, texts: Iterable[str], hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """config.json, model.safetensors and tokenizer files in `folder`; the vocabulary is every character
    of `texts` (lower-cased), alone and as a '##' continuation, so Chinese and English both tokenise."""
    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    vocab = {tok: i for i, tok in enumerate(special + chars + ["##" + c for c in chars])}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=200))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128, pad_token_id=0)
    BertModel(config).save_pretrained(str(folder))
    return folder
