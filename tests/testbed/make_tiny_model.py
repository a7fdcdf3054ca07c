"""Write a tiny random Llama with a locally trained tokenizer as a Hugging Face model directory.

Run by the vLLM venv's python (it has torch, transformers, tokenizers):
    python make_tiny_model.py OUT_DIR [--vocab 4096] [--seed 0]
Nothing is downloaded. The same seed gives the same tokenizer and the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

SYLLABLES = (  # noqa: SIM905 - one line of text reads better than 90 quoted items
    "ka ke ki ko ku ta te ti to tu na ne ni no nu ma me mi mo mu ra re ri ro ru sa se si so su "
    "la le li lo lu da de di do du ba be bi bo bu ga ge gi go gu pa pe pi po pu va ve vi vo vu "
    "an en in on un ar er ir or ur al el il ol ul ash esh ish osh ush th st pr tr str"
).split()
ENGLISH = (  # noqa: SIM905
    "the of and to in is was that for on it with as he be at by this had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any "
    "my now such like our over man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state good very "
    "make world still own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take three hello "
    "name capital france paris number memory node worker engine server model token cache thread"
).split()


def training_text(seed: int, n_words: int = 12000, n_lines: int = 6000) -> list[str]:
    """Deterministic text with many distinct words, so BPE training can reach the asked vocab size."""
    rng = random.Random(seed)
    words: set[str] = set(ENGLISH)
    while len(words) < n_words:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    vocab = sorted(words)
    rng.shuffle(vocab)
    # Zipf-like frequencies: frequent words become whole tokens, rare ones stay split.
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    lines = []
    for _ in range(n_lines):
        sentence = rng.choices(vocab, weights=weights, k=rng.randint(5, 16))
        text = " ".join(sentence)
        lines.append(text[0].upper() + text[1:] + rng.choice([".", ".", "?", "!", ","]))
    lines.extend(" ".join(ENGLISH[i : i + 12]) for i in range(0, len(ENGLISH), 12))
    lines.extend(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(10)) for _ in range(200))
    return lines


def build_tokenizer(seed: int, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(seed), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    got = tok.get_vocab_size()
    if got != vocab_size:
        raise SystemExit(f"tokenizer reached {got} tokens, asked {vocab_size}: training text too small")
    return tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = build_tokenizer(args.seed, args.vocab)
    t_tok = time.monotonic() - t0
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    fast.model_max_length = 2048
    # enough for /v1/chat/completions to work too
    fast.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id
    )

    out: Path = args.out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    fast.save_pretrained(tmp)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["torch_dtype"] = "bfloat16"  # some transformers releases write "dtype" only; vLLM reads either
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        if not (tmp / name).is_file():
            raise SystemExit(f"{name} was not written")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"tiny-llama: {params / 1e6:.2f} M parameters, vocab {args.vocab}, tokenizer {t_tok:.1f} s, "
        f"total {time.monotonic() - t0:.1f} s -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
