// hf.c — Hugging Face directory loader: config.json + model.safetensors (or shards listed in
// model.safetensors.index.json) + tokenizer (DESIGN §2, FORMATS §2b).
//
// Weights are converted to fp32 into the block from model_alloc_weights. LLaMA q/k/v land in the
// fused wqkv rows [q; k; v] and gate/up in w_gate_up [gate; up]; HF already stores q/k rows in
// the rotate-half order ftk uses, so nothing is permuted. GPT-2 stores its linears as Conv1D
// weights (in, out); they are transposed here to ftk's (out, in).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

// ---------------------------------------------------------------------------------------------
// config.json

// Integer key >= min (1 for sizes, -1 for token ids). Missing or null: error naming the key when
// required, else `def`. Arrays (bos/eos lists in newer configs) give their first element.
static int cfg_int_min(const cJSON *root, const char *key, int required, int def, int min, int *out, const char *path,
                       char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!v || cJSON_IsNull(v)) {
        if (required) return ftk_err(err, "%s: missing required key \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)min ||
        v->valuedouble > 2147483647.0)
        return ftk_err(err, "%s: \"%s\" must be an integer >= %d (within int range)", path, key, min);
    *out = (int)v->valuedouble;
    return 0;
}

// A size: a positive integer.
static int cfg_int(const cJSON *root, const char *key, int required, int def, int *out, const char *path, char *err) {
    return cfg_int_min(root, key, required, def, 1, out, path, err);
}

// A token id: an integer, or -1 when absent.
static int cfg_token_id(const cJSON *root, const char *key, int *out, const char *path, char *err) {
    return cfg_int_min(root, key, 0, -1, -1, out, path, err);
}

static int cfg_float(const cJSON *root, const char *key, float def, float *out, const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return ftk_err(err, "%s: \"%s\" must be a number", path, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int cfg_bool(const cJSON *root, const char *key, int def, int *out, const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v)) return ftk_err(err, "%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

// A string key that, when present, must equal one of the allowed values (features ftk lacks).
static int cfg_require_str(const cJSON *root, const char *key, const char *const *allowed, int n_allowed,
                           const char *path, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsString(v))
        for (int i = 0; i < n_allowed; i++)
            if (strcmp(v->valuestring, allowed[i]) == 0) return 0;
    return ftk_err(err, "%s: %s = %s is not supported (ftk implements %s)", path, key,
                   cJSON_IsString(v) ? v->valuestring : "(not a string)", allowed[0]);
}

// A boolean key that, when present and true, names a feature ftk lacks.
static int cfg_reject_true(const cJSON *root, const char *key, const char *path, char *err) {
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, key)))
        return ftk_err(err, "%s: %s = true is not supported", path, key);
    return 0;
}

static int llama_config(ModelConfig *c, const cJSON *root, const char *path, char *err) {
    static const char *const silu[] = {"silu"};
    c->arch = ARCH_LLAMA;
    if (cfg_int(root, "hidden_size", 1, 0, &c->dim, path, err) ||
        cfg_int(root, "intermediate_size", 1, 0, &c->ffn_dim, path, err) ||
        cfg_int(root, "num_hidden_layers", 1, 0, &c->n_layers, path, err) ||
        cfg_int(root, "num_attention_heads", 1, 0, &c->n_heads, path, err) ||
        cfg_int(root, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, path, err) ||
        cfg_int(root, "vocab_size", 1, 0, &c->vocab_size, path, err) ||
        cfg_int(root, "max_position_embeddings", 1, 0, &c->max_seq_len, path, err) ||
        // LlamaConfig / MistralConfig default rms_norm_eps to 1e-6 when the key is absent.
        cfg_float(root, "rms_norm_eps", 1e-6f, &c->norm_eps, path, err) ||
        cfg_float(root, "rope_theta", 10000.0f, &c->rope_theta, path, err) ||
        cfg_bool(root, "tie_word_embeddings", 0, &c->tied_head, path, err) ||
        cfg_token_id(root, "bos_token_id", &c->bos_id, path, err) ||
        cfg_token_id(root, "eos_token_id", &c->eos_id, path, err))
        return -1;
    if (c->n_heads <= 0) return ftk_err(err, "%s: num_attention_heads must be positive", path);
    int hd_default = c->dim / c->n_heads;
    if (cfg_int(root, "head_dim", 0, hd_default, &c->head_dim, path, err)) return -1;
    if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(root, "head_dim")) && c->dim % c->n_heads != 0)
        return ftk_err(err, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, c->dim, c->n_heads);
    // Features that change the math and that the llama forward does not implement.
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) return ftk_err(err, "%s: rope_scaling is not supported", path);
    if (cfg_require_str(root, "hidden_act", silu, 1, path, err) || cfg_reject_true(root, "attention_bias", path, err) ||
        cfg_reject_true(root, "mlp_bias", path, err))
        return -1;
    return 0;
}

static int gpt2_config(ModelConfig *c, const cJSON *root, const char *path, char *err) {
    static const char *const gelu_tanh[] = {"gelu_new", "gelu_pytorch_tanh"};
    c->arch = ARCH_GPT2;
    if (cfg_int(root, "n_embd", 1, 0, &c->dim, path, err) || cfg_int(root, "n_layer", 1, 0, &c->n_layers, path, err) ||
        cfg_int(root, "n_head", 1, 0, &c->n_heads, path, err) ||
        cfg_int(root, "vocab_size", 1, 0, &c->vocab_size, path, err) ||
        cfg_float(root, "layer_norm_epsilon", 1e-5f, &c->norm_eps, path, err) ||
        cfg_token_id(root, "bos_token_id", &c->bos_id, path, err) ||
        cfg_token_id(root, "eos_token_id", &c->eos_id, path, err))
        return -1;
    // n_inner null means 4 * n_embd.
    if (c->dim > (1 << 28)) return ftk_err(err, "%s: n_embd %d out of range", path, c->dim);
    if (cfg_int(root, "n_inner", 0, 4 * c->dim, &c->ffn_dim, path, err)) return -1;
    // n_positions is the table size; older configs only carry n_ctx.
    const cJSON *np = cJSON_GetObjectItemCaseSensitive(root, "n_positions");
    if (cfg_int_min(root, np && !cJSON_IsNull(np) ? "n_positions" : "n_ctx", 0, -1, 1, &c->max_seq_len, path, err))
        return -1;
    if (c->max_seq_len < 0) return ftk_err(err, "%s: missing required key \"n_positions\" (or \"n_ctx\")", path);
    if (c->n_heads <= 0 || c->dim % c->n_heads != 0)
        return ftk_err(err, "%s: n_embd %d is not a multiple of n_head %d", path, c->dim, c->n_heads);
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    c->rope_theta = 0.0f;
    c->tied_head = 1;   // GPT2LMHeadModel always ties lm_head to wte
    if (cfg_require_str(root, "activation_function", gelu_tanh, 2, path, err) ||
        cfg_reject_true(root, "scale_attn_by_inverse_layer_idx", path, err) ||
        cfg_reject_true(root, "reorder_and_upcast_attn", path, err))
        return -1;
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(root, "scale_attn_weights");
    if (cJSON_IsFalse(scale)) return ftk_err(err, "%s: scale_attn_weights = false is not supported", path);
    return 0;
}

static int config_from_json(ModelConfig *cfg, const cJSON *root, const char *path, char *err) {
    memset(cfg, 0, sizeof *cfg);
    if (!cJSON_IsObject(root)) return ftk_err(err, "%s: not a JSON object", path);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) return ftk_err(err, "%s: missing required key \"model_type\"", path);
    int rc;
    // Mistral is LLaMA with a sliding attention window. ftk ignores the window: attention is
    // identical for sequences up to sliding_window tokens (4096 for Mistral-7B), which covers
    // every fine-tuning length ftk uses; longer sequences would see the full causal context.
    if (strcmp(mt->valuestring, "llama") == 0 || strcmp(mt->valuestring, "mistral") == 0)
        rc = llama_config(cfg, root, path, err);
    else if (strcmp(mt->valuestring, "gpt2") == 0)
        rc = gpt2_config(cfg, root, path, err);
    else
        return ftk_err(err, "%s: model_type \"%.64s\" is not supported (ftk reads llama, mistral and gpt2)", path,
                       mt->valuestring);
    if (rc) return rc;
    if (cfg->dim <= 0 || cfg->n_layers <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 ||
        cfg->ffn_dim <= 0 || cfg->vocab_size <= 0 || cfg->max_seq_len <= 0)
        return ftk_err(err, "%s: dimensions must be positive (hidden %d, layers %d, heads %d/%d, head_dim %d, ffn %d, "
                            "vocab %d, positions %d)", path, cfg->dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
                       cfg->head_dim, cfg->ffn_dim, cfg->vocab_size, cfg->max_seq_len);
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return ftk_err(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                       cfg->n_heads, cfg->n_kv_heads);
    if (!(cfg->norm_eps > 0.0f)) return ftk_err(err, "%s: the norm epsilon must be positive", path);
    if (cfg->arch == ARCH_LLAMA && !(cfg->rope_theta > 0.0f)) return ftk_err(err, "%s: rope_theta must be positive", path);
    return 0;
}

// Reads and parses the config: `path` is an HF dir or the config file itself. On success *text
// (if text != NULL) holds the file contents (malloc'ed).
static int read_config(ModelConfig *cfg, const char *path, char **text, char *err) {
    char file[4200];
    if (ftk_is_dir(path)) {
        if (ftk_path_join(file, sizeof file, path, "config.json", err)) return -1;
    } else {
        if (strlen(path) >= sizeof file) return ftk_err(err, "%s: path too long", path);
        snprintf(file, sizeof file, "%s", path);
    }
    char *data;
    size_t len;
    if (ftk_read_file(file, &data, &len, err)) return -1;
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root) {
        free(data);
        return ftk_err(err, "%s: not valid JSON", file);
    }
    int rc = config_from_json(cfg, root, file, err);
    cJSON_Delete(root);
    if (rc == 0 && text) *text = data;
    else free(data);
    return rc;
}

int model_config_from_hf(ModelConfig *cfg, const char *path, char *err) { return read_config(cfg, path, NULL, err); }

// ---------------------------------------------------------------------------------------------
// weight files

typedef struct {
    const char *name;     // points into the StFile
    int file;             // index into HfWeights.files
    const StTensor *t;
    int used;
} HfEntry;

typedef struct {
    StFile *files;
    int n_files;
    char source[4200];    // model.safetensors or model.safetensors.index.json, for messages
    HfEntry *entries;     // every tensor of every file, sorted by name
    int n_entries;
} HfWeights;

static void weights_close(HfWeights *hw) {
    for (int i = 0; i < hw->n_files; i++) st_close(&hw->files[i]);
    free(hw->files);
    free(hw->entries);
    memset(hw, 0, sizeof *hw);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const HfEntry *)a)->name, ((const HfEntry *)b)->name);
}

static HfEntry *find_entry(const HfWeights *hw, const char *name) {
    HfEntry key = {.name = name};
    return bsearch(&key, hw->entries, (size_t)hw->n_entries, sizeof(HfEntry), cmp_entry);
}

static int index_files(HfWeights *hw, char *err) {
    size_t total = 0;
    for (int i = 0; i < hw->n_files; i++) total += (size_t)hw->files[i].n_tensors;
    hw->entries = calloc(total ? total : 1, sizeof(HfEntry));
    if (!hw->entries) return ftk_err(err, "%s: out of memory", hw->source);
    for (int i = 0; i < hw->n_files; i++)
        for (int j = 0; j < hw->files[i].n_tensors; j++) {
            HfEntry *e = &hw->entries[hw->n_entries++];
            e->name = hw->files[i].tensors[j].name;
            e->file = i;
            e->t = &hw->files[i].tensors[j];
        }
    qsort(hw->entries, (size_t)hw->n_entries, sizeof(HfEntry), cmp_entry);
    for (int i = 1; i < hw->n_entries; i++)
        if (strcmp(hw->entries[i - 1].name, hw->entries[i].name) == 0)
            return ftk_err(err, "%s: tensor '%s' is stored twice (in %s and %s)", hw->source, hw->entries[i].name,
                           hw->files[hw->entries[i - 1].file].path, hw->files[hw->entries[i].file].path);
    return 0;
}

// Opens the shards named in model.safetensors.index.json and checks that each weight_map entry
// is held by the shard it names.
static int open_sharded(HfWeights *hw, const char *dir, char *err) {
    char *data;
    size_t len;
    if (ftk_read_file(hw->source, &data, &len, err)) return -1;
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    if (!root) return ftk_err(err, "%s: not valid JSON", hw->source);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int rc = 0;
    if (!cJSON_IsObject(wm)) rc = ftk_err(err, "%s: missing \"weight_map\" object", hw->source);
    int n_map = rc ? 0 : cJSON_GetArraySize(wm);
    // Unique shard names, in order of first appearance.
    const char **shards = calloc((size_t)(n_map ? n_map : 1), sizeof *shards);
    if (!shards && !rc) rc = ftk_err(err, "%s: out of memory", hw->source);
    int n_shards = 0;
    const cJSON *kv;
    if (!rc) {
        cJSON_ArrayForEach(kv, wm) {
            if (!cJSON_IsString(kv)) {
                rc = ftk_err(err, "%s: weight_map entry '%s' is not a file name", hw->source, kv->string);
                break;
            }
            const char *s = kv->valuestring;
            if (!s[0] || strchr(s, '/') || strcmp(s, "..") == 0 || strcmp(s, ".") == 0) {
                rc = ftk_err(err, "%s: weight_map entry '%s': bad shard file name '%.200s'", hw->source, kv->string, s);
                break;
            }
            int seen = 0;
            for (int i = 0; i < n_shards && !seen; i++) seen = strcmp(shards[i], s) == 0;
            if (!seen) shards[n_shards++] = s;
        }
    }
    if (!rc && n_shards == 0) rc = ftk_err(err, "%s: weight_map is empty", hw->source);
    if (!rc) {
        hw->files = calloc((size_t)n_shards, sizeof(StFile));
        if (!hw->files) rc = ftk_err(err, "%s: out of memory", hw->source);
    }
    for (int i = 0; i < n_shards && !rc; i++) {
        char p[4200];
        if ((rc = ftk_path_join(p, sizeof p, dir, shards[i], err)) != 0) break;
        if (!ftk_file_exists(p)) {
            rc = ftk_err(err, "%s: shard %s listed in %s is missing", p, shards[i], hw->source);
            break;
        }
        if ((rc = st_open(&hw->files[i], p, err)) != 0) break;
        hw->n_files++;
    }
    if (!rc) rc = index_files(hw, err);
    if (!rc) {
        cJSON_ArrayForEach(kv, wm) {
            const HfEntry *e = find_entry(hw, kv->string);
            // files[i] was opened from shards[i].
            if (!e || strcmp(shards[e->file], kv->valuestring) != 0) {
                rc = ftk_err(err, "%s: tensor '%s' is mapped to %s, which does not hold it", hw->source, kv->string,
                             kv->valuestring);
                break;
            }
        }
    }
    free(shards);
    cJSON_Delete(root);
    return rc;
}

static int weights_open(HfWeights *hw, const char *dir, char *err) {
    memset(hw, 0, sizeof *hw);
    char single[4200];
    if (ftk_path_join(hw->source, sizeof hw->source, dir, "model.safetensors.index.json", err) ||
        ftk_path_join(single, sizeof single, dir, "model.safetensors", err))
        return -1;
    if (ftk_file_exists(hw->source)) return open_sharded(hw, dir, err);
    if (!ftk_file_exists(single))
        return ftk_err(err, "%s: no model.safetensors or model.safetensors.index.json in the directory", dir);
    snprintf(hw->source, sizeof hw->source, "%s", single);
    hw->files = calloc(1, sizeof(StFile));
    if (!hw->files) return ftk_err(err, "%s: out of memory", single);
    if (st_open(&hw->files[0], single, err)) return -1;
    hw->n_files = 1;
    return index_files(hw, err);
}

// ---------------------------------------------------------------------------------------------
// filling the model

enum { DT_F32 = 1, DT_F16 = 2, DT_BF16 = 4 };

typedef struct {
    HfWeights *hw;
    Arch arch;
    float *scratch;       // for transposes: the largest Conv1D weight
    size_t scratch_n;
    int dtypes_seen;      // DT_* mask
} Filler;

// dst (c, r) = src (r, c) transposed, in 32x32 tiles to stay in cache.
static void transpose(float *dst, const float *src, size_t r, size_t c) {
    const size_t B = 32;
    for (size_t i0 = 0; i0 < r; i0 += B)
        for (size_t j0 = 0; j0 < c; j0 += B) {
            size_t i1 = i0 + B < r ? i0 + B : r, j1 = j0 + B < c ? j0 + B : c;
            for (size_t i = i0; i < i1; i++)
                for (size_t j = j0; j < j1; j++) dst[j * r + i] = src[i * c + j];
        }
}

// Finds a tensor by its HF name; GPT-2 names may carry the "transformer." prefix
// (GPT2LMHeadModel) or not (GPT2Model).
static HfEntry *lookup(const Filler *fl, const char *name) {
    if (fl->arch == ARCH_GPT2) {
        char full[256];
        snprintf(full, sizeof full, "transformer.%s", name);
        HfEntry *e = find_entry(fl->hw, full);
        if (e) return e;
    }
    return find_entry(fl->hw, name);
}

// Loads tensor `name`, which must have the file shape (d0) for ndim 1 or (d0, d1) for ndim 2,
// into dst as fp32. With `transpose_2d` dst receives the (d1, d0) transpose (GPT-2 Conv1D).
static int take(Filler *fl, const char *name, int ndim, size_t d0, size_t d1, float *dst, int transpose_2d, char *err) {
    HfEntry *e = lookup(fl, name);
    if (!e) return ftk_err(err, "%s: tensor '%s' is missing", fl->hw->source, name);
    const StFile *f = &fl->hw->files[e->file];
    const StTensor *t = e->t;
    if (t->ndim != ndim || (size_t)t->shape[0] != d0 || (ndim == 2 && (size_t)t->shape[1] != d1)) {
        char found[200] = "[", want[64];
        size_t k = 1;
        for (int i = 0; i < t->ndim && k < sizeof found; i++)
            k += (size_t)snprintf(found + k, sizeof found - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (k < sizeof found) snprintf(found + k, sizeof found - k, "]");
        if (ndim == 1) snprintf(want, sizeof want, "[%zu]", d0);
        else snprintf(want, sizeof want, "[%zu, %zu]", d0, d1);
        return ftk_err(err, "%s: tensor '%s' has shape %s, expected %s", f->path, t->name, found, want);
    }
    if (t->dtype == ST_F32) fl->dtypes_seen |= DT_F32;
    else if (t->dtype == ST_F16) fl->dtypes_seen |= DT_F16;
    else if (t->dtype == ST_BF16) fl->dtypes_seen |= DT_BF16;
    else return ftk_err(err, "%s: tensor '%s' has dtype %s (ftk loads F32, F16 and BF16 weights)", f->path, t->name,
                        st_dtype_name(t->dtype));
    e->used = 1;
    if (!transpose_2d) return st_read_f32(f, t, dst, t->numel, err);
    if (t->numel > fl->scratch_n) return ftk_err(err, "%s: tensor '%s': internal scratch too small", f->path, t->name);
    if (st_read_f32(f, t, fl->scratch, t->numel, err)) return -1;
    transpose(dst, fl->scratch, d0, d1);
    return 0;
}

static int fill_llama(Filler *fl, Model *m, char *err) {
    const ModelConfig *c = &m->cfg;
    const size_t C = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    const size_t QD = (size_t)model_q_dim(c), KVD = (size_t)model_kv_dim(c);
    char n[256];
    if (take(fl, "model.embed_tokens.weight", 2, V, C, m->w.tok_emb, 0, err)) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *L = &m->w.layers[l];
        const struct {
            const char *suffix;
            int ndim;
            size_t d0, d1;
            float *dst;
        } parts[] = {
            {"input_layernorm.weight", 1, C, 0, L->attn_norm_w},
            {"self_attn.q_proj.weight", 2, QD, C, L->wq},   // rows [0, QD) of wqkv
            {"self_attn.k_proj.weight", 2, KVD, C, L->wk},  // rows [QD, QD+KVD)
            {"self_attn.v_proj.weight", 2, KVD, C, L->wv},  // rows [QD+KVD, QD+2KVD)
            {"self_attn.o_proj.weight", 2, C, QD, L->wo},
            {"post_attention_layernorm.weight", 1, C, 0, L->ffn_norm_w},
            {"mlp.gate_proj.weight", 2, F, C, L->w_gate},   // rows [0, F) of w_gate_up
            {"mlp.up_proj.weight", 2, F, C, L->w_up},       // rows [F, 2F)
            {"mlp.down_proj.weight", 2, C, F, L->w_down},
        };
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            snprintf(n, sizeof n, "model.layers.%d.%s", l, parts[i].suffix);
            if (take(fl, n, parts[i].ndim, parts[i].d0, parts[i].d1, parts[i].dst, 0, err)) return -1;
        }
    }
    if (take(fl, "model.norm.weight", 1, C, 0, m->w.out_norm_w, 0, err)) return -1;
    if (!c->tied_head) {
        if (!lookup(fl, "lm_head.weight"))
            return ftk_err(err, "%s: tensor 'lm_head.weight' is missing and config.json has tie_word_embeddings = false",
                           fl->hw->source);
        if (take(fl, "lm_head.weight", 2, V, C, m->w.lm_head, 0, err)) return -1;
    }
    return 0;
}

static int fill_gpt2(Filler *fl, Model *m, char *err) {
    const ModelConfig *c = &m->cfg;
    const size_t C = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    const size_t T = (size_t)c->max_seq_len;
    char n[256];
    if (take(fl, "wte.weight", 2, V, C, m->w.tok_emb, 0, err) || take(fl, "wpe.weight", 2, T, C, m->w.pos_emb, 0, err))
        return -1;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *L = &m->w.layers[l];
        // Conv1D weights are stored (in, out); `transpose` stores them as ftk's (out, in).
        const struct {
            const char *suffix;
            int ndim;
            size_t d0, d1;
            float *dst;
            int transpose;
        } parts[] = {
            {"ln_1.weight", 1, C, 0, L->attn_norm_w, 0},
            {"ln_1.bias", 1, C, 0, L->attn_norm_b, 0},
            {"attn.c_attn.weight", 2, C, 3 * C, L->wqkv, 1},   // (C, 3C) -> (3C, C) = [q; k; v]
            {"attn.c_attn.bias", 1, 3 * C, 0, L->bqkv, 0},
            {"attn.c_proj.weight", 2, C, C, L->wo, 1},          // (C, C) -> (C, C)^T
            {"attn.c_proj.bias", 1, C, 0, L->bo, 0},
            {"ln_2.weight", 1, C, 0, L->ffn_norm_w, 0},
            {"ln_2.bias", 1, C, 0, L->ffn_norm_b, 0},
            {"mlp.c_fc.weight", 2, C, F, L->w_up, 1},           // (C, F) -> (F, C)
            {"mlp.c_fc.bias", 1, F, 0, L->b_up, 0},
            {"mlp.c_proj.weight", 2, F, C, L->w_down, 1},       // (F, C) -> (C, F)
            {"mlp.c_proj.bias", 1, C, 0, L->b_down, 0},
        };
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            snprintf(n, sizeof n, "h.%d.%s", l, parts[i].suffix);
            if (take(fl, n, parts[i].ndim, parts[i].d0, parts[i].d1, parts[i].dst, parts[i].transpose, err)) return -1;
        }
    }
    if (take(fl, "ln_f.weight", 1, C, 0, m->w.out_norm_w, 0, err) ||
        take(fl, "ln_f.bias", 1, C, 0, m->w.out_norm_b, 0, err))
        return -1;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Every tensor in the files must have been consumed, except GPT-2's attention-mask buffers
// (attn.bias / attn.masked_bias, saved by older transformers) and a copy of a tied lm_head.
static int check_leftovers(const Filler *fl, const Model *m, char *err) {
    for (int i = 0; i < fl->hw->n_entries; i++) {
        const HfEntry *e = &fl->hw->entries[i];
        if (e->used) continue;
        if (m->cfg.arch == ARCH_GPT2 && (ends_with(e->name, ".attn.bias") || ends_with(e->name, ".attn.masked_bias")))
            continue;
        // Some exporters also store the tied head; HF ignores it in favour of the embeddings.
        if (m->cfg.tied_head && strcmp(e->name, "lm_head.weight") == 0 && e->t->ndim == 2 &&
            e->t->shape[0] == m->cfg.vocab_size && e->t->shape[1] == m->cfg.dim)
            continue;
        return ftk_err(err, "%s: unexpected tensor '%s' (not part of a %s model with this config.json)",
                       fl->hw->files[e->file].path, e->name, m->cfg.arch == ARCH_GPT2 ? "gpt2" : "llama");
    }
    return 0;
}

int hf_load_weights(Model *m, const char *dir, char *err) {
    if (!m->path[0]) {
        if (strlen(dir) >= sizeof m->path) return ftk_err(err, "%s: path too long", dir);
        snprintf(m->path, sizeof m->path, "%s", dir);
    }
    ModelConfig cfg;
    char *text = NULL;
    if (read_config(&cfg, dir, &text, err)) return -1;
    if (model_alloc_weights(m, &cfg, err)) {
        free(text);
        return -1;
    }
    m->hf_config_json = text;
    HfWeights hw;
    if (weights_open(&hw, dir, err)) {
        weights_close(&hw);
        return -1;
    }
    Filler fl = {.hw = &hw, .arch = cfg.arch};
    int rc = 0;
    if (cfg.arch == ARCH_GPT2) {
        // Largest Conv1D weight: c_fc / mlp.c_proj (C * F) or c_attn (3 * C * C).
        size_t cf = (size_t)cfg.dim * (size_t)cfg.ffn_dim, cc = 3 * (size_t)cfg.dim * (size_t)cfg.dim;
        fl.scratch_n = cf > cc ? cf : cc;
        fl.scratch = malloc(fl.scratch_n * sizeof(float));
        if (!fl.scratch) rc = ftk_err(err, "%s: out of memory", dir);
        if (!rc) rc = fill_gpt2(&fl, m, err);
    } else {
        rc = fill_llama(&fl, m, err);
    }
    if (!rc) rc = check_leftovers(&fl, m, err);
    free(fl.scratch);
    weights_close(&hw);
    if (rc) return -1;
    snprintf(m->format, sizeof m->format, "hf");
    const char *dt = fl.dtypes_seen == DT_F32 ? "F32" : fl.dtypes_seen == DT_F16 ? "F16"
                   : fl.dtypes_seen == DT_BF16 ? "BF16" : "mixed";
    snprintf(m->src_dtype, sizeof m->src_dtype, "%s", dt);
    return 0;
}

int load_hf_dir(Model *m, const char *dir, char *err) {
    if (hf_load_weights(m, dir, err)) return -1;
    char terr[FTK_ERR_LEN];
    if (tokenizer_load_hf_dir(&m->tok, dir, terr))
        return ftk_err(err, "%s: no tokenizer: %s", dir, terr);
    return 0;
}
