// export_lora_gguf.h — LoRA adapters as GGUF files that llama.cpp loads with `--lora` (FORMATS §2c),
// written and read back.
//
// File: general.architecture = the base's ("llama" / "gpt2"), general.type = "adapter",
// adapter.type = "lora", adapter.lora.alpha (f32), general.name, general.base_model.count/0.name,
// general.alignment 32, general.quantization_version 2. Per adapted linear two tensors named after
// the base weight: "blk.N.attn_q.weight.lora_a" = PEFT's A (r, in), GGUF ne {in, r}, and
// "….lora_b" = B (out, r), ne {r, out}. llama.cpp applies scale = alpha / r with r = lora_b ne[0].
//   - llama q/k: B's rows are permuted HF -> Meta order (n_heads / n_kv_heads), A unchanged, since
//     the GGUF base weights are in Meta order and P·(B A) = (P B) A.
//   - rsLoRA (scale alpha/sqrt(r)) is folded into alpha: alpha_gguf = scale · r.
//   - gpt2: c_attn -> attn_qkv, attn.c_proj -> attn_output, c_fc -> ffn_up, mlp.c_proj -> ffn_down.
//     ftk's q/k/v-block LoRA of rank r becomes one attn_qkv pair of rank n_blocks·r (A stacked, B
//     block-structured with zeros in the untrained blocks), as in the PEFT export (lora/peft.h).
//   - All tensors share one alpha: a tensor whose rank differs from the first one's gets the ratio
//     of ranks folded into its B so that every module keeps its own scale.
// Reading accepts what llama.cpp's convert_lora_to_gguf.py writes (F32/F16/BF16/Q8_0 tensors).
#ifndef FTK_EXPORT_LORA_GGUF_H
#define FTK_EXPORT_LORA_GGUF_H

#include "lora/adapter.h"
#include "lora/export_out.h"

// Writes a's LoRA part (soft prompts and heads are refused) to `path` (atomically, tmp + rename).
// name / base_name go to general.name / general.base_model.0.name (NULL: omitted).
int lora_gguf_save(const Adapters *a, const char *path, ExportDtype dtype, const char *name, const char *base_name,
                   char *err);

// Reads a GGUF LoRA adapter for model m into a (allocated here; adapters_free). The adapter must be
// for m's architecture and shapes: a tensor of the wrong shape, an unknown base tensor name, a
// missing half of a pair, or a rank that differs between modules is an error naming the tensor.
// The result has use_rslora 0 and alpha = adapter.lora.alpha (0 in the file: alpha = r, scale 1, as
// llama.cpp does); target_modules and layers_to_transform are derived from the tensors present.
int lora_gguf_load(Adapters *a, const Model *m, const char *path, char *err);

#endif
