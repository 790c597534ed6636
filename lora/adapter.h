// adapter.h — the trainable parameters: LoRA pairs, soft prompt and heads in ONE flat float buffer
// with named views (DESIGN §3), an equally sized gradient buffer, and the hooks that wire them
// into the model (model/transformer.h).
//
// Layout of the flat buffer, which is also the (documented, deterministic) initialisation order:
//   for layer 0..L-1, for slot in LoraSlot order (Q, K, V, QKV, O, GATE, UP, DOWN), when targeted:
//       A (r, in), then B (out, r)
//   prompt_embeddings (n_virtual, C)
//   score head (1, C)
//   value head weight (1, C), value head bias (1)
// Views are packed back to back (no padding), so n_params is exactly PEFT's trainable count.
//
// Target modules (HF names, matched as PEFT does: a target t selects the module whose path equals t
// or ends in "." + t):
//   llama: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj  (paths model.layers.N.self_attn.*,
//          model.layers.N.mlp.*); default q_proj,v_proj.
//   gpt2:  c_attn (the fused q|k|v Conv1D, slot QKV), c_proj (both attn.c_proj -> slot O and
//          mlp.c_proj -> slot DOWN; "attn.c_proj" / "mlp.c_proj" pick one), c_fc (slot UP), and
//          q_proj / k_proj / v_proj = ftk's separate LoRA on the q / k / v block of c_attn (slots Q,
//          K, V; internal paths transformer.h.N.attn.{q,k,v}_proj). Default q_proj,v_proj. The
//          block slots are exported as one rank-(n*r) c_attn adapter (lora/peft.h), so they cannot
//          be combined with c_attn itself or with c_proj / c_fc.
//   "all-linear": every linear of a block (PEFT: all but the output layer); gpt2 -> c_attn, c_proj, c_fc.
#ifndef FTK_ADAPTER_H
#define FTK_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "model/transformer.h"

#define ADAPTER_LORA 1
#define ADAPTER_PROMPT 2

// PEFT init_lora_weights. DEFAULT (true): A ~ kaiming_uniform(a=sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)),
// B = 0. GAUSSIAN ("gaussian"): A ~ N(0, std = 1/r), B = 0. NONE (false): PEFT leaves nn.Linear's
// own init, A ~ U(+-1/sqrt(in)) and B ~ U(+-1/sqrt(r)) — the adapter does not start as a no-op.
typedef enum { LORA_INIT_DEFAULT = 0, LORA_INIT_GAUSSIAN = 1, LORA_INIT_NONE = 2 } LoraInit;

// PEFT prompt_tuning_init. RANDOM: nn.Embedding's N(0, 1). TEXT: embeddings of the tokenized
// prompt_init_text (tokenizer defaults, so LLaMA adds BOS) repeated / truncated to n_virtual rows.
// SAMPLE_VOCAB: embeddings of n_virtual uniformly sampled token ids.
typedef enum { PROMPT_INIT_RANDOM = 0, PROMPT_INIT_TEXT = 1, PROMPT_INIT_SAMPLE_VOCAB = 2 } PromptInit;

typedef struct {
    int types;                      // ADAPTER_LORA | ADAPTER_PROMPT (may be 0 with only heads)
    // LoRA (PEFT LoraConfig)
    int r;                          // rank, default 8
    float alpha;                    // lora_alpha, default 8
    float dropout;                  // lora_dropout, default 0
    int use_rslora;                 // scale alpha/sqrt(r) instead of alpha/r
    LoraInit init;
    char target_modules[512];       // comma-separated names, "all-linear", or "" = the arch default
    char layers_to_transform[512];  // comma-separated layer indices, "" = every layer
    // Prompt tuning (PEFT PromptTuningConfig)
    int num_virtual_tokens;
    PromptInit prompt_init;
    char prompt_init_text[1024];
    char tokenizer_name_or_path[512];  // written to the config for TEXT init ("" = the base model path)
    // Heads
    int score_head;                 // reward-model head "score" (1, C), no bias; init N(0, 0.02) as HF
    int value_head;                 // PPO value head "v_head.summary" (1, C) + bias (1); nn.Linear init
} AdapterConfig;

// PEFT defaults: types = ADAPTER_LORA, r 8, alpha 8, dropout 0, init DEFAULT, arch-default targets,
// no prompt, no heads.
void adapter_config_default(AdapterConfig *c);

typedef enum { VIEW_LORA_A, VIEW_LORA_B, VIEW_PROMPT, VIEW_SCORE, VIEW_VALUE_W, VIEW_VALUE_B } ViewKind;

// One named tensor inside the flat buffers: params + offset, grads + offset.
typedef struct {
    char name[128];      // PEFT key, e.g. "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
                         // gpt2 block slots use ftk-internal paths "…h.N.attn.q_proj…" (see peft.h)
    ViewKind kind;
    int layer;           // LoRA views: layer and LoraSlot; -1 otherwise
    int slot;
    int ndim;            // 2, or 1 for the value bias
    int64_t shape[2];
    size_t offset;       // in floats
    size_t numel;
} AdapterView;

typedef struct {
    AdapterConfig cfg;
    ModelConfig mcfg;       // the model these adapters were made for
    float scale;            // LoRA scaling alpha/r, or alpha/sqrt(r) with rsLoRA
    float *params;          // n_params trainable values
    float *grads;           // n_params gradient accumulators
    size_t n_params;
    AdapterView *views;
    int n_views;
    LoraHook *hooks;        // n_layers * LSLOT_COUNT pointing into params/grads; NULL without LoRA
    // Direct pointers into params / grads, NULL when absent.
    float *prompt, *dprompt;       // (n_virtual, C)
    float *score, *dscore;         // (1, C)
    float *value_w, *dvalue_w;     // (1, C)
    float *value_b, *dvalue_b;     // (1)
} Adapters;

// Geometry of a LoRA slot on a model: A is (r, in), B is (out, r), and the LoRA output is added to
// columns [out_offset, out_offset + out) of the (possibly fused) projection. Returns -1 when the
// slot does not exist for the architecture (llama has no QKV; gpt2 has no GATE).
int lora_slot_dims(const ModelConfig *mc, LoraSlot slot, int *in, int *out, int *out_offset);
// HF module path of a slot in layer `layer`, e.g. "model.layers.3.self_attn.q_proj".
int lora_module_path(const ModelConfig *mc, int layer, LoraSlot slot, char *buf, size_t n);

// Trainable parameter count as PEFT's print_trainable_parameters counts it, from configs alone.
int adapters_param_count_for(const AdapterConfig *cfg, const ModelConfig *mc, size_t *count, char *err);
static inline size_t adapters_param_count(const Adapters *a) { return a->n_params; }

// Validates cfg against the model, lays out the views and allocates params and grads (zero-filled).
int adapters_alloc(Adapters *a, const AdapterConfig *cfg, const ModelConfig *mc, char *err);
// Initialises every view from a seeded RNG in buffer order (lora/init.c). Needs m->tok for TEXT init
// and m->w.tok_emb for TEXT / SAMPLE_VOCAB.
int adapters_init(Adapters *a, const Model *m, uint64_t seed, char *err);
// adapters_alloc + adapters_init.
int adapters_create(Adapters *a, const AdapterConfig *cfg, const Model *m, uint64_t seed, char *err);
void adapters_free(Adapters *a);

void adapters_zero_grad(Adapters *a);
// Fills out (disabled = 0) with a->hooks and the soft prompt. trainable = 1 points the hooks'
// dA/dB and dprompt at the gradient buffer, 0 sets them NULL (frozen adapters, e.g. a reward model).
// out points into a: it stays valid until adapters_free.
void adapters_hooks(Adapters *a, int trainable, ModelAdapters *out);
// The view with this name, or NULL.
const AdapterView *adapters_find_view(const Adapters *a, const char *name);

#endif
