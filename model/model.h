// model.h — the frozen base model: configuration, weights in ftk's one internal layout, tokenizer.
//
// Layout (DESIGN §2): every linear weight is W (out, in) row-major fp32, as HF nn.Linear;
// y = x @ W^T. q/k rows are in the HF rotate-half order. The attention projections of a layer
// live in ONE fused buffer wqkv (q_dim + 2*kv_dim, dim) so a single sgemm computes q, k and v;
// wq/wk/wv point at its row blocks. Likewise llama's gate and up projections are one buffer
// w_gate_up (2*ffn, dim) with w_gate = rows [0, ffn), w_up = rows [ffn, 2*ffn).
#ifndef FTK_MODEL_H
#define FTK_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ARCH_LLAMA = 0, ARCH_GPT2 = 1 } Arch;

typedef struct {
    Arch arch;
    int dim;          // hidden size C
    int n_layers;
    int n_heads;
    int n_kv_heads;   // == n_heads without GQA (always for gpt2)
    int head_dim;     // dim / n_heads
    int ffn_dim;      // llama intermediate_size; gpt2 n_inner (default 4*dim)
    int vocab_size;
    int max_seq_len;  // max_position_embeddings / n_positions / llama2.c seq_len
    float norm_eps;   // rms_norm_eps or layer_norm_epsilon
    float rope_theta; // llama only
    int tied_head;    // lm_head shares token embeddings
    int bos_id, eos_id;   // -1 when unknown
} ModelConfig;

typedef struct {
    float *attn_norm_w, *attn_norm_b;   // (C); _b gpt2 only
    float *wqkv;                        // (q_dim + 2*kv_dim, C) fused
    float *wq, *wk, *wv;                // views into wqkv: (q_dim, C), (kv_dim, C), (kv_dim, C)
    float *bqkv;                        // (q_dim + 2*kv_dim) gpt2 only, else NULL
    float *wo, *bo;                     // (C, q_dim); bo gpt2 only
    float *ffn_norm_w, *ffn_norm_b;     // (C); _b gpt2 only
    float *w_gate_up;                   // llama: (2*F, C) fused [gate; up]; gpt2: NULL
    float *w_gate;                      // llama view (F, C)
    float *w_up, *b_up;                 // llama view (F, C); gpt2 c_fc (F, C) + bias (F)
    float *w_down, *b_down;             // (C, F); b_down gpt2 only
    // bf16 base (weights_bf16.h): the linears above as bf16, their float pointers then NULL
    uint16_t *wqkv_bf16, *wo_bf16, *w_gate_up_bf16, *w_up_bf16, *w_down_bf16;
} LayerWeights;

typedef struct {
    float *tok_emb;       // (V, C)
    float *pos_emb;       // (max_seq_len, C) gpt2 only
    LayerWeights *layers; // n_layers
    float *out_norm_w, *out_norm_b;  // (C); _b gpt2 only
    float *lm_head;       // (V, C); == tok_emb when tied
    // bf16 base (weights_bf16.h): the two tables as bf16, tok_emb and lm_head then NULL;
    // lm_head_bf16 == tok_emb_bf16 when tied
    uint16_t *tok_emb_bf16, *lm_head_bf16;
} ModelWeights;

struct Tokenizer;

typedef struct Model {
    ModelConfig cfg;
    ModelWeights w;
    struct Tokenizer *tok;     // may be NULL only for config-only loads
    char path[4096];           // what the user passed
    char format[16];           // "hf", "gguf", "llama2c", "synthetic"
    char src_dtype[16];        // dominant dtype in the file: "F32", "F16", "BF16", "Q8_0", "mixed"
    char *hf_config_json;      // original config.json text (HF dirs), else NULL
    // Memory: all weights live in one fp32 block owned by the model.
    float *weight_mem;
    size_t n_weight_floats;
    // After model_to_bf16 (weights_bf16.h): the layers' linear weights are bf16 (their *_bf16
    // pointers), still inside weight_mem, with an fp32 expansion scratch there too.
    int base_bf16;
    float *bf16_scratch;
    size_t bf16_scratch_floats;
} Model;

// The one loader entry point. Detects the format from the path:
//   directory with config.json            -> Hugging Face (safetensors, sharded or not)
//   *.gguf (or GGUF magic)                -> GGUF v3
//   *.bin (+ tokenizer.bin / tok*.bin beside it, or tokenizer_path) -> llama2.c
//   directory without config.json holding exactly one .bin -> llama2.c
// tokenizer_path may be NULL (auto-detect). On failure returns non-zero and err names the file.
int model_load(Model *m, const char *path, const char *tokenizer_path, char *err);
void model_free(Model *m);

// Allocates m->weight_mem for cfg and points every tensor in m->w at its place in it
// (zero-filled). Loaders call this, then fill the tensors. Also used for synthetic models.
int model_alloc_weights(Model *m, const ModelConfig *cfg, char *err);

// Parameter counts as PyTorch counts them (tied head counted once; gpt2 biases included).
size_t model_param_count(const ModelConfig *cfg);

// Reads config.json (an HF dir or the file itself) without weights.
int model_config_from_hf(ModelConfig *cfg, const char *path, char *err);

// Meta (GGUF / llama2.c, interleaved RoPE pairs) <-> HF (rotate-half) row order of q/k
// weights (rows = n_head * head_dim, cols arbitrary). DESIGN §2, FORMATS §2c.
//   to_hf:   HF = W.reshape(n_head, hd/2, 2, cols).swapaxes(1, 2)
//   to_meta: Meta = W.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)
void permute_rows_meta_to_hf(float *w, int n_head, int head_dim, int cols);
void permute_rows_hf_to_meta(float *w, int n_head, int head_dim, int cols);

static inline int model_q_dim(const ModelConfig *c) { return c->n_heads * c->head_dim; }
static inline int model_kv_dim(const ModelConfig *c) { return c->n_kv_heads * c->head_dim; }
static inline int model_qkv_dim(const ModelConfig *c) { return model_q_dim(c) + 2 * model_kv_dim(c); }

#endif
