// merge.h — folding LoRA adapters into the base weights: W' = W + s · B A, in fp32 (DESIGN §3).
//
// Several adapters are first combined into ONE set of LoRA hooks with the scale folded in
// (scale 1), as PEFT's LoraModel.add_weighted_adapter does; merging that set then applies
//   cat    (default): A' = [A_1; ...; A_n] (Σr_i, in),  B' = [w_1 s_1 B_1, ..., w_n s_n B_n] (out, Σr_i)
//                     so ΔW = B'A' = Σ_i w_i s_i B_i A_i — exactly the weighted sum of the deltas.
//                     Ranks may differ; any weights (negative ones too).
//   linear:           A' = Σ_i sqrt(w_i s_i) A_i,  B' = Σ_i sqrt(w_i s_i) B_i  (rank r)
//                     so ΔW = Σ_i Σ_j sqrt(w_i s_i w_j s_j) B_i A_j — PEFT's "linear": it mixes the
//                     A and B matrices, cross terms included; it equals the weighted sum of deltas
//                     only for one adapter. Needs equal ranks and w_i s_i >= 0 (PEFT takes the sqrt).
// A module that only some adapters target gets only their terms (PEFT skips adapters without it).
// One adapter with weight w: both give ΔW = w s B A.
//
// The combined hooks can run unmerged (ModelAdapters.hooks, e.g. for the probe of `ftk merge`)
// and are what lora_merge_hooks adds to the weights. Soft prompts and heads cannot be merged:
// lora_combine refuses adapters that carry them (the CLI says what to do instead).
#ifndef FTK_MERGE_H
#define FTK_MERGE_H

#include "lora/adapter.h"

typedef enum { COMBINE_CAT = 0, COMBINE_LINEAR = 1 } LoraCombination;

// "cat" | "linear"
int lora_combination_parse(const char *s, LoraCombination *out, char *err);

typedef struct {
    int n_layers;
    LoraHook *hooks;   // n_layers * LSLOT_COUNT; r == 0 where no adapter targets the slot; scale 1
    float *mem;        // storage of every A and B
    size_t n_floats;
} CombinedLora;

// Combines n adapters (all made for the model config mc) with weights w (n values).
int lora_combine(CombinedLora *out, const Adapters *const *ads, const double *w, int n, LoraCombination how,
                 const ModelConfig *mc, char *err);
void combined_lora_free(CombinedLora *c);
// The combined hooks as a ModelAdapters for the forward (no soft prompt).
void combined_lora_hooks(const CombinedLora *c, ModelAdapters *out);

// Adds scale · B A of every active hook (n_layers * LSLOT_COUNT) into m's weights, in fp32:
// one sgemm per hook, (out, r) @ (r, in) accumulated into the rows [out_offset, out_offset + out)
// of the projection the slot belongs to. Hook shapes are checked against m first.
int lora_merge_hooks(Model *m, const LoraHook *hooks, char *err);
// Merges one adapter (its LoRA part) with its own scale.
int lora_merge_adapters(Model *m, const Adapters *a, char *err);

#endif
