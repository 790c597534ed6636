// bench_step.h — one LoRA SFT step on a synthetic model, timed by phase, for `ftk bench`.
//
// The step makes the same calls as the SFT loop (sft/train.c) on random token data:
//   adapters_zero_grad -> model_forward -> lm_head_logprobs on the target rows only (dL/dlogp =
//   -1/n_targets, the token-level mean) -> model_backward -> adamw_step over the flat buffer.
// It does not clip gradients, like the PyTorch peer (/work/shared/bench/torch_lora_bench.py).
// Data: tokens (B, T+1) uniform over the vocabulary from the seed; inputs are the first T,
// targets the last T; the first round(mask_fraction * T) targets of each row are -1 (response-only
// SFT), so the LM head and its backward run on the other rows only.
#ifndef FTK_SFT_BENCH_STEP_H
#define FTK_SFT_BENCH_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "lora/adapter.h"
#include "model/model.h"
#include "model/transformer.h"
#include "sft/optim.h"

// The benchmark shapes: "gpt2" (GPT-2 small: 12 layers, 768, 12 heads, GELU MLP 3072, vocab 50257,
// tied head) and "llama" (12 layers, 768, 12 heads, SwiGLU 2048, vocab 32000, untied head, RoPE
// theta 10000). Both have 1024 positions unless min_positions asks for more. eps 1e-5.
int bench_shape(const char *name, int min_positions, ModelConfig *cfg, char *err);

typedef struct {
    int batch, seq;               // B sequences of T tokens
    int lora_r;
    float lora_alpha;
    char target_modules[256];     // "" = the architecture's default (q_proj,v_proj)
    double mask_fraction;         // in [0, 1): leading fraction of each row's targets set to -1
    double learning_rate;         // AdamW, weight decay 0
    uint64_t seed;                // data and adapter init
    int gradient_checkpointing;   // run state keeps layer inputs only; backward recomputes
} BenchStepConfig;

void bench_step_config_default(BenchStepConfig *c);   // 4 x 256, r 8, alpha 16, q/v, mask 0, lr 1e-4, seed 0

typedef struct {
    double forward_s;    // model_forward
    double head_s;       // lm_head_logprobs (logits, log-softmax, dlogits, dh) on the target rows
    double backward_s;   // model_backward
    double optim_s;      // zero_grad + adamw_step
    double total_s;
    double loss;         // mean -log p(target) over the target tokens
    double gemm_s;       // wall time inside par_sgemm calls (linears, LM head, LoRA; not attention)
    double gemm_flops;   // their FLOPs
} BenchStepTimes;

typedef struct {
    const Model *m;
    BenchStepConfig cfg;
    Adapters adapters;
    ModelAdapters hooks;
    RunState *rs;
    AdamW opt;
    int *tokens;         // (B, T) inputs
    int *rows;           // (n_targets) final-hidden row of each target
    int *targets;        // (n_targets) target token ids
    float *logp;         // (n_targets)
    int n_targets;
    uint64_t dropout_rng;
} BenchStep;

// Creates adapters, optimizer state, the training run state and the data for m.
int bench_step_init(BenchStep *bs, const Model *m, const BenchStepConfig *cfg, char *err);
void bench_step_free(BenchStep *bs);
// One optimizer step; fills t.
int bench_step_run(BenchStep *bs, BenchStepTimes *t, char *err);
// FNV-1a 64 over the bytes of the trainable parameters: equal hashes = bit-identical adapters.
uint64_t bench_step_params_hash(const BenchStep *bs);

// FLOPs of one step (multiply-add = 2). n = B*T rows, nt = target rows, L layers, C = dim,
// qd = q_dim, V = vocab, Wl = frozen linear weights of one layer, N_mm = L*Wl + V*C.
//   model    = 4*N_mm*n + 6*N_lora*n + 12*n*T*C*L       the peer's formula (HF step, every row
//              through the LM head, attention over the full T x T square, forward + input grads)
//   executed = what ftk's sgemms do:
//     linear    2*n*L*Wl (forward) + 2*n*(L*Wl - Wqkv0) (input grads; layer 0's qkv input grad is
//               skipped when no soft prompt learns)
//     attention 14*B*qd*A(T)*L with A(T) = attention_score_area(T), the part of the T x T square the
//               causal 64-row tiles compute (QK^T and PV forward; backward recomputes QK^T, then
//               dP, dV, dQ, dK)
//     head      4*nt*V*C     (logits and dh on the target rows)
//     lora      per adapter (in -> r -> out): forward 2n(in+out)r, backward 2n(2*out + 2*in)r
//               + 2n*in*r (x A^T recomputed), less 2n*in*r for the input grad where it is skipped
typedef struct {
    double model, executed;
    double linear, attention, head, lora;   // the parts of executed
    size_t gemm_params;   // N_mm
    size_t lora_params;   // N_lora (trainable LoRA floats)
} BenchFlops;
void bench_step_flops(const BenchStep *bs, BenchFlops *f);

#endif
