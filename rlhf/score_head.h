// score_head.h — scalar heads on the final hidden state: the reward model's `score` (1, C) with
// no bias, read at the last real token of each sequence, and the PPO value head (1, C) + bias,
// read at every response position. Also the row bookkeeping between the (B*T, C) final hidden
// of a forward and the (n, C) rows a head reads.
#ifndef FTK_RLHF_SCORE_HEAD_H
#define FTK_RLHF_SCORE_HEAD_H

#include <stdint.h>

// Flat row (b*T + position) of the last real token of each sequence, for right-padded batches:
// rows[b] = b*T + n_virtual + lengths[b] - 1, where lengths[b] counts real tokens (no padding, no
// virtual tokens). NOT T - 1: with right padding that is a pad position (the classic reward
// model bug, trl issues #937, #2778). Fails if a length is < 1 or n_virtual + length > T.
int last_token_index(const int *lengths, int B, int T, int n_virtual, int *rows, char *err);
// Same from an attention mask (B, T): rows[b] = b*T + the last t with mask[b,t] != 0 (OpenRLHF's
// eos_indices). Fails if a row has no valid position.
int last_token_index_from_mask(const uint8_t *mask, int B, int T, int *rows, char *err);

// out (n, C) = hidden[rows[i]] for i < n.
void gather_rows(float *out, const float *hidden, const int *rows, int n, int C);
// d_hidden[rows[i]] += d_rows[i] for i < n (rows may repeat).
void scatter_add_rows(float *d_hidden, const float *d_rows, const int *rows, int n, int C);

// out[i] = h[i] · w (+ bias[0] when bias != NULL), h (n, C), w (1, C).
void scalar_head_forward(const float *h, int n, int C, const float *w, const float *bias, float *out);
// Given dout = dL/dout (n): dw += dout^T h; dbias[0] += sum(dout) (if dbias != NULL);
// dh += dout w (if dh != NULL). Everything accumulates, as all trainable gradients do.
void scalar_head_backward(const float *h, int n, int C, const float *w, const float *dout,
                          float *dw, float *dbias, float *dh);

#endif
