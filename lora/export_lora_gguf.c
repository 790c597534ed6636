// export_lora_gguf.c — GGUF LoRA adapters for llama.cpp, written and read (lora/export_lora_gguf.h).
#include "lora/export_lora_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/gguf.h"

// GGUF base tensor (without "blk.N." and ".weight") of each LoRA slot; NULL = not a GGUF module.
static const char *slot_gguf_name(Arch arch, int slot) {
    static const char *llama[LSLOT_COUNT] = {"attn_q", "attn_k", "attn_v", NULL, "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    static const char *gpt2[LSLOT_COUNT] = {NULL, NULL, NULL, "attn_qkv", "attn_output", NULL, "ffn_up", "ffn_down"};
    return arch == ARCH_LLAMA ? llama[slot] : gpt2[slot];
}

static const char *arch_name(Arch a) { return a == ARCH_LLAMA ? "llama" : "gpt2"; }

static GgmlType tensor_type(ExportDtype d, uint64_t ne0) {
    switch (d) {
    case EXPORT_F16: return GGML_TYPE_F16;
    case EXPORT_BF16: return GGML_TYPE_BF16;
    case EXPORT_Q8_0: return ne0 % GGML_QK8_0 == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F16;  // as llama.cpp: f16 fallback
    default: return GGML_TYPE_F32;
    }
}

// One pair to write: A (R, in), B (out, R), both owned copies.
typedef struct {
    char base[64];   // "blk.3.attn_q.weight"
    int R, in, out;
    float *A, *B;
} OutPair;

// ---------------------------------------------------------------------------------------------
// Save

// Builds the list of pairs in layer order; gpt2 q/k/v blocks of a layer become one attn_qkv pair.
static int collect_pairs(const Adapters *a, OutPair **pairs_out, int *n_out, char *err) {
    const ModelConfig *mc = &a->mcfg;
    const int L = mc->n_layers, r = a->cfg.r;
    OutPair *pairs = calloc((size_t)L * LSLOT_COUNT, sizeof(OutPair));
    if (!pairs) return ftk_err(err, "out of memory");
    int n = 0, rc = 0;
    for (int l = 0; l < L && !rc; l++) {
        const LoraHook *hk = &a->hooks[l * LSLOT_COUNT];
        if (mc->arch == ARCH_GPT2) {
            int blk[3], nb = 0;
            for (int s = LSLOT_Q; s <= LSLOT_V; s++)
                if (hk[s].r > 0) blk[nb++] = s;
            if (nb && hk[LSLOT_QKV].r > 0) {
                rc = ftk_err(err, "layer %d has LoRA on both c_attn and its q/k/v blocks: llama.cpp has one attn_qkv", l);
                break;
            }
            if (nb) {
                const int C = mc->dim, R = nb * r, width = model_qkv_dim(mc);
                OutPair *p = &pairs[n++];
                snprintf(p->base, sizeof p->base, "blk.%d.attn_qkv.weight", l);
                p->R = R;
                p->in = C;
                p->out = width;
                p->A = malloc((size_t)R * C * sizeof(float));
                p->B = calloc((size_t)width * R, sizeof(float));
                if (!p->A || !p->B) { rc = ftk_err(err, "out of memory"); break; }
                // A = [A_b0; A_b1; ...]; B block j: rows of block j's part of c_attn, columns j*r..
                for (int j = 0; j < nb; j++) {
                    const LoraHook *h = &hk[blk[j]];
                    memcpy(p->A + (size_t)j * r * C, h->A, (size_t)r * C * sizeof(float));
                    for (int i = 0; i < h->out; i++)
                        memcpy(p->B + (size_t)(h->out_offset + i) * R + (size_t)j * r, h->B + (size_t)i * r,
                               (size_t)r * sizeof(float));
                }
            }
        }
        for (int s = 0; s < LSLOT_COUNT && !rc; s++) {
            const LoraHook *h = &hk[s];
            const char *g = slot_gguf_name(mc->arch, s);
            if (h->r <= 0 || !g) continue;
            OutPair *p = &pairs[n++];
            snprintf(p->base, sizeof p->base, "blk.%d.%s.weight", l, g);
            p->R = h->r;
            p->in = h->in;
            p->out = h->out;
            p->A = malloc((size_t)h->r * h->in * sizeof(float));
            p->B = malloc((size_t)h->out * h->r * sizeof(float));
            if (!p->A || !p->B) { rc = ftk_err(err, "out of memory"); break; }
            memcpy(p->A, h->A, (size_t)h->r * h->in * sizeof(float));
            memcpy(p->B, h->B, (size_t)h->out * h->r * sizeof(float));
            // GGUF llama q/k weights are in Meta's interleaved RoPE order: permute B's rows (FORMATS §2c).
            if (mc->arch == ARCH_LLAMA && s == LSLOT_Q) permute_rows_hf_to_meta(p->B, mc->n_heads, mc->head_dim, h->r);
            if (mc->arch == ARCH_LLAMA && s == LSLOT_K) permute_rows_hf_to_meta(p->B, mc->n_kv_heads, mc->head_dim, h->r);
        }
    }
    *pairs_out = pairs;
    *n_out = n;
    return rc;
}

static void free_pairs(OutPair *p, int n) {
    if (!p) return;
    for (int i = 0; i < n; i++) {
        free(p[i].A);
        free(p[i].B);
    }
    free(p);
}

int lora_gguf_save(const Adapters *a, const char *path, ExportDtype dtype, const char *name, const char *base_name,
                   char *err) {
    if (!a->hooks) return ftk_err(err, "%s: the adapter has no LoRA weights (a GGUF adapter holds LoRA only)", path);
    if (a->prompt)
        return ftk_err(err, "%s: the adapter has a soft prompt, which llama.cpp adapters cannot hold; export the LoRA "
                            "part of a LoRA-only adapter", path);
    // A PPO value head belongs to the critic, not the policy: only the LoRA pairs are written.
    if (a->score) return ftk_err(err, "%s: the adapter has a score head (a reward model); llama.cpp cannot load it", path);
    OutPair *pairs = NULL;
    int n = 0;
    int rc = collect_pairs(a, &pairs, &n, err);
    if (!rc && n == 0) rc = ftk_err(err, "%s: the adapter has no LoRA module to write", path);
    GgufWriter *w = NULL;
    if (!rc) rc = gguf_writer_create(&w, err);
    if (!rc) {
        // llama.cpp: scale = alpha / rank(lora_b). One alpha for the file: alpha = scale * R0, and a pair
        // of another rank R gets R / R0 folded into its B so that alpha / R times B stays scale * B.
        const double r = a->cfg.r;
        const double scale = a->cfg.use_rslora ? (double)a->cfg.alpha / sqrt(r) : (double)a->cfg.alpha / r;
        const int R0 = pairs[0].R;
        const double alpha = scale * R0;
        for (int i = 0; i < n; i++)
            if (pairs[i].R != R0) {
                const float f = (float)((double)pairs[i].R / R0);
                for (size_t j = 0; j < (size_t)pairs[i].out * pairs[i].R; j++) pairs[i].B[j] *= f;
            }
        rc = gguf_writer_set_str(w, "general.architecture", arch_name(a->mcfg.arch), err) ||
             gguf_writer_set_str(w, "general.type", "adapter", err) ||
             gguf_writer_set_str(w, "adapter.type", "lora", err) ||
             gguf_writer_set_f32(w, "adapter.lora.alpha", (float)alpha, err) ||
             gguf_writer_set_alignment(w, GGUF_DEFAULT_ALIGNMENT, err) ||
             gguf_writer_set_u32(w, "general.quantization_version", 2, err);
        if (!rc && name) rc = gguf_writer_set_str(w, "general.name", name, err);
        if (!rc && base_name)
            rc = gguf_writer_set_u32(w, "general.base_model.count", 1, err) ||
                 gguf_writer_set_str(w, "general.base_model.0.name", base_name, err);
    }
    for (int i = 0; i < n && !rc; i++) {
        char tn[96];
        const OutPair *p = &pairs[i];
        const uint64_t ne_a[2] = {(uint64_t)p->in, (uint64_t)p->R};    // A (R, in)
        const uint64_t ne_b[2] = {(uint64_t)p->R, (uint64_t)p->out};   // B (out, R)
        snprintf(tn, sizeof tn, "%s.lora_a", p->base);
        rc = gguf_writer_add_tensor_f32(w, tn, 2, ne_a, p->A, tensor_type(dtype, ne_a[0]), err);
        snprintf(tn, sizeof tn, "%s.lora_b", p->base);
        if (!rc) rc = gguf_writer_add_tensor_f32(w, tn, 2, ne_b, p->B, tensor_type(dtype, ne_b[0]), err);
    }
    if (!rc) rc = gguf_writer_write(w, path, err);
    gguf_writer_free(w);
    free_pairs(pairs, n);
    return rc ? -1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Load

typedef struct {
    const GgufTensor *a, *b;
} InPair;

// "blk.<N>.<module>.weight.lora_a|lora_b" -> layer, slot, is_b. Returns 0, or -1 with err.
static int parse_name(const GgufFile *f, const char *name, const ModelConfig *mc, int *layer, int *slot, int *is_b,
                      char *err) {
    int l = -1, used = 0;
    char module[64];
    if (sscanf(name, "blk.%d.%63[a-z_0-9].weight.lora_%*c%n", &l, module, &used) != 2 || used == 0 ||
        name[used] != 0) {
        return ftk_err(err, "%s: tensor '%s' is not a LoRA tensor of a block linear (blk.N.<module>.weight.lora_a / "
                            "lora_b); ftk adapts the block linears only", f->path, name);
    }
    size_t n = strlen(name);
    if (strcmp(name + n - 7, ".lora_a") != 0 && strcmp(name + n - 7, ".lora_b") != 0)
        return ftk_err(err, "%s: tensor '%s' must end in .lora_a or .lora_b", f->path, name);
    *is_b = name[n - 1] == 'b';
    if (l < 0 || l >= mc->n_layers)
        return ftk_err(err, "%s: tensor '%s' is for layer %d but the model has %d layers", f->path, name, l, mc->n_layers);
    for (int s = 0; s < LSLOT_COUNT; s++) {
        const char *g = slot_gguf_name(mc->arch, s);
        if (g && strcmp(g, module) == 0) {
            *layer = l;
            *slot = s;
            return 0;
        }
    }
    return ftk_err(err, "%s: tensor '%s': '%s' is not a %s module ftk can adapt (%s)", f->path, name, module,
                   arch_name(mc->arch),
                   mc->arch == ARCH_LLAMA ? "attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down"
                                          : "attn_qkv, attn_output, ffn_up, ffn_down");
}

// HF-ish target module name of a slot, for the derived AdapterConfig.
static const char *slot_target(Arch arch, int slot) {
    static const char *llama[LSLOT_COUNT] = {"q_proj", "k_proj", "v_proj", NULL, "o_proj", "gate_proj", "up_proj", "down_proj"};
    static const char *gpt2[LSLOT_COUNT] = {NULL, NULL, NULL, "c_attn", "attn.c_proj", NULL, "c_fc", "mlp.c_proj"};
    return arch == ARCH_LLAMA ? llama[slot] : gpt2[slot];
}

static int check_pair_shape(const GgufFile *f, const GgufTensor *t, uint64_t ne0, uint64_t ne1, char *err) {
    if (t->n_dims == 2 && t->ne[0] == ne0 && t->ne[1] == ne1) return 0;
    const char *hint = (t->n_dims == 2 && t->ne[0] == ne1 && t->ne[1] == ne0)
                           ? " (transposed: lora_a must be ne [in, r] and lora_b ne [r, out])" : "";
    return ftk_err(err, "%s: tensor '%s' has GGUF shape [%llu, %llu] (ne order), expected [%llu, %llu] for this model (an "
                        "adapter made for another model?)%s",
                   f->path, t->name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                   (unsigned long long)ne0, (unsigned long long)ne1, hint);
}

static int read_header(const GgufFile *f, const ModelConfig *mc, float *alpha, char *err) {
    char *s = NULL;
    int rc = gguf_get_str(f, "general.type", &s, err);
    if (rc == GGUF_ABSENT) return ftk_err(err, "%s: no general.type: not a GGUF adapter", f->path);
    if (rc) return -1;
    if (strcmp(s, "adapter") != 0) {
        ftk_err(err, "%s: general.type is '%s', expected 'adapter' (is this a model rather than a LoRA adapter?)",
                f->path, s);
        free(s);
        return -1;
    }
    free(s);
    rc = gguf_get_str(f, "adapter.type", &s, err);
    if (rc == GGUF_ABSENT) return ftk_err(err, "%s: missing key adapter.type", f->path);
    if (rc) return -1;
    if (strcmp(s, "lora") != 0) {
        ftk_err(err, "%s: adapter.type is '%s'; ftk reads 'lora' adapters", f->path, s);
        free(s);
        return -1;
    }
    free(s);
    rc = gguf_get_str(f, "general.architecture", &s, err);
    if (rc == GGUF_ABSENT) return ftk_err(err, "%s: missing key general.architecture", f->path);
    if (rc) return -1;
    if (strcmp(s, arch_name(mc->arch)) != 0) {
        ftk_err(err, "%s: adapter is for architecture '%s' but the model is '%s'", f->path, s, arch_name(mc->arch));
        free(s);
        return -1;
    }
    free(s);
    *alpha = 0.0f;
    rc = gguf_get_f32(f, "adapter.lora.alpha", alpha, err);
    if (rc < 0) return -1;
    if (!isfinite(*alpha)) return ftk_err(err, "%s: adapter.lora.alpha is not finite", f->path);
    return 0;
}

int lora_gguf_load(Adapters *a, const Model *m, const char *path, char *err) {
    memset(a, 0, sizeof *a);
    const ModelConfig *mc = &m->cfg;
    GgufFile f;
    if (gguf_open(&f, path, err)) return -1;
    const int L = mc->n_layers, NS = L * LSLOT_COUNT;
    InPair *pairs = calloc((size_t)NS, sizeof(InPair));
    float alpha = 0.0f;
    int rc = pairs ? read_header(&f, mc, &alpha, err) : ftk_err(err, "out of memory");
    // Pair up the tensors by (layer, slot).
    for (size_t i = 0; i < f.n_tensors && !rc; i++) {
        const GgufTensor *t = &f.tensors[i];
        int layer = 0, slot = 0, is_b = 0;
        if (parse_name(&f, t->name, mc, &layer, &slot, &is_b, err)) { rc = -1; break; }
        InPair *p = &pairs[layer * LSLOT_COUNT + slot];
        if (is_b) p->b = t;
        else p->a = t;
    }
    // Shapes, ranks, and which slots of which layers are present.
    int r = 0, n_pairs = 0;
    unsigned slot_mask = 0;
    unsigned char *layer_on = rc ? NULL : calloc((size_t)L, 1);
    if (!rc && !layer_on) rc = ftk_err(err, "out of memory");
    for (int k = 0; k < NS && !rc; k++) {
        const InPair *p = &pairs[k];
        if (!p->a && !p->b) continue;
        if (!p->a || !p->b) {
            rc = ftk_err(err, "%s: '%s' has no matching %s tensor", path, (p->a ? p->a : p->b)->name,
                         p->a ? "lora_b" : "lora_a");
            break;
        }
        int in, out;
        lora_slot_dims(mc, (LoraSlot)(k % LSLOT_COUNT), &in, &out, NULL);
        if (p->a->n_dims == 2 && p->a->ne[1] == (uint64_t)in && p->a->ne[0] != (uint64_t)in) {
            rc = ftk_err(err, "%s: tensor '%s' has GGUF shape [%llu, %llu]: lora_a is transposed (expected ne [%d, r], "
                              "i.e. PEFT's lora_A (r, in) as written by convert_lora_to_gguf.py)", path, p->a->name,
                         (unsigned long long)p->a->ne[0], (unsigned long long)p->a->ne[1], in);
            break;
        }
        const uint64_t rk64 = p->a->ne[1];
        if (check_pair_shape(&f, p->a, (uint64_t)in, rk64, err) || check_pair_shape(&f, p->b, rk64, (uint64_t)out, err)) {
            rc = -1;
            break;
        }
        if (rk64 == 0 || rk64 > 65536) {
            rc = ftk_err(err, "%s: '%s' has rank %llu, outside [1, 65536]", path, p->a->name, (unsigned long long)rk64);
            break;
        }
        const int rk = (int)rk64;
        if (r && rk != r) {
            rc = ftk_err(err, "%s: '%s' has rank %d but earlier modules rank %d; ftk needs one rank per adapter", path,
                         p->a->name, rk, r);
            break;
        }
        r = rk;
        slot_mask |= 1u << (k % LSLOT_COUNT);
        layer_on[k / LSLOT_COUNT] = 1;
        n_pairs++;
    }
    if (!rc && n_pairs == 0) rc = ftk_err(err, "%s: the adapter has no LoRA tensors", path);
    // Every adapted layer must carry the same modules (one target_modules list for all layers).
    for (int l = 0; l < L && !rc; l++) {
        if (!layer_on[l]) continue;
        for (int s = 0; s < LSLOT_COUNT; s++) {
            int has = pairs[l * LSLOT_COUNT + s].a != NULL;
            if (((slot_mask >> s) & 1u) && !has) {
                rc = ftk_err(err, "%s: layer %d lacks blk.%d.%s.weight.lora_a/lora_b that other layers have; ftk needs "
                                  "the same modules in every adapted layer", path, l, l, slot_gguf_name(mc->arch, s));
                break;
            }
        }
    }
    AdapterConfig cfg;
    adapter_config_default(&cfg);
    if (!rc) {
        cfg.r = r;
        // llama.cpp: scale = alpha / r, and alpha 0 means scale 1.
        cfg.alpha = alpha != 0.0f ? alpha : (float)r;
        size_t k = 0;
        for (int s = 0; s < LSLOT_COUNT; s++)
            if ((slot_mask >> s) & 1u)
                k += (size_t)snprintf(cfg.target_modules + k, sizeof cfg.target_modules - k, "%s%s", k ? "," : "",
                                      slot_target(mc->arch, s));
        int all = 1;
        for (int l = 0; l < L; l++) all &= layer_on[l];
        if (!all) {
            k = 0;
            for (int l = 0; l < L; l++)
                if (layer_on[l] && k < sizeof cfg.layers_to_transform)
                    k += (size_t)snprintf(cfg.layers_to_transform + k, sizeof cfg.layers_to_transform - k, "%s%d",
                                          k ? "," : "", l);
            if (k >= sizeof cfg.layers_to_transform) rc = ftk_err(err, "%s: too many layers listed", path);
        }
    }
    if (!rc) {
        char sub[FTK_ERR_LEN];
        if (adapters_alloc(a, &cfg, mc, sub)) rc = ftk_err(err, "%s: %s", path, sub);
    }
    for (int i = 0; i < a->n_views && !rc; i++) {
        const AdapterView *v = &a->views[i];
        if (v->kind != VIEW_LORA_A && v->kind != VIEW_LORA_B) continue;
        const InPair *p = &pairs[v->layer * LSLOT_COUNT + v->slot];
        const GgufTensor *t = v->kind == VIEW_LORA_A ? p->a : p->b;
        if (!t) { rc = ftk_err(err, "%s: internal: no tensor for %s", path, v->name); break; }
        float *dst = a->params + v->offset;
        if (gguf_tensor_to_f32(&f, t, dst, v->numel, err)) { rc = -1; break; }
        // Meta -> HF row order for llama q/k B (the inverse of what the writer does).
        if (v->kind == VIEW_LORA_B && mc->arch == ARCH_LLAMA && v->slot == LSLOT_Q)
            permute_rows_meta_to_hf(dst, mc->n_heads, mc->head_dim, r);
        if (v->kind == VIEW_LORA_B && mc->arch == ARCH_LLAMA && v->slot == LSLOT_K)
            permute_rows_meta_to_hf(dst, mc->n_kv_heads, mc->head_dim, r);
        for (size_t j = 0; j < v->numel; j++)
            if (!isfinite(dst[j])) { rc = ftk_err(err, "%s: tensor '%s' holds NaN or Inf", path, t->name); break; }
    }
    if (rc) adapters_free(a);
    free(layer_on);
    free(pairs);
    gguf_close(&f);
    return rc ? -1 : 0;
}
