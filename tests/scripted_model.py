"""A real Llama checkpoint whose greedy answer to any chat prompt is a chosen text.

Why: the tiny random model answers noise, so an end-to-end "Fix this" could never show that an edit
is applied in the editor. This checkpoint goes through the same ``from_pretrained``/tokenizer/template/
decode path as Code Llama; only its weights are set by hand:

- every attention and MLP output projection is zero, so each position's final hidden state is just
  the embedding of its own token: the model is a bigram table;
- the tokens of the answer get one-hot embeddings, and ``lm_head`` maps token *i* of the chain to
  token *i+1*, the last one to EOS.

A Code Llama Instruct prompt ends with ``[/INST]`` (last token ``]``), so every chat request, whatever its
content, is answered with the chain. The answer's tokens must be distinct (a bigram table has one
successor per token).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# the same place tests/conftest.py reads shared data from (imported from here because a second
# conftest.py under tests/editors/ can shadow ``import conftest``)
REPO = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = Path(os.environ.get("CODELLAMA_LSP_SHARED", REPO.parent / "shared")) / "data" / "codellama-tokenizer"

DEFAULT_ANSWER = " ```\nreturn a + b"


def build_scripted_llama(dest: Path, tokenizer_dir: Path, *, answer: str = DEFAULT_ANSWER, trigger: str = "]") -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from codellama_lsp.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    trigger_id = tok.token_id(trigger)
    chain = [trigger_id, *tok.encode(answer.lstrip(" "), leading_space=answer.startswith(" "))]
    assert len(set(chain)) == len(chain), f"answer tokens must be distinct: {chain}"
    hidden = 64
    assert len(chain) <= hidden
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32016, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16384,
        rope_theta=1_000_000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed.mul_(0.01)
        head = model.lm_head.weight
        head.zero_()
        for dim, (token, successor) in enumerate(zip(chain, [*chain[1:], tok.eos_id])):
            embed[token].zero_()
            embed[token, dim] = 1.0
            head[successor, dim] = 10.0
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / name, dest / name)
    # the name tells the template detection this is an Instruct (chat) model
    (dest / "README.md").write_text("scripted CodeLlama-7b-Instruct-format test model\n", encoding="utf-8")
    return dest
