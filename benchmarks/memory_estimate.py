"""How close `recipec explain`'s peak-memory estimate is to the measured peak of a training step.

For each case (a CPU example recipe, and variants of it through --set: micro-batch,
seq_len, gradient checkpointing, LoRA, bfloat16, and the other architectures the estimate counts),
the recipe is planned as `recipec explain` plans it, and the same model (the model config
the generated script passes to transformers and the vocabulary, model.dtype,
gradient checkpointing, the [peft] adapter through recipec_runtime's adapters.apply, AdamW
over the trainable parameters, autocast for mixed precision) runs a few optimizer steps of
grad_accum_steps micro-batches of random tokens in a fresh process, which reports its peak.

What is measured:
  * on CPU, the peak of live torch allocations: torch.profiler with profile_memory=True
    records every allocation and free of the CPU allocator ([memory] events, with their
    sizes and times) from before the model is created to the last step; the running sum
    of their sizes has its maximum at the peak. This counts exactly what the estimate
    models (tensors), and nothing of the process around them. The peak RSS (ru_maxrss minus
    the RSS before the model) is not used: it also counts the Python heap, the libraries'
    lazily loaded code, what glibc's malloc keeps after a free and, under the profiler,
    the profiler's own event buffers.
  * on CUDA (--device cuda), torch.cuda.max_memory_allocated() after the steps, with the
    peak reset before the model is created: again torch's live tensors, without the CUDA
    context or the caching allocator's reserve.

With `train.eval_micro_batch_size` above `micro_batch_size` (the "eval" cases), the worker then
runs one evaluation forward of that many rows as train.py's evaluate() does (eval mode, no_grad,
the gradients freed, the optimizer state kept) and reports its peak apart: on CPU the highest
running sum after the forward starts (a profiler range marks it), on CUDA the peak after a reset.
It is compared with the estimate's `evaluation`.

The random tokens stand in for the data: memory depends on the shapes, not the values.

Usage: python benchmarks/memory_estimate.py [--steps N] [--device cpu|cuda] [--case NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# a wider model with grouped-query attention, at micro-batch 8
WIDE = [
    "model.config.hidden_size=512",
    "model.config.intermediate_size=1376",
    "model.config.num_hidden_layers=6",
    "model.config.num_attention_heads=8",
    "model.config.num_key_value_heads=2",
    "train.micro_batch_size=8",
    "train.batch_size=16",
]

# model.tiled_mlp in 4 tiles
TILED = ["model.tiled_mlp=true", "model.tiled_mlp_shards=4"]

# optim.step_in_backward (one micro-batch a step, no clipping)
IN_BACKWARD = ["optim.grad_clip=0", "optim.step_in_backward=true"]

# the quickstart's sizes in gpt2 (no intermediate_size: n_inner is 4 * n_embd) and in
# gemma3_text (grouped-query attention, every layer a sliding-window layer of 64 tokens)
GPT2 = [
    'model.init="gpt2"',
    "model.config={hidden_size=192, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=512}",
]
NO_DROPOUT = ["model.config.resid_pdrop=0.0", "model.config.embd_pdrop=0.0", "model.config.attn_pdrop=0.0"]
GEMMA3 = [
    'model.init="gemma3_text"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512, sliding_window=64}",
]

# gemma2 at the same sizes, with its default soft-capping (attention 50, logits 30) and
# alternating sliding-window (64) and full layers; transformers builds it without sdpa
CHUNKED_256 = 'loss={cross_entropy="chunked", chunk_size=256}'
GEMMA2 = [
    'model.init="gemma2"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512, sliding_window=64}",
    'model.attention="eager"',
]

# gemma (v1) at the same sizes: two norms a layer, no sliding window or soft-capping, sdpa
GEMMA = [
    'model.init="gemma"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512}",
]

# the mixtures of experts at the same sizes: 8 experts of 128, 2 a token (qwen2_moe: and a
# shared expert of 512)
MOE = "hidden_size=192, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512"
QWEN2_MOE = [
    'model.init="qwen2_moe"',
    f"model.config={{{MOE}, intermediate_size=512, moe_intermediate_size=128, shared_expert_intermediate_size=512, "
    "num_experts=8, num_experts_per_tok=2}",
]
QWEN3_MOE = [
    'model.init="qwen3_moe"',
    f"model.config={{{MOE}, intermediate_size=512, moe_intermediate_size=128, num_experts=8, num_experts_per_tok=2}}",
]
MIXTRAL = ['model.init="mixtral"', f"model.config={{{MOE}, intermediate_size=128, num_local_experts=8, num_experts_per_tok=2}}"]

# granite at the quickstart's sizes, its multipliers set as IBM's granite-3 models set them
GRANITE = [
    'model.init="granite"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512, embedding_multiplier=12.0, residual_multiplier=0.22, "
    "attention_multiplier=0.015625, logits_scaling=8.0}",
]

# Llama's layers under other names, at the quickstart's sizes: smollm3 (4 layers: the fourth without rotary
# positions, tied), ministral (every layer in a sliding window, of 64 here), helium, ernie4_5 (tied, 16-wide heads)
LLAMA_SIZES = "hidden_size=192, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512"
SMOLLM3 = ['model.init="smollm3"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=4}}"]
MINISTRAL = ['model.init="ministral"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, head_dim=48, sliding_window=64}}"]
HELIUM = ['model.init="helium"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, head_dim=48}}"]
ERNIE4_5 = ['model.init="ernie4_5"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, head_dim=48}}"]

# starcoder2 at the quickstart's sizes (use_bias, gelu_pytorch_tanh); its released configs set
# dropouts of 0.1, whose attention dropout sends sdpa down its math path on the CPU
STARCODER2 = [
    'model.init="starcoder2"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512}",
]
DROPOUTS = ["model.config.residual_dropout=0.1", "model.config.embedding_dropout=0.1", "model.config.attention_dropout=0.1"]

# phi at the quickstart's sizes (gelu_new, half the head rotated, 4 heads without grouping);
# phi-2's config sets resid_pdrop 0.1
PHI = [
    'model.init="phi"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "max_position_embeddings=512}",
]

# cohere at the quickstart's sizes (one float32 LayerNorm a layer, attention and SwiGLU side by side)
COHERE = [
    'model.init="cohere"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512}",
]

# gpt_neox at the quickstart's sizes (Pythia's layout: a fused query_key_value, a quarter of each
# head rotated, attention and MLP side by side after two LayerNorms, biases, untied embed_out)
GPT_NEOX = [
    'model.init="gpt_neox"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "max_position_embeddings=512}",
]

# falcon at the quickstart's sizes: falcon-7b's layout (multi_query: one key/value head;
# parallel_attn with one LayerNorm; no biases; tied), and falcon-40b's (new_decoder_architecture)
FALCON = [
    'model.init="falcon"',
    "model.config={hidden_size=192, ffn_hidden_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "max_position_embeddings=512}",
]
FALCON_NEW = ["model.config.new_decoder_architecture=true", "model.config.num_kv_heads=2"]
FALCON_SEQUENTIAL = ["model.config.multi_query=false", "model.config.parallel_attn=false", "model.config.bias=true"]

# olmoe at the same sizes as the other mixtures of experts: 8 experts of 128, 2 a token
OLMOE = [
    'model.init="olmoe"',
    f"model.config={{{MOE}, intermediate_size=128, num_experts=8, num_experts_per_tok=2}}",
]

# olmo (v1) at the quickstart's sizes: LayerNorms without parameters; OLMo-7B-0424 clips q, k and v at 8
OLMO = [
    'model.init="olmo"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512}",
]

# stablelm at the quickstart's sizes (stablelm-2's layout: two LayerNorms a layer, a quarter of each
# head rotated, q/k/v biases), and side by side with per-head q/k LayerNorms (stablelm-2-12b's)
STABLELM = [
    'model.init="stablelm"',
    "model.config={hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, "
    "num_key_value_heads=2, max_position_embeddings=512, use_qkv_bias=true}",
]
STABLELM_PARALLEL = ["model.config.use_parallel_residual=true", "model.config.qk_layernorm=true"]

# gpt_oss at the same sizes as the other mixtures of experts (8 experts of 128, 2 a token; head_dim 48), its
# default layers: every second one (the first and the third here) in a sliding window of 64, shorter than seq_len
# 128. transformers builds it without sdpa (its attention sinks): eager attention on the CPU
GPT_OSS = [
    'model.init="gpt_oss"',
    f"model.config={{{MOE}, intermediate_size=128, head_dim=48, num_local_experts=8, num_experts_per_tok=2, sliding_window=64}}",
    'model.attention="eager"',
]

# the dense types with norms after the attention and the MLP, at the quickstart's sizes (heads of 48): olmo3 and
# exaone4 (no norms before; q and k norms; three layers in four in a sliding window, of 64 here, the fourth
# without one, exaone4's without rotary positions), glm4 (four norms a layer, half of each head rotated,
# gate_up_proj)
OLMO3 = ['model.init="olmo3"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, sliding_window=64}}"]
EXAONE4 = ['model.init="exaone4"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, sliding_window=64}}"]
GLM4 = ['model.init="glm4"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, head_dim=48}}"]

# deepseek_v3 at the mixtures of experts' sizes: multi-head latent attention (q_lora_rank 96, kv_lora_rank 64, q and
# k heads of 32 + 16 rotary, v heads of 32), its first layer dense (intermediate 512), the other two 8 routed experts
# of 128, 2 a token from 1 of 2 groups, and a shared expert of 128. v heads narrower than q's and k's send sdpa down
# its math path on the CPU; with v heads of 48 sdpa runs its fused kernel
DEEPSEEK_V3 = [
    'model.init="deepseek_v3"',
    f"model.config={{{MOE.replace('num_key_value_heads=2', 'num_key_value_heads=4')}, intermediate_size=512, "
    "moe_intermediate_size=128, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1, "
    "first_k_dense_replace=1, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32}",
]

CASES: dict[str, tuple[str, list[str]]] = {
    "quickstart": ("recipes/quickstart.toml", []),
    "quickstart b4": ("recipes/quickstart.toml", ["train.micro_batch_size=4", "train.batch_size=8"]),
    "quickstart s512 b4": ("recipes/quickstart.toml", ["data.seq_len=512", "train.micro_batch_size=4", "train.batch_size=8"]),
    "quickstart s256": ("recipes/quickstart.toml", ["data.seq_len=256"]),
    "quickstart ckpt": ("recipes/quickstart.toml", ["model.gradient_checkpointing=true"]),
    "quickstart eager attention": ("recipes/quickstart.toml", ['model.attention="eager"']),
    "quickstart eager bf16": ("recipes/quickstart.toml", ['model.attention="eager"', 'launch.mixed_precision="bf16"']),
    "quickstart bf16 weights": ("recipes/quickstart.toml", ['model.dtype="bfloat16"']),
    "quickstart bf16 autocast": ("recipes/quickstart.toml", ['launch.mixed_precision="bf16"']),
    "quickstart lora r16": (
        "recipes/quickstart.toml",
        ['peft={method="lora", r=16, target_modules="all-linear"}'],
    ),
    "quickstart lora q,v": ("recipes/quickstart.toml", ['peft={method="lora", r=8}']),
    "quickstart eval b64": ("recipes/quickstart.toml", ["train.eval_micro_batch_size=64"]),
    "quickstart eval b64 bf16": ("recipes/quickstart.toml", ["train.eval_micro_batch_size=64", 'launch.mixed_precision="bf16"']),
    "quickstart eval b64 bf16 weights": ("recipes/quickstart.toml", ["train.eval_micro_batch_size=64", 'model.dtype="bfloat16"']),
    "quickstart eval b64 lora": ("recipes/quickstart.toml", ["train.eval_micro_batch_size=64", 'peft={method="lora", r=8}']),
    "quickstart in backward": ("recipes/quickstart.toml", [*IN_BACKWARD, "train.batch_size=16"]),
    "quickstart ckpt in backward": ("recipes/quickstart.toml", [*IN_BACKWARD, "train.batch_size=16", "model.gradient_checkpointing=true"]),
    "quickstart label smoothing": ("recipes/quickstart.toml", ["loss.label_smoothing=0.1"]),
    "quickstart label smoothing bf16 autocast": ("recipes/quickstart.toml", ["loss.label_smoothing=0.1", 'launch.mixed_precision="bf16"']),
    "quickstart tiled": ("recipes/quickstart.toml", TILED),
    "quickstart tiled ckpt": ("recipes/quickstart.toml", [*TILED, "model.gradient_checkpointing=true"]),
    "quickstart tiled bf16 autocast": ("recipes/quickstart.toml", [*TILED, 'launch.mixed_precision="bf16"']),
    "quickstart tiled lora r16": ("recipes/quickstart.toml", [*TILED, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "wide 6L b8 tiled": ("recipes/quickstart.toml", [*WIDE, *TILED]),
    "gpt2 tiled": ("recipes/quickstart.toml", [*GPT2, *TILED]),
    "gemma3 tiled": ("recipes/quickstart.toml", [*GEMMA3, *TILED]),
    "wide 6L b8": ("recipes/quickstart.toml", WIDE),
    # one micro-batch a step on one process: no gradient is alive beside the activations; the gradients
    # peak at the end of the backward pass, with a checkpointed model's recomputed first layer or AdamW's
    # step temporaries (for-loop, foreach or fused)
    "quickstart x1": ("recipes/quickstart.toml", ["train.batch_size=16"]),
    "quickstart x1 ckpt": ("recipes/quickstart.toml", ["train.batch_size=16", "model.gradient_checkpointing=true"]),
    "quickstart b4 x1 ckpt": ("recipes/quickstart.toml", ["train.micro_batch_size=4", "train.batch_size=4", "model.gradient_checkpointing=true"]),
    "wide 6L b1 x1": ("recipes/quickstart.toml", [*WIDE, "optim.grad_clip=0", "train.micro_batch_size=1", "train.batch_size=1"]),
    "wide 6L b1 x1 ckpt": ("recipes/quickstart.toml", [*WIDE, "optim.grad_clip=0", "train.micro_batch_size=1", "train.batch_size=1", "model.gradient_checkpointing=true"]),
    "wide 6L b1 x1 foreach": ("recipes/quickstart.toml", [*WIDE, "optim.grad_clip=0", "train.micro_batch_size=1", "train.batch_size=1", 'optim.implementation="foreach"']),
    "wide 6L b1 x1 fused": ("recipes/quickstart.toml", [*WIDE, "optim.grad_clip=0", "train.micro_batch_size=1", "train.batch_size=1", 'optim.implementation="fused"']),
    "wide 6L b8 x1": ("recipes/quickstart.toml", [*WIDE, "optim.grad_clip=0", "train.batch_size=8"]),
    "wide 6L b8 x1 ckpt": ("recipes/quickstart.toml", [*WIDE, "optim.grad_clip=0", "train.batch_size=8", "model.gradient_checkpointing=true"]),
    "wide 6L b8 in backward": ("recipes/quickstart.toml", [*WIDE, *IN_BACKWARD, "train.batch_size=8"]),
    "wide 6L b8 ckpt in backward": ("recipes/quickstart.toml", [*WIDE, *IN_BACKWARD, "train.batch_size=8", "model.gradient_checkpointing=true"]),
    "wide 6L b8 eval b32": ("recipes/quickstart.toml", [*WIDE, "train.eval_micro_batch_size=32"]),
    "wide 6L b8 ckpt": (
        "recipes/quickstart.toml",
        [*WIDE, "model.gradient_checkpointing=true"],
    ),
    "gpt2": ("recipes/quickstart.toml", GPT2),
    "gpt2 no dropout": ("recipes/quickstart.toml", [*GPT2, *NO_DROPOUT]),
    "gpt2 no dropout, tied": ("recipes/quickstart.toml", [*GPT2, *NO_DROPOUT, "model.config.tie_word_embeddings=true"]),
    "gpt2 ckpt": ("recipes/quickstart.toml", [*GPT2, "model.gradient_checkpointing=true"]),
    "gpt2 eager": ("recipes/quickstart.toml", [*GPT2, 'model.attention="eager"']),
    "gpt2 bf16 weights": ("recipes/quickstart.toml", [*GPT2, 'model.dtype="bfloat16"']),
    "gpt2 bf16 autocast": ("recipes/quickstart.toml", [*GPT2, *NO_DROPOUT, 'launch.mixed_precision="bf16"']),
    "gpt2 eval b64": ("recipes/quickstart.toml", [*GPT2, "train.eval_micro_batch_size=64"]),
    "gemma3": ("recipes/quickstart.toml", GEMMA3),
    "gemma3 tied": ("recipes/quickstart.toml", [*GEMMA3, "model.config.tie_word_embeddings=true"]),
    "gemma3 ckpt": ("recipes/quickstart.toml", [*GEMMA3, "model.gradient_checkpointing=true"]),
    "gemma3 eager": ("recipes/quickstart.toml", [*GEMMA3, 'model.attention="eager"']),
    "gemma3 bf16 weights": ("recipes/quickstart.toml", [*GEMMA3, 'model.dtype="bfloat16"']),
    "gemma3 bf16 autocast": ("recipes/quickstart.toml", [*GEMMA3, 'launch.mixed_precision="bf16"']),
    "gemma3 lora r16": ("recipes/quickstart.toml", [*GEMMA3, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "gemma3 lora q,v": ("recipes/quickstart.toml", [*GEMMA3, 'peft={method="lora", r=8}']),
    "gemma3 eval b64": ("recipes/quickstart.toml", [*GEMMA3, "train.eval_micro_batch_size=64"]),
    "gemma2": ("recipes/quickstart.toml", GEMMA2),
    "gemma2 tied": ("recipes/quickstart.toml", [*GEMMA2, "model.config.tie_word_embeddings=true"]),
    "gemma2 ckpt": ("recipes/quickstart.toml", [*GEMMA2, "model.gradient_checkpointing=true"]),
    "gemma2 bf16 weights": ("recipes/quickstart.toml", [*GEMMA2, 'model.dtype="bfloat16"']),
    "gemma2 bf16 autocast": ("recipes/quickstart.toml", [*GEMMA2, 'launch.mixed_precision="bf16"']),
    "gemma2 lora r16": ("recipes/quickstart.toml", [*GEMMA2, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "gemma2 lora q,v": ("recipes/quickstart.toml", [*GEMMA2, 'peft={method="lora", r=8}']),
    "gemma2 eval b64": ("recipes/quickstart.toml", [*GEMMA2, "train.eval_micro_batch_size=64"]),
    # [loss] cross_entropy = "chunked": in training and in an evaluation forward
    "quickstart chunked 256": ("recipes/quickstart.toml", [CHUNKED_256]),
    "quickstart eval b64 chunked 256": ("recipes/quickstart.toml", [CHUNKED_256, "train.eval_micro_batch_size=64"]),
    "quickstart eval b64 chunked 1024 bf16": (
        "recipes/quickstart.toml",
        ['loss={cross_entropy="chunked", chunk_size=1024}', "train.eval_micro_batch_size=64", 'launch.mixed_precision="bf16"'],
    ),
    "gemma2 eval b64 chunked 256": ("recipes/quickstart.toml", [*GEMMA2, CHUNKED_256, "train.eval_micro_batch_size=64"]),
    "wide 6L b8 eval b32 chunked 256": ("recipes/quickstart.toml", [*WIDE, CHUNKED_256, "train.eval_micro_batch_size=32"]),
    "gemma": ("recipes/quickstart.toml", GEMMA),
    "gemma tied": ("recipes/quickstart.toml", [*GEMMA, "model.config.tie_word_embeddings=true"]),
    "gemma ckpt": ("recipes/quickstart.toml", [*GEMMA, "model.gradient_checkpointing=true"]),
    "gemma eager": ("recipes/quickstart.toml", [*GEMMA, 'model.attention="eager"']),
    "gemma bf16 weights": ("recipes/quickstart.toml", [*GEMMA, 'model.dtype="bfloat16"']),
    "gemma bf16 autocast": ("recipes/quickstart.toml", [*GEMMA, 'launch.mixed_precision="bf16"']),
    "gemma lora r16": ("recipes/quickstart.toml", [*GEMMA, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "gemma lora q,v": ("recipes/quickstart.toml", [*GEMMA, 'peft={method="lora", r=8}']),
    "qwen2_moe": ("recipes/quickstart.toml", QWEN2_MOE),
    "qwen2_moe ckpt": ("recipes/quickstart.toml", [*QWEN2_MOE, "model.gradient_checkpointing=true"]),
    "qwen2_moe eager": ("recipes/quickstart.toml", [*QWEN2_MOE, 'model.attention="eager"']),
    "qwen2_moe bf16 weights": ("recipes/quickstart.toml", [*QWEN2_MOE, 'model.dtype="bfloat16"']),
    "qwen2_moe bf16 autocast": ("recipes/quickstart.toml", [*QWEN2_MOE, 'launch.mixed_precision="bf16"']),
    "qwen3_moe": ("recipes/quickstart.toml", QWEN3_MOE),
    "mixtral": ("recipes/quickstart.toml", MIXTRAL),
    "granite": ("recipes/quickstart.toml", GRANITE),
    "granite bf16 autocast": ("recipes/quickstart.toml", [*GRANITE, 'launch.mixed_precision="bf16"']),
    "granite lora r16": ("recipes/quickstart.toml", [*GRANITE, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    **{
        f"{name}{label}": ("recipes/quickstart.toml", [*base, *extra])
        for name, base in (("smollm3", SMOLLM3), ("ministral", MINISTRAL), ("helium", HELIUM), ("ernie4_5", ERNIE4_5))
        for label, extra in (
            ("", []),
            (" ckpt", ["model.gradient_checkpointing=true"]),
            (" eager", ['model.attention="eager"']),
            (" bf16 weights", ['model.dtype="bfloat16"']),
            (" bf16 autocast", ['launch.mixed_precision="bf16"']),
            (" lora r16", ['peft={method="lora", r=16, target_modules="all-linear"}']),
        )
    },
    "smollm3 sliding": ("recipes/quickstart.toml", [*SMOLLM3, "model.config.use_sliding_window=true", "model.config.sliding_window=64"]),
    "mistral sliding": ("recipes/quickstart.toml", ['model.init="mistral"', f"model.config={{{LLAMA_SIZES}, num_hidden_layers=3, sliding_window=64}}"]),
    "starcoder2": ("recipes/quickstart.toml", STARCODER2),
    "starcoder2 dropout": ("recipes/quickstart.toml", [*STARCODER2, *DROPOUTS]),
    "starcoder2 sliding": ("recipes/quickstart.toml", [*STARCODER2, "model.config.sliding_window=64"]),
    "starcoder2 ckpt": ("recipes/quickstart.toml", [*STARCODER2, "model.gradient_checkpointing=true"]),
    "starcoder2 bf16 weights": ("recipes/quickstart.toml", [*STARCODER2, 'model.dtype="bfloat16"']),
    "starcoder2 bf16 autocast": ("recipes/quickstart.toml", [*STARCODER2, 'launch.mixed_precision="bf16"']),
    "starcoder2 lora r16": ("recipes/quickstart.toml", [*STARCODER2, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "starcoder2 lora q,v": ("recipes/quickstart.toml", [*STARCODER2, 'peft={method="lora", r=8, target_modules=["q_proj", "v_proj"]}']),
    "phi": ("recipes/quickstart.toml", PHI),
    "phi resid dropout": ("recipes/quickstart.toml", [*PHI, "model.config.resid_pdrop=0.1"]),
    "phi ckpt": ("recipes/quickstart.toml", [*PHI, "model.gradient_checkpointing=true"]),
    "phi eager": ("recipes/quickstart.toml", [*PHI, 'model.attention="eager"']),
    "phi bf16 weights": ("recipes/quickstart.toml", [*PHI, 'model.dtype="bfloat16"']),
    "phi bf16 autocast": ("recipes/quickstart.toml", [*PHI, 'launch.mixed_precision="bf16"']),
    "phi lora r16": ("recipes/quickstart.toml", [*PHI, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "phi lora default": ("recipes/quickstart.toml", [*PHI, 'peft={method="lora", r=8}']),
    "cohere": ("recipes/quickstart.toml", COHERE),
    "cohere qk norm": ("recipes/quickstart.toml", [*COHERE, "model.config.use_qk_norm=true"]),
    "cohere ckpt": ("recipes/quickstart.toml", [*COHERE, "model.gradient_checkpointing=true"]),
    "cohere eager": ("recipes/quickstart.toml", [*COHERE, 'model.attention="eager"']),
    "cohere bf16 weights": ("recipes/quickstart.toml", [*COHERE, 'model.dtype="bfloat16"']),
    "cohere bf16 autocast": ("recipes/quickstart.toml", [*COHERE, 'launch.mixed_precision="bf16"']),
    "cohere lora r16": ("recipes/quickstart.toml", [*COHERE, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "cohere lora q,v": ("recipes/quickstart.toml", [*COHERE, 'peft={method="lora", r=8, target_modules=["q_proj", "v_proj"]}']),
    "gpt_neox": ("recipes/quickstart.toml", GPT_NEOX),
    "gpt_neox sequential": ("recipes/quickstart.toml", [*GPT_NEOX, "model.config.use_parallel_residual=false"]),
    "gpt_neox ckpt": ("recipes/quickstart.toml", [*GPT_NEOX, "model.gradient_checkpointing=true"]),
    "gpt_neox eager": ("recipes/quickstart.toml", [*GPT_NEOX, 'model.attention="eager"']),
    "gpt_neox bf16 weights": ("recipes/quickstart.toml", [*GPT_NEOX, 'model.dtype="bfloat16"']),
    "gpt_neox bf16 autocast": ("recipes/quickstart.toml", [*GPT_NEOX, 'launch.mixed_precision="bf16"']),
    "gpt_neox lora r16": ("recipes/quickstart.toml", [*GPT_NEOX, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "gpt_neox lora default": ("recipes/quickstart.toml", [*GPT_NEOX, 'peft={method="lora", r=8}']),
    "gpt_neox sequential lora": (
        "recipes/quickstart.toml",
        [*GPT_NEOX, "model.config.use_parallel_residual=false", 'peft={method="lora", r=8}'],
    ),
    "falcon": ("recipes/quickstart.toml", FALCON),
    "falcon new": ("recipes/quickstart.toml", [*FALCON, *FALCON_NEW]),
    "falcon sequential": ("recipes/quickstart.toml", [*FALCON, *FALCON_SEQUENTIAL]),
    "falcon ckpt": ("recipes/quickstart.toml", [*FALCON, "model.gradient_checkpointing=true"]),
    "falcon eager": ("recipes/quickstart.toml", [*FALCON, 'model.attention="eager"']),
    "falcon bf16 weights": ("recipes/quickstart.toml", [*FALCON, 'model.dtype="bfloat16"']),
    "falcon bf16 autocast": ("recipes/quickstart.toml", [*FALCON, 'launch.mixed_precision="bf16"']),
    "falcon new bf16 autocast": ("recipes/quickstart.toml", [*FALCON, *FALCON_NEW, 'launch.mixed_precision="bf16"']),
    "falcon lora r16": ("recipes/quickstart.toml", [*FALCON, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "falcon lora default": ("recipes/quickstart.toml", [*FALCON, 'peft={method="lora", r=8}']),
    "falcon new lora default": ("recipes/quickstart.toml", [*FALCON, *FALCON_NEW, 'peft={method="lora", r=8}']),
    "olmoe": ("recipes/quickstart.toml", OLMOE),
    "olmoe ckpt": ("recipes/quickstart.toml", [*OLMOE, "model.gradient_checkpointing=true"]),
    "olmoe eager": ("recipes/quickstart.toml", [*OLMOE, 'model.attention="eager"']),
    "olmoe bf16 weights": ("recipes/quickstart.toml", [*OLMOE, 'model.dtype="bfloat16"']),
    "olmoe bf16 autocast": ("recipes/quickstart.toml", [*OLMOE, 'launch.mixed_precision="bf16"']),
    "gpt_oss": ("recipes/quickstart.toml", GPT_OSS),
    "gpt_oss ckpt": ("recipes/quickstart.toml", [*GPT_OSS, "model.gradient_checkpointing=true"]),
    "gpt_oss bf16 weights": ("recipes/quickstart.toml", [*GPT_OSS, 'model.dtype="bfloat16"']),
    "gpt_oss bf16 autocast": ("recipes/quickstart.toml", [*GPT_OSS, 'launch.mixed_precision="bf16"']),
    "gpt_oss full attention": (
        "recipes/quickstart.toml",
        [*GPT_OSS, 'model.config.layer_types=["full_attention", "full_attention", "full_attention"]', "model.config.num_experts_per_tok=4"],
    ),
    "deepseek_v3": ("recipes/quickstart.toml", DEEPSEEK_V3),
    "deepseek_v3 ckpt": ("recipes/quickstart.toml", [*DEEPSEEK_V3, "model.gradient_checkpointing=true"]),
    "deepseek_v3 eager": ("recipes/quickstart.toml", [*DEEPSEEK_V3, 'model.attention="eager"']),
    "deepseek_v3 eager bf16 autocast": ("recipes/quickstart.toml", [*DEEPSEEK_V3, 'model.attention="eager"', 'launch.mixed_precision="bf16"']),
    "deepseek_v3 bf16 weights": ("recipes/quickstart.toml", [*DEEPSEEK_V3, 'model.dtype="bfloat16"']),
    "deepseek_v3 bf16 autocast": ("recipes/quickstart.toml", [*DEEPSEEK_V3, 'launch.mixed_precision="bf16"']),
    "deepseek_v3 v48": ("recipes/quickstart.toml", [*DEEPSEEK_V3, "model.config.v_head_dim=48"]),
    "deepseek_v3 v48 bf16 autocast": ("recipes/quickstart.toml", [*DEEPSEEK_V3, "model.config.v_head_dim=48", 'launch.mixed_precision="bf16"']),
    "deepseek_v3 all moe": (
        "recipes/quickstart.toml",
        [*DEEPSEEK_V3, "model.config.first_k_dense_replace=0", "model.config.norm_topk_prob=false", "model.config.n_shared_experts=2"],
    ),
    **{
        f"{name}{suffix}": ("recipes/quickstart.toml", [*base, *extra])
        for name, base in (("olmo3", OLMO3), ("exaone4", EXAONE4), ("glm4", GLM4))
        for suffix, extra in (
            ("", []),
            (" ckpt", ["model.gradient_checkpointing=true"]),
            (" eager", ['model.attention="eager"']),
            (" bf16 weights", ['model.dtype="bfloat16"']),
            (" bf16 autocast", ['launch.mixed_precision="bf16"']),
        )
    },
    "olmo": ("recipes/quickstart.toml", OLMO),
    "olmo clip_qkv": ("recipes/quickstart.toml", [*OLMO, "model.config.clip_qkv=8.0"]),
    "olmo ckpt": ("recipes/quickstart.toml", [*OLMO, "model.gradient_checkpointing=true"]),
    "olmo bf16 weights": ("recipes/quickstart.toml", [*OLMO, 'model.dtype="bfloat16"']),
    "olmo bf16 autocast": ("recipes/quickstart.toml", [*OLMO, 'launch.mixed_precision="bf16"']),
    "olmo lora r16": ("recipes/quickstart.toml", [*OLMO, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "stablelm": ("recipes/quickstart.toml", STABLELM),
    "stablelm parallel": ("recipes/quickstart.toml", [*STABLELM, *STABLELM_PARALLEL]),
    "stablelm ckpt": ("recipes/quickstart.toml", [*STABLELM, "model.gradient_checkpointing=true"]),
    "stablelm eager": ("recipes/quickstart.toml", [*STABLELM, 'model.attention="eager"']),
    "stablelm bf16 weights": ("recipes/quickstart.toml", [*STABLELM, 'model.dtype="bfloat16"']),
    "stablelm bf16 autocast": ("recipes/quickstart.toml", [*STABLELM, 'launch.mixed_precision="bf16"']),
    "stablelm lora r16": ("recipes/quickstart.toml", [*STABLELM, 'peft={method="lora", r=16, target_modules="all-linear"}']),
    "stablelm lora default": ("recipes/quickstart.toml", [*STABLELM, 'peft={method="lora", r=8}']),
    "stablelm parallel lora": ("recipes/quickstart.toml", [*STABLELM, *STABLELM_PARALLEL, 'peft={method="lora", r=8}']),
}


def _worker(spec: dict) -> None:
    """Train the spec's model for a few steps and print its peak as JSON (runs in a fresh process)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoConfig, AutoModelForCausalLM

    from recipec.runtime import adapters, loss as lm_loss, optimizers, tiled_mlp

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))  # the tests run one per process, a core each
    cuda = spec["device"] == "cuda"
    device = torch.device(spec["device"])

    hooked = {}  # model -> its LastHiddenState, made once as train.py makes it

    def causal_lm_loss(model, x):
        # as train.py's causal_lm_loss: the model's own loss, or with [loss] cross_entropy = "chunked"
        # its last hidden state and the cross-entropy chunk_size supervised tokens at a time
        if spec["chunk_size"] is None and spec["label_smoothing"]:  # as train.py: from the model's logits
            return lm_loss.cross_entropy(model(input_ids=x, use_cache=False).logits, x, spec["label_smoothing"])
        if spec["chunk_size"] is None:
            return model(input_ids=x, labels=x, use_cache=False).loss
        head, softcap, _ = lm_loss.output_head(model)
        if id(model) not in hooked:
            hooked[id(model)] = lm_loss.LastHiddenState(model)
        hidden, _ = hooked[id(model)](model, {"input_ids": x, "labels": x}, use_cache=False)
        return lm_loss.chunked_cross_entropy(hidden, x, head, spec["chunk_size"], softcap, label_smoothing=spec["label_smoothing"])

    def train():
        config = AutoConfig.for_model(spec["init"], **spec["config"], vocab_size=spec["vocab_size"])
        if (config.pad_token_id or 0) >= spec["vocab_size"]:  # train.py sets it from the tokenizer (smollm3's is 128004)
            config.pad_token_id = 0
        model = AutoModelForCausalLM.from_config(
            config, dtype=getattr(torch, spec["dtype"]), attn_implementation=spec["attention"]
        ).to(device)
        if spec["gradient_checkpointing"]:
            model.activation_checkpointing_enable()
            model.config.use_cache = False
        if spec["tiled_mlp"]:  # model.tiled_mlp, as train.py applies it
            tiled_mlp.apply(model, spec["tiled_mlp"])
        model.train()
        if spec["peft"] is not None:
            model = adapters.apply(model, spec["peft"], total_steps=spec["steps"])
            optimizer = adapters.make_optimizer(model, spec["peft"], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        else:
            decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
            no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
            optimizer = torch.optim.AdamW(
                [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3,
                **spec["adamw_implementation"],  # optim.implementation, as the script passes it
            )
        # optim.step_in_backward: each parameter steps (and frees its gradient) inside the backward pass
        in_backward = optimizers.StepInBackward(optimizer) if spec["step_in_backward"] else None
        b, s, accum = spec["micro_batch_size"], spec["seq_len"], spec["grad_accum_steps"]
        mixed = spec["mixed_precision"]
        for _ in range(spec["steps"]):
            for _ in range(accum):
                x = torch.randint(0, spec["vocab_size"], (b, s), device=device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed == "bf16"):
                    loss = causal_lm_loss(model, x) / accum  # as train.py
                loss.backward()
            if in_backward is not None:
                in_backward.finish()
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return model, optimizer  # the optimizer's state stays alive through the evaluation, as in train.py

    def evaluate(model) -> None:
        # as train.py's evaluate(): after an optimizer step (the gradients freed, the optimizer's
        # state kept), one forward of eval_micro_batch_size rows under no_grad, and its loss
        model.eval()
        x = torch.randint(0, spec["vocab_size"], (spec["eval_micro_batch_size"], spec["seq_len"]), device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["mixed_precision"] == "bf16"):
            causal_lm_loss(model, x).float().item()

    result = {}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model, optimizer = train()
        result["peak"] = torch.cuda.max_memory_allocated() - base
        if spec["eval_micro_batch_size"]:
            torch.cuda.reset_peak_memory_stats()
            evaluate(model)
            result["evaluation"] = torch.cuda.max_memory_allocated() - base
    else:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model, optimizer = train()
            if spec["eval_micro_batch_size"]:
                with torch.profiler.record_function("recipec-evaluation"):
                    evaluate(model)
        events = list(prof.profiler.kineto_results.events())
        marks = [e for e in events if e.name() == "recipec-evaluation"]
        start = marks[0].start_ns() if marks else None  # the evaluation's allocations are the ones after its start
        memory = sorted(
            (e.start_ns(), e.nbytes())
            for e in events
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
        live = peak = evaluation = 0
        for at, nbytes in memory:
            live += nbytes
            if start is not None and at >= start:
                evaluation = max(evaluation, live)
            else:
                peak = max(peak, live)
        result["peak"] = peak
        if start is not None:
            result["evaluation"] = evaluation
    print(json.dumps(result))


def _case(recipe: str, overrides: list[str], steps: int, device: str, run=subprocess.run) -> tuple[object, dict]:
    """The recipe's estimate and the peaks `_worker` measures in a process of its own, started by `run` (with
    `subprocess.run`'s arguments)."""
    sys.path.insert(0, str(REPO))
    from recipec.compiler import plan_recipe

    plan, _ = plan_recipe(REPO / recipe, overrides, project=REPO)
    r = plan.recipe
    eval_b = r.train.eval_micro_batch_size  # an evaluation forward where the estimate has one (or says why not)
    spec = {
        "init": r.model.init,
        "config": plan["model_config"],
        "vocab_size": r.tokenizer.train.vocab_size,
        "dtype": r.model.dtype,
        "mixed_precision": r.launch.mixed_precision,
        "gradient_checkpointing": r.model.gradient_checkpointing,
        "attention": r.model.attention,
        "peft": plan.get("peft_spec"),
        "micro_batch_size": r.train.micro_batch_size,
        "seq_len": r.data.seq_len,
        "grad_accum_steps": plan["grad_accum_steps"],
        "eval_micro_batch_size": eval_b if eval_b is not None and eval_b > r.train.micro_batch_size else None,
        "chunk_size": plan.get("chunk_size"),
        "step_in_backward": bool(plan.get("step_in_backward")),
        "label_smoothing": plan.get("label_smoothing") or 0.0,
        "adamw_implementation": plan.get("adamw_implementation") or {},
        "tiled_mlp": (plan.get("tiled_mlp_shards") or -(-r.data.seq_len // plan["model_config"]["hidden_size"])) if plan.get("tiled_mlp") else 0,
        "steps": steps,
        "device": device,
    }
    out = run([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=REPO, check=True, capture_output=True, text=True)
    return plan.memory, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per case (default 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return

    mib = 1024**2
    print(f"{args.steps} optimizer steps per case on {args.device}; MiB; error = (estimate - measured) / measured")
    head = f"{'case':<34} {'params':>7} {'grads':>7} {'optim':>7} {'activ':>7} {'logits':>7} {'estimate':>9} {'measured':>9} {'error':>7}"
    print(head)
    print("-" * len(head))
    errors = []
    evaluations = []
    for name in args.case or CASES:
        recipe, overrides = CASES[name]
        m, measured = _case(recipe, overrides, args.steps, args.device)
        error = (m.per_device - measured["peak"]) / measured["peak"]
        errors.append(abs(error))
        parts = " ".join(f"{getattr(m, k) / mib:7.1f}" for k in ("params", "grads", "optimizer", "activations", "logits"))
        print(
            f"{name:<34} {parts} {m.per_device / mib:9.1f} {measured['peak'] / mib:9.1f} {error:+7.1%}",
            flush=True,
        )
        if "evaluation" in measured:
            evaluations.append((name, m.evaluation, measured["evaluation"]))
    print(f"\nmean |error| {sum(errors) / len(errors):.1%}, max |error| {max(errors):.1%}")
    if evaluations:
        # train.eval_micro_batch_size above micro_batch_size: the peak of one evaluation forward
        # (weights, optimizer state, its logits; no gradients), estimated and measured after the steps
        print("\nevaluation forwards (train.eval_micro_batch_size > micro_batch_size)")
        head = f"{'case':<34} {'estimate':>9} {'measured':>9} {'error':>7}"
        print(head)
        print("-" * len(head))
        for name, estimate, measured in evaluations:
            if estimate is None:  # the chunked cross-entropy's evaluation is not estimated
                print(f"{name:<34} {'-':>9} {measured / mib:9.1f} {'-':>7}")
            else:
                print(f"{name:<34} {estimate / mib:9.1f} {measured / mib:9.1f} {(estimate - measured) / measured:+7.1%}")


if __name__ == "__main__":
    main()
