#!/usr/bin/env python3
"""Parity fixtures: tiny random-weight Llama checkpoints and what HF transformers computes on them.

Writes, for each model below, tests/fixtures/models/<name>/ holding a Hugging Face checkpoint
(config.json, model.safetensors in bf16, the test tokenizer's files) and reference.json, and
copies llama3-gqa to checkpoints/tiny-llama/ as the default model `deno run -A serve.ts` embeds.

The models (hidden 128, intermediate 256, 2 layers, head_dim 64, vocab = the test tokenizer's):
  llama2-mha   2 heads, 2 KV heads (MHA), rope_theta 10000, no scaling, untied, eps 1e-6;
  llama3-gqa   8 heads, 2 KV heads (GQA 4:1), rope_theta 500000, llama3 scaling (factor 8,
               low 1, high 4, original_max_position_embeddings 64, so that positions past 64 are
               in the scaled regime), untied, eps 1e-5;
  llama3-tied  4 heads, 1 KV head (4:1), llama3 scaling as above, tie_word_embeddings (no
               lm_head.weight in the file), and config.json rewritten in the transformers 4.x
               form the Hub's Llama 3.x checkpoints use (rope_theta + rope_scaling, torch_dtype).
  qwen2-bias   Qwen2ForCausalLM: 2 heads, 1 KV head, q/k/v biases, tied embeddings (as the small
               Qwen2.5 sizes), rope_theta 1e6, use_sliding_window false, eps 1e-6, and a
               ChatML chat template (Qwen's) in tokenizer_config.json;
  qwen3-qknorm Qwen3ForCausalLM: 4 heads, 2 KV heads, head_dim 64 != hidden / heads (32),
               q_norm and k_norm, untied, rope_theta 1e6, eps 1e-6, the ChatML template;
  mistral      MistralForCausalLM: 2 heads, 1 KV head, sliding_window null, rope_theta 1e6,
               eps 1e-5, untied, a Mistral [INST] chat template.
  llama3-gqa-fp8  the llama3-gqa shape (its own seed), its linear weights quantized to FP8 E4M3
               with one scale per output channel (scale = amax / 448, codes = the weight / scale
               clamped to +-448 and cast to torch.float8_e4m3fn) and saved as compressed-tensors
               "float-quantized" (weight F8_E4M3, weight_scale F32 [out, 1]); embeddings, norms
               and lm_head stay bf16. Its reference runs HF on the dequantized weights (codes x
               scale): logits.fp32 in float32 throughout, logits.bf16 with them rounded to bf16.
  llama3-gqa-awq  the llama3-gqa shape (its own seed), its linear weights quantized to 4 bits
               per group of 128 inputs with a zero point (AutoAWQ's min/max scheme: scale =
               (max - min) / 15 in f16, zero = round(-min / scale)) and packed by hand in
               AutoAWQ's GEMM layout (qweight int32 [in, out/8], columns 0 2 4 6 1 3 5 7 from the
               low nibble; qzeros likewise; scales f16 [in/128, out]); embeddings, norms and
               lm_head stay bf16. Its reference runs HF on the dequantized weights ((q - z) x s).
head_dim is 64 because the GPU attention kernels take 64 or 128; with hidden 128 the llama3
models therefore set head_dim explicitly (heads x head_dim != hidden), which Llama allows.

Weights are drawn from one seeded torch.Generator with scales chosen so that every part of the
model matters (HF's own init, N(0, 0.02) with unit norms, gives near-flat logits where greedy
decoding is decided by rounding noise): unit-variance embeddings, N(0, 1/fan_in) projections
(attention scores of unit spread: neither uniform nor one-hot, so RoPE matters), RMSNorm weights
uniform in [0.5, 1.5] (so a norm whose weight is ignored shows), and an output layer giving
logits of standard deviation ~3. With these, HF's bf16 logits lie 5e-3..1e-2 (relative L2) from
its fp32 ones, while a RoPE theta off by 2x, llama3 scaling with factor 4 instead of 8, or an
ignored norm weight move the long prompt's logits by 9e-2..7e-1.

reference.json holds, for each prompt (token ids from the tokenizer: BOS only, short, ~40
tokens, > 64 tokens, and a chat-templated one with special tokens), computed by the reloaded
checkpoint with eager attention:
  logits.bf16 / logits.fp32   full-vocab logits at the last prompt position, the model run in
                              bf16 (the dtype Denali runs) and in float32 (same bf16 weights,
                              upcast exactly);
  greedy.bf16 / greedy.fp32   generate(do_sample=False, max_new_tokens=32), EOS ignored;
  greedy.agree                how many leading tokens the two continuations share;
  greedy.text / .textSkipSpecial  greedy.bf16 decoded by the HF tokenizer, with special tokens
                              and without;
  steps[t]                    along the bf16 continuation (teacher-forced), the float32 model's
                              top-8 token ids and logits at step t, and the bf16 generate logits
                              of those ids, so a test can tell a real mismatch from a near tie.
bf16 GEMMs run with fp32 accumulation (reduced-precision reductions off) and fp32 GEMMs in full
fp32 (no TF32), the conventions of Denali's ops, recorded under "precision".

Every model's reference.json also records, for the chat prompt, "chatText": the template
rendered by transformers' apply_chat_template(add_generation_prompt=True, tokenize=False).

Usage (repo root, on the GPU machine; no network needed):
  python3 tools/make_fixtures.py                # bf16 on CUDA, as the fixtures of record
  python3 tools/make_fixtures.py --device cpu   # dry run without a GPU (not for committing)
  python3 tools/make_fixtures.py --only qwen2-bias,qwen3-qknorm,mistral --out /tmp/fx
                                                # just those models, written under /tmp/fx/
                                                # (copy them to tests/fixtures/models/)
  python3 tools/make_fixtures.py --only llama3-gqa-fp8   # the FP8 fixture alone
  python3 tools/make_fixtures.py --only llama3-gqa-awq   # the AWQ fixture alone
Requires torch, transformers (5.x), tokenizers and safetensors.
"""

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

# Everything is local; never wait on the Hub (the GPU machine has no network).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from safetensors import safe_open
from tokenizers import Tokenizer as RawTokenizer
from transformers import (AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "tokenizer"
FIXTURES_DIR = ROOT / "tests" / "fixtures" / "models"
DEFAULT_MODEL_DIR = ROOT / "checkpoints" / "tiny-llama"
DEFAULT_MODEL_SOURCE = "llama3-gqa"
# checkpoints/tiny-llama/README.md is written by hand; the script replaces everything else there.
KEEP_IN_DEFAULT_MODEL = {"README.md"}

SEED = 20250611
MAX_NEW_TOKENS = 32
TOP_K = 8
# About 1 MB a model (weights, tokenizer, reference.json); seven models.
FIXTURES_SIZE_LIMIT = 8 * 1024 * 1024

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}

# Qwen's ChatML template (the released Qwen2.5 one without tools) and Mistral's [INST] one.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% set system = '' %}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] + '\\n\\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first %}{{ '[INST] ' + system + message['content'] + ' [/INST]' }}"
    "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

MODELS = {
    "llama2-mha": dict(
        heads=2, kv_heads=2, layers=2, eps=1e-6, tied=False, legacy_config=False,
        rope={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "llama3-gqa": dict(
        heads=8, kv_heads=2, layers=2, eps=1e-5, tied=False, legacy_config=False, rope=LLAMA3_ROPE,
    ),
    "llama3-tied": dict(
        heads=4, kv_heads=1, layers=2, eps=1e-5, tied=True, legacy_config=True, rope=LLAMA3_ROPE,
    ),
    "qwen2-bias": dict(
        family="qwen2", heads=2, kv_heads=1, layers=2, eps=1e-6, tied=True, legacy_config=False,
        rope=DEFAULT_ROPE, chat_template=CHATML_TEMPLATE,
    ),
    "qwen3-qknorm": dict(
        family="qwen3", heads=4, kv_heads=2, layers=2, eps=1e-6, tied=False, legacy_config=False,
        rope=DEFAULT_ROPE, chat_template=CHATML_TEMPLATE,
    ),
    "mistral": dict(
        family="mistral", heads=2, kv_heads=1, layers=2, eps=1e-5, tied=False,
        legacy_config=False, rope=DEFAULT_ROPE, chat_template=MISTRAL_TEMPLATE,
    ),
    "llama3-gqa-fp8": dict(
        heads=8, kv_heads=2, layers=2, eps=1e-5, tied=False, legacy_config=False, rope=LLAMA3_ROPE,
        fp8=True,
    ),
    "llama3-gqa-awq": dict(
        heads=8, kv_heads=2, layers=2, eps=1e-5, tied=False, legacy_config=False, rope=LLAMA3_ROPE,
        awq=True,
    ),
}
AWQ_GROUP = 128
# AutoAWQ's GEMM packing: nibble i of a word holds column AWQ_ORDER[i] of its eight.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# What AutoAWQ (and transformers' AwqConfig) write.
AWQ_CONFIG = {"quant_method": "awq", "bits": 4, "group_size": AWQ_GROUP, "zero_point": True,
              "version": "gemm", "modules_to_not_convert": None}
FP8_MAX = 448.0
LINEAR_GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                 ("mlp", ("gate_proj", "up_proj", "down_proj")))
# What llm-compressor writes for its FP8_DYNAMIC scheme (per-channel weights, dynamic per-token
# activations, which Denali runs in bf16).
COMPRESSED_TENSORS_FP8 = {
    "quant_method": "compressed-tensors",
    "format": "float-quantized",
    "quantization_status": "compressed",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                        "symmetric": True, "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                  "symmetric": True, "dynamic": True},
            "output_activations": None,
        },
    },
    "ignore": ["lm_head"],
    "kv_cache_scheme": None,
}
HIDDEN, INTERMEDIATE, HEAD_DIM, MAX_POSITIONS = 128, 256, 64, 1024
LOGIT_STD = 3.0

# Prompts: plain text is encoded with add_special_tokens=True (the post-processor prepends
# <|begin_of_text|>); "chat" is rendered with the tokenizer's Llama 3 chat template.
PROMPTS = [
    {"name": "bos-only", "text": ""},
    {"name": "short", "text": "Hello world"},
    {
        "name": "medium",
        "text": "The quick brown fox jumps over the dog, 12345.",
    },
    {
        "name": "long",
        "text": (
            "Denali runs bf16 on the GPU. Hello again, world!\n\n"
            "Caf\u00e9 \u4e16\u754c \U0001F600 3.14159 and THE END? Not yet: past sixty-four tokens."
        ),
    },
    {
        "name": "chat",
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Hello world! What's 34 + 8?"},
        ],
    },
]


def fail(message):
    print(f"make_fixtures: error: {message}", file=sys.stderr)
    sys.exit(1)


def rounded(values, digits=7):
    """Floats for JSON to `digits` significant digits: 7 keep an fp32 value to 6e-8 relative and
    still identify a bf16 value (8 significant bits need 4 digits) exactly."""
    return [float(f"{v:.{digits}g}") for v in values]


def set_precision(device):
    """fp32 GEMMs in full fp32 (no TF32); bf16 GEMMs accumulating in fp32, as Denali's do.
    Returns the settings as applied, for reference.json."""
    # "highest" is what turns TF32 off for matmuls; the allow_tf32 flags are not touched,
    # since torch 2.9+ objects to mixing them with its newer fp32_precision settings.
    torch.set_float32_matmul_precision("highest")
    applied = {"float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device == "cuda":
        flag = "allow_bf16_reduced_precision_reduction"
        try:
            setattr(torch.backends.cuda.matmul, flag, False)
            applied[flag] = getattr(torch.backends.cuda.matmul, flag)
        except (AttributeError, RuntimeError) as error:
            print(f"make_fixtures: note: could not clear cuda.matmul.{flag}: {error}")
            applied[flag] = "unchanged"
    return applied


def tokenizer_facts():
    """Vocabulary size and special ids of the test tokenizer (tests/fixtures/tokenizer)."""
    raw = RawTokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    config = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    bos = raw.token_to_id(config["bos_token"])
    eos = raw.token_to_id(config["eos_token"])
    if bos is None or eos is None:
        fail(f"{TOKENIZER_DIR}: bos_token/eos_token are not tokens of tokenizer.json")
    return {
        "vocab_size": raw.get_vocab_size(with_added_tokens=True),
        "bos": bos,
        "eos": eos,
    }


def model_config(spec, facts):
    """The HF config of `spec`'s family (transformers' own config classes)."""
    family = spec.get("family", "llama")
    common = dict(
        vocab_size=facts["vocab_size"],
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        head_dim=HEAD_DIM,
        hidden_act="silu",
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=spec["eps"],
        rope_parameters=dict(spec["rope"]),
        tie_word_embeddings=spec["tied"],
        bos_token_id=facts["bos"],
        eos_token_id=facts["eos"],
    )
    if family == "llama":
        return LlamaConfig(**common, attention_bias=False, mlp_bias=False)
    if family == "qwen2":
        from transformers import Qwen2Config
        return Qwen2Config(**common, use_sliding_window=False)
    if family == "qwen3":
        from transformers import Qwen3Config
        return Qwen3Config(**common, use_sliding_window=False, attention_bias=False)
    if family == "mistral":
        from transformers import MistralConfig
        return MistralConfig(**common, sliding_window=None)
    fail(f"unknown family {family}")


def model_class(spec):
    """transformers' causal-LM class of `spec`'s family."""
    family = spec.get("family", "llama")
    if family == "llama":
        return LlamaForCausalLM
    import transformers as t
    return {"qwen2": t.Qwen2ForCausalLM, "qwen3": t.Qwen3ForCausalLM,
            "mistral": t.MistralForCausalLM}[family]


@torch.no_grad()
def randomize(model, spec, generator):
    """Overwrites every parameter from `generator`, at the scales the module docstring gives."""

    def normal(param, std):
        param.copy_(torch.randn(param.shape, generator=generator) * std)

    def uniform(param, lo, hi):
        param.copy_(torch.rand(param.shape, generator=generator) * (hi - lo) + lo)

    inner = model.model
    # Tied: the embedding table is the output layer, so it takes the output layer's scale.
    normal(inner.embed_tokens.weight, LOGIT_STD / math.sqrt(HIDDEN) if spec["tied"] else 1.0)
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        uniform(layer.input_layernorm.weight, 0.5, 1.5)
        normal(attn.q_proj.weight, 1.0 / math.sqrt(HIDDEN))
        normal(attn.k_proj.weight, 1.0 / math.sqrt(HIDDEN))
        normal(attn.v_proj.weight, 1.0 / math.sqrt(HIDDEN))
        normal(attn.o_proj.weight, 1.0 / math.sqrt(spec["heads"] * HEAD_DIM))
        uniform(layer.post_attention_layernorm.weight, 0.5, 1.5)
        normal(mlp.gate_proj.weight, 1.0 / math.sqrt(HIDDEN))
        normal(mlp.up_proj.weight, 1.0 / math.sqrt(HIDDEN))
        normal(mlp.down_proj.weight, 1.0 / math.sqrt(INTERMEDIATE))
    # The families' extra parameters, drawn after Llama's so that the Llama fixtures keep
    # their bytes: Qwen2's q/k/v biases (std 0.5 against projections of unit spread, so a
    # dropped bias moves the logits) and Qwen3's per-head norms (as the other norms).
    for layer in inner.layers:
        attn = layer.self_attn
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            if proj.bias is not None:
                normal(proj.bias, 0.5)
        for norm in (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)):
            if norm is not None:
                uniform(norm.weight, 0.5, 1.5)
    uniform(inner.norm.weight, 0.5, 1.5)
    if spec["tied"]:
        if model.lm_head.weight.data_ptr() != inner.embed_tokens.weight.data_ptr():
            fail("tie_word_embeddings is set but lm_head.weight is not the embedding table")
    else:
        normal(model.lm_head.weight, LOGIT_STD / math.sqrt(HIDDEN))


def legacy_config(path, spec):
    """Rewrites config.json with the transformers 4.x keys the Hub's Llama 3.x files carry."""
    config = json.loads(path.read_text())
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    config["torch_dtype"] = config.pop("dtype", "bfloat16")
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # transformers must read it back as the same model, or the reference would be of another.
    reread = LlamaConfig.from_pretrained(path.parent)
    if dict(reread.rope_parameters) != dict(spec["rope"]):
        fail(f"{path}: transformers reads the 4.x-style rope keys as {reread.rope_parameters}")


def random_model(name, spec, facts):
    """The seeded random model of `name`, in bf16."""
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    model = model_class(spec)(model_config(spec, facts))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    randomize(model, spec, generator)
    untouched = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    if untouched:
        fail(f"{name}: parameters not drawn by randomize: {untouched}")
    return model.to(torch.bfloat16)


def quantize_fp8(weight):
    """Per-output-channel E4M3: (codes, scales [out, 1] float32), as Denali quantizes at load."""
    w = weight.float()
    amax = w.abs().amax(dim=1, keepdim=True)
    scales = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    codes = (w / scales).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return codes, scales


def quantize_awq(weight):
    """
    4-bit groups of AWQ_GROUP inputs with zero points, as AutoAWQ's pseudo-quantizer: returns
    (q [out, in] int, zeros [out, groups] int, scales [out, groups] f16).
    """
    out_features, in_features = weight.shape
    w = weight.float().reshape(out_features, in_features // AWQ_GROUP, AWQ_GROUP)
    hi, lo = w.amax(dim=2), w.amin(dim=2)
    scales = ((hi - lo).clamp(min=1e-5) / 15).to(torch.float16)
    s = scales.float()
    zeros = (-torch.round(lo / s)).clamp(0, 15)
    q = (torch.round(w / s[..., None]) + zeros[..., None]).clamp(0, 15)
    return q.reshape(out_features, in_features).to(torch.int64), zeros.to(torch.int64), scales


def pack_awq(values):
    """int [rows, cols] (0..15) -> int32 [rows, cols / 8] in AutoAWQ's interleaved order."""
    packed = torch.zeros(values.shape[0], values.shape[1] // 8, dtype=torch.int64)
    for i, column in enumerate(AWQ_ORDER):
        packed |= values[:, column::8] << (4 * i)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def awq_linear(tensors, prefix):
    """Replaces `prefix`.weight by AWQ's qweight, qzeros and scales; returns (q - z) x s."""
    q, zeros, scales = quantize_awq(tensors.pop(f"{prefix}.weight"))
    tensors[f"{prefix}.qweight"] = pack_awq(q.t().contiguous()).contiguous()
    tensors[f"{prefix}.qzeros"] = pack_awq(zeros.t().contiguous()).contiguous()
    tensors[f"{prefix}.scales"] = scales.t().contiguous()
    expanded = (q - zeros.repeat_interleave(AWQ_GROUP, dim=1)).float()
    return expanded * scales.float().repeat_interleave(AWQ_GROUP, dim=1)


def fp8_linear(tensors, prefix):
    """Replaces `prefix`.weight by E4M3 codes plus weight_scale; returns codes x scale."""
    codes, scales = quantize_fp8(tensors[f"{prefix}.weight"])
    tensors[f"{prefix}.weight"] = codes.contiguous()
    tensors[f"{prefix}.weight_scale"] = scales.contiguous()
    return codes.float() * scales


QUANTIZED_FORMATS = {
    # spec key: (quantize one linear, quantization_config, the checkpoint's dtypes)
    "fp8": (fp8_linear, COMPRESSED_TENSORS_FP8, {"BF16", "F8_E4M3", "F32"}),
    "awq": (awq_linear, AWQ_CONFIG, {"BF16", "I32", "F16"}),
}


@torch.no_grad()
def write_quantized_checkpoint(name, spec, facts, directory, dequantized_dir, form):
    """
    The quantized checkpoint of `name` (`form` a key of QUANTIZED_FORMATS) in `directory`, and
    in `dequantized_dir` the same model with its linear weights replaced by their dequantized
    values in float32, for the reference.
    """
    from safetensors.torch import save_file

    quantize_linear, quantization_config, expected = QUANTIZED_FORMATS[form]
    for d in (directory, dequantized_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    tensors = {k: v.contiguous() for k, v in random_model(name, spec, facts).state_dict().items()}
    dequantized = random_model(name, spec, facts).to(torch.float32)  # the bf16 values, upcast
    for i, layer in enumerate(dequantized.model.layers):
        for group, module_names in LINEAR_GROUPS:
            for module_name in module_names:
                module = getattr(getattr(layer, group), module_name)
                module.weight.copy_(quantize_linear(tensors, f"model.layers.{i}.{group}.{module_name}"))
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    dequantized.save_pretrained(dequantized_dir, safe_serialization=True)
    config = json.loads((dequantized_dir / "config.json").read_text())
    config["dtype"] = "bfloat16"
    config["quantization_config"] = quantization_config
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for file in sorted(TOKENIZER_DIR.iterdir()):
        shutil.copy(file, directory / file.name)
        shutil.copy(file, dequantized_dir / file.name)
    with safe_open(directory / "model.safetensors", "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    if dtypes != expected:
        fail(f"{directory}: expected {sorted(expected)} tensors, found {sorted(dtypes)}")


def write_checkpoint(name, spec, facts, directory):
    """The seeded random model, saved in bf16 with the test tokenizer's files beside it."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    model = random_model(name, spec, facts)
    model.save_pretrained(directory, safe_serialization=True)
    # save_pretrained writes its own generation_config.json; the tokenizer's (two EOS ids,
    # Llama 3 Instruct's sampling defaults) is the one a real checkpoint ships.
    for file in sorted(TOKENIZER_DIR.iterdir()):
        shutil.copy(file, directory / file.name)
    if spec["legacy_config"]:
        legacy_config(directory / "config.json", spec)
    if "chat_template" in spec:
        path = directory / "tokenizer_config.json"
        tokenizer_config = json.loads(path.read_text())
        tokenizer_config["chat_template"] = spec["chat_template"]
        path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")

    weights = directory / "model.safetensors"
    if not weights.exists():
        fail(f"{directory}: save_pretrained wrote no model.safetensors (sharded?): "
             f"{sorted(p.name for p in directory.iterdir())}")
    with safe_open(weights, "pt") as f:
        keys = set(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    if dtypes != {"BF16"}:
        fail(f"{weights}: expected only BF16 tensors, found {sorted(dtypes)}")
    if ("lm_head.weight" in keys) == spec["tied"]:
        fail(f"{weights}: lm_head.weight {'present' if spec['tied'] else 'missing'} "
             f"with tie_word_embeddings={spec['tied']}")


def prompt_ids(tokenizer, raw, prompt):
    """Token ids of a prompt from the HF tokenizer, cross-checked with the tokenizers library."""
    if "messages" in prompt:
        text = tokenizer.apply_chat_template(
            prompt["messages"], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer.encode(text, add_special_tokens=False)
        check = raw.encode(text, add_special_tokens=False).ids
    else:
        ids = tokenizer.encode(prompt["text"], add_special_tokens=True)
        check = raw.encode(prompt["text"], add_special_tokens=True).ids
    if list(ids) != list(check):
        fail(f"prompt {prompt['name']}: transformers and tokenizers disagree: {ids} vs {check}")
    return list(ids)


def load(directory, dtype, device):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype,
                                                 attn_implementation="eager")
    model = model.to(device).eval()
    if model.config._attn_implementation != "eager" or model.dtype != dtype:
        fail(f"{directory}: loaded with {model.config._attn_implementation} attention in "
             f"{model.dtype}, not eager in {dtype}")
    # Greedy, EOS ignored: no stopping ids and none of generation_config.json's sampling knobs.
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id, eos_token_id=None, pad_token_id=None,
        do_sample=False,
    )
    return model


@torch.no_grad()
def last_logits(model, ids, device):
    out = model(torch.tensor([ids], device=device))
    return out.logits[0, -1].float().cpu()


@torch.no_grad()
def greedy(model, ids, device):
    """generate()'s greedy continuation and the logits of each of its steps."""
    input_ids = torch.tensor([ids], device=device)
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        return_dict_in_generate=True,
        output_logits=True,
    )
    tokens = out.sequences[0, len(ids):].tolist()
    if len(tokens) != MAX_NEW_TOKENS:
        fail(f"generate stopped after {len(tokens)} tokens; EOS should be ignored")
    step_logits = [l[0].float().cpu() for l in out.logits]
    for t, logits in enumerate(step_logits):
        if int(logits.argmax()) != tokens[t]:
            fail(f"generate's token {t} is not the argmax of its logits (not greedy?)")
    return tokens, step_logits


@torch.no_grad()
def teacher_forced(model, ids, continuation, device):
    """The model's logits for each continuation step, given the prompt and the steps before."""
    sequence = torch.tensor([ids + continuation[:-1]], device=device)
    logits = model(sequence).logits[0].float().cpu()
    return logits[len(ids) - 1:]


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def top2_margin(logits):
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


def reference(directory, device):
    # The tokenizer.json as written (what Denali loads), not the class transformers maps the
    # model type to: for a qwen2 config, transformers 5 builds Qwen2's own pre-tokenizer (one
    # digit a token), which the shared test tokenizer.json does not have.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    raw = RawTokenizer.from_file(str(directory / "tokenizer.json"))
    bf16 = load(directory, torch.bfloat16, device)
    fp32 = load(directory, torch.float32, device)
    prompts = []
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, raw, prompt)
        logits16 = last_logits(bf16, ids, device)
        logits32 = last_logits(fp32, ids, device)
        tokens16, step16 = greedy(bf16, ids, device)
        tokens32, _ = greedy(fp32, ids, device)
        agree = next((t for t in range(MAX_NEW_TOKENS) if tokens16[t] != tokens32[t]),
                     MAX_NEW_TOKENS)
        forced32 = teacher_forced(fp32, ids, tokens16, device)
        steps = []
        for t in range(MAX_NEW_TOKENS):
            top = torch.topk(forced32[t], TOP_K)
            top_ids = top.indices.tolist()
            steps.append({
                "ids": top_ids,
                "fp32": rounded(top.values.tolist()),
                "bf16": rounded(step16[t][top_ids].tolist()),
            })
        entry = {"name": prompt["name"]}
        entry.update({k: prompt[k] for k in ("text", "messages") if k in prompt})
        if "messages" in prompt:
            entry["chatText"] = tokenizer.apply_chat_template(
                prompt["messages"], add_generation_prompt=True, tokenize=False)
        entry.update({
            "ids": ids,
            "logits": {"bf16": rounded(logits16.tolist()), "fp32": rounded(logits32.tolist())},
            "greedy": {
                "bf16": tokens16,
                "fp32": tokens32,
                "agree": agree,
                "text": tokenizer.decode(tokens16, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False),
                "textSkipSpecial": tokenizer.decode(tokens16, skip_special_tokens=True,
                                                    clean_up_tokenization_spaces=False),
            },
            "steps": steps,
            "stats": {
                "relErrBf16VsFp32": relative_error(logits16, logits32),
                "maxAbsBf16VsFp32": float((logits16 - logits32).abs().max()),
                "logitStd": float(logits32.std()),
                "top2MarginFp32": top2_margin(logits32),
                "minStepMarginFp32": min(top2_margin(forced32[t]) for t in range(agree)) if agree
                else None,
            },
        })
        prompts.append(entry)
    return prompts


def write_reference(name, directory, device, precision, source=None,
                    weights="FP8 E4M3 per channel; both runs use the dequantized weights (codes x "
                            "scale), fp32 exactly and bf16 rounded"):
    """reference.json in `directory`, computed by HF from `source` (default: `directory`)."""
    prompts = reference(source or directory, device)
    doc = {
        "model": name,
        "architecture": json.loads((directory / "config.json").read_text())["architectures"][0],
        "generator": "tools/make_fixtures.py",
        "seed": SEED,
        "device": device,
        "deviceName": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": __import__("tokenizers").__version__,
        },
        "attention": "eager",
        "precision": {
            "bf16": "bf16 weights and activations, GEMMs accumulating in fp32",
            "fp32": "the bf16 weights upcast, fp32 throughout, no TF32",
            "torch": precision,
            **({"weights": weights} if source else {}),
        },
        "maxNewTokens": MAX_NEW_TOKENS,
        "topK": TOP_K,
        "prompts": prompts,
    }
    (directory / "reference.json").write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")
    return prompts


def copy_default_model(source):
    """checkpoints/tiny-llama: the checkpoint and tokenizer files of `source`, no reference.json."""
    DEFAULT_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for old in DEFAULT_MODEL_DIR.iterdir():
        if old.name not in KEEP_IN_DEFAULT_MODEL:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    written = []
    for file in sorted(source.iterdir()):
        if file.name != "reference.json":
            shutil.copy(file, DEFAULT_MODEL_DIR / file.name)
            written.append(DEFAULT_MODEL_DIR / file.name)
    return written


def size(path):
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="where HF runs the reference (default cuda; cpu is a dry run)")
    parser.add_argument("--out", default=str(FIXTURES_DIR),
                        help="folder for the model folders (default tests/fixtures/models)")
    parser.add_argument("--only", default=",".join(MODELS),
                        help=f"comma-separated models to write (default all: {','.join(MODELS)})")
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in MODELS]
    if unknown:
        fail(f"unknown models {unknown}; choose from {list(MODELS)}")
    out_dir = Path(args.out).resolve()
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("CUDA is not available; the fixtures of record are computed on the GPU "
             "(pass --device cpu for a dry run)")
    precision = set_precision(args.device)
    facts = tokenizer_facts()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"device {args.device}; tokenizer vocab {facts['vocab_size']}, "
          f"bos {facts['bos']}, eos {facts['eos']}")

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in only:
        spec = MODELS[name]
        directory = out_dir / name
        if spec.get("fp8"):
            dequantized = Path(os.environ.get("TMPDIR", "/tmp")) / f"denali-{name}-dequantized"
            write_quantized_checkpoint(name, spec, facts, directory, dequantized, "fp8")
            prompts = write_reference(name, directory, args.device, precision, dequantized)
            shutil.rmtree(dequantized)
        elif spec.get("awq"):
            dequantized = Path(os.environ.get("TMPDIR", "/tmp")) / f"denali-{name}-dequantized"
            write_quantized_checkpoint(name, spec, facts, directory, dequantized, "awq")
            prompts = write_reference(
                name, directory, args.device, precision, dequantized,
                weights=f"AWQ 4-bit, group {AWQ_GROUP}, zero points; both runs use the dequantized "
                        "weights ((q - z) x s), fp32 exactly and bf16 rounded")
            shutil.rmtree(dequantized)
        else:
            write_checkpoint(name, spec, facts, directory)
            prompts = write_reference(name, directory, args.device, precision)
        print(f"wrote {directory}/ ({size(directory) / 1024:.0f} KiB): "
              f"{', '.join(sorted(p.name for p in directory.iterdir()))}")
        for p in prompts:
            s = p["stats"]
            print(f"  {p['name']:9} {len(p['ids']):3} ids  bf16-vs-fp32 rel {s['relErrBf16VsFp32']:.2e}"
                  f" max|d| {s['maxAbsBf16VsFp32']:.3f}  logit std {s['logitStd']:.2f}"
                  f"  top-2 margin {s['top2MarginFp32']:.3f}"
                  f"  greedy bf16/fp32 agree {p['greedy']['agree']}/{MAX_NEW_TOKENS}")

    total = size(out_dir)
    print(f"{out_dir}: {total / 1024:.0f} KiB in all")
    if total > FIXTURES_SIZE_LIMIT:
        fail(f"fixtures are {total} bytes, over the {FIXTURES_SIZE_LIMIT}-byte budget")
    if DEFAULT_MODEL_SOURCE not in only or out_dir != FIXTURES_DIR.resolve():
        return
    written = copy_default_model(out_dir / DEFAULT_MODEL_SOURCE)
    print(f"wrote {DEFAULT_MODEL_DIR.relative_to(ROOT)}/ ({size(DEFAULT_MODEL_DIR) / 1024:.0f} KiB)"
          f" from {DEFAULT_MODEL_SOURCE}: {', '.join(p.name for p in written)}")


if __name__ == "__main__":
    main()
