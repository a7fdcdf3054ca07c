"""Planner model input: safetensors headers, config.json arithmetic, TP/PP shards (with hypothesis)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numatop_llm.planner import ModelError, load_model, read_safetensors_header, seed_model
from numatop_llm.planner.model import model_from_config, tensor_shapes, write_safetensors
from numatop_llm.planner.shard import (
    divisibility_errors,
    kv_bytes_per_token,
    pad_vocab,
    pp_partitions,
    rank_weight_bytes,
)

REPO = Path(__file__).resolve().parent.parent
SEED_CONFIG = REPO / "tests" / "fixtures" / "models" / "DeepSeek-R1-Distill-Qwen-32B" / "config.json"

TINY_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def write_model(d: Path, cfg: dict, split: int = 1) -> Path:
    """A model dir with config.json and real safetensors files (split in ``split`` shards)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    shapes = list(tensor_shapes(cfg).items())
    per = -(-len(shapes) // split)
    for i in range(split):
        part = dict(shapes[i * per : (i + 1) * per])
        write_safetensors(d / f"model-{i + 1:05d}-of-{split:05d}.safetensors", part, fill=bytes([i + 1]))
    return d


# --------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------


def test_safetensors_bytes_equal_file_size_minus_header(tmp_path):
    d = write_model(tmp_path / "tiny", TINY_QWEN2, split=2)
    total = 0
    for f in sorted(d.glob("*.safetensors")):
        tensors, header_len = read_safetensors_header(f)
        file_bytes = sum(t.nbytes for t in tensors)
        assert file_bytes == f.stat().st_size - 8 - header_len
        total += file_bytes
    m = load_model(d)
    assert m.source == "safetensors"
    assert m.weight_bytes == total
    assert m.num_tensors == len(tensor_shapes(TINY_QWEN2))


def test_hand_written_header_is_read_without_touching_data(tmp_path):
    """A header written with struct + json by hand; the data region is never read (it is sparse)."""
    header = {
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [1000, 64], "data_offsets": [0, 128000]},
        "lm_head.weight": {"dtype": "F32", "shape": [1000, 64], "data_offsets": [128000, 384000]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(header).encode()
    f = tmp_path / "x.safetensors"
    with f.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + 384000)  # a hole: no data bytes written
    tensors, n = read_safetensors_header(f)
    assert n == len(raw)
    assert {t.name: t.nbytes for t in tensors} == {"model.embed_tokens.weight": 128000, "lm_head.weight": 256000}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda raw, data: struct.pack("<Q", 10**12) + raw + data, "does not fit"),
        (lambda raw, data: struct.pack("<Q", len(raw)) + b"{not json" + raw[9:] + data, "not valid JSON"),
        (lambda raw, data: struct.pack("<Q", len(raw)) + raw + data[:-10], "outside the file"),
        (lambda raw, data: b"\x01\x00", "too short"),
    ],
    ids=["huge-length", "garbled-json", "truncated-data", "tiny-file"],
)
def test_bad_safetensors_is_a_one_line_model_error(tmp_path, mutate, message):
    header = {"a.weight": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]}}
    raw = json.dumps(header).encode()
    f = tmp_path / "bad.safetensors"
    f.write_bytes(mutate(raw, b"\0" * 32))
    with pytest.raises(ModelError, match=message) as exc:
        read_safetensors_header(f)
    assert "\n" not in str(exc.value)


def test_header_shape_and_offsets_must_agree(tmp_path):
    header = {"a.weight": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 30]}}
    raw = json.dumps(header).encode()
    f = tmp_path / "x.safetensors"
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 30)
    with pytest.raises(ModelError, match="needs 32"):
        read_safetensors_header(f)


def test_real_checkpoint_written_by_the_safetensors_library(vllm_testbed):
    """The testbed's tiny Llama was written by transformers/safetensors: bytes = file size − header."""
    f = vllm_testbed.model / "model.safetensors"
    tensors, n = read_safetensors_header(f)
    assert sum(t.nbytes for t in tensors) == f.stat().st_size - 8 - n
    m = load_model(vllm_testbed.model)
    cfg = json.loads((vllm_testbed.model / "config.json").read_text())
    by_config = model_from_config(cfg)
    assert abs(by_config.weight_bytes - m.weight_bytes) <= 0.01 * m.weight_bytes


# --------------------------------------------------------------------------------------------
# config.json arithmetic
# --------------------------------------------------------------------------------------------


def test_seed_config_arithmetic_matches_the_published_checkpoint():
    """config only: 771 tensors, 65,527,752,704 bytes (model.safetensors.index.json total_size)."""
    m = seed_model()
    assert m.source == "config"
    assert abs(m.weight_bytes - 65_527_752_704) <= 0.01 * 65_527_752_704
    assert m.weight_bytes == 65_527_752_704  # exact, in fact
    assert m.num_tensors == 771
    assert (m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim) == (64, 40, 8, 128)
    assert not m.tie_word_embeddings and m.dtype == "bfloat16"


def test_bundled_seed_config_is_the_fixture():
    bundled = REPO / "app" / "data" / "models" / "DeepSeek-R1-Distill-Qwen-32B" / "config.json"
    assert json.loads(bundled.read_text()) == json.loads(SEED_CONFIG.read_text())


@pytest.mark.parametrize(
    "cfg",
    [
        TINY_QWEN2,
        {**TINY_QWEN2, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "tie_word_embeddings": True},
        {**TINY_QWEN2, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": True},
        {**TINY_QWEN2, "architectures": ["MistralForCausalLM"], "model_type": "mistral", "head_dim": 16},
        {**TINY_QWEN2, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "mlp_bias": True},
        {**TINY_QWEN2, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"},
    ],
    ids=["qwen2-untied", "llama-tied", "llama-attention-bias", "mistral-head-dim", "llama-mlp-bias", "qwen3-qk-norm"],
)
def test_config_only_agrees_with_safetensors(tmp_path, cfg):
    d = write_model(tmp_path / "m", cfg)
    from_files = load_model(d)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    from_config = load_model(tmp_path / "c")
    assert from_config.source == "config"
    assert from_config.weight_bytes == from_files.weight_bytes
    assert from_config.num_tensors == from_files.num_tensors
    assert from_config.layers == from_files.layers
    assert (from_config.embed_bytes, from_config.lm_head_bytes) == (from_files.embed_bytes, from_files.lm_head_bytes)


def test_qwen2_has_qkv_bias_and_llama_does_not():
    q = model_from_config(TINY_QWEN2)
    llama = model_from_config({**TINY_QWEN2, "architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    h, d = 64, 8
    assert q.layers[0].q - llama.layers[0].q == 8 * d * 2  # q bias: heads × head_dim bf16
    assert q.layers[0].kv - llama.layers[0].kv == 2 * 2 * d * 2
    tied = model_from_config({**TINY_QWEN2, "tie_word_embeddings": True})
    assert q.weight_bytes - tied.weight_bytes == 1000 * h * 2


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no config.json"),
        ("{", "not valid JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"hidden_size": 64}), "missing num_hidden_layers"),
        (json.dumps({**TINY_QWEN2, "num_key_value_heads": 3}), "cannot be grouped"),
        (json.dumps({**TINY_QWEN2, "hidden_size": "big"}), "not a whole number"),
        (json.dumps({**TINY_QWEN2, "num_local_experts": 8}), "mixture-of-experts"),
    ],
    ids=["missing", "garbled", "not-object", "missing-field", "bad-gqa", "bad-type", "moe"],
)
def test_bad_config_is_a_one_line_model_error(tmp_path, content, message):
    d = tmp_path / "m"
    d.mkdir()
    if content is not None:
        (d / "config.json").write_text(content)
    with pytest.raises(ModelError, match=message) as exc:
        load_model(d)
    assert "\n" not in str(exc.value)


def test_missing_dir_and_layer_mismatch(tmp_path):
    with pytest.raises(ModelError, match="no such model directory"):
        load_model(tmp_path / "nope")
    d = write_model(tmp_path / "m", TINY_QWEN2)
    (d / "config.json").write_text(json.dumps({**TINY_QWEN2, "num_hidden_layers": 4}))
    with pytest.raises(ModelError, match="partial download"):
        load_model(d)


# --------------------------------------------------------------------------------------------
# shards (hypothesis)
# --------------------------------------------------------------------------------------------


@st.composite
def models_and_splits(draw):
    kv = draw(st.sampled_from([1, 2, 4, 8]))
    group = draw(st.sampled_from([1, 2, 4, 5]))
    heads = kv * group
    d = draw(st.sampled_from([8, 16, 32]))
    cfg = {
        "architectures": [draw(st.sampled_from(["Qwen2ForCausalLM", "LlamaForCausalLM"]))],
        "model_type": "x",
        "hidden_size": heads * d,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": d,
        "intermediate_size": draw(st.integers(1, 40)) * 64,
        "num_hidden_layers": draw(st.integers(1, 12)),
        "vocab_size": draw(st.integers(1, 200)) * 64,
        "tie_word_embeddings": draw(st.booleans()),
        "attention_bias": draw(st.booleans()),
        "torch_dtype": draw(st.sampled_from(["bfloat16", "float16"])),
    }
    cfg["model_type"] = "qwen2" if "Qwen2" in cfg["architectures"][0] else "llama"
    model = model_from_config(cfg)
    tp = draw(st.sampled_from([t for t in (1, 2, 4, 8) if not divisibility_errors(model, t, 1)]))
    pp = draw(st.integers(1, min(4, model.num_layers)))
    return model, tp, pp


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models_and_splits())
def test_weight_shards_add_up_to_the_model(case):
    """Σ over all TP×PP ranks = total + (TP−1) × replicated parts + KV-head replicas + a tied lm_head copy."""
    model, tp, pp = case
    shard_sum = sum(tp * rank_weight_bytes(model, tp, pp, s) for s in range(pp))
    replicated = sum(x.rep for x in model.layers) + model.final_norm_bytes + model.other_bytes
    kv_total = sum(x.kv for x in model.layers)
    kv_extra = kv_total * (tp // model.num_kv_heads - 1) if tp > model.num_kv_heads else 0
    tied_copy = model.embed_bytes if (model.tie_word_embeddings and pp > 1) else 0
    assert pad_vocab(model.vocab_size) == model.vocab_size  # vocab drawn as a multiple of 64
    expected = model.weight_bytes + (tp - 1) * replicated + kv_extra + tied_copy
    assert abs(shard_sum - expected) <= 8 * tp * pp  # integer division per part
    assert sum(pp_partitions(model.num_layers, pp)) == model.num_layers


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 16))
def test_pp_partition_like_vllm(layers, pp):
    if pp > layers:
        return
    parts = pp_partitions(layers, pp)
    assert sum(parts) == layers and max(parts) - min(parts) <= 1
    if layers % pp:
        assert parts[-1] == layers // pp  # the last stage never gets the remainder


def test_seed_shards_per_tp():
    m = seed_model()
    gib = 2**30
    per = {tp: rank_weight_bytes(m, tp, 1, 0) / gib for tp in (1, 2, 4, 8)}
    assert per[1] == pytest.approx(61.03, abs=0.01)
    assert per[2] == pytest.approx(30.5, abs=0.05)
    assert per[4] == pytest.approx(15.3, abs=0.05)
    assert per[8] == pytest.approx(7.6, abs=0.05)
    # KV per token per rank: 2 × 64 layers × max(1, 8/TP) heads × 128 × 2 bytes
    assert kv_bytes_per_token(m, 2, 1, 0) == 2 * 64 * 4 * 128 * 2
    assert kv_bytes_per_token(m, 8, 1, 0) == 2 * 64 * 1 * 128 * 2
    assert kv_bytes_per_token(m, 16, 1, 0) == 2 * 64 * 1 * 128 * 2  # KV heads replicated, never below one


def test_dtype_flag_scales_weights():
    m = seed_model()
    assert rank_weight_bytes(m, 4, 1, 0, "float32") == 2 * rank_weight_bytes(m, 4, 1, 0, None)
    fp32 = m.model_copy(update={"dtype": "float32", "dtype_bytes": 4})
    # auto on CPU runs a float32 checkpoint in bfloat16
    assert rank_weight_bytes(fp32, 4, 1, 0, None) * 2 == rank_weight_bytes(fp32, 4, 1, 0, "float32")
