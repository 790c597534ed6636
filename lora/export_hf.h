// export_hf.h — a Model written as a Hugging Face model directory (FORMATS §2b) that transformers'
// from_pretrained and ftk's own loader read:
//   config.json              the source's config.json when the source was an HF dir (torch_dtype set
//                            to the written dtype), else a complete LlamaForCausalLM / GPT2LMHeadModel
//                            config generated from the ModelConfig
//   generation_config.json   copied from an HF source, else {bos_token_id, eos_token_id}
//   tokenizer files          copied from an HF source dir (tokenizer.json, tokenizer.model,
//                            tokenizer_config.json, special_tokens_map.json, vocab.json, merges.txt,
//                            added_tokens.json), else written from m->tok (lora/tokenizer_write.h)
//   model.safetensors        or, when the tensors exceed max_shard_bytes, model-0000i-of-0000N.safetensors
//                            + model.safetensors.index.json {"metadata": {"total_size"}, "weight_map"}
// Tensor names as transformers saves them: llama model.embed_tokens / model.layers.N.{input_layernorm,
// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj} / model.norm /
// lm_head (untied only); gpt2 transformer.{wte, wpe, h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2,
// mlp.c_fc, mlp.c_proj}, ln_f} with the Conv1D weights transposed back to (in, out). Every tensor in
// one dtype (F32, F16 or BF16). Safetensors files: header padded to 8, {"format":"pt"}, packed.
#ifndef FTK_EXPORT_HF_H
#define FTK_EXPORT_HF_H

#include <stddef.h>

#include "lora/export_out.h"
#include "model/model.h"

typedef struct {
    ExportDtype dtype;          // EXPORT_F32 / F16 / BF16 (q8_0 is refused)
    size_t max_shard_bytes;     // shard above this many bytes of tensor data; 0 = never shard
    int copy_tokenizer;         // 1: copy the tokenizer files of an HF source dir (m->path); 0: write m->tok
} HfExportOptions;

// Writes the files into dir, which must exist (a staged directory: see export_out.h).
int export_hf(const Model *m, const char *dir, const HfExportOptions *o, char *err);

// "5GB" (10^9), "500MB", "10KB", "2GiB" (2^30), "123" bytes, as transformers' max_shard_size.
int parse_byte_size(const char *s, size_t *out, char *err);

#endif
