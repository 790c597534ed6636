// export_hf.c — a Model as a Hugging Face directory (lora/export_hf.h).
#include "lora/export_hf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lora/tokenizer_write.h"
#include "model/common.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

int parse_byte_size(const char *s, size_t *out, char *err) {
    if (!s || !*s) return ftk_err(err, "empty size");
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0.0)) return ftk_err(err, "bad size '%s' (e.g. 5GB, 500MB, 2GiB, 1000000)", s);
    while (*end == ' ') end++;
    double mult = 1.0;
    if (!*end || !strcasecmp(end, "B")) mult = 1.0;
    else if (!strcasecmp(end, "KB")) mult = 1e3;
    else if (!strcasecmp(end, "MB")) mult = 1e6;
    else if (!strcasecmp(end, "GB")) mult = 1e9;
    else if (!strcasecmp(end, "TB")) mult = 1e12;
    else if (!strcasecmp(end, "KiB")) mult = 1024.0;
    else if (!strcasecmp(end, "MiB")) mult = 1024.0 * 1024.0;
    else if (!strcasecmp(end, "GiB")) mult = 1024.0 * 1024.0 * 1024.0;
    else if (!strcasecmp(end, "TiB")) mult = 1024.0 * 1024.0 * 1024.0 * 1024.0;
    else return ftk_err(err, "bad size unit in '%s' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s);
    double bytes = floor(v * mult);
    if (bytes > 1.8e19) return ftk_err(err, "size '%s' is too large", s);
    *out = (size_t)bytes;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Tensor list

typedef struct {
    char name[128];
    int64_t shape[2];   // as stored in the file
    int ndim;
    const float *src;   // ftk layout
    int transpose;      // gpt2 Conv1D: stored (in, out) = src (out, in) transposed
    size_t numel;
    int shard;          // 0-based
} HfTensor;

typedef struct {
    HfTensor *t;
    int n, cap;
    int oom;
} TensorList;

static void push(TensorList *l, const char *name, int ndim, int64_t d0, int64_t d1, const float *src, int transpose) {
    if (l->oom) return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        HfTensor *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) { l->oom = 1; return; }
        l->t = t;
        l->cap = cap;
    }
    HfTensor *e = &l->t[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = ndim == 2 ? d1 : 0;
    e->src = src;
    e->transpose = transpose;
    e->numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
}

static void list_llama(const Model *m, TensorList *l) {
    const ModelConfig *c = &m->cfg;
    const int64_t C = c->dim, V = c->vocab_size, F = c->ffn_dim, qd = model_q_dim(c), kvd = model_kv_dim(c);
    char n[128];
    push(l, "model.embed_tokens.weight", 2, V, C, m->w.tok_emb, 0);
    for (int i = 0; i < c->n_layers; i++) {
        const LayerWeights *L = &m->w.layers[i];
#define P(suffix, nd, d0, d1, src) (snprintf(n, sizeof n, "model.layers.%d." suffix, i), push(l, n, nd, d0, d1, src, 0))
        P("input_layernorm.weight", 1, C, 0, L->attn_norm_w);
        P("self_attn.q_proj.weight", 2, qd, C, L->wq);
        P("self_attn.k_proj.weight", 2, kvd, C, L->wk);
        P("self_attn.v_proj.weight", 2, kvd, C, L->wv);
        P("self_attn.o_proj.weight", 2, C, qd, L->wo);
        P("post_attention_layernorm.weight", 1, C, 0, L->ffn_norm_w);
        P("mlp.gate_proj.weight", 2, F, C, L->w_gate);
        P("mlp.up_proj.weight", 2, F, C, L->w_up);
        P("mlp.down_proj.weight", 2, C, F, L->w_down);
#undef P
    }
    push(l, "model.norm.weight", 1, C, 0, m->w.out_norm_w, 0);
    if (!c->tied_head) push(l, "lm_head.weight", 2, V, C, m->w.lm_head, 0);
}

static void list_gpt2(const Model *m, TensorList *l) {
    const ModelConfig *c = &m->cfg;
    const int64_t C = c->dim, V = c->vocab_size, F = c->ffn_dim, QKV = model_qkv_dim(c);
    char n[128];
    push(l, "transformer.wte.weight", 2, V, C, m->w.tok_emb, 0);
    push(l, "transformer.wpe.weight", 2, c->max_seq_len, C, m->w.pos_emb, 0);
    for (int i = 0; i < c->n_layers; i++) {
        const LayerWeights *L = &m->w.layers[i];
        // Conv1D weights are stored (in, out): shapes below are the file's, src is ftk's (out, in).
#define P(suffix, nd, d0, d1, src, tr) (snprintf(n, sizeof n, "transformer.h.%d." suffix, i), push(l, n, nd, d0, d1, src, tr))
        P("ln_1.weight", 1, C, 0, L->attn_norm_w, 0);
        P("ln_1.bias", 1, C, 0, L->attn_norm_b, 0);
        P("attn.c_attn.weight", 2, C, QKV, L->wqkv, 1);
        P("attn.c_attn.bias", 1, QKV, 0, L->bqkv, 0);
        P("attn.c_proj.weight", 2, C, C, L->wo, 1);
        P("attn.c_proj.bias", 1, C, 0, L->bo, 0);
        P("ln_2.weight", 1, C, 0, L->ffn_norm_w, 0);
        P("ln_2.bias", 1, C, 0, L->ffn_norm_b, 0);
        P("mlp.c_fc.weight", 2, C, F, L->w_up, 1);
        P("mlp.c_fc.bias", 1, F, 0, L->b_up, 0);
        P("mlp.c_proj.weight", 2, F, C, L->w_down, 1);
        P("mlp.c_proj.bias", 1, C, 0, L->b_down, 0);
#undef P
    }
    push(l, "transformer.ln_f.weight", 1, C, 0, m->w.out_norm_w, 0);
    push(l, "transformer.ln_f.bias", 1, C, 0, m->w.out_norm_b, 0);
}

static StDtype st_dtype(ExportDtype d) { return d == EXPORT_F16 ? ST_F16 : d == EXPORT_BF16 ? ST_BF16 : ST_F32; }
static const char *torch_dtype(ExportDtype d) {
    return d == EXPORT_F16 ? "float16" : d == EXPORT_BF16 ? "bfloat16" : "float32";
}

// Assigns shards as transformers does: a new shard when the next tensor would push the current
// (non-empty) one over the limit. Returns the number of shards.
static int plan_shards(TensorList *l, size_t elem_bytes, size_t max_bytes, size_t *total) {
    int shard = 0;
    size_t cur = 0;
    *total = 0;
    for (int i = 0; i < l->n; i++) {
        size_t b = l->t[i].numel * elem_bytes;
        if (max_bytes && cur > 0 && cur + b > max_bytes) {
            shard++;
            cur = 0;
        }
        l->t[i].shard = shard;
        cur += b;
        *total += b;
    }
    return shard + 1;
}

static void shard_name(char *buf, size_t n, int shard, int n_shards) {
    if (n_shards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

// Writes shard s: the tensors converted to the dtype while writing; Conv1D ones transposed into
// temporary buffers that live only for this shard.
static int write_shard(const TensorList *l, int s, int n_shards, const char *dir, StDtype dt, char *err) {
    StWriter *w = NULL;
    if (st_writer_create(&w, err)) return -1;
    float **tmp = calloc((size_t)l->n, sizeof(float *));
    int rc = tmp ? 0 : ftk_err(err, "out of memory");
    for (int i = 0; i < l->n && !rc; i++) {
        const HfTensor *t = &l->t[i];
        if (t->shard != s) continue;
        const float *data = t->src;
        if (t->transpose) {
            // stored (in, out) = shape; src is (out, in): dst[i_ * out + o] = src[o * in + i_]
            const size_t in = (size_t)t->shape[0], out = (size_t)t->shape[1];
            float *d = malloc(t->numel * sizeof(float));
            if (!d) { rc = ftk_err(err, "out of memory transposing %s", t->name); break; }
            for (size_t o = 0; o < out; o++)
                for (size_t k = 0; k < in; k++) d[k * out + o] = t->src[o * in + k];
            tmp[i] = d;
            data = d;
        }
        rc = st_writer_add_f32(w, t->name, t->ndim, t->shape, data, dt, err);
    }
    char name[64], path[4096];
    shard_name(name, sizeof name, s, n_shards);
    if (!rc) rc = ftk_path_join(path, sizeof path, dir, name, err) || st_writer_write(w, path, err);
    st_writer_free(w);
    for (int i = 0; tmp && i < l->n; i++) free(tmp[i]);
    free(tmp);
    return rc ? -1 : 0;
}

static int write_json_file(const char *dir, const char *name, const cJSON *root, char *err) {
    char path[4096];
    if (ftk_path_join(path, sizeof path, dir, name, err)) return -1;
    char *text = cJSON_Print(root);
    if (!text) return ftk_err(err, "%s: out of memory", path);
    size_t n = strlen(text);
    char *buf = malloc(n + 2);
    int rc;
    if (!buf) rc = ftk_err(err, "%s: out of memory", path);
    else {
        memcpy(buf, text, n);
        buf[n] = '\n';
        rc = ftk_write_file_atomic(path, buf, n + 1, err);
    }
    free(buf);
    cJSON_free(text);
    return rc;
}

static int write_index(const TensorList *l, int n_shards, size_t total, const char *dir, char *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *map = cJSON_CreateObject();
    if (!root || !meta || !map) {
        cJSON_Delete(root);
        cJSON_Delete(meta);
        cJSON_Delete(map);
        return ftk_err(err, "out of memory");
    }
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON_AddItemToObject(root, "metadata", meta);
    // weight_map sorted by name, as transformers writes it (json.dumps(sort_keys=True)).
    int *order = malloc((size_t)l->n * sizeof(int));
    int rc = order ? 0 : ftk_err(err, "out of memory");
    for (int i = 0; i < l->n && !rc; i++) order[i] = i;
    for (int i = 1; i < l->n && !rc; i++) {   // insertion sort: a few hundred names
        int k = order[i], j = i;
        while (j > 0 && strcmp(l->t[order[j - 1]].name, l->t[k].name) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    for (int i = 0; i < l->n && !rc; i++) {
        char name[64];
        shard_name(name, sizeof name, l->t[order[i]].shard, n_shards);
        cJSON_AddStringToObject(map, l->t[order[i]].name, name);
    }
    cJSON_AddItemToObject(root, "weight_map", map);
    if (!rc) rc = write_json_file(dir, "model.safetensors.index.json", root, err);
    free(order);
    cJSON_Delete(root);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// config.json, generation_config.json, tokenizer files

// The shortest decimal that reads back as the same float, as a double: rms_norm_eps 1e-5 is written
// "1e-05" rather than the float's exact value 9.99999974737875e-06.
static double short_decimal(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static cJSON *generated_config(const Model *m, ExportDtype d) {
    const ModelConfig *c = &m->cfg;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    if (c->arch == ARCH_LLAMA) {
        cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
        cJSON_AddBoolToObject(o, "attention_bias", 0);
        cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
        if (c->bos_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
        if (c->eos_id >= 0) cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
        if (c->head_dim * c->n_heads != c->dim) cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
        cJSON_AddStringToObject(o, "hidden_act", "silu");
        cJSON_AddNumberToObject(o, "hidden_size", c->dim);
        cJSON_AddNumberToObject(o, "initializer_range", 0.02);
        cJSON_AddNumberToObject(o, "intermediate_size", c->ffn_dim);
        cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq_len);
        cJSON_AddBoolToObject(o, "mlp_bias", 0);
        cJSON_AddStringToObject(o, "model_type", "llama");
        cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
        cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
        cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
        cJSON_AddNumberToObject(o, "pretraining_tp", 1);
        cJSON_AddNumberToObject(o, "rms_norm_eps", short_decimal(c->norm_eps));
        cJSON_AddNullToObject(o, "rope_scaling");
        cJSON_AddNumberToObject(o, "rope_theta", short_decimal(c->rope_theta));
        cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tied_head);
        cJSON_AddStringToObject(o, "torch_dtype", torch_dtype(d));
        cJSON_AddBoolToObject(o, "use_cache", 1);
        cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    } else {
        cJSON_AddStringToObject(o, "activation_function", "gelu_new");
        cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
        cJSON_AddNumberToObject(o, "attn_pdrop", 0.1);
        if (c->bos_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
        cJSON_AddNumberToObject(o, "embd_pdrop", 0.1);
        if (c->eos_id >= 0) cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
        cJSON_AddNumberToObject(o, "initializer_range", 0.02);
        cJSON_AddNumberToObject(o, "layer_norm_epsilon", short_decimal(c->norm_eps));
        cJSON_AddStringToObject(o, "model_type", "gpt2");
        cJSON_AddNumberToObject(o, "n_ctx", c->max_seq_len);
        cJSON_AddNumberToObject(o, "n_embd", c->dim);
        cJSON_AddNumberToObject(o, "n_head", c->n_heads);
        if (c->ffn_dim == 4 * c->dim) cJSON_AddNullToObject(o, "n_inner");
        else cJSON_AddNumberToObject(o, "n_inner", c->ffn_dim);
        cJSON_AddNumberToObject(o, "n_layer", c->n_layers);
        cJSON_AddNumberToObject(o, "n_positions", c->max_seq_len);
        cJSON_AddBoolToObject(o, "reorder_and_upcast_attn", 0);
        cJSON_AddNumberToObject(o, "resid_pdrop", 0.1);
        cJSON_AddBoolToObject(o, "scale_attn_by_inverse_layer_idx", 0);
        cJSON_AddBoolToObject(o, "scale_attn_weights", 1);
        cJSON_AddNullToObject(o, "summary_activation");
        cJSON_AddNumberToObject(o, "summary_first_dropout", 0.1);
        cJSON_AddBoolToObject(o, "summary_proj_to_labels", 1);
        cJSON_AddStringToObject(o, "summary_type", "cls_index");
        cJSON_AddBoolToObject(o, "summary_use_proj", 1);
        cJSON_AddBoolToObject(o, "tie_word_embeddings", 1);
        cJSON_AddStringToObject(o, "torch_dtype", torch_dtype(d));
        cJSON_AddBoolToObject(o, "use_cache", 1);
        cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    }
    return o;
}

// The source's config.json with torch_dtype (and the newer "dtype") set to what is written.
static cJSON *source_config(const Model *m, ExportDtype d, char *err) {
    cJSON *o = cJSON_Parse(m->hf_config_json);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        ftk_err(err, "%s: config.json does not parse as a JSON object", m->path);
        return NULL;
    }
    cJSON *s = cJSON_CreateString(torch_dtype(d));
    if (cJSON_GetObjectItemCaseSensitive(o, "torch_dtype")) cJSON_ReplaceItemInObjectCaseSensitive(o, "torch_dtype", s);
    else cJSON_AddItemToObject(o, "torch_dtype", s);
    if (cJSON_GetObjectItemCaseSensitive(o, "dtype"))
        cJSON_ReplaceItemInObjectCaseSensitive(o, "dtype", cJSON_CreateString(torch_dtype(d)));
    return o;
}

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, int *copied, char *err) {
    char src[4096], dst[4096];
    *copied = 0;
    if (ftk_path_join(src, sizeof src, src_dir, name, err) || ftk_path_join(dst, sizeof dst, dst_dir, name, err)) return -1;
    if (!ftk_file_exists(src)) return 0;
    char *data;
    size_t len;
    if (ftk_read_file(src, &data, &len, err)) return -1;
    int rc = ftk_write_file_atomic(dst, data, len, err);
    free(data);
    *copied = rc == 0;
    return rc;
}

static const char *const TOKENIZER_FILES[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                              "special_tokens_map.json", "vocab.json", "merges.txt",
                                              "added_tokens.json", "chat_template.jinja"};

int export_hf(const Model *m, const char *dir, const HfExportOptions *o, char *err) {
    const ModelConfig *c = &m->cfg;
    if (o->dtype == EXPORT_Q8_0)
        return ftk_err(err, "%s: q8_0 is a GGUF type; HF safetensors take f32, f16 or bf16", dir);
    if (!ftk_is_dir(dir)) return ftk_err(err, "%s: output directory does not exist", dir);
    const int from_hf = m->hf_config_json && !strcmp(m->format, "hf");
    TensorList l = {0};
    if (c->arch == ARCH_LLAMA) list_llama(m, &l);
    else list_gpt2(m, &l);
    if (l.oom) {
        free(l.t);
        return ftk_err(err, "out of memory");
    }
    const StDtype dt = st_dtype(o->dtype);
    size_t total = 0;
    const int n_shards = plan_shards(&l, st_dtype_size(dt), o->max_shard_bytes, &total);
    int rc = 0;
    for (int s = 0; s < n_shards && !rc; s++) rc = write_shard(&l, s, n_shards, dir, dt, err);
    if (!rc && n_shards > 1) rc = write_index(&l, n_shards, total, dir, err);
    free(l.t);
    if (rc) return -1;

    // config.json
    cJSON *cfg = from_hf ? source_config(m, o->dtype, err) : generated_config(m, o->dtype);
    if (!cfg) return from_hf ? -1 : ftk_err(err, "out of memory");
    rc = write_json_file(dir, "config.json", cfg, err);
    cJSON_Delete(cfg);
    if (rc) return -1;

    // generation_config.json
    int copied = 0;
    if (from_hf && copy_file(m->path, dir, "generation_config.json", &copied, err)) return -1;
    if (!copied) {
        cJSON *g = cJSON_CreateObject();
        if (!g) return ftk_err(err, "out of memory");
        if (c->bos_id >= 0) cJSON_AddNumberToObject(g, "bos_token_id", c->bos_id);
        if (c->eos_id >= 0) cJSON_AddNumberToObject(g, "eos_token_id", c->eos_id);
        rc = write_json_file(dir, "generation_config.json", g, err);
        cJSON_Delete(g);
        if (rc) return -1;
    }

    // tokenizer
    if (from_hf && o->copy_tokenizer) {
        int any = 0;
        for (size_t i = 0; i < sizeof TOKENIZER_FILES / sizeof *TOKENIZER_FILES; i++) {
            if (copy_file(m->path, dir, TOKENIZER_FILES[i], &copied, err)) return -1;
            any |= copied;
        }
        if (any) return 0;
    }
    if (!m->tok) return ftk_err(err, "%s: the model has no tokenizer to write", dir);
    char sub[FTK_ERR_LEN];
    if (tokenizer_write_hf_dir(m->tok, dir, c->max_seq_len, sub)) return ftk_err(err, "%s: tokenizer: %s", dir, sub);
    return 0;
}
