// export_gguf.h — a Model written as a GGUF v3 model file that llama.cpp loads (FORMATS §2c),
// following what llama.cpp's convert_hf_to_gguf.py writes:
//   general.architecture / type "model" / name / file_type / quantization_version / alignment 32,
//   llama.{context_length, embedding_length, block_count, feed_forward_length, rope.dimension_count,
//   attention.head_count, attention.head_count_kv, attention.layer_norm_rms_epsilon, rope.freq_base,
//   vocab_size} or gpt2.{context_length, embedding_length, block_count, feed_forward_length,
//   attention.head_count, attention.layer_norm_epsilon}, and the tokenizer.ggml.* keys
//   (lora/tokenizer_write.h).
// Tensors: token_embd, (gpt2) position_embd, blk.N.{attn_norm, attn_q/k/v | attn_qkv, attn_output,
// ffn_norm, ffn_gate, ffn_up, ffn_down}(.weight/.bias), output_norm, output (untied llama; gpt2 always,
// as a copy of token_embd like the converter). A (out, in) weight has ne {in, out}. llama q/k rows
// are permuted back to Meta's interleaved order (permute_rows_hf_to_meta; k with n_kv_heads).
// 1-D tensors (norms, biases) stay F32; 2-D ones take the dtype (Q8_0 needs rows that are a
// multiple of 32 values: other rows fall back to F16, as llama.cpp does).
#ifndef FTK_EXPORT_GGUF_H
#define FTK_EXPORT_GGUF_H

#include "lora/export_out.h"
#include "model/model.h"

typedef struct {
    ExportDtype dtype;
    const char *name;   // general.name; NULL = the model path's base name
} GgufExportOptions;

// Writes m (weights + tokenizer, which must be present) to path, atomically (path.tmp + rename).
int export_gguf(const Model *m, const char *path, const GgufExportOptions *o, char *err);

// general.file_type of a dtype (LLAMA_FTYPE_*): f32 0, f16 1, q8_0 7, bf16 32.
uint32_t export_gguf_file_type(ExportDtype d);

#endif
