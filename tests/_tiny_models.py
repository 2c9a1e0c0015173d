"""Tiny randomly initialised transformers models that tests build and save, with a word-level tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
WORDS = """the a of and to in is was treaty signed year peace war paris london king queen city river
president congress public credit debt answer question passages cite passage number know not do if
you only using given claim every with which like or say that support brackets square [ ] 1 2 3 4 5
6 7 8 9 0 . , : ? ! ( ) " ' - when where who what why how""".split()


def save_tokenizer(folder: Path, extra_text: str = "", chat_template: str | None = None,
                   added: tuple[str, ...] = ()):
    """A word-level fast tokenizer over a small vocabulary (plus the words of ``extra_text``);
    ``added`` tokens are matched whole before splitting (e.g. ``"[1]"``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(WORDS + re.findall(r"\w+|[^\w\s]", extra_text.lower())))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [w for w in words if w not in SPECIALS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    if chat_template:
        tokenizer.chat_template = chat_template
    if added:
        tokenizer.add_tokens(list(added))
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_causal_lm(folder: Path, extra_text: str = "", chat_template: str | None = None,
                   emit: str | None = None) -> Path:
    """A 2-layer GPT-2 with random weights saved to ``folder``.

    With ``emit``, the final layer norm is rigged to a constant output that makes ``emit`` (added to
    the vocabulary as one token) the most likely next token at every step.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = save_tokenizer(folder, extra_text, chat_template, (emit,) if emit else ())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    if emit:
        target = tokenizer.convert_tokens_to_ids(emit)
        with torch.no_grad():
            direction = torch.randn(config.n_embd)
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(direction)
            model.lm_head.weight[target] = direction * 100
    model.save_pretrained(folder)
    return folder


def tiny_seq2seq(folder: Path, extra_text: str = "", emit: str | None = None) -> Path:
    """A 1-layer BART with random weights saved to ``folder``; with ``emit`` its final logits bias
    makes that word the output at every step."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer = save_tokenizer(folder, extra_text)
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.bos_token_id, forced_eos_token_id=None)
    model = BartForConditionalGeneration(config)
    if emit:
        with torch.no_grad():
            model.final_logits_bias[0, tokenizer.convert_tokens_to_ids(emit)] = 1e4
    model.save_pretrained(folder)
    return folder
