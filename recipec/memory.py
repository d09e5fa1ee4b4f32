"""Peak memory per device of a training step, from the model's config alone (no torch).

The estimate is the sum of five parts, each in bytes on one device (one process):

* params: every parameter, in `model.dtype` (4 bytes for float32, 2 for bfloat16 and
  float16; a QLoRA base's decoder linears 0.5 or 1 byte plus their quantization scales,
  also in the layer that FSDP or ZeRO-3 gathers). Mixed precision over float32 weights
  (DDP) adds a 16-bit copy of every matmul weight that is not quantized: autocast casts it
  for the forward pass and the backward pass keeps the copy. A quantized weight has no such
  copy: bitsandbytes dequantizes it inside each matmul, and again in the backward pass.
* grads: one gradient per *trainable* parameter, in the parameter's dtype; with PEFT only
  the adapter's parameters (and `modules_to_save`) train. DDP over more than one process
  adds a second copy: the all-reduce buckets. On one process with one micro-batch a step,
  the gradients exist only once the backward pass has freed the activations and the logits,
  beside a checkpointed model's recomputed first layer or AdamW's step temporaries (for-loop:
  twice the largest tensor; foreach: the whole group; fused: none): the part is what they add,
  max(0, grads + max(recomputed layer, temporaries) - activations - logits). With
  `optim.step_in_backward` each is freed as it steps: none at the peak. `model.tiled_mlp`
  takes the MLP's inside out of the activations.
* optimizer: AdamW's two moments per trainable parameter, in the parameter's dtype
  (torch keeps them like the parameter). DeepSpeed with mixed precision holds 16-bit
  parameters and gradients and keeps float32 master weights and moments in the optimizer:
  2 + 2 + 12 bytes per parameter (the ZeRO paper's accounting).
* activations: the tensors the backward pass keeps, counted op by op for a Llama decoder
  layer, per token. RMSNorm computes in float32: it keeps that copy of its input (4h bytes)
  and the normalised value in the residual stream's dtype (`model.dtype`), and the linears
  after it keep its output in the activation dtype (twice per layer, and once for the final
  norm). Under autocast over float32 weights each linear casts the float32 norm output for
  its own matmul and keeps that cast (the casts are not shared): q, k and v keep three, gate
  and up two. Attention keeps the rotated q and k, v and the attention output, which is
  o_proj's input too: the fused kernels lay it out as b x s x heads x head_dim, so
  transformers' transpose and `contiguous()` copy nothing (2 * heads * head_dim + 2 *
  kv_heads * head_dim elements; phi3's q, k and v are slices of one qkv_proj output, which v
  keeps whole, and its output is copied for o_proj: 4 * heads * head_dim + 3 * kv_heads *
  head_dim). The SwiGLU MLP keeps gate, silu(gate), up and their product (4 *
  intermediate). Activation elements are 2 bytes under mixed precision or a 16-bit
  `model.dtype`, else 4; so a float32 layer keeps (6h + 2 a d + 2 g d + 4i) * 4 bytes per
  token. With PEFT the norms and the linears without an adapter are frozen, and a frozen
  weight needs no saved input: a norm keeps no normalised value, its output is kept only
  where a linear that reads it carries an adapter, the final norm's output is not kept
  (lm_head is frozen), and down_proj's input only where it carries an adapter. A LoRA
  adapter keeps lora_A's output, r values a token, for lora_B. The frozen embeddings need no
  gradient, so the first layer keeps nothing before its first adapter: its input norm keeps
  nothing of its own (in phi's and cohere's parallel blocks, an MLP without an adapter
  keeps nothing either). Not counted: DoRA's per-token terms (its magnitude rescaling), the
  first layer's frozen linears whose input needs no gradient (they keep no autocast weight
  copy), and eager attention's first layer where only some of q, k and v carry adapters.
  This is Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", sec. 4.1), whose GPT count sbh(34 + 5as/h) bytes assumes 16-bit values, dropout
  masks and an s x s attention matrix, redone for a Llama layer: no dropout, and a fused
  attention kernel (sdpa, flash) that keeps no s x s matrix; with `model.attention =
  "eager"` each layer also keeps its float32 softmax output, b * heads * s * s values (and
  its 16-bit copy under 16-bit activations), and instead of the fused kernel's tensors q, k
  and v repeated to every query head and o_proj's contiguous input (4 * heads * head_dim
  elements; o_proj's input only where o_proj trains). Its masks (b x s x s in `model.dtype`)
  are added to the scores and not kept, except with checkpointing: a checkpointed layer is
  called again with them, one per kind of layer (full, sliding). With gradient checkpointing
  (or FSDP's activation checkpointing) each layer keeps only its input, sbh values of the
  residual stream (Korthikanti's "full recomputation"), and one layer's full set is rebuilt
  at a time in the backward pass: that happens after the loss's buffers below are freed,
  so it adds only what it exceeds them by.
* logits: b * s * vocab float32 values, three times: the cross-entropy keeps the log
  probabilities, and the start of the backward pass holds the gradient with respect to them
  and the one with respect to the logits. For small models this part dominates. With
  `loss.cross_entropy = "chunked"` only one chunk's logits are alive at a time, in the
  forward and the backward pass alike: min(loss.chunk_size, b * s) * vocab float32 values,
  three times, plus one chunk's gradient of the output projection's weight (vocab * h),
  computed before it is added to the gradient accumulated so far.

The peak is taken as the plain sum: at the start of the backward pass the activations and
the logits are all alive, and with gradient accumulation the gradients of the earlier
micro-batches and the optimizer state are too. Sharding divides what it shards by the
world size it shards over (launch.num_processes, or the processes of one machine for
FSDP's hybrid_shard): ZeRO-1 the optimizer state, ZeRO-2 and FSDP shard_grad_op also the
gradients, ZeRO-3 and FSDP full_shard also the parameters, plus one decoder layer gathered
whole at a time. Offloading to the CPU removes what it offloads from the device. The frozen
copy of a live preference reference (without `[peft]`) is whole on every process under DDP
and ZeRO 1 and 2, and divided as the parameters are under ZeRO-3 and under FSDP (by the
processes it shards over, under shard_grad_op too: the copy runs no backward pass, so its
layers are freed after their forward).

`[launch.parallelism]` divides what each dimension of the device mesh divides: FSDP shards
over its data-parallel and context-parallel ranks (accelerate's `dp_shard_cp`), ZeRO over
every process (with sequence parallelism DeepSpeed partitions over the data-parallel and
sequence-parallel ranks together); tensor parallelism then divides the
parameters, gradients and optimizer state (and the gathered layer) by tp_size, and the
activations by tp_size (an approximation: the residual stream and the norms are not split);
context and sequence parallelism divide the activations and the logits by cp_size x sp_size
(each rank holds its part of the sequence). The logits are not divided by tp_size: the
output projection gathers them whole.

The counts cover Llama-like decoders, gemma, gemma2, gemma3_text, starcoder2, phi, cohere,
gpt2, gpt_neox, falcon, stablelm, olmo3, exaone4, glm4, gpt_oss and deepseek_v3 (described after the others): llama, mistral, qwen2, phi3 (whose fused qkv_proj and
gate_up_proj hold the same weights), qwen3 (whose RMSNorms over each head's queries and keys
keep their float32 input and normalised value), olmo2 (whose norms after the attention and
the MLP and over the whole queries and keys are counted as a Llama layer's two: parameters
exact, activations not), olmo (whose LayerNorms have no weight or bias: each keeps its
float32 input and nothing more; with clip_qkv, q, k and v are clamped in place and autograd
keeps a copy of each from before), smollm3, ministral, helium and ernie4_5 (Llama's layers
under other names: smollm3's layers without rotary positions keep q and k as views of their
projections, as many values as a rotated copy; helium's RMSNorms multiply by their weight in
float32 and cast after, so the normalised value they keep is float32 in a 16-bit model;
ernie4_5's `use_bias` puts a bias on every linear; mistral's and ministral's sliding windows are
on every layer, or ministral's `layer_types`, and smollm3's on the layers without rotary
positions with `use_sliding_window`: their sdpa mask counts as Gemma's), granite (whose embedding, residual, attention and logit
multipliers multiply by a number, which keeps nothing: a Llama layer's tensors, checked one
by one), and the mixture-of-experts mixtral, qwen3_moe, qwen2_moe and olmoe (whose RMSNorms
over the whole q and k projections keep what qwen3's per-head ones keep). An MoE layer
holds `experts` copies of the SwiGLU MLP (each of `intermediate_size`,
`moe_intermediate_size` in qwen3_moe and qwen2_moe) and a
router (h x experts); each token passes through `experts_per_token` of them. transformers
runs the experts through grouped_mm, which autocast does not touch: they compute in the
weights' dtype and have no 16-bit weight copies. Per token and chosen expert they keep the
gathered input, the gate and up output, the activation's output, their product and the
expert's output (kept to weight it), experts_per_token * (4 * intermediate + 2h) values
where a dense layer keeps 4 * intermediate; the router keeps its float32 probabilities
(experts values), each choice's weight and four int64 index tensors (experts_per_token
values each). qwen2_moe adds a shared expert that every token passes through: a SwiGLU MLP
of `shared_expert_intermediate_size`, and its output, kept for its sigmoid gate (a h x 1
linear). PEFT on phi3, on the MoE types and on gpt2 is not counted (their module names and
expert tensors differ from Llama's). olmoe's clip_qkv is refused.

gpt_oss: biased q/k/v/o, a sink per query head, two RMSNorms a layer that multiply by their
weight in float32 (as helium's: the normalised value they keep is float32), and a mixture of
experts whose router (a linear with a bias) softmaxes only its top-k logits and whose experts
hold one fused gate_up_proj (experts x h x 2 intermediate, gate and up interleaved) and a
down_proj, each with a bias per expert. Per token and chosen expert the grouped_mm experts keep
the gathered input, gate_up_proj's output (which the clamps of its gate and up halves keep),
the clamped gate, its sigmoid, up + 1, their product, down_proj's input and the expert's
output: experts_per_token * (2h + 7 * intermediate) values in the weights' dtype; the router
its top-k softmax and each choice's gathered weight (in its output dtype) and five int64 index
tensors, experts_per_token values each. transformers builds it without sdpa: with eager
attention the sinks are appended to the scores as one more column, softmaxed in model.dtype
(the mask and the sinks are in it), after the max is subtracted (its backward keeps int64
indices, one a head and query); under autocast over float32 weights the probabilities are
float32 and their 16-bit copy is kept for the matmul with v. Every second layer (by default) is
a sliding-window layer, which changes nothing kept under eager attention but the masks a
checkpointed layer is called again with. Its attention_dropout is refused, and so is PEFT.

deepseek_v3: multi-head latent attention and, after `first_k_dense_replace` dense layers (a SwiGLU MLP of
intermediate_size), MoE layers. q comes from q_a_proj, an RMSNorm over its q_lora_rank values (q_a_layernorm) and
q_b_proj (or one q_proj without q_lora_rank), k and v from kv_a_proj_with_mqa (kv_lora_rank latent values and one
rotary key head that every head shares), an RMSNorm over the latent (kv_a_layernorm) and kv_b_proj (each head's
unrotated key and its value); q and k heads are qk_nope_head_dim + qk_rope_head_dim wide, v heads v_head_dim.
Each latent norm keeps its float32 input (in float32, a view that keeps kv_a_proj_with_mqa's rotary key too), its
normalised value and its output (in the projection's output dtype). sdpa keeps q (its unrotated and rotated parts
concatenated), k (a new tensor), v (a view of kv_b_proj's output, which it keeps whole), its output and o_proj's
copy of it (laid out heads-first, as q is); but the CPU's fused kernel takes one head dim, so with v heads narrower
than q's and k's (DeepSeek-V3's 128 and 192) sdpa runs its math path on the CPU: q and k scaled and v, in float32,
o_proj's input and the float32 probabilities (b * heads * s * s a layer). Eager attention keeps q, k's and v's
copies for its matmuls, o_proj's contiguous input and Llama's probabilities. An MoE layer holds the router (`gate`,
an experts x h weight kept in float32 and a float32 e_score_correction_bias buffer), n_routed_experts grouped_mm
experts of moe_intermediate_size (one gate_up_proj and one down_proj tensor) and the shared experts, one SwiGLU MLP
of n_shared_experts x moe_intermediate_size that every token passes through. The experts keep what the other MoE
types' keep; the router computes its sigmoid scores in float32 (under autocast its linear runs in 16 bits; a 16-bit
model's router casts its input to float32 and keeps the copy) and keeps them, each choice's weight, with
norm_topk_prob a copy of the weights and their sum (divided in place), and four int64 index tensors; the grouped
top-k choice (n_group groups, the topk_group best by their two best scores plus the correction bias) keeps nothing
past the forward pass. A checkpointed model recomputes one layer at a time: the larger kind's set is counted, and
FSDP or ZeRO-3 gathers the larger kind of layer. Not counted: the router weights' 2 more bytes each under a 16-bit
model.dtype (experts x h a MoE layer), the correction bias and the rotary cos and sin (s * qk_rope_head_dim values,
shared by the layers). Its attention_dropout and num_key_value_heads other than num_attention_heads (which its
attention cannot run) are refused, and so are PEFT and model.tiled_mlp; its multi-token prediction layers
(num_nextn_predict_layers) are not built by transformers, and a released checkpoint's fp8 quantization_config is
not read (the weights are counted in model.dtype). The fused kernel on a GPU is counted, not measured.

olmo3, exaone4 and glm4: RMSNorms over the attention's and the MLP's outputs, before they join
the residual stream (each keeps its float32 input and its normalised value, float32 in olmo3,
whose norms multiply by their weight in float32, and in the projection's output dtype in the
others; nothing of its output is kept); olmo3 and exaone4 have no norm before them, so q/k/v
and gate/up read the residual stream and keep it (one cast each under autocast), and their q
and k norms (olmo3's over the whole projections, exaone4's per head) keep their float32 input
and normalised value. glm4 has Llama's two norms too (four a layer), q/k/v biases, one
gate_up_proj, and rotates half of each head, concatenated with the rest heads-first, so sdpa's
output is copied for o_proj (as phi's). olmo3's and exaone4's sliding-window layers (three in
four by default, or `layer_types`) count the sdpa mask as Gemma's do; exaone4's full layers have
no rotary positions (q and k come from their norms: as many values). PEFT and model.tiled_mlp
on them are not counted.

gemma, gemma2 and gemma3_text (the tensors read off transformers' Gemma modules): two
RMSNorms a layer in gemma, four in gemma2 and gemma3_text (before and after the attention
and the MLP) and, in gemma3_text, RMSNorms over the queries and keys, each computing in
float32 and keeping its float32 input and, for a trainable weight, its float32 normalised
value; GeGLU keeps what SwiGLU keeps; the linears after a norm and the attention keep what a
Llama layer's keep. Under sdpa a sliding-window layer whose window is shorter than the
sequence attends through a mask: transformers' b x s x s booleans (one for all such layers;
a checkpointed layer is called again with it, so it stays), which sdpa copies into the
activation dtype and keeps, in every such layer; and with a mask transformers repeats k and
v to every query head. gemma2's soft-capping: with attn_logit_softcapping the eager
attention keeps the tanh of the scaled scores (b * heads * s * s in the activation dtype, a
layer), with final_logit_softcapping the loss keeps the tanh of the logits (b * s * vocab in
the activation dtype) besides its three float32 copies. transformers builds gemma2 without
sdpa (eager, flash or flex attention), so `model.attention = "sdpa"` gets no estimate; its
sliding layers change nothing kept under eager or a flash kernel. Tied embeddings and
head_dim are the config's; gemma3_text's soft-capping is refused.

starcoder2: a Llama-like attention with biases (use_bias), two LayerNorms a layer and a
final one (each keeps its input, and the linears after it its output), a gelu MLP without a
gate (c_fc's output, kept by the activation, and the activation's output, c_proj's input),
every layer in the sliding window when `sliding_window` is set (the sdpa mask as for Gemma),
and gpt2's dropouts: a mask after o_proj and after c_proj (residual_dropout) and on the
embeddings (embedding_dropout, in the residual stream's dtype on the CPU). Its attention
dropout on the CPU sends sdpa down its math path: q scaled, k and v repeated to every query
head, all in float32, o_proj's copied input and three float32 b * heads * s * s tensors (the
probabilities, the noise, the dropped-out probabilities), and no mask kept; eager
attention keeps the noise and the dropped-out probabilities instead of the probabilities'
16-bit copy. The released configs set all three dropouts to 0.1.

phi (phi-1, phi-1.5, phi-2): one LayerNorm a layer, whose output q, k, v and fc1 read side
by side (the attention and the gelu MLP run in parallel), biases on every linear and on
lm_head, and gpt2's dropout names (resid_pdrop after the attention and after the MLP,
embd_pdrop, attention_dropout, counted as starcoder2's). Only part of each head is rotated,
and the rotated q is a concatenation laid out heads-first, so sdpa's output is laid out so
too and copied for `dense` (3 * heads * head_dim + 2 * kv_heads * head_dim); fc1's output,
what gelu_new keeps and its output. qk_layernorm's LayerNorms keep their input and a
float32 mean and 1/std per head.

cohere (Command R): one LayerNorm a layer without a bias, computed in float32 by hand: it
keeps x - mean twice (for the variance and for the normalisation) and, for a trainable
weight, the normalised value (12h bytes; 8h frozen), and q, k, v, gate and up read its
output side by side; use_qk_norm's norms over each head keep as much, and a float32 1/std
per head. The rotary embedding computes in float32 and casts back; the logits are scaled by
logit_scale (a number: nothing kept). Tied embeddings by default.

gpt2: learned position embeddings, LayerNorms with biases (each keeps its input, the
Conv1D after it that output), c_attn's output holds q, k and v, and gelu_new, written in
tensor ops, keeps its input, 0.5 x, tanh(...) and 1 + tanh(...) besides its output. Its
dropouts (0.1 by default) keep a mask per element: one byte on a GPU, the activation's
dtype on the CPU (torch's CPU dropout multiplies by a noise tensor). With attention dropout
on the CPU (`launch.cpu`) sdpa has no fused kernel and runs its math path in float32: q, k
and v, and three b * heads * s * s tensors (the probabilities, the noise, the dropped-out
probabilities); eager attention keeps the probabilities in the activation dtype, and with
dropout the noise and the dropped-out copy. For both, the attention output is the output
projection's input too, as for Llama.

gpt_neox (Pythia, GPT-NeoX-20B) and falcon: q, k and v come out of one query_key_value
linear (gpt_neox: 3h wide, with attention_bias; falcon: heads + 2 key/value heads of
head_dim, where the key/value heads are one with multi_query, num_kv_heads with
new_decoder_architecture, and one per query head otherwise; `bias` on every linear), then
`dense`, and a gelu MLP (dense_h_to_4h, dense_4h_to_h; gpt_neox's with biases). Their
LayerNorms keep their input (one tensor where two read the residual stream side by side:
gpt_neox's use_parallel_residual, falcon's new_decoder_architecture with ln_attn and ln_mlp),
and the linears after them their output (q/k/v and the MLP side by side after falcon's one
input_layernorm with parallel_attn). Under sdpa the rotated q and k are new tensors and v is
a view of query_key_value's output that keeps all of it alive; gpt_neox concatenates each
head's rotated part with the rest, laid out heads-first, so sdpa's output is too and is
copied for `dense` (as phi's: 4 q + 3 kv values with q = kv); falcon's rotated q keeps
the b x s x heads layout and `dense` reads sdpa's output as it is. falcon materialises its
causal mask whatever the attention (to add alibi to it): sdpa keeps a float copy of it in
every layer (s values a token, in the activation dtype), a checkpointed layer is called
again with the boolean mask, and with it transformers repeats k and v to every query head
(copies with several key/value heads; views with one, where autocast's cast of the
repeated k is the copy). Eager attention keeps what a Llama layer's does. Their dropouts
(hidden_dropout, attention_dropout) and falcon's alibi are refused; so is
new_decoder_architecture without parallel_attn, for which transformers' layer has no
forward pass. In transformers 5 gpt_neox's output projection is named lm_head (embed_out
before).

stablelm: LayerNorms with biases (two a layer, or one that the attention and the SwiGLU MLP
read side by side with use_parallel_residual), each keeping its input and the linears after
it its output; part of each head is rotated and concatenated with the rest, so sdpa's
output is copied for o_proj (as phi's); qk_layernorm's LayerNorms per head (a weight each)
keep their input, q_proj's and k_proj's output, and a float32 mean and 1/std per head.
Its dropouts are refused.

Not counted: the CUDA context and the kernels' workspaces (hundreds of MiB on a GPU), the
allocator's fragmentation and caching, optimizer-step temporaries, eval, EMA/merge copies
(kept in CPU memory), the Llama-likes' attention dropout, the float32 mean and 1/std of the
norms over the residual stream and sdpa's log-sum-exp (a few values a token and head), and
every other architecture (bloom, mpt, ...): for those there is no estimate, and explain says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import model_types
from .runtime.checkpoint import FLAT_STATE_BYTES, OPTIMIZER_STATE
from .runtime.preference import UNPAIRED
from .schema import Recipe

GIB = 1024**3
MIB = 1024**2

ARCHITECTURES = (
    "llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3", "mixtral", "qwen3_moe", "gemma3_text", "gpt2", "gemma2", "gemma",
    "qwen2_moe", "granite", "starcoder2", "phi", "cohere", "gpt_neox", "falcon", "olmoe", "olmo", "stablelm",
    "smollm3", "ministral", "helium", "ernie4_5", "gpt_oss", "olmo3", "glm4", "exaone4", "deepseek_v3",
)
"""`model_type`s whose layers the parameter and activation counts describe."""

PEFT_ARCHITECTURES = (
    "llama", "mistral", "qwen2", "qwen3", "olmo2", "gemma3_text", "gemma2", "gemma", "granite", "starcoder2", "phi", "cohere",
    "gpt_neox", "falcon", "olmo", "stablelm", "smollm3", "ministral", "helium", "ernie4_5",
)
"""The ones whose PEFT targets (module names, peft's default targets) the adapter count knows."""

PEFT_DEFAULT_TARGETS = {
    **{t: ["q_proj", "v_proj"] for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")},
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "gpt_neox": ["query_key_value"],
    "falcon": ["query_key_value"],
    "stablelm": ["q_proj", "v_proj"],
}
"""peft's default `target_modules` by model type (its LoRA table, which LoHa, LoKr, OFT and BOFT
copy); a type without one, and IA3 (whose defaults peft's tuner does not expose), need
`peft.target_modules`, as recipec's adapters require."""

MODULE_NAMES = {
    "gpt_neox": ("gpt_neox.layers.0", "attention", "embed_in", "lm_head"),
    "falcon": ("transformer.h.0", "self_attention", "word_embeddings", "lm_head"),
}
"""Module paths PEFT matches its names against, where they are not a Llama's ("model.layers.0",
"self_attn", "embed_tokens", "lm_head"): the first layer, its attention, the input embeddings and
the output projection."""

IA3_FEEDFORWARD = {"gpt_neox": ["dense_4h_to_h"], "falcon": ["dense_4h_to_h"]}
"""peft's IA3 feedforward modules by model type, where they are not a Llama's down_proj."""

CLASS_DEFAULTS = (
    "gpt2", "gemma3_text", "gemma2", "gemma", "qwen2_moe", "granite", "starcoder2", "phi", "cohere", "gpt_neox", "falcon", "olmoe",
    "olmo", "stablelm", "smollm3", "ministral", "helium", "ernie4_5", "gpt_oss", "olmo3", "glm4", "exaone4", "deepseek_v3",
)
"""Types whose config.json may leave keys at the config class's defaults (recipec/model_types.json)."""

FLOAT32_WEIGHTED_NORMS = ("helium", "gpt_oss", "olmo3")
"""Types whose RMSNorm multiplies the float32 normalised value by its weight in float32 and casts after
(Llama's casts first): the value kept for the weight's gradient is float32 in any dtype."""

GEMMA = ("gemma", "gemma2", "gemma3_text")
"""Gemma's layers: RMSNorms that compute and keep their values in float32, GeGLU."""

SANDWICH = ("gemma2", "gemma3_text")
"""Four norms a layer: one before and one after the attention and the MLP."""

POST_NORMS = ("olmo3", "exaone4", "glm4")
"""Types with RMSNorms over the attention's and the MLP's outputs, before they join the residual stream: in
place of Llama's two before them (olmo3, exaone4, whose q/k/v and gate/up read the residual stream itself), or
besides them (glm4: four a layer)."""

FUSED_ONLY = ("gemma2", "gpt_oss")
"""Types transformers builds without sdpa (`_supports_sdpa = False`: gemma2, for its soft-capping; gpt_oss,
for its attention sinks)."""

LAYER_NORM = ("gpt2", "starcoder2", "phi", "gpt_neox", "falcon", "stablelm")
"""Types whose norms are torch's LayerNorm (a weight and a bias; it keeps its input, and the
linears after it its output)."""

MLP_LINEARS = ("gate_proj", "up_proj", "gate_up_proj", "down_proj", "c_fc", "c_proj", "fc1", "fc2", "dense_h_to_4h", "dense_4h_to_h")
"""A decoder layer's MLP linears (module path `mlp.`); the rest are the attention's (`self_attn.`)."""

FUSED_QKV = ("gpt_neox", "falcon")
"""Types whose q, k and v come from one linear (query_key_value), followed by `dense`, and whose
gelu MLP is dense_h_to_4h and dense_4h_to_h; LayerNorms, and the attention and the MLP side by
side or one after the other as the config says."""

PARALLEL = ("phi", "cohere")
"""Types whose attention and MLP read the same norm's output, side by side: one norm a layer."""

ACTIVATION_KEPT = {"silu": 1, "gelu": 1, "gelu_pytorch_tanh": 1, "gelu_new": 4}
"""Tensors of the MLP's width an activation keeps for the backward pass, besides its output:
a fused kernel its input; transformers' gelu_new, written in tensor ops, its input, 0.5 x,
tanh(...) and 1 + tanh(...)."""

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANTIZED_BYTES = {"4bit": 0.5 + 4 / 64, "8bit": 1 + 4 / 4096}
"""Bytes per quantized weight: nf4 with a float32 absmax per 64 weights; int8 with a row scale (rows of 4096)."""

LOGIT_COPIES = 3
"""float32 b x s x vocab tensors alive at the start of the backward pass (see the module docstring)."""

LAYER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _inputs_kept(readers: tuple[str, ...], adapted: frozenset[str] | None, act_bytes: int, residual_bytes: int) -> int:
    """Bytes per element of a norm's output that the linears reading it keep for their weights'
    gradients (or their adapters'): one copy in the activation dtype, or one per linear where
    autocast casts a float32 norm output for each matmul (the casts are not shared); none when
    every reader is frozen."""
    training = sum(adapted is None or name in adapted for name in readers)
    if not training:
        return 0
    return act_bytes * (training if act_bytes < residual_bytes else 1)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that memory depends on, and what its layers are made of."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: int = 0
    """Parameters of one layer's RMSNorms over the queries and keys (qwen3, olmo2)."""
    experts: int = 0
    """MLP experts per layer (0: a dense MLP); intermediate_size is then one expert's."""
    experts_per_token: int = 0
    shared_expert_size: int = 0
    """qwen2_moe's shared expert: a SwiGLU MLP of this width beside the routed experts (0: none)."""
    positions: int = 0
    """Learned position embeddings (gpt2's n_positions; 0: rotary, none to learn)."""
    activation: str = "silu"
    residual_dropout: float = 0.0
    """The dropout after the attention's and the MLP's output projections (gpt2's and phi's
    resid_pdrop, starcoder2's residual_dropout)."""
    embedding_dropout: float = 0.0
    """The dropout on the embeddings (gpt2's and phi's embd_pdrop, starcoder2's embedding_dropout)."""
    attention_dropout: float = 0.0
    """The dropout on the attention probabilities (gpt2's attn_pdrop; starcoder2's and phi's
    attention_dropout; the Llama-likes' is not read)."""
    sliding_window: int = 0
    sliding_layers: int = 0
    """The layers that attend over the last `sliding_window` tokens only (gemma2, gemma3_text,
    starcoder2, qwen2_moe)."""
    head_bias: bool = False
    """phi's lm_head has a bias (vocab_size values)."""
    attention_softcap: bool = False
    """gemma2's attention logits soft-capped (attn_logit_softcapping): eager attention keeps the tanh output too."""
    logit_softcap: bool = False
    """gemma2's output logits soft-capped (final_logit_softcapping): the loss keeps the tanh output too."""
    parallel: bool = False
    """gpt_neox's and falcon's attention and MLP read the same residual stream side by side
    (use_parallel_residual; parallel_attn or new_decoder_architecture)."""
    clip_qkv: bool = False
    """olmo's clip_qkv: q, k and v clamped in place, which keeps a copy of each for the backward pass."""
    dense_layers: int = 0
    """deepseek_v3's first_k_dense_replace: its first layers hold a dense SwiGLU MLP of `dense_intermediate_size`
    in place of the experts (the rest are MoE layers)."""
    dense_intermediate_size: int = 0
    q_lora_rank: int = 0
    """deepseek_v3's multi-head latent attention: q_a_proj's width (0: one q_proj), kv_a_proj_with_mqa's latent
    width (kv_lora_rank, beside the shared rotary key), the rotary part of each q and k head and the value head dim
    (`head_dim` is q's and k's whole head, qk_nope_head_dim + qk_rope_head_dim)."""
    kv_lora_rank: int = 0
    rope_head_dim: int = 0
    v_head_dim: int = 0
    norm_topk_prob: bool = False
    """deepseek_v3's router divides each token's chosen weights by their sum (which keeps a copy of them and the sum)."""
    norms: int = 2
    """LayerNorms a layer in gpt_neox, falcon and stablelm (one where stablelm's attention and MLP read
    it side by side); in gpt_neox and falcon: two (input_layernorm and post_attention_layernorm,
    or falcon's ln_attn and ln_mlp), or falcon's one input_layernorm that both halves read."""
    model_type: str = "llama"

    @classmethod
    def from_config(cls, config: dict[str, Any], model_type: str, vocab_size: int | None = None) -> ModelShape:
        """The shape of a transformers config dict (config.json, or `[model.config]`).

        Raises:
            ValueError: the architecture is not one the estimate counts, or a size is missing.
        """
        if model_type not in ARCHITECTURES:
            raise ValueError(
                f"the estimate does not cover model type {model_type!r}; it counts {', '.join(ARCHITECTURES)}"
            )
        if model_type in CLASS_DEFAULTS:  # their config.json leaves keys at the config class's defaults
            config = {**model_types.model_types()[model_type]["keys"], **config}
        try:
            if model_type == "gpt2":
                return cls._gpt2(config, vocab_size)
            if model_type == "starcoder2":
                return cls._starcoder2(config, vocab_size)
            if model_type == "phi":
                return cls._phi(config, vocab_size)
            if model_type == "gpt_neox":
                return cls._gpt_neox(config, vocab_size)
            if model_type == "falcon":
                return cls._falcon(config, vocab_size)
            if model_type == "stablelm":
                return cls._stablelm(config, vocab_size)
            h = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            vocab = int(vocab_size if vocab_size is not None else config["vocab_size"])
            kv_heads = int(config.get("num_key_value_heads") or heads)
            head_dim = int(config.get("head_dim") or h // heads)
            intermediate, experts, per_token = int(config["intermediate_size"]), 0, 0
            if model_type == "mixtral":
                experts, per_token = int(config["num_local_experts"]), int(config["num_experts_per_tok"])
            elif model_type == "olmoe":
                # its config class reads num_local_experts as num_experts (its attribute_map)
                experts = int(config["num_experts"] if "num_experts" in config else config["num_local_experts"])
                per_token = int(config["num_experts_per_tok"])
                if config.get("clip_qkv") is not None:
                    raise ValueError("the estimate does not cover olmoe with clip_qkv")
            elif model_type in ("qwen3_moe", "qwen2_moe"):
                # transformers 5 writes qwen3_moe's num_experts as num_local_experts (its attribute_map)
                experts = int(config["num_experts"] if "num_experts" in config else config["num_local_experts"])
                if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step", 1)) != 1 or not experts:
                    dense = "mlp_only_layers, decoder_sparse_step, num_experts 0"
                    raise ValueError(f"the estimate does not cover {model_type} with dense layers ({dense})")
                per_token = int(config["num_experts_per_tok"])
                intermediate = int(config["moe_intermediate_size"])
            elif model_type == "gpt_oss":
                # its config class reads num_experts as num_local_experts (its attribute_map)
                experts = int(config["num_experts"] if "num_experts" in config else config["num_local_experts"])
                per_token = int(config["num_experts_per_tok"])
                if float(config.get("attention_dropout") or 0.0) > 0:
                    raise ValueError("the estimate does not cover gpt_oss with attention_dropout")
            latent: dict[str, Any] = {}
            shared = int(config["shared_expert_intermediate_size"]) if model_type == "qwen2_moe" else 0
            if model_type == "deepseek_v3":
                # its config class reads num_local_experts as n_routed_experts (its attribute_map)
                experts = int(config["num_local_experts"] if "num_local_experts" in config else config["n_routed_experts"])
                per_token, intermediate = int(config["num_experts_per_tok"]), int(config["moe_intermediate_size"])
                shared = intermediate * int(config["n_shared_experts"])
                if float(config.get("attention_dropout") or 0.0) > 0:
                    raise ValueError("the estimate does not cover deepseek_v3 with attention_dropout")
                if kv_heads != heads:  # kv_b_proj makes a key and a value head per query head, which its attention repeats again
                    raise ValueError("the estimate does not cover deepseek_v3 with num_key_value_heads other than num_attention_heads")
                rope = int(config["qk_rope_head_dim"])
                head_dim = int(config["qk_nope_head_dim"]) + rope
                latent = {
                    "dense_layers": min(int(config["first_k_dense_replace"] or 0), int(config["num_hidden_layers"])),
                    "dense_intermediate_size": int(config["intermediate_size"]),
                    "q_lora_rank": int(config.get("q_lora_rank") or 0),
                    "kv_lora_rank": int(config["kv_lora_rank"]),
                    "rope_head_dim": rope,
                    "v_head_dim": int(config["v_head_dim"]),
                    "norm_topk_prob": bool(config["norm_topk_prob"]),
                }
            activation = "silu"  # the Llama-likes' SwiGLU; Gemma's GeGLU keeps as much
            window = sliding = 0
            softcaps = {k: config.get(k) is not None for k in ("final_logit_softcapping", "attn_logit_softcapping")}
            if model_type == "gemma3_text" and any(softcaps.values()):
                capped = " or ".join(k for k, v in softcaps.items() if v)
                raise ValueError(f"the estimate does not cover gemma3_text with {capped}")
            if model_type in ("gemma2", "gemma3_text"):
                activation = str(config["hidden_activation"])
                layers = int(config["num_hidden_layers"])
                every = 2 if model_type == "gemma2" else 6  # transformers' default: every second (sixth) layer attends to all
                types = config.get("layer_types") or [(n + 1) % every != 0 for n in range(layers)]
                sliding, window = sum(t is True or t == "sliding_attention" for t in types), int(config["sliding_window"])
            if model_type == "gpt_oss":  # transformers' default: every second layer (the first, third, ...) in the window
                layers = int(config["num_hidden_layers"])
                types = config.get("layer_types") or ["sliding_attention" if (n + 1) % 2 else "full_attention" for n in range(layers)]
                sliding, window = sum(t == "sliding_attention" for t in types), int(config.get("sliding_window") or 0)
            if model_type in ("olmo3", "exaone4"):
                layers, window = int(config["num_hidden_layers"]), int(config.get("sliding_window") or 0)
                if model_type == "olmo3":  # transformers' default: three layers in four in the window, the fourth not
                    every = [(n + 1) % 4 != 0 for n in range(layers)]
                else:  # exaone4: sliding_window_pattern - 1 layers in the window, then one not (none without a window)
                    pattern = int(config.get("sliding_window_pattern") or 0) if window else 0
                    every = [bool(pattern) and (n + 1) % pattern != 0 for n in range(layers)]
                types = config.get("layer_types") or every
                sliding = sum(t is True or t == "sliding_attention" for t in types) if window else 0
            if model_type == "qwen2_moe" and config.get("use_sliding_window"):
                layers = int(config["num_hidden_layers"])
                every = [n % 2 == 0 and n < int(config["max_window_layers"]) for n in range(layers)]  # transformers' default
                types = config.get("layer_types") or every
                sliding, window = sum(t is True or t == "sliding_attention" for t in types), int(config["sliding_window"])
            if model_type in ("mistral", "ministral", "smollm3") and config.get("sliding_window") is not None:
                layers = int(config["num_hidden_layers"])
                if model_type == "smollm3":  # transformers' default: a window on the layers without rotary positions
                    interval = int(config.get("no_rope_layer_interval") or 4)
                    rope = config.get("no_rope_layers") or [int((n + 1) % interval != 0) for n in range(layers)]
                    every = [bool(config.get("use_sliding_window")) and not rope[n] for n in range(layers)]
                else:  # mistral's every layer; ministral's too unless its layer_types say otherwise
                    every = [True] * layers
                types = (config.get("layer_types") if model_type != "mistral" else None) or every
                sliding, window = sum(t is True or t == "sliding_attention" for t in types), int(config["sliding_window"])
            if model_type == "gemma":  # GemmaConfig reads a legacy "gelu" as the tanh approximation
                activation = "gelu_pytorch_tanh" if config["hidden_act"] == "gelu" else str(config["hidden_act"])
            if activation not in ACTIVATION_KEPT:
                raise ValueError(f"the estimate does not cover the activation {activation!r}")
            every_bias = model_type == "ernie4_5" and bool(config.get("use_bias"))  # every linear of its layers
            qk_norm = {
                "qwen3": 2 * head_dim,
                "qwen3_moe": 2 * head_dim,
                "olmo2": (heads + kv_heads) * head_dim,
                "olmoe": h + h // heads * kv_heads,  # RMSNorms over the whole q (hidden_size) and k projections
                "gemma3_text": 2 * head_dim,
                "cohere": (heads + kv_heads) * head_dim if config.get("use_qk_norm") else 0,
                "olmo3": (heads + kv_heads) * head_dim,  # RMSNorms over the whole q and k projections
                "exaone4": 2 * head_dim,  # RMSNorms over each head's q and k
                "deepseek_v3": latent.get("q_lora_rank", 0) + latent.get("kv_lora_rank", 0),  # q_a_layernorm, kv_a_layernorm
            }
            return cls(
                hidden_size=h,
                intermediate_size=intermediate,
                num_hidden_layers=int(config["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                vocab_size=vocab,
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", config.get("qkv_bias", False))) or every_bias,
                o_bias=model_type not in ("qwen2", "helium", "glm4") and bool(config.get("attention_bias", False)) or every_bias,
                mlp_bias=bool(config.get("mlp_bias", False)) or every_bias,
                qk_norm=qk_norm.get(model_type, 0),
                clip_qkv=model_type == "olmo" and config.get("clip_qkv") is not None,
                experts=experts,
                experts_per_token=per_token,
                shared_expert_size=shared,
                activation=activation,
                sliding_window=window,
                sliding_layers=sliding,
                attention_softcap=model_type == "gemma2" and softcaps["attn_logit_softcapping"],
                logit_softcap=model_type == "gemma2" and softcaps["final_logit_softcapping"],
                model_type=model_type,
                **latent,
            )
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            raise ValueError(f"the model's config.json has no usable {exc}") from None

    @classmethod
    def _gpt2(cls, config: dict[str, Any], vocab_size: int | None) -> ModelShape:
        """The shape of a gpt2 config: its own key names, fused qkv (c_attn), biases everywhere."""
        if config.get("add_cross_attention"):
            raise ValueError("the estimate does not cover gpt2 with add_cross_attention")
        activation = str(config["activation_function"])
        if activation not in ACTIVATION_KEPT:
            raise ValueError(f"the estimate does not cover the activation {activation!r}")
        h, heads = int(config["n_embd"]), int(config["n_head"])
        return cls(
            hidden_size=h,
            intermediate_size=int(config.get("n_inner") or 4 * h),
            num_hidden_layers=int(config["n_layer"]),
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=h // heads,
            vocab_size=int(vocab_size if vocab_size is not None else config["vocab_size"]),
            tie_word_embeddings=bool(config["tie_word_embeddings"]),
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            positions=int(config["n_positions"]),
            activation=activation,
            residual_dropout=float(config["resid_pdrop"]),
            embedding_dropout=float(config["embd_pdrop"]),
            attention_dropout=float(config["attn_pdrop"]),
            model_type="gpt2",
        )

    @classmethod
    def _starcoder2(cls, config: dict[str, Any], vocab_size: int | None) -> ModelShape:
        """The shape of a starcoder2 config: LayerNorms, biases on every linear (use_bias), a gelu
        MLP without a gate (c_fc, c_proj), dropouts, and every layer in a sliding window when
        `sliding_window` is set."""
        h, heads, layers = int(config["hidden_size"]), int(config["num_attention_heads"]), int(config["num_hidden_layers"])
        activation, window = str(config["hidden_act"]), int(config.get("sliding_window") or 0)
        if activation not in ACTIVATION_KEPT:
            raise ValueError(f"the estimate does not cover the activation {activation!r}")
        return cls(
            hidden_size=h,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or h // heads),
            vocab_size=int(vocab_size if vocab_size is not None else config["vocab_size"]),
            tie_word_embeddings=bool(config["tie_word_embeddings"]),
            qkv_bias=bool(config["use_bias"]),
            o_bias=bool(config["use_bias"]),
            mlp_bias=bool(config["use_bias"]),
            activation=activation,
            residual_dropout=float(config["residual_dropout"]),
            embedding_dropout=float(config["embedding_dropout"]),
            attention_dropout=float(config["attention_dropout"]),
            sliding_window=window,
            sliding_layers=layers if window else 0,
            model_type="starcoder2",
        )

    @classmethod
    def _phi(cls, config: dict[str, Any], vocab_size: int | None) -> ModelShape:
        """The shape of a phi config (phi-1, phi-1.5, phi-2): attention and a gelu MLP in parallel
        after one LayerNorm, biases on every linear and on lm_head, gpt2's dropout names."""
        h, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        activation = str(config["hidden_act"])
        if activation not in ACTIVATION_KEPT:
            raise ValueError(f"the estimate does not cover the activation {activation!r}")
        return cls(
            hidden_size=h,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or h // heads),
            vocab_size=int(vocab_size if vocab_size is not None else config["vocab_size"]),
            tie_word_embeddings=bool(config["tie_word_embeddings"]),
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            qk_norm=4 * (h // heads) if config.get("qk_layernorm") else 0,  # LayerNorms over h // heads, weight and bias
            head_bias=True,
            activation=activation,
            residual_dropout=float(config["resid_pdrop"]),
            embedding_dropout=float(config["embd_pdrop"]),
            attention_dropout=float(config["attention_dropout"]),
            model_type="phi",
        )

    @classmethod
    def _stablelm(cls, config: dict[str, Any], vocab_size: int | None) -> ModelShape:
        """The shape of a stablelm config: LayerNorms with biases (one a layer, read side by side by
        the attention and the SwiGLU MLP, with use_parallel_residual), part of each head rotated,
        q/k/v biases with use_qkv_bias, qk_layernorm's LayerNorms per head (weights only)."""
        cls._refuse_dropout(config, "stablelm")
        h, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        activation = str(config["hidden_act"])
        if activation not in ACTIVATION_KEPT:
            raise ValueError(f"the estimate does not cover the activation {activation!r}")
        parallel = bool(config["use_parallel_residual"])
        return cls(
            hidden_size=h,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=h // heads,
            vocab_size=int(vocab_size if vocab_size is not None else config["vocab_size"]),
            tie_word_embeddings=bool(config["tie_word_embeddings"]),
            qkv_bias=bool(config["use_qkv_bias"]),
            qk_norm=(heads + kv_heads) * (h // heads) if config.get("qk_layernorm") else 0,
            activation=activation,
            parallel=parallel,
            norms=1 if parallel else 2,
            model_type="stablelm",
        )

    @staticmethod
    def _refuse_dropout(config: dict[str, Any], model_type: str) -> None:
        """gpt_neox's, falcon's and stablelm's dropouts are not counted: refuse a config that sets one."""
        set_ = [k for k in ("hidden_dropout", "attention_dropout") if float(config.get(k) or 0.0) > 0]
        if set_:
            raise ValueError(f"the estimate does not cover {model_type} with {' or '.join(set_)}")

    @classmethod
    def _gpt_neox(cls, config: dict[str, Any], vocab_size: int | None) -> ModelShape:
        """The shape of a gpt_neox config (Pythia, GPT-NeoX-20B): a fused query_key_value, two
        LayerNorms a layer (side by side with use_parallel_residual), a gelu MLP with biases,
        attention_bias on query_key_value and dense, an untied embed_out by default."""
        cls._refuse_dropout(config, "gpt_neox")
        h, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        activation = str(config["hidden_act"])
        if activation not in ACTIVATION_KEPT:
            raise ValueError(f"the estimate does not cover the activation {activation!r}")
        return cls(
            hidden_size=h,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=h // heads,
            vocab_size=int(vocab_size if vocab_size is not None else config["vocab_size"]),
            tie_word_embeddings=bool(config["tie_word_embeddings"]),
            qkv_bias=bool(config["attention_bias"]),
            o_bias=bool(config["attention_bias"]),
            mlp_bias=True,
            activation=activation,
            parallel=bool(config["use_parallel_residual"]),
            norms=2,
            model_type="gpt_neox",
        )

    @classmethod
    def _falcon(cls, config: dict[str, Any], vocab_size: int | None) -> ModelShape:
        """The shape of a falcon config: a fused query_key_value whose keys and values are one head
        (multi_query), num_kv_heads (new_decoder_architecture) or a head per query head, rotary
        positions (alibi is refused), one LayerNorm a layer with parallel_attn, two otherwise or
        with new_decoder_architecture (ln_attn and ln_mlp, unless num_ln_in_parallel_attn is 1),
        `bias` on every linear, tied embeddings by default."""
        cls._refuse_dropout(config, "falcon")
        if config.get("alibi"):
            raise ValueError("the estimate does not cover falcon with alibi")
        new, parallel = bool(config["new_decoder_architecture"]), bool(config["parallel_attn"])
        if new and not parallel:  # FalconDecoderLayer has no forward for it
            raise ValueError("the estimate does not cover falcon with new_decoder_architecture and not parallel_attn")
        h, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        kv_heads = int(config.get("num_kv_heads") or heads) if new or not config["multi_query"] else 1
        activation = str(config["activation"])
        if activation not in ACTIVATION_KEPT:
            raise ValueError(f"the estimate does not cover the activation {activation!r}")
        norms = 2 if not parallel or (new and config.get("num_ln_in_parallel_attn") in (None, 2)) else 1
        return cls(
            hidden_size=h,
            intermediate_size=int(config.get("ffn_hidden_size") or 4 * h),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=h // heads,
            vocab_size=int(vocab_size if vocab_size is not None else config["vocab_size"]),
            tie_word_embeddings=bool(config["tie_word_embeddings"]),
            qkv_bias=bool(config["bias"]),
            o_bias=bool(config["bias"]),
            mlp_bias=bool(config["bias"]),
            activation=activation,
            parallel=parallel,
            norms=norms,
            model_type="falcon",
        )

    def linears(self, dense: bool = False) -> dict[str, tuple[int, int, bool]]:
        """One decoder layer's linear layers: name -> (in_features, out_features, has bias); `dense`: those of
        deepseek_v3's first layers (a dense MLP in place of the experts)."""
        if self.model_type == "deepseek_v3":
            return self._latent_linears(dense)
        h, d = self.hidden_size, self.head_dim
        q, kv, i = self.num_attention_heads * d, self.num_key_value_heads * d, self.intermediate_size
        if self.model_type == "gpt2":  # Conv1D layers, (in, out) like a linear's
            return {"attn.c_attn": (h, 3 * h, True), "attn.c_proj": (h, h, True), "mlp.c_fc": (h, i, True), "mlp.c_proj": (i, h, True)}
        if self.model_type in FUSED_QKV:
            return {
                "query_key_value": (h, q + 2 * kv, self.qkv_bias),
                "dense": (q, h, self.o_bias),
                "dense_h_to_4h": (h, i, self.mlp_bias),
                "dense_4h_to_h": (i, h, self.mlp_bias),
            }
        if self.model_type in ("starcoder2", "phi"):
            attention = {"q_proj": (h, q, self.qkv_bias), "k_proj": (h, kv, self.qkv_bias), "v_proj": (h, kv, self.qkv_bias)}
            if self.model_type == "phi":
                return {**attention, "dense": (q, h, True), "fc1": (h, i, True), "fc2": (i, h, True)}
            return {**attention, "o_proj": (q, h, self.o_bias), "c_fc": (h, i, self.mlp_bias), "c_proj": (i, h, self.mlp_bias)}
        if self.model_type == "gpt_oss":
            # biased q/k/v/o; the router (a linear with a bias); the experts' fused, interleaved gate_up_proj
            # (one experts x h x 2 intermediate tensor, a bias of 2 intermediate each) and down_proj (its bias,
            # experts x h, is counted by `other_params`), counted as one wide linear each
            wide = i * self.experts
            return {
                "q_proj": (h, q, self.qkv_bias),
                "k_proj": (h, kv, self.qkv_bias),
                "v_proj": (h, kv, self.qkv_bias),
                "o_proj": (q, h, self.o_bias),
                "router": (h, self.experts, True),
                "experts.gate_up_proj": (h, 2 * wide, True),
                "experts.down_proj": (wide, h, False),
            }
        if self.model_type == "glm4":  # its MLP's gate and up are one linear, gate_up_proj
            return {
                "q_proj": (h, q, self.qkv_bias),
                "k_proj": (h, kv, self.qkv_bias),
                "v_proj": (h, kv, self.qkv_bias),
                "o_proj": (q, h, self.o_bias),
                "gate_up_proj": (h, 2 * i, self.mlp_bias),
                "down_proj": (i, h, self.mlp_bias),
            }
        # an MoE layer's experts, counted as one wide MLP (experts x intermediate), and its router
        wide = i * max(self.experts, 1)
        router = {"router": (h, self.experts, False)} if self.experts else {}
        si = self.shared_expert_size
        if si:
            router["shared_expert.gate_proj"] = router["shared_expert.up_proj"] = (h, si, False)
            router["shared_expert.down_proj"] = (si, h, False)
            router["shared_expert_gate"] = (h, 1, False)
        return {
            "q_proj": (h, q, self.qkv_bias),
            "k_proj": (h, kv, self.qkv_bias),
            "v_proj": (h, kv, self.qkv_bias),
            "o_proj": (q, h, self.o_bias),
            "gate_proj": (h, wide, self.mlp_bias),
            "up_proj": (h, wide, self.mlp_bias),
            "down_proj": (wide, h, self.mlp_bias),
            **router,
        }

    def _latent_linears(self, dense: bool) -> dict[str, tuple[int, int, bool]]:
        """deepseek_v3's layer: q through q_a_proj and q_b_proj (or one q_proj without q_lora_rank), k and v through
        kv_a_proj_with_mqa (the latent and one rotary key head shared by all heads) and kv_b_proj (each head's
        unrotated key and its value), attention_bias on q_a_proj, kv_a_proj_with_mqa and o_proj; a dense SwiGLU MLP,
        or the router (`gate`, a float32 experts x h weight), the experts' gate_up_proj and down_proj (one tensor each,
        counted as one wide linear) and the shared experts, one SwiGLU MLP of n_shared_experts x moe_intermediate_size."""
        h, heads, d, i = self.hidden_size, self.num_attention_heads, self.head_dim, self.intermediate_size
        nope, rq = d - self.rope_head_dim, self.q_lora_rank
        q = {"q_a_proj": (h, rq, self.qkv_bias), "q_b_proj": (rq, heads * d, False)} if rq else {"q_proj": (h, heads * d, False)}
        attention = {
            **q,
            "kv_a_proj_with_mqa": (h, self.kv_lora_rank + self.rope_head_dim, self.qkv_bias),
            "kv_b_proj": (self.kv_lora_rank, heads * (nope + self.v_head_dim), False),
            "o_proj": (heads * self.v_head_dim, h, self.o_bias),
        }
        if dense:
            di = self.dense_intermediate_size
            return {**attention, "gate_proj": (h, di, False), "up_proj": (h, di, False), "down_proj": (di, h, False)}
        si = self.shared_expert_size
        return {
            **attention,
            "gate": (h, self.experts, False),
            "experts.gate_up_proj": (h, 2 * i * self.experts, False),
            "experts.down_proj": (i * self.experts, h, False),
            "shared_experts.gate_proj": (h, si, False),
            "shared_experts.up_proj": (h, si, False),
            "shared_experts.down_proj": (si, h, False),
        }

    def decoder_layers(self) -> tuple[tuple[int, bool], ...]:
        """The kinds of decoder layer, as (how many, dense): deepseek_v3's first_k_dense_replace dense layers and its
        MoE layers; one kind for the other types."""
        dense = self.dense_layers if self.model_type == "deepseek_v3" else 0
        return tuple((n, kind) for n, kind in ((dense, True), (self.num_hidden_layers - dense, False)) if n)

    def layer_linear_params(self, dense: bool = False) -> int:
        """Parameters of one layer's linears (the part QLoRA quantizes)."""
        return sum(n_in * n_out + (n_out if bias else 0) for n_in, n_out, bias in self.linears(dense).values())

    def linear_params(self) -> int:
        """Parameters of every layer's linears."""
        return sum(n * self.layer_linear_params(dense) for n, dense in self.decoder_layers())

    def norm_params(self) -> int:
        """Parameters of one norm over the residual stream: an RMSNorm's weight, or a LayerNorm's weight and bias."""
        if self.model_type == "olmo":  # a LayerNorm without a weight or a bias
            return 0
        return 2 * self.hidden_size if self.model_type in LAYER_NORM else self.hidden_size

    def other_params(self) -> int:
        """Parameters of one layer that are neither a linear's nor a norm's: gpt_oss's attention sinks
        (one a query head) and its experts' down_proj biases (h each)."""
        if self.model_type == "gpt_oss":
            return self.num_attention_heads + self.experts * self.hidden_size
        return 0

    def expert_params(self, dense: bool = False) -> int:
        """Parameters of one layer's experts in `linears`: their weights (and gpt_oss's gate_up_proj biases); none in
        deepseek_v3's dense layers."""
        if dense:
            return 0
        weights = 3 * self.intermediate_size * self.experts * self.hidden_size
        return weights + (2 * self.intermediate_size * self.experts if self.model_type == "gpt_oss" else 0)

    def layer_params(self, dense: bool = False) -> int:
        """Parameters of one decoder layer (`dense`: one of deepseek_v3's dense layers): its linears, its norms (gemma2
        and gemma3_text have four, phi and cohere one, gpt_neox, falcon and stablelm `norms`, the others two; olmo's
        have no parameters), any query/key norms (deepseek_v3's over its latents) and `other_params`."""
        norms = 4 if self.model_type in (*SANDWICH, "glm4") else 1 if self.model_type in PARALLEL else self.norms
        return self.layer_linear_params(dense) + norms * self.norm_params() + self.qk_norm + self.other_params()

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def parameters(self) -> int:
        """Every parameter: embeddings (and gpt2's learned positions), layers, the final norm, and
        lm_head unless tied (its bias, phi's, either way)."""
        untied = (0 if self.tie_word_embeddings else self.embedding_params()) + (self.vocab_size if self.head_bias else 0)
        embeddings = self.embedding_params() + self.positions * self.hidden_size
        layers = sum(n * self.layer_params(dense) for n, dense in self.decoder_layers())
        return embeddings + layers + self.norm_params() + untied

    def norm_activations(self, residual_bytes: int, act_bytes: int, frozen: bool = False) -> int:
        """Bytes per token an RMSNorm and the linear after it keep for the backward pass.

        The norm computes in float32 and keeps that copy of its input (4h), the normalised
        value in the residual stream's dtype for its weight's gradient (none when the weight
        is frozen), and the linear after it keeps the output in the activation dtype.
        """
        h = self.hidden_size
        return 4 * h + (0 if frozen else self.normalised_bytes(residual_bytes) * h) + act_bytes * h

    def normalised_bytes(self, residual_bytes: int) -> int:
        """Bytes per element of the normalised value an RMSNorm keeps for its weight's gradient: in the residual
        stream's dtype, or in float32 where the norm multiplies by its weight in float32 (helium)."""
        return 4 if self.model_type in FLOAT32_WEIGHTED_NORMS else residual_bytes

    def layer_activations(
        self,
        residual_bytes: int,
        act_bytes: int,
        adapted: frozenset[str] | None = None,
        mask_bytes: int = 1,
        eager: bool = False,
        math: bool = False,
        rank: int = 0,
        masked: bool = False,
        tiled: bool = False,
        dense: bool = False,
    ) -> int:
        """Bytes one decoder layer keeps for the backward pass, per token (module docstring).

        Args:
            residual_bytes: bytes of a residual-stream value (`model.dtype`).
            act_bytes: bytes of a matmul output (2 under mixed precision).
            adapted: with PEFT, the layer's linears that carry an adapter. The rest of the layer
                is frozen, and a frozen weight needs no saved input: the norms keep no
                normalised value, a norm's output is kept only where a linear that reads it
                carries an adapter, and so are o_proj's copied input (eager) and down_proj's.
            mask_bytes: bytes of a dropout mask's element: 1 on a GPU (a bool mask), the
                activation's on the CPU (torch's CPU dropout multiplies by a noise tensor).
            eager: eager attention (`model.attention = "eager"`): q, k and v repeated to every
                query head and o_proj's contiguous input instead of a fused kernel's q, k, v and
                output (the probabilities are counted by `scores_bytes`).
            math: sdpa's math path (attention dropout on the CPU, not gpt2's, which counts its
                own): q scaled, k and v repeated to every query head, in float32, and o_proj's
                contiguous input (the probabilities are counted by the estimate).
            rank: LoRA's r: each adapted linear's lora_A output (r values a token) is lora_B's input.
            masked: sdpa over falcon's materialised causal mask, for which transformers repeats k
                and v to every query head (flash and flex attention take them as they are).
            tiled: `model.tiled_mlp`: the MLP keeps nothing of its inside (its input, a view of what
                the norm before it keeps, stays counted); nor do the adapters inside it.
            dense: one of deepseek_v3's dense layers (its MoE layers otherwise).
        """
        mlp_linears = {"gate_proj", "up_proj", "down_proj", "c_fc", "c_proj", "fc1", "fc2", "dense_h_to_4h", "dense_4h_to_h"}
        inside = {n for n in self.linears() if n.startswith("mlp.") or n in mlp_linears} if tiled else set()
        lora = rank * act_bytes * len((adapted & set(self.linears())) - inside) if adapted is not None else 0
        if self.model_type == "deepseek_v3":
            if tiled:
                raise ValueError("the estimate does not cover model.tiled_mlp on model type 'deepseek_v3'")
            return self._latent_activations(residual_bytes, act_bytes, eager, math, dense)
        return self._layer_activations(residual_bytes, act_bytes, adapted, mask_bytes, eager, math, masked, tiled) + lora

    def _latent_activations(self, residual_bytes: int, act_bytes: int, eager: bool, math: bool, dense: bool) -> int:
        """deepseek_v3's layer (no PEFT). Its two RMSNorms over the residual stream keep what a Llama layer's keep;
        q_a_proj (q_proj without q_lora_rank) and kv_a_proj_with_mqa read the first norm's output, the router and the
        shared experts' gate_proj and up_proj the second's (one copy, or one cast each under autocast). The RMSNorms
        over the latents (q_a_layernorm, kv_a_layernorm) keep their float32 input (in float32, a view of
        kv_a_proj_with_mqa's output that keeps its rotary key too), their normalised value and the output q_b_proj
        and kv_b_proj read, in the projections' output dtype. Attention: the fused kernels keep q (the unrotated and
        rotated parts concatenated), k (a new tensor), v, a view of kv_b_proj's output that keeps all of it alive,
        their output and o_proj's copy of it (laid out heads-first, as q is); sdpa on the CPU with v_head_dim other
        than q's and k's has no fused kernel and runs its math path (`math`): q and k scaled and v, in float32, and
        o_proj's input (the float32 probabilities are counted by the estimate); eager attention keeps q, k's and v's
        copies for the matmuls and o_proj's contiguous input. A dense layer's SwiGLU keeps Llama's four; an MoE layer's
        grouped_mm experts keep per token and chosen expert what the other MoE types' keep (the gathered input,
        gate_up_proj's output, the activation's output, their product and the expert's output, in the weights'
        dtype), and the shared experts a SwiGLU MLP's four. The router computes in float32 (its weight is kept
        float32: a 16-bit model's router casts its input to float32 and keeps the copy; under autocast its linear runs
        in 16 bits): its sigmoid scores, each choice's gathered weight, with norm_topk_prob a copy of them and their
        sum (divided in place), and four int64 index tensors (its gather, the experts' two gathers and the order
        restored); the grouped choice of experts keeps nothing past the forward pass."""
        h, heads, d = self.hidden_size, self.num_attention_heads, self.head_dim
        v, rope, rq, rkv = self.v_head_dim, self.rope_head_dim, self.q_lora_rank, self.kv_lora_rank
        norm = 4 * h + self.normalised_bytes(residual_bytes) * h
        inputs = _inputs_kept(("q_a_proj" if rq else "q_proj", "kv_a_proj_with_mqa"), None, act_bytes, residual_bytes)
        latent = (4 + 2 * act_bytes) * (rq + rkv) + (4 * rope if act_bytes == 4 else 0)
        if eager:
            attention = (2 * heads * d + 2 * heads * v) * act_bytes
        elif math:
            attention = (2 * heads * d + heads * v) * 4 + heads * v * act_bytes
        else:
            attention = (2 * heads * d + heads * (d - rope + v) + 2 * heads * v) * act_bytes
        if dense:
            inputs += _inputs_kept(("gate_proj", "up_proj"), None, act_bytes, residual_bytes)
            mlp = 4 * self.dense_intermediate_size * act_bytes
        else:
            inputs += _inputs_kept(("gate", "shared_experts.gate_proj", "shared_experts.up_proj"), None, act_bytes, residual_bytes)
            k, routed = self.experts_per_token, act_bytes if act_bytes < residual_bytes else 4
            router = routed * (self.experts + k + (k + 1 if self.norm_topk_prob else 0)) + 4 * 8 * k
            router += 4 * h if residual_bytes < 4 else 0
            experts = k * (2 * h + 4 * self.intermediate_size) * residual_bytes
            mlp = experts + router + 4 * self.shared_expert_size * act_bytes
        return 2 * norm + inputs * h + latent + attention + mlp

    def _layer_activations(
        self,
        residual_bytes: int,
        act_bytes: int,
        adapted: frozenset[str] | None,
        mask_bytes: int,
        eager: bool,
        math: bool,
        masked: bool = False,
        tiled: bool = False,
    ) -> int:
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        kept = ACTIVATION_KEPT[self.activation]
        mlp = (kept + 3) * i
        if self.model_type == "gpt2":
            # ln_1 and ln_2 keep their input and c_attn and c_fc their input; q, k and v are views of
            # c_attn's output, and the attention output is c_proj's input too (the fused kernels lay
            # it out as b x s x heads x head_dim: transformers' transpose and contiguous copy nothing);
            # c_fc's output, what the activation keeps and its output; a dropout mask after each c_proj
            # tiled (model.tiled_mlp): nothing of c_fc's output on, nor the mask of the MLP's own dropout
            masks = (1 if tiled else 2) * h * mask_bytes if self.residual_dropout else 0
            return 2 * (residual_bytes + act_bytes) * h + (4 * h + (0 if tiled else (kept + 1) * i)) * act_bytes + masks
        moe = 0
        if self.experts:
            # each token through experts_per_token experts: its gathered input, the gate and up
            # projections (one output), the activation's output, their product and the expert's
            # output (kept to weight it), in the weights' dtype (transformers' grouped_mm is not
            # autocast); the router's float32 probabilities, each choice's weight and four int64
            # index tensors; qwen2_moe's shared expert keeps what a SwiGLU MLP keeps, its output
            # (kept to gate it) and its sigmoid gate
            k, si = self.experts_per_token, self.shared_expert_size
            moe = k * (4 * i + 2 * h) * residual_bytes + 4 * self.experts + k * (act_bytes + 32)
            mlp = 4 * si + h + 1 if si else 0
        if self.model_type == "gpt_oss":
            # its experts (transformers' grouped_mm, in the weights' dtype) keep, per token and chosen expert,
            # the gathered input, gate_up_proj's output (2 intermediate, which the clamps of its interleaved
            # gate and up halves keep), the clamped gate, its sigmoid, up + 1, their product (glu) and
            # down_proj's input, and the expert's output (kept to weight it): 2h + 7 intermediate values. The
            # router softmaxes only its top-k logits: their softmax and each choice's gathered weight in the
            # router's output dtype, and five int64 index tensors (top-k, and the sort's four gathers)
            if tiled:
                raise ValueError("the estimate does not cover model.tiled_mlp on model type 'gpt_oss'")
            k = self.experts_per_token
            moe = k * (2 * h + 7 * i) * residual_bytes + k * (2 * act_bytes + 40)
        if adapted is not None:
            mlp -= 0 if "down_proj" in adapted else i
        if tiled:  # model.tiled_mlp: the MLP keeps nothing of its inside
            mlp = 0
        # a fused kernel keeps q, k, v and its output, which is o_proj's input too (laid out as b x s
        # x heads x head_dim: the transpose and contiguous() copy nothing); eager attention keeps q,
        # k and v repeated to every query head, and o_proj's contiguous input where o_proj trains
        o_kept = adapted is None or ("dense" if self.model_type in ("phi", *FUSED_QKV) else "o_proj") in adapted
        attention = (3 * q + (q if o_kept else 0) if eager else 2 * q + 2 * kv) * act_bytes
        if math:
            attention = 3 * q * 4 + (q * act_bytes if o_kept else 0)
        elif self.model_type == "phi" and not eager:
            # the rotated q is a concatenation, laid out heads-first, so sdpa's output is copied for dense
            attention = (2 * q + 2 * kv + (q if o_kept else 0)) * act_bytes
        elif self.model_type == "phi3" and not eager:
            # q, k and v are slices of qkv_proj's output: v (a view) keeps all of it alive, and the
            # rotated q, a copy of a slice, is laid out heads-first, so the fused kernel's output is
            # copied for o_proj (eager attention's matmuls copy v like the rest)
            attention = (4 * q + 3 * kv) * act_bytes
        if self.model_type in FUSED_QKV:
            if tiled:
                raise ValueError(f"the estimate does not cover model.tiled_mlp on model type {self.model_type!r}")
            return self._fused_qkv_activations(residual_bytes, act_bytes, adapted, eager, o_kept, masked)
        if self.model_type == "stablelm":
            # LayerNorms keep their input, and the linears after them their output (q, k, v, gate and
            # up side by side after one with use_parallel_residual); the rotated part of each head is
            # concatenated with the rest, laid out heads-first, so sdpa's output is copied for o_proj
            # (as phi's); qk_layernorm's LayerNorms per head keep their input (q_proj's and k_proj's
            # output) and a float32 mean and 1/std per head; the SwiGLU MLP's four
            if not eager:
                attention = (2 * q + 2 * kv + (q if o_kept else 0)) * act_bytes
            if self.parallel:
                inputs = _inputs_kept(("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"), adapted, act_bytes, residual_bytes)
            else:
                inputs = _inputs_kept(("q_proj", "k_proj", "v_proj"), adapted, act_bytes, residual_bytes)
                inputs += _inputs_kept(("gate_proj", "up_proj"), adapted, act_bytes, residual_bytes)
            qk = act_bytes * (q + kv) + 8 * (self.num_attention_heads + self.num_key_value_heads) if self.qk_norm else 0
            return self.norms * residual_bytes * h + inputs * h + attention + mlp * act_bytes + qk
        if self.model_type == "starcoder2":
            # two LayerNorms keep their input, and the linears after them their output; c_fc's output
            # and what the activation keeps, its output where c_proj trains; a dropout mask after
            # o_proj and after c_proj
            inputs = _inputs_kept(("q_proj", "k_proj", "v_proj"), adapted, act_bytes, residual_bytes)
            inputs += _inputs_kept(("c_fc",), adapted, act_bytes, residual_bytes)
            mlp = 0 if tiled else kept * i + (i if adapted is None or "c_proj" in adapted else 0)
            masks = (1 if tiled else 2) * h * mask_bytes if self.residual_dropout else 0  # the MLP's own dropout is inside
            return 2 * residual_bytes * h + inputs * h + attention + mlp * act_bytes + masks
        if self.model_type == "phi":
            # one LayerNorm keeps its input, and q, k, v and fc1 (side by side) its output; fc1's
            # output and what gelu_new keeps, its output where fc2 trains; qk_layernorm's norms
            # keep their input (q_proj's and k_proj's output) and a float32 mean and 1/std per
            # head; a dropout mask after the attention and after the MLP
            inputs = _inputs_kept(("q_proj", "k_proj", "v_proj", "fc1"), adapted, act_bytes, residual_bytes)
            mlp = 0 if tiled else kept * i + (i if adapted is None or "fc2" in adapted else 0)
            qk = act_bytes * (q + kv) + 8 * (self.num_attention_heads + self.num_key_value_heads) if self.qk_norm else 0
            masks = 2 * h * mask_bytes if self.residual_dropout else 0
            return residual_bytes * h + inputs * h + attention + mlp * act_bytes + qk + masks
        if self.model_type == "cohere":
            # one LayerNorm, computed in float32 by hand: x - mean twice (for the variance and the
            # normalisation) and, for a trainable weight, the normalised value; q, k, v, gate and
            # up read its output side by side. use_qk_norm's norms over each head keep as much, and
            # a float32 1/std per head
            norm = (8 if adapted is not None else 12) * h
            inputs = _inputs_kept(("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"), adapted, act_bytes, residual_bytes)
            heads = self.num_attention_heads + self.num_key_value_heads
            qk = ((8 if adapted is not None else 12) * (q + kv) + 4 * heads) if self.qk_norm else 0
            return norm + inputs * h + attention + mlp * act_bytes + qk
        if self.model_type in GEMMA:
            # the norms (four with gemma2's and gemma3_text's after the attention and the MLP) and
            # gemma3_text's query and key norms, each keeping its float32 input and (a trainable
            # weight's) float32 normalised value; q/k/v and gate/up keep the output of the two before
            # them
            norms = 4 if self.model_type in SANDWICH else 2
            qk = q + kv if self.qk_norm else 0
            norm = 4 if adapted is not None else 8
            inputs = _inputs_kept(("q_proj", "k_proj", "v_proj"), adapted, act_bytes, residual_bytes)
            inputs += _inputs_kept(("gate_proj", "up_proj"), adapted, act_bytes, residual_bytes)
            return norm * (norms * h + qk) + inputs * h + attention + mlp * act_bytes
        if self.model_type in POST_NORMS:
            return self._post_norm_activations(residual_bytes, act_bytes, attention, mlp, eager, tiled)
        # two RMSNorms, each keeping its float32 input and (a trainable weight's) normalised value in
        # the residual stream's dtype; the linears after them keep their output (phi3's fused
        # qkv_proj and gate_up_proj are one linear each; an MoE layer's router reads the second)
        norm = 4 * h + (0 if adapted is not None or self.model_type == "olmo" else self.normalised_bytes(residual_bytes) * h)
        # olmo's clip_qkv clamps q, k and v in place: autograd keeps a copy of each from before
        clipped = (q + 2 * kv) * act_bytes if self.clip_qkv else 0
        shared = ("shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert_gate") if self.shared_expert_size else ()
        if self.model_type == "phi3":
            readers: tuple[tuple[str, ...], ...] = (("qkv_proj",), ("gate_up_proj",))
        else:
            readers = (("q_proj", "k_proj", "v_proj"), ("router", *shared) if self.experts else ("gate_proj", "up_proj"))
        inputs = sum(_inputs_kept(names, adapted, act_bytes, residual_bytes) for names in readers)
        # qwen3's RMSNorms over each head's q and k, and olmoe's over the whole projections: their
        # float32 input and normalised value, in the dtype of q_proj's output (olmo2's are not counted)
        qk_normed = ("qwen3", "qwen3_moe", "olmoe")
        qk = (4 + (0 if adapted is not None else act_bytes)) * (q + kv) if self.model_type in qk_normed else 0
        # gpt_oss's eager attention appends each head's sink to the scores (the probabilities' extra column, in
        # the scores' dtype, model.dtype) and subtracts their max, whose backward keeps its int64 indices
        sinks = self.num_attention_heads * (residual_bytes + 8) if self.model_type == "gpt_oss" and eager else 0
        return 2 * norm + inputs * h + attention + mlp * act_bytes + moe + qk + clipped + sinks

    def _post_norm_activations(self, residual_bytes: int, act_bytes: int, attention: int, mlp: int, eager: bool, tiled: bool) -> int:
        """olmo3's, exaone4's and glm4's layer (no PEFT): RMSNorms over o_proj's and down_proj's outputs, each keeping
        its float32 input and its normalised value, float32 in olmo3 (whose norms multiply by their weight in float32)
        and in the projection's output dtype in the others, and nothing of its output (added to the residual stream).
        olmo3's and exaone4's q/k/v and gate/up read the residual stream itself and keep it (one copy each under
        autocast); glm4 has Llama's two norms before them too, and one gate_up_proj. The q and k norms (olmo3's over
        the whole projections, float32 like its others; exaone4's over each head) keep their float32 input and
        normalised value. glm4 rotates half of each head and concatenates it with the rest, laid out heads-first, so
        sdpa's output is copied for o_proj (as phi's); its SwiGLU keeps what Llama's does."""
        if tiled:
            raise ValueError(f"the estimate does not cover model.tiled_mlp on model type {self.model_type!r}")
        h = self.hidden_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        normalised = 4 if self.model_type in FLOAT32_WEIGHTED_NORMS else act_bytes
        post = 2 * (4 + normalised) * h
        if self.model_type == "glm4":
            pre = 2 * (4 + self.normalised_bytes(residual_bytes)) * h
            inputs = _inputs_kept(("q_proj", "k_proj", "v_proj"), None, act_bytes, residual_bytes)
            inputs += _inputs_kept(("gate_up_proj",), None, act_bytes, residual_bytes)
            if not eager:  # sdpa's output, laid out heads-first, copied for o_proj
                attention += q * act_bytes
            return pre + post + inputs * h + attention + mlp * act_bytes
        inputs = _inputs_kept(("q_proj", "k_proj", "v_proj"), None, act_bytes, residual_bytes)
        inputs += _inputs_kept(("gate_proj", "up_proj"), None, act_bytes, residual_bytes)
        qk = (4 + normalised) * (q + kv)
        return post + inputs * h + attention + mlp * act_bytes + qk

    def _fused_qkv_activations(
        self, residual_bytes: int, act_bytes: int, adapted: frozenset[str] | None, eager: bool, o_kept: bool, masked: bool
    ) -> int:
        """gpt_neox's and falcon's layer: LayerNorms, one query_key_value, a gelu MLP (no dropout).

        Each LayerNorm keeps its input (one tensor where both read the residual stream side by
        side), and the linears after it its output (q/k/v with the MLP's first linear when one
        norm feeds both). Under sdpa: the rotated q and k (new tensors), v, a view of
        query_key_value's output that keeps all of it alive, and sdpa's output. gpt_neox
        concatenates the rotated part of each head with the rest, laid out heads-first, so the
        output is too and is copied for `dense`; falcon's rotated q keeps the b x s x heads layout
        and `dense` reads the output itself. falcon always materialises its causal mask, so under
        sdpa (`masked`) transformers repeats k and v to every query head (copies, unless there is
        one key/value head: then views, and autocast's cast of the repeated k is the copy); its
        float copy of the mask is counted by the estimate. Eager attention keeps what a Llama
        layer's does.
        """
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        inputs = residual_bytes * h * (1 if self.parallel else 2)
        if self.norms == 1:
            inputs += _inputs_kept(("query_key_value", "dense_h_to_4h"), adapted, act_bytes, residual_bytes) * h
        else:
            inputs += _inputs_kept(("query_key_value",), adapted, act_bytes, residual_bytes) * h
            inputs += _inputs_kept(("dense_h_to_4h",), adapted, act_bytes, residual_bytes) * h
        fused = q + 2 * kv
        if eager:
            attention = 3 * q + (q if o_kept else 0)
        elif self.model_type == "gpt_neox":
            attention = q + kv + fused + q + (q if o_kept else 0)
        elif masked and self.num_key_value_heads not in (1, self.num_attention_heads):  # k and v repeated: copies
            attention = 4 * q
        else:  # k (repeated by a view, materialised by autocast's cast), and v's view of the fused output
            k = q if masked and self.num_key_value_heads == 1 and act_bytes < residual_bytes else kv
            attention = q + k + fused + q
        mlp = ACTIVATION_KEPT[self.activation] * i + (i if adapted is None or "dense_4h_to_h" in adapted else 0)
        return inputs + (attention + mlp) * act_bytes

    def first_layer_unkept(self, residual_bytes: int, act_bytes: int, adapted: frozenset[str], mask_bytes: int = 1) -> int:
        """Bytes per token that `layer_activations` counts for the first layer but PEFT does not
        keep: the embeddings are frozen, so nothing before the first adapter needs a gradient. The
        first norm keeps nothing of its own (its output is counted where an adapter reads it),
        and in phi's and cohere's parallel blocks an MLP without an adapter keeps nothing at all.
        """
        h, i = self.hidden_size, self.intermediate_size
        unkept = {"starcoder2": residual_bytes, "phi": residual_bytes, "stablelm": residual_bytes, "cohere": 8}.get(self.model_type, 4) * h
        if self.model_type in FUSED_QKV:  # the LayerNorm's input (one tensor where two read it side by side)
            unkept = residual_bytes * h
            if self.parallel and not adapted & {"dense_h_to_4h", "dense_4h_to_h"}:  # gelu's input
                unkept += ACTIVATION_KEPT[self.activation] * i * act_bytes
            return unkept
        mlp = ("fc1", "fc2") if self.model_type == "phi" else ("gate_proj", "up_proj", "down_proj")
        if (self.model_type in PARALLEL or self.model_type == "stablelm" and self.parallel) and not adapted & set(mlp):
            if self.model_type == "phi":  # fc1's output, what gelu_new keeps, the dropout's mask
                unkept += ACTIVATION_KEPT[self.activation] * i * act_bytes + (h * mask_bytes if self.residual_dropout else 0)
            else:  # gate, its activation and up
                unkept += 3 * i * act_bytes
        if self.model_type == "stablelm" and self.qk_norm:  # qk_layernorm over a frozen projection's output
            d = self.head_dim
            for name, heads in (("q_proj", self.num_attention_heads), ("k_proj", self.num_key_value_heads)):
                unkept += 0 if name in adapted else heads * (d * act_bytes + 8)
        return unkept

    def final_activations(self, residual_bytes: int, act_bytes: int, frozen: bool = False, mask_bytes: int = 1) -> int:
        """Bytes per token the final norm and lm_head's input keep (and gpt2's embedding dropout mask).

        Under PEFT (`frozen`) lm_head keeps no input and the norm no normalised value.
        """
        h = self.hidden_size
        # the embeddings' dropout mask: on the CPU a noise tensor in the residual stream's dtype
        dropout = h * (residual_bytes if mask_bytes > 1 else 1) if self.embedding_dropout else 0
        if self.model_type == "gpt2":
            return (residual_bytes + act_bytes) * h + dropout
        if self.model_type in ("starcoder2", "phi", "stablelm", *FUSED_QKV):  # a LayerNorm keeps its input, a frozen lm_head no output
            return residual_bytes * h + (0 if frozen else act_bytes * h) + dropout
        if frozen:  # the norm's float32 input (cohere's: x - mean, twice)
            return 8 * h if self.model_type == "cohere" else 4 * h
        if self.model_type in GEMMA:
            return 8 * h + act_bytes * h
        if self.model_type == "cohere":
            return 12 * h + act_bytes * h
        if self.model_type == "olmo":  # no weight: no normalised value kept
            return 4 * h + act_bytes * h
        return self.norm_activations(residual_bytes, act_bytes)

    def scores_bytes(self, act_bytes: int, mask_bytes: int = 1, residual_bytes: int = 4) -> int:
        """Bytes per attention probability (per head, per query and key) the backward pass keeps
        where they are materialised (eager attention).

        gpt_oss: the softmax output in model.dtype (its scores, mask and sinks are in it), and its copy
        in a 16-bit activation dtype under autocast over float32 weights (its sink column and the max's
        indices are counted per token in the layer).
        Llama and Gemma: the float32 softmax output and its copy in a 16-bit activation dtype
        (with attention dropout, starcoder2's, the dropout's mask and the dropped-out
        probabilities instead of the copy), and with gemma2's soft-capping the tanh of the
        scaled scores (in the activation dtype);
        gpt2: the softmax output in the activation dtype and, with attention dropout, its mask
        and the dropped-out probabilities.
        """
        if self.model_type == "gpt2":
            return act_bytes + (mask_bytes + act_bytes if self.attention_dropout else 0)
        if self.model_type == "gpt_oss":
            # the scores plus the mask (in model.dtype) and the sinks (the weights' dtype) are softmaxed in their
            # own dtype, model.dtype; under autocast over float32 weights a 16-bit copy for the matmul with v
            return residual_bytes + (act_bytes if act_bytes < residual_bytes else 0)
        # with dropout the 16-bit copy of the probabilities is not kept (dropout keeps its mask), the
        # dropped-out probabilities are
        copy = mask_bytes + act_bytes if self.attention_dropout else (act_bytes if act_bytes < 4 else 0)
        return 4 + copy + (act_bytes if self.attention_softcap else 0)

    def linear_weights(self) -> int:
        """Weights that go through an autocast matmul: every layer's linears and lm_head (tied or
        not), less the experts of an MoE layer (transformers' grouped_mm is not autocast: the
        experts compute in their weights' dtype, with no 16-bit copies)."""
        layers = sum(n * (self.layer_linear_params(dense) - self.expert_params(dense)) for n, dense in self.decoder_layers())
        return layers + self.embedding_params()


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on one device at the peak of a training step, by part."""

    params: int
    grads: int
    optimizer: int
    activations: int
    logits: int
    per_device: int
    """The sum of the five parts: the estimated peak of each process."""
    devices: int
    """Processes (devices) of the launch, launch.num_processes."""
    total: int
    """per_device x devices: the whole launch."""
    parameters: int
    """Parameters of the model (before any sharding)."""
    trainable_parameters: int
    notes: tuple[str, ...]
    """One line per part: the formula with the recipe's numbers."""
    evaluation: int | None = None
    """With `train.eval_micro_batch_size` above `micro_batch_size`: the peak of an evaluation forward, the
    weights and the optimizer state (the gradients are freed, set to None), the logits of its micro-batch
    (in the activation dtype, a float32 copy and the float32 log-probabilities of the cross-entropy: 8 bytes
    a logit in float32, 10 in 16 bits) and the final norm's output that lm_head reads. None with the chunked
    cross-entropy, whose evaluation forward peaks inside a layer (a note says so)."""


def _targets(shape: ModelShape, peft: dict[str, Any]) -> dict[str, tuple[int, int, bool]]:
    """The modules a PEFT spec adapts (one layer's linears by full name, and lm_head)."""
    targets = peft.get("target_modules")
    if targets is None:
        targets = PEFT_DEFAULT_TARGETS.get(shape.model_type) if peft["method"] != "ia3" else None
        if targets is None:
            method, model_type = peft["method"], shape.model_type
            raise ValueError(f"peft has no default target modules for {method} on model type {model_type!r}; set peft.target_modules")
    layer, attention, _, head = _module_names(shape)
    modules = {f"{layer}.{'mlp' if n in MLP_LINEARS else attention}.{n}": v for n, v in shape.linears().items()}
    if targets == "all-linear":
        return modules
    heads = {head: (shape.hidden_size, shape.vocab_size, False)}
    return {n: v for n, v in {**modules, **heads}.items() if _matches(n, targets)}


def _module_names(shape: ModelShape) -> tuple[str, str, str, str]:
    """The first layer's path, its attention's name, the input embeddings' and the output projection's."""
    return MODULE_NAMES.get(shape.model_type, ("model.layers.0", "self_attn", "embed_tokens", "lm_head"))


def _matches(name: str, wanted: list[str]) -> bool:
    """peft's rule for a list of names: the full name or a suffix after a dot."""
    return any(name == w or name.endswith("." + w) for w in wanted)


def adapter_parameters(shape: ModelShape, peft: dict[str, Any]) -> int:
    """Trainable parameters a PEFT spec adds to the model (`[peft]` as a dict).

    LoRA: r (in + out) per adapted linear (+ out with DoRA); LoHa: 2 r (in + out); IA3: one
    vector per module (its input width for feedforward modules); LoKr, OFT and BOFT are
    counted like LoRA of the same rank (an approximation: their factorisations differ, and
    the adapter is small next to the frozen base either way). `modules_to_save` adds a
    trainable copy of those modules.
    """
    method = peft["method"]
    linears = shape.linears()
    chosen = _targets(shape, peft)
    rank = peft.get("r") or 8
    feedforward = peft.get("feedforward_modules") or (IA3_FEEDFORWARD.get(shape.model_type, ["down_proj"]) if method == "ia3" else [])
    _, _, embeddings, head = _module_names(shape)
    count = 0
    for name, (n_in, n_out, _) in chosen.items():
        times = 1 if name == head else shape.num_hidden_layers
        if method == "ia3":
            each = n_in if _matches(name, feedforward) else n_out
        elif method == "loha":
            each = 2 * rank * (n_in + n_out)
        else:
            each = rank * (n_in + n_out) + (n_out if peft.get("dora") else 0)
        count += times * each
    for name in peft.get("modules_to_save") or []:
        if name in (head, embeddings):
            count += shape.embedding_params() + (shape.vocab_size if name == head and shape.head_bias else 0)
        elif name in linears:
            n_in, n_out, bias = linears[name]
            count += shape.num_hidden_layers * (n_in * n_out + (n_out if bias else 0))
    return count


def estimate(shape: ModelShape, recipe: Recipe, picked: tuple[int, int] | None = None) -> MemoryEstimate:
    """The peak memory per device of the recipe's training step on a model of this shape.

    ``picked``: with `optim.trainable`, the parameters it picks and, of those, the hidden
    matrices (Muon's side), counted on the model (:func:`trainable_counts`).

    Reads the launch shape (`train.micro_batch_size`, `data.seq_len`), the precision
    (`model.dtype`, `launch.mixed_precision`), `[peft]`, the strategy and its sharding
    (`launch.strategy`, `[launch.fsdp]`, `[launch.deepspeed]`, `launch.num_processes`,
    `launch.num_machines`) and the checkpointing (`model.gradient_checkpointing`,
    `launch.fsdp.activation_checkpointing`). See the module docstring for the formulas.
    """
    launch, b, s = recipe.launch, recipe.train.micro_batch_size, recipe.data.seq_len
    pref = recipe.preference
    if pref is not None and pref.objective not in UNPAIRED:
        s *= 2  # a preference pair is one row holding both sides, each of up to seq_len tokens
    world = launch.num_processes
    mesh = launch.parallelism
    tp, seq_split = (mesh.tp_size, mesh.cp_size * mesh.sp_size) if mesh is not None else (1, 1)
    replicate = mesh.dp_replicate_size if mesh is not None else 1
    p_bytes = DTYPE_BYTES[recipe.model.dtype]
    mixed = launch.mixed_precision != "no"
    a_bytes = 2 if mixed or p_bytes == 2 else 4
    notes: list[str] = []

    if shape.model_type in FUSED_ONLY and recipe.model.attention == "sdpa":
        raise ValueError(
            f"the estimate does not cover {shape.model_type} with model.attention \"sdpa\": transformers builds it "
            "with eager, flash or flex attention only"
        )
    n_params = shape.parameters()
    # a reward model (AutoModelForSequenceClassification, one label): a score head of h weights in place of
    # lm_head, and one logit per token in place of the vocabulary's
    reward = pref is not None and pref.objective == "reward"
    vocab = 1 if reward else shape.vocab_size
    if reward:
        n_params += shape.hidden_size - (0 if shape.tie_word_embeddings else shape.embedding_params()) - (shape.vocab_size if shape.head_bias else 0)
    peft = recipe.peft.model_dump(exclude_none=True) if recipe.peft is not None else None
    if peft is not None and shape.model_type not in PEFT_ARCHITECTURES:
        raise ValueError(f"the estimate does not cover PEFT on model type {shape.model_type!r}")
    adapter = adapter_parameters(shape, peft) if peft is not None else 0
    if reward and peft is not None:
        adapter += shape.hidden_size  # peft trains a copy of the score head (a module to save)
    trainable = adapter if peft is not None else n_params
    partial = recipe.optim.trainable != "all" and peft is None
    if partial:
        if picked is None:
            raise ValueError("optim.trainable: the parameters it picks are counted on the model, which was not built")
        trainable = picked[0]
    quantize = getattr(recipe.peft, "quantize", None)

    # bytes per parameter: the stored weights, a trainable one's gradient and its optimizer state
    ds_stage = (launch.deepspeed.zero_stage if launch.deepspeed is not None else 2) if launch.strategy == "deepspeed" else 0
    if ds_stage and mixed:
        w_bytes, g_bytes, o_bytes = 2, 2, 12
        precision = f"DeepSpeed {launch.mixed_precision}: 2-byte weights and grads, float32 master weights and moments"
    else:
        w_bytes, g_bytes, o_bytes = p_bytes, p_bytes, 2 * p_bytes
        precision = f"model.dtype {recipe.model.dtype}"

    params_b = float(n_params * w_bytes + adapter * w_bytes)
    # QLoRA stores every layer's linears quantized, at `saved` bytes fewer per weight
    quantized = shape.linear_params() if quantize is not None else 0
    saved = w_bytes - QUANTIZED_BYTES[quantize] if quantize is not None else 0.0
    params_b -= quantized * saved
    if quantize is not None:
        precision += f", decoder linears quantized {quantize}"
    grads_b = float(trainable * g_bytes)
    optim_b = float(trainable * o_bytes)
    opt = recipe.optim
    optim_what = f"AdamW, {trainable:,} trainable x {o_bytes} B"
    if not ds_stage:
        per = OPTIMIZER_STATE.get(opt.name)
        if opt.name == "sgd" and opt.momentum == 0:
            per = 0.0
        if opt.name == "muon" and peft is None:  # momentum on the hidden matrices, AdamW's two moments on the rest
            hidden = picked[1] if partial and picked is not None else shape.linear_params()
            optim_b = float(hidden * p_bytes + (trainable - hidden) * 2 * p_bytes)
            optim_what = f"Muon momentum on {hidden:,} hidden-matrix weights x {p_bytes} B + AdamW on {trainable - hidden:,} x {2 * p_bytes} B"
        elif opt.name in FLAT_STATE_BYTES:
            optim_b = float(trainable * FLAT_STATE_BYTES[opt.name])
            optim_what = f"{opt.name}, {trainable:,} trainable x {FLAT_STATE_BYTES[opt.name]} B (two 8-bit moments)" + (", pageable to the CPU" if opt.name.startswith("paged") else "")
        elif per is not None and opt.name != "adamw":
            optim_b = float(trainable * per * p_bytes)
            optim_what = f"{opt.name}, {trainable:,} trainable x {per:g} x {p_bytes} B"
            if opt.name == "adafactor":
                optim_what += " (factored second moments: rows + columns per matrix, not counted)"
    # one FSDP unit / ZeRO-3 layer gathered whole (the largest kind), its quantized linears at their storage size
    gathered = max(shape.layer_params(d) * w_bytes - shape.layer_linear_params(d) * saved for _, d in shape.decoder_layers())
    shard, grads_how, optim_how = "", "", ""
    if launch.strategy == "ddp" and world > 1:
        grads_b *= 2
        grads_how = " x 2 (ddp buckets)"
        shard = f"; ddp over {world} processes: + all-reduce buckets (a second copy of the grads)"
    elif launch.strategy == "fsdp":
        fsdp = launch.fsdp
        how = fsdp.sharding_strategy if fsdp is not None else "full_shard"
        # accelerate's FSDP 2 shards over dp_shard x cp: the processes of one replica, less its tp ranks
        over = world // ((launch.num_machines if how == "hybrid_shard" else replicate) * tp)
        if how != "no_shard":
            grads_b, optim_b = grads_b / over, optim_b / over
            grads_how = optim_how = f" / {over} ({how})"
        if how in ("full_shard", "hybrid_shard"):
            params_b = params_b / over + gathered
        if fsdp is not None and fsdp.cpu_offload:
            params_b, grads_b, optim_b = float(gathered), 0.0, 0.0
            grads_how = optim_how = " offloaded to the CPU"
            shard = f"; fsdp {how}, parameters, grads and optimizer state offloaded to the CPU"
        else:
            gathered_note = " (+ one layer gathered)" if how in ("full_shard", "hybrid_shard") else ""
            shard = f"; fsdp {how} over {over} processes{gathered_note}"
    elif ds_stage:
        ds = launch.deepspeed
        # ZeRO partitions over every process: with sequence parallelism DeepSpeed shards and reduces over the
        # data-parallel and sequence-parallel ranks together (its seq_data_parallel_group)
        optim_b /= world
        optim_how = f" / {world} (ZeRO-{ds_stage})"
        if ds_stage >= 2:
            grads_b /= world
            grads_how = optim_how
        if ds_stage == 3:
            params_b = params_b / world + gathered
        shard = f"; ZeRO stage {ds_stage} over {world} processes" + (" (+ one layer gathered)" if ds_stage == 3 else "")
        if ds is not None and ds.offload_optimizer != "none":
            optim_b = 0.0
            optim_how = f" offloaded to {ds.offload_optimizer}"
            shard += f", optimizer offloaded to {ds.offload_optimizer}"
        if ds is not None and ds.offload_params != "none":
            params_b = float(gathered)
            shard += f", parameters offloaded to {ds.offload_params}"

    if ds_stage:
        world = launch.num_processes
    if tp > 1:
        params_b, grads_b, optim_b = params_b / tp, grads_b / tp, optim_b / tp
        grads_how += f" / tp_size {tp}"
        optim_how += f" / tp_size {tp}"
        shard += f"; split over tp_size {tp} (heads and MLP columns)"
    # the largest tensor: the embedding matrix or a layer's widest linear (one gradient at a time, AdamW's for-loop step)
    widest = [n_in * n_out for _, dense in shape.decoder_layers() for n_in, n_out, _ in shape.linears(dense).values()]
    largest = max([shape.embedding_params(), *widest])
    grads_what = f"{trainable:,} trainable ({'adapter' if peft is not None else 'optim.trainable' if partial else 'all'}) x {g_bytes} B"
    if recipe.optim.step_in_backward and peft is None and grads_b:
        # each parameter steps and frees its gradient as soon as the backward pass finishes it (one micro-batch a
        # step, so no gradient is kept from an earlier one): none is alive at the peak, where the backward pass
        # starts from the logits; one tensor's later (at most the embedding matrix), once the logits are freed
        grads_b, grads_how = 0.0, ""
        grads_what = (
            f"none at the peak (optim.step_in_backward: each parameter steps and frees its gradient as the backward pass "
            f"finishes it; one tensor's at a time, at most {largest:,} x {g_bytes} B, after the logits are freed)"
        )
    checkpointing = recipe.model.gradient_checkpointing or bool(
        launch.strategy == "fsdp" and launch.fsdp is not None and launch.fsdp.activation_checkpointing
    )
    tokens = b * s
    h, layers = shape.hidden_size, shape.num_hidden_layers
    adapted = None if peft is None else frozenset(name.rsplit(".", 1)[-1] for name in _targets(shape, peft))
    mask_bytes = a_bytes if launch.cpu else 1  # a dropout mask: the CPU's noise tensor, a GPU's bool mask
    eager = recipe.model.attention == "eager"
    # eager attention keeps its s x s probabilities for the backward pass, and so does sdpa on
    # the CPU with dropout: torch has no fused CPU kernel with dropout and runs its math path
    scores_b = 0
    cpu_dropout = recipe.model.attention == "sdpa" and launch.cpu and shape.attention_dropout > 0
    # deepseek_v3's v heads narrower than its q and k heads: the CPU's fused sdpa kernel takes one head dim, so sdpa
    # runs its math path, which keeps the float32 probabilities (a GPU's memory-efficient kernel takes both)
    latent_math = shape.model_type == "deepseek_v3" and recipe.model.attention == "sdpa" and launch.cpu and shape.v_head_dim != shape.head_dim
    math = cpu_dropout and shape.model_type != "gpt2" or latent_math
    rank = int(peft.get("r") or 8) if peft is not None and peft["method"] == "lora" else 0
    masked = shape.model_type == "falcon" and recipe.model.attention == "sdpa"  # its materialised causal mask
    tiled = recipe.model.tiled_mlp
    if tiled and peft is not None and (shape.model_type in PARALLEL or shape.model_type == "stablelm" and shape.parallel):
        raise ValueError(f"the estimate does not cover model.tiled_mlp with [peft] on model type {shape.model_type!r}")
    per_kind = [
        (n, shape.layer_activations(p_bytes, a_bytes, adapted, mask_bytes, eager, math, rank, masked, tiled, dense))
        for n, dense in shape.decoder_layers()
    ]
    # under PEFT the frozen embeddings need no gradient: the first layer keeps less (unless they train)
    trained_embeddings = peft is not None and _module_names(shape)[2] in (peft.get("modules_to_save") or [])
    first = 0
    if adapted is not None and not trained_embeddings:
        first = shape.first_layer_unkept(p_bytes, a_bytes, adapted, mask_bytes)
    upcast = 0
    if eager:
        scores_b = b * shape.num_attention_heads * s * s * shape.scores_bytes(a_bytes, mask_bytes, p_bytes)
    elif cpu_dropout:  # in float32: the softmax output, the dropout's noise tensor and the dropped-out copy, and q, k and v
        scores_b, upcast = b * shape.num_attention_heads * s * s * 3 * 4, 0 if math else 3 * h * (4 - a_bytes)
    elif latent_math:  # the float32 softmax output, which the matmul with v reads as it is
        scores_b = b * shape.num_attention_heads * s * s * 4
    per_kind = [(n, kept + upcast) for n, kept in per_kind]
    # the recomputed (or offloaded) layer is the largest kind's; deepseek_v3's dense and MoE layers keep different sets
    per_layer, all_layers = max(kept for _, kept in per_kind), sum(n * kept for n, kept in per_kind)
    layers_formula = (
        " + ".join(f"{'dense' if dense else 'MoE'} layers {n} * {kept} B" for (n, kept), (_, dense) in zip(per_kind, shape.decoder_layers()))
        if len(per_kind) > 1
        else f"layers {layers} * {per_layer} B"
    )
    final = shape.final_activations(p_bytes, a_bytes, peft is not None, mask_bytes)
    # a sliding-window layer shorter than the sequence attends through a mask (transformers'
    # b x s x s booleans, one for all such layers), which sdpa turns into a float copy in the
    # activation dtype and keeps, in each layer; with a mask transformers repeats k and v to every
    # query head before sdpa: those layers keep s + 2 (heads - kv_heads) * head_dim more values a
    # token. A checkpointed layer is called again with the boolean mask, kept until the backward.
    # Eager attention adds its float masks (in model.dtype) to the scores and keeps none of them,
    # but a checkpointed layer is called again with them: one per kind of layer (full, sliding).
    # sdpa's math path (attention dropout on the CPU) keeps no mask either, and its q, k and v are
    # counted already
    mask_b = repeated = 0
    masked_layers = shape.sliding_layers
    sliding_mask = bool(shape.sliding_layers) and s > shape.sliding_window
    if sliding_mask and recipe.model.attention == "sdpa" and shape.model_type not in FUSED_ONLY and not cpu_dropout:
        q, kv = shape.num_attention_heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim
        mask_b, repeated = b * s * s if checkpointing else 0, (s + 2 * (q - kv)) * a_bytes
    elif shape.model_type == "falcon" and recipe.model.attention == "sdpa":
        # falcon materialises its causal mask whatever the attention (to add alibi to it): sdpa keeps
        # a float copy in every layer (k and v repeated for it are counted in the layer)
        mask_b, repeated, masked_layers = b * s * s if checkpointing else 0, s * a_bytes, layers
    elif eager and checkpointing:
        kinds = (shape.sliding_layers > 0) + (shape.sliding_layers < layers)
        mask_b = kinds * b * s * s * p_bytes
    chunk = recipe.loss.chunk_size if recipe.loss is not None and recipe.loss.cross_entropy == "chunked" else None
    # a rank of a cp x sp group holds tokens / seq_split of them, and its chunks at most chunk_size: counted here for
    # the whole group, as the activations are, and divided by seq_split below
    logit_tokens = tokens if chunk is None else min(chunk * seq_split, tokens)
    # gemma2's soft-capped logits: tanh keeps its output (in the activation dtype) besides the loss's three
    capped_b = a_bytes if shape.logit_softcap else 0
    logits_b = logit_tokens * vocab * (4 * LOGIT_COPIES + capped_b)
    # each chunk's backward computes the output projection's weight gradient before adding it
    # to the one accumulated so far: one more vocab x h gradient (none for a frozen head)
    head_grad_b = shape.vocab_size * h * p_bytes if chunk is not None and peft is None else 0
    logits_b += head_grad_b * seq_split  # whole on every rank of a cp x sp group: the division below leaves it whole
    if checkpointing:
        # the first layer is recomputed only after the loss's float32 buffers are freed, so the
        # peak holds the recomputed layer's set or the logits, whichever is larger
        layer_b = tokens * (per_layer + repeated) + scores_b
        act_b = tokens * (layers * h * p_bytes + final) + mask_b + max(0, layer_b - logits_b)
        act_formula = (
            f"b {b} * s {s} * (layers {layers} * h {h} * {p_bytes} B + final norm {final} B) (checkpointed) "
            f"+ max(0, one layer b * s * {per_layer} B - logits)"
        )
    else:
        act_b = tokens * (all_layers + final + masked_layers * repeated - first) + layers * scores_b + mask_b
        act_formula = f"b {b} * s {s} * ({layers_formula} + final norm {final} B)"
        if first:
            act_formula = f"b {b} * s {s} * ({layers_formula} - {first} B not kept by the first layer + final norm {final} B)"
    if mask_b and not repeated and eager:
        act_formula += f" + eager attention's masks, kept for the recomputed layers: {mask_b // (b * s * s * p_bytes)} * b {b} * s {s}^2 * {p_bytes} B"
    elif repeated and shape.model_type == "falcon":
        where = "the recomputed layer (in its set)" if checkpointing else f"{layers} layers"
        act_formula += f" + the causal mask's float copy in {where}: b * s * {repeated} B each" + (
            f" + the boolean mask kept for the recomputed layers: b {b} * s {s}^2 * 1 B" if mask_b else ""
        )
    elif repeated:
        act_formula += (
            f" + the sliding-window mask's float copy and k and v repeated per query head in {shape.sliding_layers}"
            f" sliding layers: b * s * {repeated} B each"
        ) + (f" + the boolean mask kept for the recomputed layers: b {b} * s {s}^2 * 1 B" if mask_b else "")
    if scores_b:
        kept_by = "the probabilities of sdpa's math path (attention dropout on the CPU)" if cpu_dropout else "eager attention's probabilities"
        if latent_math:
            kept_by = "the probabilities of sdpa's math path (v_head_dim other than q's and k's on the CPU)"
        act_formula += f" + {kept_by}: layers {layers} * b {b} * heads {shape.num_attention_heads} * s {s}^2 * {scores_b // (b * shape.num_attention_heads * s * s)} B"
    offloaded_b = 0
    if recipe.model.activation_offloading and not launch.cpu:
        # the saved activations wait in host memory; the device holds those of the layer the forward or the
        # backward pass is at (with checkpointing: the recomputed layer's set, which the backward uses in place)
        kept_b = tokens * final + mask_b + (max(0, layer_b - logits_b) if checkpointing else tokens * per_layer + scores_b)
        offloaded_b, act_b = max(0, act_b - kept_b), min(act_b, kept_b)
        act_formula = (
            f"{act_formula}, of which {human(offloaded_b)} waits in host memory (model.activation_offloading): on the "
            f"device b {b} * s {s} * final norm {final} B + "
            + (f"max(0, the recomputed layer b * s * {per_layer} B - logits)" if checkpointing else f"one layer's b * s * {per_layer} B")
        )
    if tp * seq_split > 1:
        act_b = round(act_b / (tp * seq_split))
        logits_b = round(logits_b / seq_split)
        split = [f"tp_size {tp}"] * (tp > 1) + [f"cp_size x sp_size {seq_split}"] * (seq_split > 1)
        act_formula = f"({act_formula}) / ({' x '.join(split)})"
    if mixed and p_bytes == 4 and launch.strategy == "ddp":
        # autocast casts each float32 weight to 16 bits for its matmul, and the backward keeps the
        # copy; a quantized weight is dequantized inside its matmul instead
        copied = shape.linear_weights() - quantized - (shape.embedding_params() - shape.hidden_size if reward else 0)
        params_b += 2 * copied
        precision += f", + 16-bit copies of the {copied:,} matmul weights (autocast)"

    reference_copy = pref is not None and getattr(pref, "reference", None) == "live" and peft is None
    if reference_copy and ds_stage == 3:  # the frozen reference model, partitioned as the parameters are
        params_b += n_params * p_bytes / world
        precision += f", + the frozen reference copy ({n_params:,} x {p_bytes} B / {world}, ZeRO-3)"
    elif reference_copy and launch.strategy == "fsdp":  # the frozen reference model, sharded as the parameters are
        # (fsdp, how and over as the strategy's branch above set them); its layers are freed after their forward
        # whatever the strategy, as it runs no backward pass, and offloaded with the model's
        if fsdp is not None and fsdp.cpu_offload:
            precision += ", + the frozen reference copy (offloaded to the CPU)"
        else:
            shards = 1 if how == "no_shard" else over
            params_b += n_params * p_bytes / shards
            precision += f", + the frozen reference copy ({n_params:,} x {p_bytes} B / {shards}, fsdp {how})"
    elif reference_copy:  # the frozen reference model, whole on every process
        params_b += n_params * p_bytes
        precision += f", + the frozen reference copy ({n_params:,} x {p_bytes} B)"
    if world == 1 and not ds_stage and grads_b and recipe.train.batch_size == b and not recipe.model.activation_offloading:
        # one micro-batch a step on one process: zero_grad freed the step before's gradients, and this step's appear
        # as the backward pass frees the activations and the logits; at its end (a checkpointed model recomputing its
        # first layer) the gradients are whole and the rest gone. They add what they exceed the freed part by
        recompute = layer_b if checkpointing else 0
        # then AdamW's step, its temporaries beside them: the for-loop update (torch's choice on the CPU) makes the
        # root of one tensor's second moment and its quotient, the foreach one (on a GPU) the roots of a whole group's
        # at once, the fused one none. Other optimizers' temporaries are not counted
        temps, temps_what = 0.0, ""
        if opt.name == "adamw" and peft is None:
            how = opt.implementation if opt.implementation != "auto" else ("for-loop" if launch.cpu else "foreach")
            temps = {"for-loop": 2 * largest * p_bytes, "foreach": float(trainable * p_bytes), "fused": 0.0}[how]
            temps_what = f", or AdamW's {how} step temporaries ({human(temps)})" if temps else ""
        at_peak = max(0.0, grads_b + max(recompute, temps) - act_b - logits_b)
        grads_what += (
            f" = {human(grads_b)}; one micro-batch a step: at the end of the backward pass, with the activations and the "
            f"logits freed, beside {'the recomputed first layer' if checkpointing else 'nothing'}{temps_what}, they add "
            f"{human(at_peak)} to the peak"
        )
        grads_b = at_peak
    parts = [int(round(x)) for x in (params_b, grads_b, optim_b)]
    per_device = sum(parts) + act_b + logits_b
    if partial:
        notes.append("optim.trainable: activations counted as if every layer trained (frozen early layers keep less: an upper bound)")
    if reward:
        notes.append(
            f"reward model: s = 2 x data.seq_len {recipe.data.seq_len} (each side a row of its own, as many tokens as "
            f"one row of both); a score head of h {shape.hidden_size} weights in place of lm_head"
        )
    elif pref is not None and pref.objective not in UNPAIRED:
        notes.append(f"preference pairs: s = 2 x data.seq_len {recipe.data.seq_len} (chosen and rejected in one row)")
    capped = f" + the soft-cap's tanh output, {capped_b} B a logit" if capped_b else ""
    notes += [
        f"params: {n_params:,} parameters{f' + {adapter:,} adapter' if peft else ''} ({precision}){shard}",
        f"grads: {grads_what}{grads_how}",
        f"optimizer: {optim_what}{optim_how}",
        f"activations: {act_formula}",
        (
            f"logits: min(loss.chunk_size {chunk}, b {b} * s {s}{f' / (cp_size x sp_size {seq_split})' if seq_split > 1 else ''}) * vocab {shape.vocab_size} * 4 B * {LOGIT_COPIES} (chunked float32 cross-entropy: one chunk at a time)"
            + (f" + a chunk's output-projection gradient vocab {shape.vocab_size} * h {h} * {p_bytes} B" if head_grad_b else "")
            if chunk is not None
            else f"logits: b {b} * s {s} * 1 score * 4 B * {LOGIT_COPIES} (a reward model's score head, one value a token)"
            if reward
            else f"logits: b {b} * s {s} * vocab {shape.vocab_size} * 4 B * {LOGIT_COPIES} (float32 cross-entropy)"
        )
        + capped
        + (f" / (cp_size x sp_size {seq_split})" if seq_split > 1 and chunk is None else ""),
    ]
    evaluation = None
    eval_b = recipe.train.eval_micro_batch_size
    if eval_b is not None and eval_b > b and chunk is not None:
        # without the logits, an evaluation forward peaks inside a layer (the attention's or the MLP's
        # intermediates of eval_b rows, which depend on the attention kernel): not modelled
        notes.append(
            f"evaluation: train.eval_micro_batch_size {eval_b} rows a forward, not estimated with loss.cross_entropy "
            '"chunked": without the logits the forward peaks inside a layer (its attention\'s or MLP\'s '
            "intermediates), which the estimate does not model (params, optimizer state and one chunk of logits "
            "were 45 % of the measured peak for the quickstart, benchmarks/memory_estimate.py)"
        )
    elif eval_b is not None and eval_b > b:
        # no backward pass: the logits in the activation dtype, their float32 copy (none when they are
        # float32 already) and the cross-entropy's float32 log-probabilities; beside them the final
        # norm's output that lm_head reads (and its 16-bit cast under autocast over float32 weights).
        # A soft-cap adds nothing here: each of its steps frees the tensor before (nothing is kept for a backward)
        eval_tokens = eval_b * s if chunk is None else min(chunk, eval_b * s)
        per_logit = 8 if a_bytes == 4 else a_bytes + 8
        eval_logits = round(eval_tokens * vocab * per_logit / seq_split)
        hidden_bytes = p_bytes + (2 if mixed and p_bytes == 4 else 0)
        eval_hidden = round(eval_b * s * h * hidden_bytes / seq_split)
        evaluation = parts[0] + parts[2] + eval_logits + eval_hidden
        tokens_formula = f"b {eval_b} * s {s}" if chunk is None else f"min(loss.chunk_size {chunk}, b {eval_b} * s {s})"
        logit_formula = f"{tokens_formula} * {'1 score' if reward else f'vocab {shape.vocab_size}'} * {per_logit} B"
        notes.append(
            f"evaluation: train.eval_micro_batch_size {eval_b} rows a forward, no backward: params {human(parts[0])} + optimizer "
            f"{human(parts[2])} + its logits {human(eval_logits)} ({logit_formula}) + the final hidden states "
            f"{human(eval_hidden)} (b {eval_b} * s {s} * h {h} * {hidden_bytes} B); the gradients are freed: {human(evaluation)}"
            + (", above the training step's peak" if evaluation > per_device else "")
        )
    return MemoryEstimate(
        params=parts[0],
        grads=parts[1],
        optimizer=parts[2],
        activations=act_b,
        logits=logits_b,
        per_device=per_device,
        devices=world,
        total=per_device * world,
        parameters=n_params + adapter,
        trainable_parameters=trainable,
        notes=tuple(notes),
        evaluation=evaluation,
    )


def _shape_config(recipe: Recipe, model_config: dict[str, Any] | None) -> tuple[dict[str, Any], str, int | None]:
    """The recipe's model config as (config, model type, vocabulary size for `model.init`, else None)."""
    init = recipe.model.init
    if init is not None:
        train = recipe.tokenizer.train
        if init not in ARCHITECTURES:  # before the vocabulary: say first that the architecture is not counted
            return {}, init, None
        if train is None:
            raise ValueError("the vocabulary size is the tokenizer's, and tokenizer.path is read only when training")
        # the config transformers builds: its defaults, under what [model.config] and recipec set
        config = {**model_types.model_types()[init]["keys"]}
        config.update({model_types.canonical(init, k): v for k, v in recipe.model.init_config().items()})
        return config, init, train.vocab_size
    if model_config is None:
        path = recipe.model.path
        if path is not None and recipe.model.is_local:
            why = f"and {path} holds no readable config.json"
        else:
            flag = "" if recipe.model.revision is None else f" --revision {recipe.model.revision}"
            why = "and this one is not in the cache" + (f" (`hf download {path}{flag}` fetches it)" if path is not None else "")
        raise ValueError(
            "the model's config.json is read from a local model (model.path starting with ./, ../, / or ~) or from a hub "
            f"model's snapshot in the local Hugging Face cache, {why}"
        )
    return model_config, str(model_config.get("model_type")), None


def model_shape(recipe: Recipe, model_config: dict[str, Any] | None) -> ModelShape:
    """The shape of the recipe's model: `[model.config]` and the tokenizer for `model.init`,
    the pretrained model's config.json otherwise.

    Raises:
        ValueError: with why there is no estimate (unknown config, vocabulary or architecture).
    """
    return ModelShape.from_config(*_shape_config(recipe, model_config))


def trainable_counts(recipe: Recipe, model_config: dict[str, Any] | None) -> tuple[int, int]:
    """The parameters `optim.trainable` picks and, of those, the hidden matrices (Muon's side),
    counted on the model built on the meta device from its config (no weights; this imports
    torch and transformers, which the rest of the estimate does not).

    Raises:
        ValueError: no config to build from, a config transformers cannot build, or patterns the
            model does not match (the script and `recipec check` refuse those too).
    """
    config, model_type, vocab_size = _shape_config(recipe, model_config)
    if not config:
        raise ValueError(f"the estimate does not cover model type {model_type!r}")
    import torch
    import transformers
    from transformers import AutoConfig

    from .runtime import optimizers
    from .runtime.preference import auto_model

    keys = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version")}
    if vocab_size is not None:
        keys["vocab_size"] = vocab_size
    objective = recipe.preference.objective if recipe.preference is not None else None
    if objective == "reward":
        keys["num_labels"] = 1
    try:
        with torch.device("meta"):
            model = getattr(transformers, auto_model(objective)).from_config(AutoConfig.for_model(model_type, **keys))
    except (ValueError, KeyError, TypeError, ImportError, OSError, RuntimeError, OverflowError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # not torch's C++ frames
        raise ValueError(f"optim.trainable: cannot build the model on the meta device to count what it picks: {reason}") from None
    picked, _ = optimizers.freeze(model, recipe.optim.trainable.model_dump())
    hidden = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and optimizers.is_hidden_matrix(n, p))
    return picked, hidden


def human(n: float) -> str:
    """Bytes as MiB below a GiB, else GiB."""
    return f"{n / MIB:.1f} MiB" if n < GIB else f"{n / GIB:.2f} GiB"


def check_ceiling(estimate_: MemoryEstimate, gib: float) -> str | None:
    """The warning text when the estimate exceeds `gib` GiB per device, else None."""
    if estimate_.evaluation is not None and estimate_.evaluation > max(estimate_.per_device, gib * GIB):
        return (
            f"estimated peak memory of an evaluation forward, {human(estimate_.evaluation)} per device, is above "
            f"launch.device_memory_gib {gib:g} (train.eval_micro_batch_size rows of logits beside the weights and the optimizer state)"
        )
    if estimate_.per_device <= gib * GIB:
        return None
    return (
        f"estimated peak memory {human(estimate_.per_device)} per device is above launch.device_memory_gib {gib:g} "
        f"(params {human(estimate_.params)}, grads {human(estimate_.grads)}, optimizer {human(estimate_.optimizer)}, "
        f"activations {human(estimate_.activations)}, logits {human(estimate_.logits)})"
    )


__all__ = ["MemoryEstimate", "ModelShape", "adapter_parameters", "check_ceiling", "estimate", "human", "model_shape"]
