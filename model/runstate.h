// runstate.h — PRIVATE to model/: the layout of the activation arena (RunState), shared by
// transformer.c (forward/backward, the arena) and lm_head.c (the chunked LM head). Users of the
// library see RunState only as the opaque type of transformer.h.
#ifndef FTK_RUNSTATE_H
#define FTK_RUNSTATE_H

#include <stdint.h>

#include "model/transformer.h"

#define HEAD_CHUNK 512         // rows of logits materialised at a time by the LM head (512: its sgemms
                               // run ~4% faster than at 256 rows; +V*256 floats of arena)
#define LORA_SCRATCH_RANK 64   // LoRA scratch holds all rows at once up to this rank (chunks above)

// Per-layer activations a training arena can keep for backward. The layer input x is always kept
// (L + 1 slices). A layer whose backward does not read an activation (or every layer, with
// gradient checkpointing) computes it into one shared scratch slice instead.
typedef enum {
    ACT_XMID, ACT_H1, ACT_STATS1, ACT_QKV, ACT_LSE, ACT_ATT, ACT_H2, ACT_STATS2, ACT_PRE, ACT_ACT, ACT_COUNT
} LayerAct;

// What model_backward computes in one layer: only the gradients some trainable tensor needs.
typedef struct {
    int below;        // some layer below this one (or the soft prompt) needs gradients
    int attn_train;   // a trainable hook on q/k/v/qkv/o of this layer
    int qkv_train;    // a trainable hook on q/k/v/qkv
    int mlp_train;    // a trainable hook on gate/up/down
    int gate_up_train;
} LayerNeeds;

struct RunState {
    ModelConfig cfg;         // the model this arena was sized for
    int B_max, T_max, training;
    int qd, kvd, qkv, pre_w;  // q_dim, kv_dim, fused qkv width, width of the MLP pre-activation
    // the last forward
    int B, T, Tt, nv, has_seg, used_dropout;
    void *mem;
    size_t bytes;
    int *positions;          // (N) position of every row, virtual rows included
    int *seg;                // (B, Tt) copy of seg_ids
    uint64_t *dropout_state; // (n_layers * LSLOT_COUNT) rng state when each hook's dropout began
    LayerNeeds *needs;       // (n_layers) which gradients backward computes in each layer
    float *rope_cos, *rope_sin;   // (N, hd/2) llama
    // activations; "per layer" buffers hold n_layers slices when training, else one
    float *x;                // residual stream entering layer l (and after the last layer)
    float *xmid;             // residual stream between attention and MLP (training only; else = x)
    float *h1, *mean1, *rstd1;
    float *qkvb;             // (N, qkv) after LoRA and RoPE
    float *att_lse;          // (B, H, T) log-sum-exp of each attention softmax row, per layer (training)
    float *att;              // (N, q_dim)
    float *branch;           // (N, C) scratch: output of a block before the residual add
    float *h2, *mean2, *rstd2;
    float *ffn_pre;          // (N, pre_w): llama [gate | up], gpt2 c_fc output
    float *ffn_act;          // (N, F)
    float *final_hidden, *final_mean, *final_rstd;
    // gradients (training only)
    float *d_final_hidden, *dx, *dh, *dqkv, *datt, *dffn_pre, *dffn_act;
    float *lora_scratch;
    size_t lora_scratch_n;
    float *head_h, *head_logits, *head_dh;   // LM head chunk: (HEAD_CHUNK, C), (HEAD_CHUNK, V), (HEAD_CHUNK, C)
    // activation plan (training): slice a of layer l is act_slice[l * ACT_COUNT + a]; slice
    // n_kept[a] is the shared scratch. Checkpointing keeps none and recomputes layers in backward.
    int checkpointing;
    int n_kept[ACT_COUNT];
    int *act_slice;            // (n_layers * ACT_COUNT)
    uint64_t *layer_rng;       // (n_layers) dropout rng state when layer l's forward began
};

#endif
