// transformer.h — batched forward and backward of the frozen base model, with the one narrow
// adapter hook (LoRA on linears, soft-prompt rows in front of the input embeddings).
//
// Shapes: B sequences of T positions (T includes the n_virtual soft-prompt positions), C = dim,
// N = B*T rows. Activations live in one arena (RunState) sized up front for (B, T).
// Backward computes gradients w.r.t. activations through the frozen weights (dX = dY @ W) and
// accumulates gradients only into adapter buffers (LoRA dA/dB, soft prompt); never dW.
#ifndef FTK_TRANSFORMER_H
#define FTK_TRANSFORMER_H

#include <stdint.h>
#include "model/model.h"

// A LoRA adapter on one linear (PEFT semantics): y[:, off:off+out] += scale * (drop(x) A^T) B^T.
// For fused projections (wqkv, w_gate_up) out_offset selects the block of the fused output.
typedef struct {
    int r;               // rank; 0 = no adapter on this linear
    int in, out;         // A is (r, in), B is (out, r)
    int out_offset;      // first output column inside the (possibly fused) projection output
    float scale;         // alpha/r, or alpha/sqrt(r) for rsLoRA
    float dropout;       // dropout probability on x, applied only in training forwards
    const float *A;      // (r, in)
    const float *B;      // (out, r)
    float *dA, *dB;      // gradients, accumulated (+=); NULL when not training this adapter
} LoraHook;

// Which linear of a layer a hook sits on. For llama: Q/K/V are blocks of wqkv, GATE/UP blocks of
// w_gate_up, O = o_proj, DOWN = down_proj. For gpt2: QKV = all of c_attn, Q/V = its q/v blocks,
// O = attn.c_proj, UP = mlp.c_fc, DOWN = mlp.c_proj.
typedef enum { LSLOT_Q, LSLOT_K, LSLOT_V, LSLOT_QKV, LSLOT_O, LSLOT_GATE, LSLOT_UP, LSLOT_DOWN, LSLOT_COUNT } LoraSlot;

typedef struct {
    LoraHook *hooks;        // n_layers * LSLOT_COUNT, index [layer * LSLOT_COUNT + slot]; NULL = none
    int n_virtual;          // soft-prompt length (0 = none)
    const float *prompt;    // (n_virtual, C)
    float *dprompt;         // (n_virtual, C) gradient accumulator, or NULL
    int disabled;           // 1 = behave as the bare base model (PPO/DPO reference)
} ModelAdapters;

// Checks every active hook's shape against the linear it sits on, dropout in [0, 1), and the soft
// prompt; model_forward and generation call it. 0 when ad is NULL or disabled.
int model_adapters_validate(const Model *m, const ModelAdapters *ad, char *err);

typedef struct RunState RunState;   // activation arena; contents private to transformer.c

// T_max counts all positions (virtual + real). training=1 keeps every activation any adapter's
// backward could read.
int runstate_create(RunState **out, const Model *m, int B, int T_max, int training, char *err);

// A training run state sized for these adapters (ad may be NULL): only the activations their
// backward reads are kept per layer, the rest go to one shared scratch slice. model_forward and
// model_backward refuse adapters that would need more. Flags:
//   RS_GRAD_CHECKPOINT  keep only each layer's input; backward recomputes a layer's activations
//                       (same dropout masks) right before its backward. Gradients are bit-identical.
#define RS_GRAD_CHECKPOINT 1
int runstate_create_train(RunState **out, const Model *m, const ModelAdapters *ad, int B, int T_max, int flags,
                          char *err);
void runstate_free(RunState *rs);
float *runstate_final_hidden(RunState *rs);    // (B*T, C) output of the final norm, row b*T + t
float *runstate_d_final_hidden(RunState *rs);  // (B*T, C) dL/d(final hidden), zeroed by model_forward
int runstate_T(const RunState *rs);            // T of the last forward (n_virtual + Tt)
size_t runstate_bytes(const RunState *rs);     // arena size

// Forward over token ids (B, Tt); ad may be NULL. Position of real token t is n_virtual + t unless
// pos_ids (B, Tt) is given (then n_virtual + pos_ids[b, t]; virtual token j sits at position j);
// seg_ids (B, Tt), when given, restricts attention to tokens of the same segment (packing;
// virtual tokens are seen by all). dropout_rng != NULL in training forwards.
int model_forward(const Model *m, const ModelAdapters *ad, RunState *rs, const int *tokens,
                  int B, int Tt, const int *pos_ids, const int *seg_ids, uint64_t *dropout_rng, char *err);

// Backward of the last training forward from runstate_d_final_hidden(rs); accumulates into the
// hooks' dA/dB and ad->dprompt. Input-gradients below the lowest trainable layer are skipped when
// there is no soft prompt.
int model_backward(const Model *m, const ModelAdapters *ad, RunState *rs, char *err);

// Logits of n rows of hidden states: (n, C) @ (C, V) -> (n, V).
void lm_head_logits(const Model *m, const float *hidden, int n, float *logits);

// Fused, chunked LM head: for i < n, with h = final_hidden[rows[i]]:
//   logp[i] = log_softmax(h @ lm_head^T)[targets[i]]     entropy[i] (if non-NULL) = H(softmax)
// With dfn != NULL also accumulates d_final_hidden[rows[i]] += g_i * d logp[i] / dh, where
// g_i = dfn(ctx, i, logp[i]) = dL/dlogp[i]. Never materialises more than a chunk of (n, V).
typedef float (*DLogpFn)(void *ctx, int i, float logp);
int lm_head_logprobs(const Model *m, RunState *rs, const int *rows, const int *targets, int n,
                     float *logp, float *entropy, DLogpFn dfn, void *ctx, char *err);

// Convenience for `ftk logits` and tests: full logits (Tt + n_virtual rows) of one sequence.
int model_logits_all(const Model *m, const ModelAdapters *ad, const int *tokens, int Tt,
                     float **logits /* malloc'ed (T, V) */, char *err);

#endif
