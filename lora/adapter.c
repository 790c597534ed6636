// adapter.c — adapter configuration, target-module resolution, the flat-buffer layout with its
// named views, and the hooks handed to the model. Initialisation is in init.c, files in peft.c.
#include "lora/adapter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

void adapter_config_default(AdapterConfig *c) {
    memset(c, 0, sizeof *c);
    c->types = ADAPTER_LORA;
    c->r = 8;
    c->alpha = 8.0f;
    c->init = LORA_INIT_DEFAULT;
    c->prompt_init = PROMPT_INIT_RANDOM;
}

int lora_slot_dims(const ModelConfig *mc, LoraSlot slot, int *in, int *out, int *out_offset) {
    const int C = mc->dim, F = mc->ffn_dim, qd = model_q_dim(mc), kvd = model_kv_dim(mc);
    int i = 0, o = 0, off = 0;
    if (mc->arch == ARCH_LLAMA) {
        switch (slot) {
        case LSLOT_Q: i = C; o = qd; off = 0; break;                  // block of wqkv
        case LSLOT_K: i = C; o = kvd; off = qd; break;
        case LSLOT_V: i = C; o = kvd; off = qd + kvd; break;
        case LSLOT_O: i = qd; o = C; off = 0; break;
        case LSLOT_GATE: i = C; o = F; off = 0; break;                // block of w_gate_up
        case LSLOT_UP: i = C; o = F; off = F; break;
        case LSLOT_DOWN: i = F; o = C; off = 0; break;
        default: return -1;                                           // no fused QKV module in llama
        }
    } else {
        switch (slot) {
        case LSLOT_Q: i = C; o = C; off = 0; break;                   // blocks of c_attn
        case LSLOT_K: i = C; o = C; off = C; break;
        case LSLOT_V: i = C; o = C; off = 2 * C; break;
        case LSLOT_QKV: i = C; o = 3 * C; off = 0; break;
        case LSLOT_O: i = C; o = C; off = 0; break;
        case LSLOT_UP: i = C; o = F; off = 0; break;
        case LSLOT_DOWN: i = F; o = C; off = 0; break;
        default: return -1;
        }
    }
    if (in) *in = i;
    if (out) *out = o;
    if (out_offset) *out_offset = off;
    return 0;
}

static const char *slot_module(Arch arch, LoraSlot slot) {
    static const char *llama[LSLOT_COUNT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", NULL,
                                             "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    static const char *gpt2[LSLOT_COUNT] = {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.c_attn",
                                            "attn.c_proj", NULL,          "mlp.c_fc",    "mlp.c_proj"};
    return arch == ARCH_LLAMA ? llama[slot] : gpt2[slot];
}

int lora_module_path(const ModelConfig *mc, int layer, LoraSlot slot, char *buf, size_t n) {
    const char *mod = slot_module(mc->arch, slot);
    if (!mod) return -1;
    int k = snprintf(buf, n, "%s.%d.%s", mc->arch == ARCH_LLAMA ? "model.layers" : "transformer.h", layer, mod);
    return (k < 0 || (size_t)k >= n) ? -1 : 0;
}

// Slots that are real modules for "all-linear" (gpt2's q/k/v blocks are ftk-only).
static int slot_is_linear_module(Arch arch, LoraSlot s) {
    if (!slot_module(arch, s)) return 0;
    return arch == ARCH_LLAMA || (s != LSLOT_Q && s != LSLOT_K && s != LSLOT_V);
}

static const char *valid_target_names(Arch arch) {
    return arch == ARCH_LLAMA ? "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear"
                              : "c_attn, c_proj (attn.c_proj, mlp.c_proj), c_fc, q_proj, k_proj, v_proj "
                                "(blocks of c_attn), all-linear";
}

// PEFT's suffix rule: the target equals the module path or ends it after a '.'.
static int target_matches(const char *path, const char *target) {
    size_t lp = strlen(path), lt = strlen(target);
    if (lt > lp) return 0;
    if (strcmp(path + lp - lt, target) != 0) return 0;
    return lt == lp || path[lp - lt - 1] == '.';
}

// Resolves cfg->target_modules and cfg->layers_to_transform into on[layer * LSLOT_COUNT + slot].
static int resolve_targets(const AdapterConfig *cfg, const ModelConfig *mc, unsigned char *on, char *err) {
    const int L = mc->n_layers;
    memset(on, 0, (size_t)L * LSLOT_COUNT);
    // Layers to transform.
    unsigned char *layer_ok = malloc((size_t)L);
    if (!layer_ok) return ftk_err(err, "out of memory");
    memset(layer_ok, cfg->layers_to_transform[0] ? 0 : 1, (size_t)L);
    for (const char *p = cfg->layers_to_transform; *p;) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= L) {
            free(layer_ok);
            return ftk_err(err, "layers_to_transform \"%s\": layer indices must be integers in [0, %d)",
                           cfg->layers_to_transform, L);
        }
        layer_ok[v] = 1;
        p = end;
        while (*p == ' ') p++;
        if (*p && *p != ',') {
            free(layer_ok);
            return ftk_err(err, "layers_to_transform \"%s\": expected comma-separated integers", cfg->layers_to_transform);
        }
    }
    const char *targets = cfg->target_modules[0] ? cfg->target_modules : "q_proj,v_proj";
    char names[sizeof cfg->target_modules];
    snprintf(names, sizeof names, "%s", targets);
    int rc = 0;
    char path[256];
    for (char *save = NULL, *tok = strtok_r(names, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        for (char *e = tok + strlen(tok); e > tok && e[-1] == ' ';) *--e = 0;
        if (!*tok) continue;
        int all_linear = strcmp(tok, "all-linear") == 0, hits = 0;
        for (int l = 0; l < L; l++) {
            for (int s = 0; s < LSLOT_COUNT; s++) {
                if (lora_module_path(mc, l, (LoraSlot)s, path, sizeof path) != 0) continue;
                int match = all_linear ? slot_is_linear_module(mc->arch, (LoraSlot)s) : target_matches(path, tok);
                if (!match) continue;
                hits++;
                if (layer_ok[l]) on[l * LSLOT_COUNT + s] = 1;
            }
        }
        if (!hits) {
            rc = ftk_err(err, "unknown target module \"%s\" for a %s model; valid names: %s", tok,
                         mc->arch == ARCH_LLAMA ? "llama" : "gpt2", valid_target_names(mc->arch));
            break;
        }
    }
    free(layer_ok);
    if (rc) return rc;
    if (mc->arch == ARCH_GPT2) {
        int blocks = 0, others = 0;
        for (int l = 0; l < L; l++) {
            const unsigned char *o = on + l * LSLOT_COUNT;
            blocks |= o[LSLOT_Q] | o[LSLOT_K] | o[LSLOT_V];
            others |= o[LSLOT_QKV] | o[LSLOT_O] | o[LSLOT_UP] | o[LSLOT_DOWN];
        }
        if (blocks && others)
            return ftk_err(err, "target modules \"%s\": gpt2's q_proj/k_proj/v_proj blocks are saved as one "
                                "c_attn adapter and cannot be combined with c_attn, c_proj or c_fc",
                           targets);
    }
    int any = 0;
    for (int i = 0; i < L * LSLOT_COUNT; i++) any |= on[i];
    if (!any) return ftk_err(err, "target modules \"%s\" with layers_to_transform \"%s\" select no linear layer",
                             targets, cfg->layers_to_transform);
    return 0;
}

static int validate_config(const AdapterConfig *cfg, const ModelConfig *mc, char *err) {
    if (cfg->types & ~(ADAPTER_LORA | ADAPTER_PROMPT)) return ftk_err(err, "unknown adapter type bits 0x%x", cfg->types);
    if (!cfg->types && !cfg->score_head && !cfg->value_head) return ftk_err(err, "no adapter and no head: nothing to train");
    if (mc->n_layers <= 0 || mc->dim <= 0 || mc->n_layers > 4096 || mc->dim > (1 << 20))
        return ftk_err(err, "invalid model configuration (dim %d, %d layers)", mc->dim, mc->n_layers);
    if (cfg->types & ADAPTER_LORA) {
        if (cfg->r <= 0 || cfg->r > 65536) return ftk_err(err, "LoRA rank r = %d must be in [1, 65536]", cfg->r);
        if (!isfinite(cfg->alpha)) return ftk_err(err, "lora_alpha is not finite");
        if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
            return ftk_err(err, "lora_dropout %g must be in [0, 1)", (double)cfg->dropout);
        if (cfg->init < LORA_INIT_DEFAULT || cfg->init > LORA_INIT_NONE) return ftk_err(err, "unknown LoRA init %d", cfg->init);
    }
    if (cfg->types & ADAPTER_PROMPT) {
        if (cfg->num_virtual_tokens <= 0 || cfg->num_virtual_tokens > mc->max_seq_len)
            return ftk_err(err, "num_virtual_tokens = %d must be in [1, max_seq_len = %d]", cfg->num_virtual_tokens,
                           mc->max_seq_len);
        if (cfg->prompt_init < PROMPT_INIT_RANDOM || cfg->prompt_init > PROMPT_INIT_SAMPLE_VOCAB)
            return ftk_err(err, "unknown prompt init %d", cfg->prompt_init);
        if (cfg->prompt_init == PROMPT_INIT_TEXT && !cfg->prompt_init_text[0])
            return ftk_err(err, "prompt_tuning_init TEXT needs a non-empty prompt_tuning_init_text");
    }
    if (cfg->score_head && !(cfg->types & ADAPTER_LORA))
        return ftk_err(err, "a score head is saved as modules_to_save of the LoRA adapter (PEFT); enable LoRA with it");
    return 0;
}

// Appends one view of shape (d0, d1) (ndim 1: (d0)) to the layout; views == NULL only counts.
typedef struct {
    AdapterView *views;
    int n;
    size_t n_floats;
} Layout;

static int add_view(Layout *lo, const char *name, ViewKind kind, int layer, int slot, int ndim, int64_t d0, int64_t d1,
                    char *err) {
    size_t numel, end;
    if (ftk_mul((size_t)d0, (size_t)(ndim == 2 ? d1 : 1), &numel) || ftk_add(lo->n_floats, numel, &end))
        return ftk_err(err, "adapter parameter count overflows");
    if (lo->views) {
        AdapterView *v = &lo->views[lo->n];
        memset(v, 0, sizeof *v);
        snprintf(v->name, sizeof v->name, "%s", name);
        v->kind = kind;
        v->layer = layer;
        v->slot = slot;
        v->ndim = ndim;
        v->shape[0] = d0;
        v->shape[1] = ndim == 2 ? d1 : 0;
        v->offset = lo->n_floats;
        v->numel = numel;
    }
    lo->n++;
    lo->n_floats = end;
    return 0;
}

// The flat-buffer order documented in adapter.h. on: resolved LoRA targets, or NULL without LoRA.
static int layout(const AdapterConfig *cfg, const ModelConfig *mc, const unsigned char *on, Layout *lo, char *err) {
    char path[80], name[sizeof lo->views->name];
    int rc = 0;
    if ((cfg->types & ADAPTER_LORA) && on) {
        for (int l = 0; l < mc->n_layers; l++) {
            for (int s = 0; s < LSLOT_COUNT; s++) {
                if (!on[l * LSLOT_COUNT + s]) continue;
                int in = 0, out = 0;
                lora_slot_dims(mc, (LoraSlot)s, &in, &out, NULL);
                lora_module_path(mc, l, (LoraSlot)s, path, sizeof path);
                snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", path);
                if ((rc = add_view(lo, name, VIEW_LORA_A, l, s, 2, cfg->r, in, err))) return rc;
                snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", path);
                if ((rc = add_view(lo, name, VIEW_LORA_B, l, s, 2, out, cfg->r, err))) return rc;
            }
        }
    }
    if (cfg->types & ADAPTER_PROMPT)
        rc = add_view(lo, "prompt_embeddings", VIEW_PROMPT, -1, -1, 2, cfg->num_virtual_tokens, mc->dim, err);
    if (!rc && cfg->score_head) rc = add_view(lo, "base_model.model.score.weight", VIEW_SCORE, -1, -1, 2, 1, mc->dim, err);
    if (!rc && cfg->value_head) rc = add_view(lo, "v_head.summary.weight", VIEW_VALUE_W, -1, -1, 2, 1, mc->dim, err);
    if (!rc && cfg->value_head) rc = add_view(lo, "v_head.summary.bias", VIEW_VALUE_B, -1, -1, 1, 1, 0, err);
    return rc;
}

// Validates cfg for mc, resolves the LoRA targets into *on (malloc'ed n_layers x LSLOT_COUNT
// flags, NULL without LoRA; the caller frees it) and counts the views and floats into *lo.
static int plan_layout(const AdapterConfig *cfg, const ModelConfig *mc, unsigned char **on, Layout *lo, char *err) {
    *on = NULL;
    *lo = (Layout){0};
    int rc = validate_config(cfg, mc, err);
    if (rc) return rc;
    if (cfg->types & ADAPTER_LORA) {
        *on = malloc((size_t)mc->n_layers * LSLOT_COUNT);
        if (!*on) return ftk_err(err, "out of memory");
        if ((rc = resolve_targets(cfg, mc, *on, err))) return rc;
    }
    return layout(cfg, mc, *on, lo, err);
}

int adapters_param_count_for(const AdapterConfig *cfg, const ModelConfig *mc, size_t *count, char *err) {
    unsigned char *on;
    Layout lo;
    int rc = plan_layout(cfg, mc, &on, &lo, err);
    if (!rc) *count = lo.n_floats;
    free(on);
    return rc;
}

int adapters_alloc(Adapters *a, const AdapterConfig *cfg, const ModelConfig *mc, char *err) {
    memset(a, 0, sizeof *a);
    unsigned char *on;
    Layout lo;
    int rc = plan_layout(cfg, mc, &on, &lo, err);
    if (rc) goto fail;
    size_t nf = lo.n_floats;
    a->cfg = *cfg;
    a->mcfg = *mc;
    a->views = calloc((size_t)lo.n, sizeof(AdapterView));
    a->params = calloc(nf ? nf : 1, sizeof(float));
    a->grads = calloc(nf ? nf : 1, sizeof(float));
    if (!a->views || !a->params || !a->grads) {
        rc = ftk_err(err, "out of memory for %zu adapter parameters", nf);
        goto fail;
    }
    lo = (Layout){.views = a->views};
    layout(cfg, mc, on, &lo, err);
    a->n_views = lo.n;
    a->n_params = lo.n_floats;
    if (cfg->types & ADAPTER_LORA) {
        // Scaling as PEFT's LoraLayer.update_layer: alpha / r, or alpha / sqrt(r) for rsLoRA.
        a->scale = cfg->use_rslora ? (float)((double)cfg->alpha / sqrt((double)cfg->r))
                                   : (float)((double)cfg->alpha / (double)cfg->r);
        a->hooks = calloc((size_t)mc->n_layers * LSLOT_COUNT, sizeof(LoraHook));
        if (!a->hooks) {
            rc = ftk_err(err, "out of memory");
            goto fail;
        }
    }
    for (int i = 0; i < a->n_views; i++) {
        const AdapterView *v = &a->views[i];
        float *p = a->params + v->offset, *g = a->grads + v->offset;
        switch (v->kind) {
        case VIEW_LORA_A: {
            LoraHook *h = &a->hooks[v->layer * LSLOT_COUNT + v->slot];
            lora_slot_dims(mc, (LoraSlot)v->slot, &h->in, &h->out, &h->out_offset);
            h->r = cfg->r;
            h->scale = a->scale;
            h->dropout = cfg->dropout;
            h->A = p;
            h->dA = g;
            break;
        }
        case VIEW_LORA_B: {
            LoraHook *h = &a->hooks[v->layer * LSLOT_COUNT + v->slot];
            h->B = p;
            h->dB = g;
            break;
        }
        case VIEW_PROMPT: a->prompt = p; a->dprompt = g; break;
        case VIEW_SCORE: a->score = p; a->dscore = g; break;
        case VIEW_VALUE_W: a->value_w = p; a->dvalue_w = g; break;
        case VIEW_VALUE_B: a->value_b = p; a->dvalue_b = g; break;
        }
    }
    free(on);
    return 0;
fail:
    free(on);
    adapters_free(a);
    return rc;
}

int adapters_create(Adapters *a, const AdapterConfig *cfg, const Model *m, uint64_t seed, char *err) {
    int rc = adapters_alloc(a, cfg, &m->cfg, err);
    if (rc) return rc;
    rc = adapters_init(a, m, seed, err);
    if (rc) adapters_free(a);
    return rc;
}

void adapters_free(Adapters *a) {
    if (!a) return;
    free(a->params);
    free(a->grads);
    free(a->views);
    free(a->hooks);
    memset(a, 0, sizeof *a);
}

void adapters_zero_grad(Adapters *a) {
    if (a->grads) memset(a->grads, 0, a->n_params * sizeof(float));
}

void adapters_hooks(Adapters *a, int trainable, ModelAdapters *out) {
    memset(out, 0, sizeof *out);
    if (a->hooks) {
        for (int i = 0; i < a->n_views; i++) {
            const AdapterView *v = &a->views[i];
            if (v->kind != VIEW_LORA_A && v->kind != VIEW_LORA_B) continue;
            LoraHook *h = &a->hooks[v->layer * LSLOT_COUNT + v->slot];
            float *g = trainable ? a->grads + v->offset : NULL;
            if (v->kind == VIEW_LORA_A) h->dA = g;
            else h->dB = g;
        }
        out->hooks = a->hooks;
    }
    if (a->prompt) {
        out->n_virtual = a->cfg.num_virtual_tokens;
        out->prompt = a->prompt;
        out->dprompt = trainable ? a->dprompt : NULL;
    }
    out->disabled = 0;
}

const AdapterView *adapters_find_view(const Adapters *a, const char *name) {
    for (int i = 0; i < a->n_views; i++)
        if (strcmp(a->views[i].name, name) == 0) return &a->views[i];
    return NULL;
}
