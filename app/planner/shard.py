"""How vLLM splits a model's weights and KV cache over tensor- and pipeline-parallel ranks.

Per vLLM 0.32 (``model_executor/layers/linear.py``, ``vocab_parallel_embedding.py``,
``distributed/utils.py::get_pp_indices``):

- q_proj, gate/up (column-parallel) and o_proj/down (row-parallel) weights: 1/TP each.
- k/v projections: ``TP < kv_heads`` → kv_heads/TP heads per rank; ``TP ≥ kv_heads`` → one head per
  rank (replicated ``TP/kv_heads`` times).
- Embedding and lm_head: vocab padded to a multiple of 64, then 1/TP of the padded rows per rank.
- Norms and row-parallel biases: whole on every rank.
- PP: layers split evenly, the remainder going to the stages before the last; the embedding
  lives on the first stage, lm_head and the final norm on the last (a tied lm_head on a last
  stage that is not the first needs its own copy of the embedding).
"""

from __future__ import annotations

from numatop_llm.planner.model import TORCH_DTYPE_BYTES, ModelSpec

VOCAB_PADDING = 64


def pad_vocab(vocab: int, pad_to: int = VOCAB_PADDING) -> int:
    return (vocab + pad_to - 1) // pad_to * pad_to


def pp_partitions(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage, as ``get_pp_indices`` splits them (no VLLM_PP_LAYER_PARTITION)."""
    per = num_layers // pp
    parts = [per] * pp
    rem = num_layers % pp
    for i in range(2, rem + 2):
        parts[-i] += 1
    return parts


def pp_range(num_layers: int, pp_rank: int, pp: int) -> tuple[int, int]:
    parts = pp_partitions(num_layers, pp)
    start = sum(parts[:pp_rank])
    return start, start + parts[pp_rank]


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    return max(1, model.num_kv_heads // tp)


def divisibility_errors(model: ModelSpec, tp: int, pp: int) -> list[str]:
    """The errors vLLM raises when the model cannot be split this way (same wording)."""
    errs: list[str] = []
    if model.num_heads % tp:
        errs.append(
            f"ValueError: Total number of attention heads ({model.num_heads}) must be divisible by "
            f"tensor parallel size ({tp})."
        )
        return errs  # vLLM stops at the config check
    k = model.num_kv_heads
    if tp >= k and tp % k:
        errs.append(f"AssertionError: {tp} is not divisible by {k}")
    elif tp < k and k % tp:
        errs.append(f"AssertionError: {k} is not divisible by {tp}")
    if model.intermediate_size % tp:
        errs.append(f"AssertionError: {model.intermediate_size} is not divisible by {tp}")
    padded = pad_vocab(model.vocab_size)
    if padded % tp:
        errs.append(f"AssertionError: {padded} is not divisible by {tp}")
    if pp > model.num_layers:
        errs.append(
            f"ValueError: pipeline parallel size ({pp}) is larger than the model's {model.num_layers} layers"
            " (the planner's check: some stages would hold no layer)"
        )
    return errs


def runtime_dtype(model: ModelSpec, dtype: str | None) -> str:
    """The dtype vLLM runs in: ``--dtype``, or ``auto`` = the checkpoint's with float32 → bfloat16 on CPU."""
    if dtype and dtype != "auto":
        return {"float": "float32", "half": "float16", "double": "float64"}.get(dtype, dtype)
    if model.dtype in ("float32", "float64"):
        return "bfloat16"
    return model.dtype


def dtype_scale(model: ModelSpec, dtype: str | None) -> tuple[int, int]:
    """(numerator, denominator) turning stored bytes into runtime bytes (1/1 for quantized checkpoints)."""
    if model.quantized:
        return 1, 1
    rt = TORCH_DTYPE_BYTES.get(runtime_dtype(model, dtype), model.dtype_bytes)
    return rt, model.dtype_bytes


#: results per (id(model), ...), kept with the model so an id is never reused for another one
_CACHE: dict[tuple, tuple[ModelSpec, int]] = {}
_CACHE_MAX = 8192


def _cached(model: ModelSpec, key: tuple, compute) -> int:
    full = (id(model), *key)
    hit = _CACHE.get(full)
    if hit is not None and hit[0] is model:
        return hit[1]
    value = compute()
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[full] = (model, value)
    return value


def _stage_sums(model: ModelSpec, start: int, end: int) -> tuple[int, int, int, int, int]:
    q = kv = col = row = rep = 0
    for layer in model.layers[start:end]:
        q += layer.q
        kv += layer.kv
        col += layer.col
        row += layer.row
        rep += layer.rep
    return q, kv, col, row, rep


def rank_weight_bytes(model: ModelSpec, tp: int, pp: int, pp_rank: int, dtype: str | None = None) -> int:
    """Weight bytes one rank of pipeline stage ``pp_rank`` holds (all TP ranks of a stage hold the same)."""
    return _cached(model, ("w", tp, pp, pp_rank, dtype), lambda: _rank_weight_bytes(model, tp, pp, pp_rank, dtype))


def _rank_weight_bytes(model: ModelSpec, tp: int, pp: int, pp_rank: int, dtype: str | None) -> int:
    start, end = pp_range(model.num_layers, pp_rank, pp)
    q, kv, col, row, rep = _stage_sums(model, start, end)
    k = model.num_kv_heads
    kv_share = kv // k if tp >= k else kv // tp
    total = q // tp + kv_share + col // tp + row // tp + rep
    vocab_rows = pad_vocab(model.vocab_size) // tp
    first, last = pp_rank == 0, pp_rank == pp - 1

    def vocab_part(nbytes: int) -> int:
        return nbytes * vocab_rows // model.vocab_size if model.vocab_size else 0

    if first:
        total += vocab_part(model.embed_bytes)
    if last:
        total += model.final_norm_bytes
        if model.tie_word_embeddings or not model.lm_head_bytes:
            if not first:
                total += vocab_part(model.embed_bytes)
        else:
            total += vocab_part(model.lm_head_bytes)
    total += model.other_bytes
    num, den = dtype_scale(model, dtype)
    return total * num // den


def stage_layers(model: ModelSpec, pp: int, pp_rank: int) -> int:
    start, end = pp_range(model.num_layers, pp_rank, pp)
    return end - start


def kv_bytes_per_token(model: ModelSpec, tp: int, pp: int, pp_rank: int, dtype: str | None = None) -> int:
    """KV cache bytes one token takes on one rank: 2 × layers × KV heads per rank × head dim × dtype bytes."""
    rt = TORCH_DTYPE_BYTES.get(runtime_dtype(model, dtype), model.dtype_bytes)
    if model.quantized:
        rt = 2  # quantized weights, bf16 activations and KV
    return 2 * stage_layers(model, pp, pp_rank) * kv_heads_per_rank(model, tp) * model.head_dim * rt
