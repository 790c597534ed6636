// peft.c — PEFT adapter directories: tensors in adapter_model.safetensors, the prompt/ subdir, the
// value head file and the gpt2 q/k/v-block <-> c_attn conversion (lora/peft.h). The JSON config is
// peft_config.c.
#include "lora/peft.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lora/peft_config.h"
#include "model/common.h"
#include "model/safetensors.h"

#define CONFIG_FILE "adapter_config.json"
#define WEIGHTS_FILE "adapter_model.safetensors"
#define VALUE_HEAD_FILE "value_head.safetensors"
#define PROMPT_SUBDIR "prompt"
#define BLOCKS_META_KEY "ftk_c_attn_blocks"

static const char *const block_letter = "qkv";   // slots LSLOT_Q, LSLOT_K, LSLOT_V

static unsigned layer_slot_mask(const Adapters *a, int layer) {
    unsigned m = 0;
    for (int s = 0; s < LSLOT_COUNT; s++)
        if (a->hooks[layer * LSLOT_COUNT + s].r > 0) m |= 1u << s;
    return m;
}

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

// ---------------------------------------------------------------------------------------------
// Save

static int add_view(StWriter *w, const Adapters *a, const AdapterView *v, char *err) {
    return st_writer_add_f32(w, v->name, v->ndim, v->shape, a->params + v->offset, ST_F32, err);
}

// target_modules as PEFT names for the slots in `mask` (used identically in every listed layer).
static int target_names(const ModelConfig *mc, unsigned mask, const char **names) {
    int n = 0;
    const unsigned bit_o = 1u << LSLOT_O, bit_down = 1u << LSLOT_DOWN;
    if (mc->arch == ARCH_LLAMA) {
        static const char *llama[LSLOT_COUNT] = {"q_proj", "k_proj", "v_proj", NULL, "o_proj", "gate_proj", "up_proj", "down_proj"};
        for (int s = 0; s < LSLOT_COUNT; s++)
            if ((mask >> s & 1) && llama[s]) names[n++] = llama[s];
    } else {
        if (mask & ((1u << LSLOT_Q) | (1u << LSLOT_K) | (1u << LSLOT_V) | (1u << LSLOT_QKV))) names[n++] = "c_attn";
        if ((mask & bit_o) && (mask & bit_down)) names[n++] = "c_proj";
        else if (mask & bit_o) names[n++] = "attn.c_proj";
        else if (mask & bit_down) names[n++] = "mlp.c_proj";
        if (mask & (1u << LSLOT_UP)) names[n++] = "c_fc";
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    return n;
}

// The gpt2 q/k/v block slots of one layer as one c_attn pair (peft.h): A (nb*r, C), B (3C, nb*r).
static void blocks_to_c_attn(const Adapters *a, int layer, const int *blk, int nb, float *A, float *B) {
    const int r = a->cfg.r, C = a->mcfg.dim, R = nb * r;
    memset(B, 0, (size_t)3 * C * R * sizeof(float));
    for (int j = 0; j < nb; j++) {
        const LoraHook *h = &a->hooks[layer * LSLOT_COUNT + blk[j]];
        memcpy(A + (size_t)j * r * C, h->A, (size_t)r * C * sizeof(float));
        for (int i = 0; i < C; i++)
            memcpy(B + (size_t)(h->out_offset + i) * R + (size_t)j * r, h->B + (size_t)i * r, (size_t)r * sizeof(float));
    }
}

static int save_lora(const Adapters *a, const char *dir, const char *base, char *err) {
    const ModelConfig *mc = &a->mcfg;
    const int L = mc->n_layers, r = a->cfg.r, C = mc->dim;
    const unsigned block_bits = (1u << LSLOT_Q) | (1u << LSLOT_K) | (1u << LSLOT_V);
    int rc = 0, n_used = 0, uniform = 1, nb = 0, n_names = 0, blk[3];
    unsigned all = 0;
    char path[4096], meta[8] = "";
    int *layers = malloc((size_t)L * sizeof(int));
    const char **names = malloc((size_t)L * LSLOT_COUNT * sizeof(char *));
    char (*paths)[128] = malloc((size_t)L * LSLOT_COUNT * sizeof *paths);
    float *cat = NULL;
    StWriter *w = NULL;
    if (!layers || !names || !paths) {
        rc = ftk_err(err, "out of memory");
        goto done;
    }
    for (int l = 0; l < L; l++) {
        unsigned m = layer_slot_mask(a, l);
        if (!m) continue;
        all |= m;
        layers[n_used++] = l;
    }
    for (int i = 0; i < n_used; i++) uniform &= layer_slot_mask(a, layers[i]) == all;
    const int gpt2_blocks = mc->arch == ARCH_GPT2 && (all & block_bits);
    if (gpt2_blocks) {
        if (!uniform) {
            rc = ftk_err(err, "%s: gpt2 q/k/v-block LoRA on different blocks in different layers cannot be saved as "
                              "one c_attn adapter", dir);
            goto done;
        }
        for (int s = LSLOT_Q; s <= LSLOT_V; s++) {
            if (!(all >> s & 1)) continue;
            snprintf(meta + strlen(meta), sizeof meta - strlen(meta), "%s%c", nb ? "," : "", block_letter[s - LSLOT_Q]);
            blk[nb++] = s;
        }
    }
    // target_modules: module names plus layers_to_transform when every used layer has the same
    // slots; otherwise the full module paths (PEFT matches those exactly).
    if (uniform) {
        n_names = target_names(mc, all, names);
    } else {
        for (int l = 0; l < L; l++)
            for (int s = 0; s < LSLOT_COUNT; s++)
                if (a->hooks[l * LSLOT_COUNT + s].r > 0) {
                    lora_module_path(mc, l, (LoraSlot)s, paths[n_names], sizeof paths[0]);
                    names[n_names] = paths[n_names];
                    n_names++;
                }
    }
    if ((rc = st_writer_create(&w, err))) goto done;
    if (gpt2_blocks) {
        const size_t per_layer = (size_t)nb * r * C + (size_t)3 * C * nb * r;
        cat = malloc((size_t)n_used * per_layer * sizeof(float));
        if (!cat) {
            rc = ftk_err(err, "out of memory");
            goto done;
        }
        for (int i = 0; i < n_used && !rc; i++) {
            float *A = cat + i * per_layer, *B = A + (size_t)nb * r * C;
            blocks_to_c_attn(a, layers[i], blk, nb, A, B);
            int64_t sa[2] = {nb * r, C}, sb[2] = {3 * C, nb * r};
            char name[160];
            snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_A.weight", layers[i]);
            rc = st_writer_add_f32(w, name, 2, sa, A, ST_F32, err);
            snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_B.weight", layers[i]);
            if (!rc) rc = st_writer_add_f32(w, name, 2, sb, B, ST_F32, err);
        }
        if (!rc) rc = st_writer_set_metadata(w, BLOCKS_META_KEY, meta, err);
    } else {
        for (int i = 0; i < a->n_views && !rc; i++)
            if (a->views[i].kind == VIEW_LORA_A || a->views[i].kind == VIEW_LORA_B) rc = add_view(w, a, &a->views[i], err);
    }
    for (int i = 0; i < a->n_views && !rc; i++)
        if (a->views[i].kind == VIEW_SCORE) rc = add_view(w, a, &a->views[i], err);
    if (rc) goto done;
    if ((rc = ftk_path_join(path, sizeof path, dir, WEIGHTS_FILE, err))) goto done;
    if ((rc = st_writer_write(w, path, err))) goto done;

    PeftLoraFields f = {
        .r = gpt2_blocks ? nb * r : r,
        // keep PEFT's scaling equal to ours: alpha'/(nb r) = alpha/r, alpha'/sqrt(nb r) = alpha/sqrt(r)
        .alpha = !gpt2_blocks ? (double)a->cfg.alpha
                 : a->cfg.use_rslora ? (double)a->cfg.alpha * sqrt((double)nb) : (double)a->cfg.alpha * nb,
        .use_rslora = a->cfg.use_rslora,
        .dropout = a->cfg.dropout,
        .init = a->cfg.init,
        .targets = names,
        .n_targets = n_names,
        .layers = uniform && n_used < L ? layers : NULL,
        .n_layers = n_used,
        .fan_in_fan_out = mc->arch == ARCH_GPT2,
        .score_head = a->score != NULL,
    };
    if ((rc = ftk_path_join(path, sizeof path, dir, CONFIG_FILE, err))) goto done;
    rc = peft_config_write_lora(path, &f, base, err);
done:
    st_writer_free(w);
    free(cat);
    free(paths);
    free(names);
    free(layers);
    return rc;
}

static int save_views(const Adapters *a, const char *path, ViewKind k1, ViewKind k2, char *err) {
    StWriter *w = NULL;
    int rc = st_writer_create(&w, err);
    for (int i = 0; i < a->n_views && !rc; i++)
        if (a->views[i].kind == k1 || a->views[i].kind == k2) rc = add_view(w, a, &a->views[i], err);
    if (!rc) rc = st_writer_write(w, path, err);
    st_writer_free(w);
    return rc;
}

static void remove_file(const char *dir, const char *name) {
    char path[4096];
    if (ftk_path_join(path, sizeof path, dir, name, NULL) == 0) unlink(path);
}

int peft_save(const Adapters *a, const char *dir, const char *base, char *err) {
    int rc = ftk_mkdirs(dir, err);
    if (rc) return rc;
    char pdir[4096], path[4096];
    if ((rc = ftk_path_join(pdir, sizeof pdir, dir, PROMPT_SUBDIR, err))) return rc;
    if (a->cfg.types & ADAPTER_LORA) {
        if ((rc = save_lora(a, dir, base, err))) return rc;
    }
    if (a->cfg.types & ADAPTER_PROMPT) {
        const char *at = (a->cfg.types & ADAPTER_LORA) ? pdir : dir;
        if ((rc = ftk_mkdirs(at, err))) return rc;
        if ((rc = ftk_path_join(path, sizeof path, at, WEIGHTS_FILE, err))) return rc;
        if ((rc = save_views(a, path, VIEW_PROMPT, VIEW_PROMPT, err))) return rc;
        if ((rc = ftk_path_join(path, sizeof path, at, CONFIG_FILE, err))) return rc;
        if ((rc = peft_config_write_prompt(path, &a->cfg, &a->mcfg, base, err))) return rc;
    }
    if (!((a->cfg.types & ADAPTER_LORA) && (a->cfg.types & ADAPTER_PROMPT)) && ftk_is_dir(pdir)) {
        // a previous save's prompt adapter would otherwise be picked up by peft_load
        remove_file(pdir, CONFIG_FILE);
        remove_file(pdir, WEIGHTS_FILE);
        rmdir(pdir);
    }
    if ((rc = ftk_path_join(path, sizeof path, dir, VALUE_HEAD_FILE, err))) return rc;
    if (a->value_w) return save_views(a, path, VIEW_VALUE_W, VIEW_VALUE_B, err);
    unlink(path);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Load

static int open_weights(StFile *st, const char *dir, char *err) {
    char path[4096];
    int rc = ftk_path_join(path, sizeof path, dir, WEIGHTS_FILE, err);
    if (rc) return rc;
    if (!ftk_file_exists(path)) {
        char bin[4096];
        if (ftk_path_join(bin, sizeof bin, dir, "adapter_model.bin", err) == 0 && ftk_file_exists(bin))
            return ftk_err(err, "%s: only safetensors adapters are supported (adapter_model.bin is a pickle); "
                                "re-save it with safe_serialization=True",
                           bin);
        return ftk_err(err, "%s: missing", path);
    }
    return st_open(st, path, err);
}

// PEFT key -> ftk view name: drop the ".default" adapter-name and ".modules_to_save" segments and
// make sure of the "base_model.model." prefix.
static void normalise_key(const char *key, char *out, size_t n) {
    static const char *const drop[] = {".default.", ".modules_to_save."};
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s%s", strncmp(key, "base_model.model.", 17) ? "base_model.model." : "", key);
    for (size_t d = 0; d < 2; d++) {
        char *p = strstr(tmp, drop[d]);
        if (p) memmove(p, p + strlen(drop[d]) - 1, strlen(p + strlen(drop[d]) - 1) + 1);
    }
    snprintf(out, n, "%s", tmp);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int check_shape(const StFile *st, const StTensor *t, int ndim, const int64_t *shape, char *err) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return 0;
    char want[64], got[160];
    shape_str(want, sizeof want, ndim, shape);
    shape_str(got, sizeof got, t->ndim, t->shape);
    return ftk_err(err, "%s: tensor %s has shape %s, but the config and the model call for %s (an adapter made for "
                        "another model?)", st->path, t->name, got, want);
}

static int read_view(Adapters *a, unsigned char *filled, const AdapterView *v, const StFile *st, const StTensor *t,
                     char *err) {
    if (filled[v - a->views]) return ftk_err(err, "%s: tensor %s appears twice", st->path, t->name);
    int rc = check_shape(st, t, v->ndim, v->shape, err);
    if (!rc) rc = st_read_f32(st, t, a->params + v->offset, v->numel, err);
    if (!rc) filled[v - a->views] = 1;
    return rc;
}

// Parses the "ftk_c_attn_blocks" metadata ("q,v") into slots; 0 blocks when absent.
static int read_blocks_marker(const StFile *st, int *blk, int *nb, char *err) {
    *nb = 0;
    if (!st->metadata_json) return 0;
    cJSON *meta = cJSON_Parse(st->metadata_json);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(meta, BLOCKS_META_KEY);
    int rc = 0;
    if (cJSON_IsString(x)) {
        for (const char *p = x->valuestring; *p && !rc; p++) {
            const char *c = strchr(block_letter, *p);
            if (*p == ',') continue;
            if (!c || *nb >= 3 || (*nb && blk[*nb - 1] >= LSLOT_Q + (int)(c - block_letter)))
                rc = ftk_err(err, "%s: bad %s metadata \"%s\"", st->path, BLOCKS_META_KEY, x->valuestring);
            else blk[(*nb)++] = LSLOT_Q + (int)(c - block_letter);
        }
        if (!rc && !*nb) rc = ftk_err(err, "%s: empty %s metadata", st->path, BLOCKS_META_KEY);
    }
    cJSON_Delete(meta);
    return rc;
}

// One c_attn tensor of a q/k/v-block file (peft.h) split back into the slot views of its layer.
static int read_c_attn_blocks(Adapters *a, unsigned char *filled, const StFile *st, const StTensor *t, int layer,
                              int is_b, const int *blk, int nb, char *err) {
    const int r = a->cfg.r, C = a->mcfg.dim, R = nb * r;
    const AdapterView *views[3];
    char name[160];
    for (int j = 0; j < nb; j++) {
        snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.%c_proj.lora_%c.weight", layer,
                 block_letter[blk[j] - LSLOT_Q], is_b ? 'B' : 'A');
        views[j] = adapters_find_view(a, name);
        if (!views[j]) return ftk_err(err, "%s: unexpected tensor %s (layer %d is not targeted)", st->path, t->name, layer);
        if (filled[views[j] - a->views]) return ftk_err(err, "%s: tensor %s appears twice", st->path, t->name);
    }
    const int64_t shape[2] = {is_b ? 3 * C : R, is_b ? R : C};
    int rc = check_shape(st, t, 2, shape, err);
    if (rc) return rc;
    float *buf = malloc(t->numel * sizeof(float));
    if (!buf) return ftk_err(err, "out of memory");
    rc = st_read_f32(st, t, buf, t->numel, err);
    for (int j = 0; j < nb && !rc; j++) {
        float *dst = a->params + views[j]->offset;
        if (!is_b) {
            memcpy(dst, buf + (size_t)j * r * C, (size_t)r * C * sizeof(float));
            continue;
        }
        const int off = a->hooks[layer * LSLOT_COUNT + blk[j]].out_offset;
        for (int i = 0; i < C; i++) memcpy(dst + (size_t)i * r, buf + (size_t)(off + i) * R + (size_t)j * r, (size_t)r * sizeof(float));
    }
    // Every entry of B outside the (block j rows, columns j*r..) pieces must be zero.
    for (int i = 0; i < 3 * C && is_b && !rc; i++) {
        for (int c = 0; c < R; c++) {
            const int j = c / r;
            if (i / C == blk[j] - LSLOT_Q || buf[(size_t)i * R + c] == 0.0f) continue;
            rc = ftk_err(err, "%s: tensor %s is marked %s but is not block-structured (entry [%d, %d] = %g)", st->path,
                         t->name, BLOCKS_META_KEY, i, c, (double)buf[(size_t)i * R + c]);
            break;
        }
    }
    free(buf);
    for (int j = 0; j < nb && !rc; j++) filled[views[j] - a->views] = 1;
    return rc;
}

static int read_lora_tensors(Adapters *a, unsigned char *filled, const StFile *st, const int *blk, int nb, char *err) {
    char key[512];
    for (int i = 0; i < st->n_tensors; i++) {
        const StTensor *t = &st->tensors[i];
        normalise_key(t->name, key, sizeof key);
        int layer, len = 0;
        char ab = 0;
        int rc;
        if (nb && sscanf(key, "base_model.model.transformer.h.%d.attn.c_attn.lora_%c.weight%n", &layer, &ab, &len) == 2 &&
            len == (int)strlen(key) && (ab == 'A' || ab == 'B')) {
            rc = read_c_attn_blocks(a, filled, st, t, layer, ab == 'B', blk, nb, err);
        } else {
            const AdapterView *v = adapters_find_view(a, key);
            if (!v || v->kind == VIEW_PROMPT || v->kind == VIEW_VALUE_W || v->kind == VIEW_VALUE_B)
                return ftk_err(err, "%s: unexpected tensor %s: not a LoRA module this config targets on this %s model",
                               st->path, t->name, a->mcfg.arch == ARCH_LLAMA ? "llama" : "gpt2");
            rc = read_view(a, filled, v, st, t, err);
        }
        if (rc) return rc;
    }
    return 0;
}

// Reads the tensors named exactly as the views of kinds k1/k2 (prompt, value head).
static int read_plain_tensors(Adapters *a, unsigned char *filled, const StFile *st, ViewKind k1, ViewKind k2, char *err) {
    for (int i = 0; i < st->n_tensors; i++) {
        const StTensor *t = &st->tensors[i];
        const AdapterView *v = adapters_find_view(a, t->name);
        if (!v || (v->kind != k1 && v->kind != k2)) return ftk_err(err, "%s: unexpected tensor %s", st->path, t->name);
        int rc = read_view(a, filled, v, st, t, err);
        if (rc) return rc;
    }
    return 0;
}

int peft_load(Adapters *a, const Model *m, const char *dir, char *err) {
    memset(a, 0, sizeof *a);
    const ModelConfig *mc = &m->cfg;
    char cfg_path[4096], path[4096], pdir[4096];
    StFile lora_st = {0}, prompt_st = {0}, value_st = {0};
    int have_lora_st = 0, have_prompt_st = 0, have_value_st = 0, blk[3], nb = 0, rc;
    unsigned char *filled = NULL;
    if (!ftk_is_dir(dir)) return ftk_err(err, "%s: not a directory (expected a PEFT adapter directory)", dir);
    if ((rc = ftk_path_join(cfg_path, sizeof cfg_path, dir, CONFIG_FILE, err))) return rc;
    if (!ftk_file_exists(cfg_path)) return ftk_err(err, "%s: missing: %s is not a PEFT adapter directory", cfg_path, dir);
    AdapterConfig cfg;
    adapter_config_default(&cfg);
    cfg.types = 0;
    double file_alpha = 0;
    if ((rc = peft_config_read(&cfg, cfg_path, mc, &file_alpha, err))) return rc;
    snprintf(pdir, sizeof pdir, "%s", dir);
    if (cfg.types & ADAPTER_LORA) {
        // A LoRA + prompt run keeps its prompt-tuning adapter in prompt/ (peft.h).
        if ((rc = ftk_path_join(pdir, sizeof pdir, dir, PROMPT_SUBDIR, err))) return rc;
        if ((rc = ftk_path_join(path, sizeof path, pdir, CONFIG_FILE, err))) return rc;
        if (ftk_file_exists(path)) {
            AdapterConfig pc = cfg;
            pc.types = 0;
            if ((rc = peft_config_read(&pc, path, mc, NULL, err))) return rc;
            if (pc.types != ADAPTER_PROMPT) return ftk_err(err, "%s: expected a PROMPT_TUNING adapter", path);
            cfg = pc;
            cfg.types = ADAPTER_LORA | ADAPTER_PROMPT;
        }
    }
    if (cfg.types & ADAPTER_LORA) {
        if ((rc = open_weights(&lora_st, dir, err))) goto done;
        have_lora_st = 1;
        char key[512];
        for (int i = 0; i < lora_st.n_tensors; i++) {
            normalise_key(lora_st.tensors[i].name, key, sizeof key);
            if (!strcmp(key, "base_model.model.score.weight")) cfg.score_head = 1;  // PEFT saves it for SEQ_CLS
        }
        if ((rc = read_blocks_marker(&lora_st, blk, &nb, err))) goto done;
        if (nb) {
            // ftk's gpt2 q/k/v-block export: back to slots Q/K/V with the training r and alpha.
            if (mc->arch != ARCH_GPT2 || strcmp(cfg.target_modules, "c_attn") != 0 || cfg.r % nb != 0) {
                rc = ftk_err(err, "%s: %s metadata needs a gpt2 model, target_modules [\"c_attn\"] and r divisible by %d",
                             lora_st.path, BLOCKS_META_KEY, nb);
                goto done;
            }
            size_t k = 0;
            for (int j = 0; j < nb; j++)
                k += (size_t)snprintf(cfg.target_modules + k, sizeof cfg.target_modules - k, "%s%c_proj", j ? "," : "",
                                      block_letter[blk[j] - LSLOT_Q]);
            cfg.r /= nb;
            cfg.alpha = (float)(cfg.use_rslora ? file_alpha / sqrt((double)nb) : file_alpha / nb);
        }
    }
    if (cfg.types & ADAPTER_PROMPT) {
        if ((rc = open_weights(&prompt_st, pdir, err))) goto done;
        have_prompt_st = 1;
    }
    if ((rc = ftk_path_join(path, sizeof path, dir, VALUE_HEAD_FILE, err))) goto done;
    if (ftk_file_exists(path)) {
        if ((rc = st_open(&value_st, path, err))) goto done;
        have_value_st = 1;
        cfg.value_head = 1;
    }
    if ((rc = adapters_alloc(a, &cfg, mc, err))) {
        char msg[FTK_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", err ? err : "");
        rc = ftk_err(err, "%s: %s", cfg_path, msg);
        goto done;
    }
    filled = calloc((size_t)a->n_views, 1);
    if (!filled) {
        rc = ftk_err(err, "out of memory");
        goto done;
    }
    if (have_lora_st && (rc = read_lora_tensors(a, filled, &lora_st, blk, nb, err))) goto done;
    if (have_prompt_st && (rc = read_plain_tensors(a, filled, &prompt_st, VIEW_PROMPT, VIEW_PROMPT, err))) goto done;
    if (have_value_st && (rc = read_plain_tensors(a, filled, &value_st, VIEW_VALUE_W, VIEW_VALUE_B, err))) goto done;
    for (int i = 0; i < a->n_views; i++) {
        if (filled[i]) continue;
        const AdapterView *v = &a->views[i];
        const StFile *st = v->kind == VIEW_PROMPT ? &prompt_st : (v->kind == VIEW_VALUE_W || v->kind == VIEW_VALUE_B) ? &value_st : &lora_st;
        char name[160];
        if (nb && v->slot >= LSLOT_Q && v->slot <= LSLOT_V && (v->kind == VIEW_LORA_A || v->kind == VIEW_LORA_B))
            snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_%c.weight", v->layer,
                     v->kind == VIEW_LORA_A ? 'A' : 'B');
        else snprintf(name, sizeof name, "%s", v->name);
        rc = ftk_err(err, "%s: missing tensor %s", st->path, name);
        goto done;
    }
done:
    free(filled);
    if (have_lora_st) st_close(&lora_st);
    if (have_prompt_st) st_close(&prompt_st);
    if (have_value_st) st_close(&value_st);
    if (rc) adapters_free(a);
    return rc;
}
