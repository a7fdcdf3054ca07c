"""Model descriptions: weight bytes from safetensors headers, or from config.json shape arithmetic.

Weights are never loaded. A safetensors file starts with an 8-byte little-endian header length
and a JSON header naming every tensor's dtype, shape and byte range; summing those ranges gives
the exact bytes a checkpoint holds. Without weights, the bytes come from the decoder's shapes
(Llama / Qwen2 / Qwen3 / Mistral style: GQA, tied or untied embeddings, q/k/v biases).

Every tensor is put in a *kind* that says how vLLM splits it over tensor-parallel ranks, per
decoder layer, so the planner can shard by TP and PP without keeping the tensor list.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

#: bytes per element of each safetensors dtype (sub-byte types are counted from data_offsets)
ST_DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}
#: torch dtype names (config.json ``torch_dtype``/``dtype`` and ``--dtype``) → bytes
TORCH_DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "float64": 8,
    "double": 8,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}
ST_TO_TORCH = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
#: header longer than this is not a safetensors header (the format caps it at 100 MB)
MAX_HEADER_BYTES = 100_000_000
BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "data" / "models"
SEED_MODEL = "DeepSeek-R1-Distill-Qwen-32B"

#: how each kind is split over TP ranks (see :mod:`numatop_llm.planner.shard`)
LAYER_KINDS = ("q", "kv", "col", "row", "rep")


class ModelError(Exception):
    """A model directory or config.json the planner cannot use (the message is one line)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LayerBytes(_Frozen):
    """Bytes of one decoder layer by how vLLM shards them.

    ``q``: q_proj (column-parallel over attention heads); ``kv``: k_proj + v_proj (split over KV
    heads, replicated when TP exceeds them); ``col``: gate/up projections (column-parallel);
    ``row``: o_proj and down_proj weights (row-parallel); ``rep``: norms and row-parallel biases,
    whole on every rank.
    """

    q: int = 0
    kv: int = 0
    col: int = 0
    row: int = 0
    rep: int = 0

    @property
    def total(self) -> int:
        return self.q + self.kv + self.col + self.row + self.rep


class ModelSpec(_Frozen):
    """What the planner needs to know about a decoder-only model."""

    name: str
    architecture: str = ""
    model_type: str = ""
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    #: the checkpoint's dtype name (torch spelling, e.g. ``bfloat16``)
    dtype: str = "bfloat16"
    dtype_bytes: int = 2
    max_position_embeddings: int | None = None
    #: total bytes of all weights as stored (the sum of the parts below)
    weight_bytes: int
    embed_bytes: int = 0
    lm_head_bytes: int = 0
    final_norm_bytes: int = 0
    #: tensors outside the decoder layers the planner does not recognise (kept whole on every rank)
    other_bytes: int = 0
    layers: tuple[LayerBytes, ...] = ()
    num_tensors: int = 0
    #: ``safetensors`` (bytes from the headers) or ``config`` (shape arithmetic)
    source: str = "config"
    path: str = ""
    quantized: bool = False
    notes: tuple[str, ...] = ()

    @property
    def params(self) -> int:
        """Approximate parameter count (weight bytes / dtype bytes)."""
        return self.weight_bytes // max(1, self.dtype_bytes)

    @property
    def layer_bytes(self) -> int:
        return sum(layer.total for layer in self.layers)


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(f"{path.parent}: no {path.name}") from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: {what} is not a JSON object")
    return data


def _text_config(cfg: dict) -> dict:
    """Multimodal configs nest the decoder's numbers under ``text_config``."""
    inner = cfg.get("text_config")
    if isinstance(inner, dict) and "hidden_size" in inner:
        merged = dict(cfg)
        merged.update(inner)
        return merged
    return cfg


def _int_field(cfg: dict, *names: str, default: int | None = None, path: Path | None = None) -> int:
    for name in names:
        value = cfg.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
            raise ModelError(f"{path or 'config.json'}: {name} = {value!r} is not a whole number")
        return int(value)
    if default is not None:
        return default
    raise ModelError(f"{path or 'config.json'}: missing {names[0]}")


class Shape(_Frozen):
    """The decoder's shape numbers from config.json."""

    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype: str
    max_position_embeddings: int | None
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    quantized: bool


def parse_config(cfg: dict, path: Path | None = None) -> Shape:
    """The shape numbers of a Llama/Qwen2/Qwen3/Mistral-style config.json; ModelError when unusable."""
    cfg = _text_config(cfg)
    archs = cfg.get("architectures") or []
    arch = str(archs[0]) if isinstance(archs, list) and archs else ""
    model_type = str(cfg.get("model_type") or "")
    hidden = _int_field(cfg, "hidden_size", "n_embd", "d_model", path=path)
    layers = _int_field(cfg, "num_hidden_layers", "n_layer", "num_layers", path=path)
    heads = _int_field(cfg, "num_attention_heads", "n_head", path=path)
    kv_heads = _int_field(cfg, "num_key_value_heads", default=heads, path=path)
    if heads == 0 or hidden == 0 or layers == 0:
        raise ModelError(f"{path or 'config.json'}: hidden_size, num_hidden_layers and num_attention_heads must be > 0")
    if kv_heads == 0 or heads % kv_heads:
        raise ModelError(f"{path or 'config.json'}: {heads} attention heads cannot be grouped over {kv_heads} KV heads")
    head_dim = _int_field(cfg, "head_dim", default=hidden // heads, path=path) or hidden // heads
    inter = _int_field(cfg, "intermediate_size", "ffn_dim", "n_inner", default=4 * hidden, path=path)
    vocab = _int_field(cfg, "vocab_size", path=path)
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32").removeprefix("torch.")
    if dtype not in TORCH_DTYPE_BYTES:
        raise ModelError(f"{path or 'config.json'}: unknown dtype {dtype!r}")
    lowered = (arch + " " + model_type).lower()
    is_qwen2 = "qwen2" in lowered and "moe" not in lowered
    if "moe" in lowered or cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts"):
        raise ModelError(f"{path or 'config.json'}: mixture-of-experts models ({arch or model_type}) are not modelled")
    attention_bias = bool(cfg.get("attention_bias", False))
    max_pos = cfg.get("max_position_embeddings")
    return Shape(
        architecture=arch,
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        dtype=dtype,
        max_position_embeddings=int(max_pos) if isinstance(max_pos, int | float) and max_pos > 0 else None,
        # Qwen2 always has q/k/v biases; Llama-style configs say so with attention_bias (o_proj too)
        qkv_bias=is_qwen2 or attention_bias,
        o_bias=attention_bias and not is_qwen2,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        qk_norm="qwen3" in lowered,
        quantized=isinstance(cfg.get("quantization_config"), dict),
    )


def shape_bytes(shape: Shape) -> tuple[int, int, int, LayerBytes]:
    """(embed, lm_head, final_norm, one layer) bytes from the shape numbers alone."""
    b = TORCH_DTYPE_BYTES[shape.dtype]
    h, d = shape.hidden_size, shape.head_dim
    q_out, kv_out = shape.num_heads * d, shape.num_kv_heads * d
    inter = shape.intermediate_size
    layer = LayerBytes(
        q=(h * q_out + (q_out if shape.qkv_bias else 0)) * b,
        kv=2 * (h * kv_out + (kv_out if shape.qkv_bias else 0)) * b,
        col=(2 * h * inter + (2 * inter if shape.mlp_bias else 0)) * b,
        row=(q_out * h + inter * h) * b,
        rep=(2 * h + (h if shape.o_bias else 0) + (h if shape.mlp_bias else 0) + (2 * d if shape.qk_norm else 0)) * b,
    )
    embed = shape.vocab_size * h * b
    lm_head = 0 if shape.tie_word_embeddings else embed
    return embed, lm_head, h * b, layer


def _spec(shape: Shape, name: str, path: str, **parts) -> ModelSpec:
    layers: tuple[LayerBytes, ...] = parts["layers"]
    total = parts["embed"] + parts["lm_head"] + parts["final_norm"] + parts["other"] + sum(x.total for x in layers)
    return ModelSpec(
        name=name,
        architecture=shape.architecture,
        model_type=shape.model_type,
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        num_heads=shape.num_heads,
        num_kv_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        intermediate_size=shape.intermediate_size,
        vocab_size=shape.vocab_size,
        tie_word_embeddings=shape.tie_word_embeddings,
        dtype=parts.get("dtype", shape.dtype),
        dtype_bytes=TORCH_DTYPE_BYTES.get(parts.get("dtype", shape.dtype), 2),
        max_position_embeddings=shape.max_position_embeddings,
        weight_bytes=total,
        embed_bytes=parts["embed"],
        lm_head_bytes=parts["lm_head"],
        final_norm_bytes=parts["final_norm"],
        other_bytes=parts["other"],
        layers=layers,
        num_tensors=parts["num_tensors"],
        source=parts["source"],
        path=path,
        quantized=shape.quantized,
        notes=tuple(parts.get("notes", ())),
    )


def model_from_config(cfg: dict, name: str = "model", path: str = "", config_path: Path | None = None) -> ModelSpec:
    """A ModelSpec by shape arithmetic from a parsed config.json."""
    shape = parse_config(cfg, config_path)
    embed, lm_head, norm, layer = shape_bytes(shape)
    per_layer = 9 + (3 if shape.qkv_bias else 0) + (1 if shape.o_bias else 0) + (3 if shape.mlp_bias else 0)
    per_layer += 2 if shape.qk_norm else 0
    notes = ["quantized checkpoint: config arithmetic counts unquantized bytes"] if shape.quantized else []
    return _spec(
        shape,
        name,
        path,
        embed=embed,
        lm_head=lm_head,
        final_norm=norm,
        other=0,
        layers=(layer,) * shape.num_layers,
        num_tensors=2 + (0 if shape.tie_word_embeddings else 1) + per_layer * shape.num_layers,
        source="config",
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------


class TensorInfo(_Frozen):
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def read_safetensors_header(path: str | Path) -> tuple[list[TensorInfo], int]:
    """The tensors of one ``.safetensors`` file and its header length, from the header only.

    Bytes per tensor come from ``data_offsets`` (exact, also for sub-byte dtypes); the shape ×
    dtype size must agree where the dtype size is known. ModelError on anything malformed.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{path}: too short for a safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > MAX_HEADER_BYTES or n > size - 8:
                raise ModelError(f"{path}: header length {n} does not fit a {size}-byte safetensors file")
            raw = f.read(n)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" \x00"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: safetensors header is not a JSON object")
    data_len = size - 8 - n
    out: list[TensorInfo] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(x) for x in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: tensor {name!r} has no dtype/shape/data_offsets") from None
        if not 0 <= start <= end <= data_len:
            raise ModelError(f"{path}: tensor {name!r} lies outside the file (offsets {start}-{end}, data {data_len})")
        nbytes = end - start
        elem = ST_DTYPE_BYTES.get(dtype)
        if elem is not None:
            count = 1
            for x in shape:
                count *= x
            if count * elem != nbytes:
                raise ModelError(
                    f"{path}: tensor {name!r} is {nbytes} bytes but {dtype}{list(shape)} needs {count * elem}"
                )
        out.append(TensorInfo(name=name, dtype=dtype, shape=shape, nbytes=nbytes))
    return out, n


_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.(.+)$")


def classify_tensor(name: str) -> tuple[str, int | None]:
    """(kind, layer) of a checkpoint tensor name; kinds: embed, lm_head, final_norm, skip, other, LAYER_KINDS."""
    if name.endswith("rotary_emb.inv_freq"):
        return "skip", None  # a buffer vLLM recomputes, not loaded
    m = _LAYER.search(name)
    if m is None:
        if name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
            return "embed", None
        if name.startswith("lm_head.") or name.endswith("lm_head.weight"):
            return "lm_head", None
        if re.search(r"(?:^|\.)(?:norm|ln_f|final_layernorm)\.(?:weight|bias)$", name):
            return "final_norm", None
        return "other", None
    layer, rest = int(m.group(1)), m.group(2)
    if re.search(r"(?:^|\.)(?:q_proj)\.", rest):
        return "q", layer
    if re.search(r"(?:^|\.)(?:k_proj|v_proj)\.", rest):
        return "kv", layer
    if re.search(r"(?:^|\.)(?:qkv_proj|query_key_value)\.", rest):
        return "q", layer  # fused q/k/v: split like q (close when KV heads ≥ TP)
    if re.search(r"(?:^|\.)(?:gate_proj|up_proj|gate_up_proj|w1|w3|fc1|c_fc)\.weight$", rest):
        return "col", layer
    if re.search(r"(?:^|\.)(?:gate_proj|up_proj|gate_up_proj|w1|w3|fc1|c_fc)\.bias$", rest):
        return "col", layer
    if re.search(r"(?:^|\.)(?:o_proj|down_proj|dense|w2|fc2|c_proj)\.weight$", rest):
        return "row", layer
    # norms, row-parallel biases, q_norm/k_norm and anything unknown inside a layer: whole on every rank
    return "rep", layer


def model_from_tensors(
    cfg: dict, tensors: Iterable[TensorInfo], name: str, path: str, config_path: Path | None = None
) -> ModelSpec:
    """A ModelSpec whose bytes are the checkpoint's own, split by tensor kind and layer."""
    shape = parse_config(cfg, config_path)
    acc = {"embed": 0, "lm_head": 0, "final_norm": 0, "other": 0}
    per_layer: dict[int, dict[str, int]] = {}
    count = 0
    dtype_bytes: dict[str, int] = {}
    unknown: list[str] = []
    for t in tensors:
        kind, layer = classify_tensor(t.name)
        if kind == "skip":
            continue
        count += 1
        dtype_bytes[t.dtype] = dtype_bytes.get(t.dtype, 0) + t.nbytes
        if layer is None:
            acc[kind] += t.nbytes
            if kind == "other":
                unknown.append(t.name)
        else:
            slot = per_layer.setdefault(layer, dict.fromkeys(LAYER_KINDS, 0))
            slot[kind] += t.nbytes
    if not count:
        raise ModelError(f"{path}: the safetensors files hold no tensors")
    n_layers = max(per_layer) + 1 if per_layer else 0
    if n_layers != shape.num_layers:
        raise ModelError(
            f"{path}: config.json says {shape.num_layers} layers but the weights have {n_layers} (a partial download?)"
        )
    layers = tuple(LayerBytes(**per_layer.get(i, {})) for i in range(n_layers))
    notes = []
    if unknown:
        notes.append(f"{len(unknown)} tensor(s) outside the decoder not recognised, kept whole per rank: {unknown[0]}")
    if acc["lm_head"] == 0 and not shape.tie_word_embeddings:
        notes.append("no lm_head tensor although tie_word_embeddings is false")
    main_dtype = max(dtype_bytes, key=lambda k: dtype_bytes[k])
    dtype = ST_TO_TORCH.get(main_dtype, shape.dtype)
    quantized = shape.quantized or main_dtype not in ST_TO_TORCH
    if quantized:
        notes.append(f"quantized checkpoint ({main_dtype}): runtime bytes assumed equal to the stored bytes")
    spec = _spec(
        shape,
        name,
        path,
        embed=acc["embed"],
        lm_head=acc["lm_head"],
        final_norm=acc["final_norm"],
        other=acc["other"],
        layers=layers,
        num_tensors=count,
        source="safetensors",
        notes=notes,
        dtype=dtype,
    )
    return spec.model_copy(update={"quantized": quantized})


def load_model(path: str | Path) -> ModelSpec:
    """The model in ``path`` (a directory, or its config.json): safetensors headers when present.

    Reads only ``config.json`` and the first bytes of each ``*.safetensors`` file; raises
    :class:`ModelError` with a one-line message for anything unusable.
    """
    p = Path(path).expanduser()
    if p.is_file() and p.name == "config.json":
        p = p.parent
    if not p.exists():
        raise ModelError(f"{p}: no such model directory")
    if not p.is_dir():
        raise ModelError(f"{p}: not a model directory (want a directory with config.json)")
    cfg_path = p / "config.json"
    cfg = _read_json(cfg_path, "config.json")
    try:
        files = sorted(p.glob("*.safetensors"))
    except OSError as exc:
        raise ModelError(f"cannot list {p}: {exc.strerror or exc}") from None
    name = p.name or str(p)
    if not files:
        return model_from_config(cfg, name=name, path=str(p), config_path=cfg_path)
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for f in files:
        got, _ = read_safetensors_header(f)
        for t in got:
            if t.name in seen:
                raise ModelError(f"{f}: tensor {t.name!r} appears in two files")
            seen.add(t.name)
        tensors.extend(got)
    return model_from_tensors(cfg, tensors, name=name, path=str(p), config_path=cfg_path)


def seed_model() -> ModelSpec:
    """The story's model (DeepSeek-R1-Distill-Qwen-32B) from its bundled config.json, no weights."""
    return load_model(BUNDLED_MODELS / SEED_MODEL)


def write_safetensors(path: str | Path, tensors: dict[str, tuple[str, tuple[int, ...]]], fill: bytes = b"\0") -> int:
    """Write a valid safetensors file with the given ``{name: (dtype, shape)}`` (data = ``fill`` bytes).

    Used by tests and the demo to make small real checkpoints without torch. Returns the header length.
    """
    header: dict[str, dict] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for x in shape:
            count *= x
        nbytes = count * ST_DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with Path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        chunk = (fill * 65536)[:65536]
        left = offset
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return len(raw)


def tensor_shapes(model_cfg: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The HF tensor names and shapes a Llama/Qwen2/Mistral config implies (for writing test checkpoints)."""
    s = parse_config(model_cfg)
    dt = {v: k for k, v in ST_TO_TORCH.items()}.get(s.dtype, "BF16")
    h, d, inter = s.hidden_size, s.head_dim, s.intermediate_size
    out: dict[str, tuple[str, tuple[int, ...]]] = {"model.embed_tokens.weight": (dt, (s.vocab_size, h))}
    for i in range(s.num_layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (dt, (h,))
        out[p + "post_attention_layernorm.weight"] = (dt, (h,))
        out[p + "self_attn.q_proj.weight"] = (dt, (s.num_heads * d, h))
        out[p + "self_attn.k_proj.weight"] = (dt, (s.num_kv_heads * d, h))
        out[p + "self_attn.v_proj.weight"] = (dt, (s.num_kv_heads * d, h))
        out[p + "self_attn.o_proj.weight"] = (dt, (h, s.num_heads * d))
        if s.qkv_bias:
            out[p + "self_attn.q_proj.bias"] = (dt, (s.num_heads * d,))
            out[p + "self_attn.k_proj.bias"] = (dt, (s.num_kv_heads * d,))
            out[p + "self_attn.v_proj.bias"] = (dt, (s.num_kv_heads * d,))
        if s.o_bias:
            out[p + "self_attn.o_proj.bias"] = (dt, (h,))
        if s.qk_norm:
            out[p + "self_attn.q_norm.weight"] = (dt, (d,))
            out[p + "self_attn.k_norm.weight"] = (dt, (d,))
        out[p + "mlp.gate_proj.weight"] = (dt, (inter, h))
        out[p + "mlp.up_proj.weight"] = (dt, (inter, h))
        out[p + "mlp.down_proj.weight"] = (dt, (h, inter))
        if s.mlp_bias:
            out[p + "mlp.gate_proj.bias"] = (dt, (inter,))
            out[p + "mlp.up_proj.bias"] = (dt, (inter,))
            out[p + "mlp.down_proj.bias"] = (dt, (h,))
    out["model.norm.weight"] = (dt, (h,))
    if not s.tie_word_embeddings:
        out["lm_head.weight"] = (dt, (s.vocab_size, h))
    return out
