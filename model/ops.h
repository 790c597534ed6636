// ops.h — the transformer's per-op kernels, each *_forward next to its *_backward.
//
// Buffers are row-major (N rows = tokens, features). Backward functions compute gradients with
// respect to activations only (weights are frozen); each says whether it writes (=) or
// accumulates (+=) into its input gradient. Every matrix product is one par_sgemm over all rows
// (blocks of single-threaded cblas_sgemm, model/parallel.h); loops run over par_for on tasks whose
// cut depends only on the shape, so results are bit-identical for any thread count.
#ifndef FTK_OPS_H
#define FTK_OPS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "model/transformer.h"

// ---- embedding (+ soft prompt, + learned positions) ----
// out (B, T, C) with T = nv + Tt: row b*T + j = prompt[j] for j < nv, row b*T + nv + t =
// tok_emb[tokens[b*Tt + t]]. When pos_emb != NULL (gpt2) every row, virtual ones included, gets
// pos_emb[positions[b*T + j]] added. Token ids and positions must be validated by the caller.
// tok_emb NULL: the rows come from the bf16 table tok_emb_bf16 (--base-dtype bf16).
void embedding_forward(float *out, const int *tokens, const float *tok_emb, const uint16_t *tok_emb_bf16,
                       const float *prompt, int nv, const float *pos_emb, const int *positions, int B, int Tt,
                       int C);
// dprompt (nv, C) += sum over b of dout[b, 0:nv, :]. The token and position tables are frozen.
void embedding_backward(float *dprompt, const float *dout, int B, int T, int nv, int C);

// ---- residual: out = x + branch. Its backward hands dout unchanged to both inputs ----
void residual_forward(float *out, const float *x, const float *branch, size_t n);
void residual_backward(float *dx, float *dbranch, const float *dout, size_t n);   // both +=

// ---- RMSNorm (llama): out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) ----
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps);
void rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                      int N, int C);   // dx +=

// ---- LayerNorm (gpt2): out = (x - mean) * rstd * w + b ----
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                       int N, int C, float eps);
void layernorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *mean,
                        const float *rstd, int N, int C);   // dx +=

// ---- RoPE, HF rotate-half convention ----
// cos/sin tables (N, hd/2) for the positions of N rows: angle(p, i) = p * theta^(-2i/hd), in double.
void rope_tables(float *cos_t, float *sin_t, const int *positions, int N, int hd, float theta);
// Rotates n_heads heads of hd values in each of N rows (row stride ld) in place: for i < hd/2,
// (x[i], x[i+hd/2]) -> (x[i] cos - x[i+hd/2] sin, x[i+hd/2] cos + x[i] sin).
void rope_forward(float *x, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t);
// The transposed rotation applied to the gradient in place (dx = R^T dout).
void rope_backward(float *dx, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t);

// ---- MLP activations ----
// SwiGLU on the fused gate/up output: gu (N, 2F) rows [gate | up]; out (N, F) = silu(gate) * up.
void swiglu_forward(float *out, const float *gu, int N, int F);
void swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int F);   // dgu =
// GELU, tanh approximation (HF gelu_new): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void gelu_forward(float *out, const float *x, size_t n);
void gelu_backward(float *dx, const float *dout, const float *x, size_t n);   // dx =

// ---- linear layers (frozen W (O, I), y = x @ W^T + bias) with the LoRA hook ----
// out (N, n_out) = x (N, n_in) @ W^T (+ bias), W (n_out, n_in).
void linear_forward(float *out, const float *x, const float *W, const float *bias, int N, int n_in, int n_out);
// dx (N, n_in) = beta * dx + dout (N, n_out) @ W. beta 0 writes, 1 accumulates.
void linear_backward(float *dx, const float *dout, const float *W, int N, int n_in, int n_out, float beta);

// LoRA on a block of a (possibly fused) output of width ldo:
//   out[:, off:off+h->out] += scale * (drop(x) @ A^T) @ B^T.
// Dropout (inverted, p = h->dropout) only when rng != NULL and p > 0: the keep mask is drawn
// row-major over (N, h->in) from *rng, which advances. Rows are processed in chunks that fit the
// caller's scratch (lora_scratch_floats() per row at least).
void lora_forward(float *out, int ldo, const float *x, int N, const LoraHook *h, uint64_t *rng,
                  float *scratch, size_t scratch_floats);
// Backward of lora_forward given dout (N, ldo) (the whole fused output gradient). Accumulates
//   h->dB += scale * dout_blk^T @ (drop(x) A^T),  h->dA += scale * (dout_blk B)^T @ drop(x)
// when those are non-NULL, and dx (N, h->in) += scale * ((dout_blk B) @ A) * mask when dx != NULL.
// With dropout, rng_at_forward is the state *rng had when the forward began: the same mask is
// drawn again (use_dropout 0: no mask).
void lora_backward(float *dx, const float *dout, int ldo, const float *x, int N, const LoraHook *h,
                   int use_dropout, uint64_t rng_at_forward, float *scratch, size_t scratch_floats);
// Scratch floats per row that lora_forward/backward need to process one row per chunk.
size_t lora_scratch_floats(int in, int r);

// ---- vectorisable exp (Cephes-style range reduction; plain C that gcc vectorises at -O3) ----
// exp(x) within 2 ulp for x in [-87.33, 88.37] (the normal-float range); below it returns 0,
// above it +inf. n = round(x log2 e) by the 1.5*2^23 trick, r = x - n ln 2 in two parts (the
// high part has 9 significant bits, so n * EXP_LN2_HI is exact), exp(r) by a degree-7 polynomial
// on |r| <= ln2/2, and 2^n put straight into the exponent bits.
static inline float exp_poly(float x) {
    const float xc = x < -87.33654f ? -87.33654f : (x > 88.37626f ? 88.37626f : x);
    const float t = xc * 1.44269504088896341f + 12582912.0f;
    const float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float er = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    const float y = er * two_n.f;
    return x < -87.33654f ? 0.0f : (x > 88.37626f ? INFINITY : y);
}

// x[j] = exp(x[j] - shift) for j < n; returns their sum, accumulated in 16 fixed lanes (the same
// order whatever the caller, so results do not depend on threads; vectorised).
float exp_shift_sum(float *x, int n, float shift);
// max of x[0..n) (n >= 1), vectorised.
float row_max(const float *x, int n);
// sum of a[j] * b[j] for j < n, in 16 fixed lanes (vectorised, same order for every caller).
float row_dot(const float *a, const float *b, int n);

// ---- causal self-attention, fused, over the pool by (sequence, kv head) (attention.c) ----
typedef struct {
    int B, T;            // sequences, positions per sequence (nv virtual + Tt real)
    int n_heads, n_kv_heads, head_dim;
    int nv;              // leading virtual (soft-prompt) positions, visible to every later position
    const int *seg;      // (B, T - nv) segment ids of the real tokens, or NULL: attention stays
                         // inside a segment (packing)
} AttnShape;

// qkv (B*T, q_dim + 2*kv_dim) rows [q | k | v] (after RoPE); out (B*T, q_dim). The scores exist
// only as per-thread tiles of 64 query rows. lse (B, n_heads, T), when non-NULL, receives each
// query row's log-sum-exp of its scaled scores for backward. Query head h reads kv head
// h / (n_heads/n_kv_heads).
void attention_forward(float *out, float *lse, const float *qkv, const AttnShape *s);
// dqkv (B*T, qkv_dim) = gradient w.r.t. qkv (written; k/v blocks sum over the query heads of a
// group). dout (B*T, q_dim). lse: what attention_forward saved; the probabilities are recomputed
// tile by tile from Q, K and it.
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse, const AttnShape *s);
// Entries of one (sequence, head)'s T x T score square that the causal tiles compute (each tile
// of query rows against every key up to its last row): the FLOPs of a score product are
// 2 * head_dim * attention_score_area(T).
double attention_score_area(int T);
// Each pool thread's tile scratch for sequences of T positions, reserved up front: call before
// attention_forward/backward, outside the pool. 0, or -1 when out of memory. (Without it the tasks
// allocate their tiles on first use, and a task that cannot skips its work.)
int attention_reserve(int T);

// Attention of M consecutive query rows of ONE sequence, at positions p0 .. p0+M-1, against that
// sequence's cached keys/values kc, vc (p0 + M rows of kv_dim, the new rows already written);
// causal. q rows have stride ldq, out rows stride ldo. scratch: max(M, group) * (p0 + M) floats.
// For M == 1 the query heads of a kv group are done as one (group, hd) matrix.
void attention_cached(float *out, int ldo, const float *q, int ldq, const float *kc, const float *vc, int M,
                      int p0, int n_heads, int n_kv_heads, int head_dim, float *scratch);

#endif
