// peft_config.c — adapter_config.json: PEFT's field set and defaults (FORMATS §2a), read with cJSON,
// written in Python's json.dumps(indent=2, sort_keys=True) form as PEFT's save_pretrained writes it.
#include "lora/peft_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

// ---------------------------------------------------------------------------------------------
// Writing. Each field's value is rendered to a string first; render() sorts the keys and lays
// the object out with Python's indent=2 rules (lists one item per line, empty ones as [] / {}).

typedef struct {
    const char *key;
    char *val;      // malloc'ed JSON text
} JField;

typedef struct {
    JField f[40];
    int n;
    int oom;        // an allocation failed somewhere
} JObj;

static void put(JObj *o, const char *key, char *val) {
    if (!val || o->n >= (int)(sizeof o->f / sizeof o->f[0])) {
        free(val);
        o->oom = 1;
        return;
    }
    o->f[o->n].key = key;
    o->f[o->n].val = val;
    o->n++;
}

static char *dup(const char *s) {
    return strdup(s);
}

// Python json.dumps(ensure_ascii=True) string: control characters and every non-ASCII code point
// escaped as \uXXXX (UTF-16 surrogate pairs above U+FFFF). NULL on invalid UTF-8 or out of memory.
static char *js_string(const char *s) {
    if (!s) return dup("null");
    size_t n = strlen(s), cap = 2 + 12 * n + 1;
    char *out = malloc(cap), *w = out;
    if (!out) return NULL;
    *w++ = '"';
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        unsigned cp;
        int len;
        if (c < 0x80) { cp = c; len = 1; }
        else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; len = 2; }
        else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; len = 3; }
        else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; len = 4; }
        else { free(out); return NULL; }
        for (int k = 1; k < len; k++) {
            if ((p[k] & 0xC0) != 0x80) { free(out); return NULL; }
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        p += len;
        switch (cp) {
        case '"': w += sprintf(w, "\\\""); break;
        case '\\': w += sprintf(w, "\\\\"); break;
        case '\n': w += sprintf(w, "\\n"); break;
        case '\r': w += sprintf(w, "\\r"); break;
        case '\t': w += sprintf(w, "\\t"); break;
        case '\b': w += sprintf(w, "\\b"); break;
        case '\f': w += sprintf(w, "\\f"); break;
        default:
            if (cp >= 0x20 && cp < 0x7F) *w++ = (char)cp;
            else if (cp < 0x10000) w += sprintf(w, "\\u%04x", cp);
            else {
                cp -= 0x10000;
                w += sprintf(w, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            }
        }
    }
    *w++ = '"';
    *w = 0;
    return out;
}

// Python repr() of a float: the shortest digits that read back to the same value (to the same
// float32 when v is exactly a float32, so 0.05f prints "0.05"), fixed notation for decimal
// exponents in [-4, 16), else d.ddde-XX; integral values keep a ".0".
static char *js_float(double v) {
    char buf[64];
    if (v == 0) return dup(signbit(v) ? "-0.0" : "0.0");
    int is_f32 = (double)(float)v == v;
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (is_f32 ? strtof(e, NULL) == (float)v : strtod(e, NULL) == v) break;
    }
    // e = [-]d.ddde[+-]XX
    char digits[24];
    int nd = 0, neg = 0;
    const char *s = e;
    if (*s == '-') { neg = 1; s++; }
    for (; *s && *s != 'e' && nd < 20; s++)
        if (*s != '.') digits[nd++] = *s;
    int ex = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    char *w = buf;
    if (neg) *w++ = '-';
    if (ex >= -4 && ex < 16) {
        if (ex >= 0) {
            for (int i = 0; i <= ex; i++) *w++ = i < nd ? digits[i] : '0';
            *w++ = '.';
            if (nd > ex + 1) for (int i = ex + 1; i < nd; i++) *w++ = digits[i];
            else *w++ = '0';
        } else {
            *w++ = '0';
            *w++ = '.';
            for (int i = 0; i < -ex - 1; i++) *w++ = '0';
            for (int i = 0; i < nd; i++) *w++ = digits[i];
        }
        *w = 0;
    } else {
        *w++ = digits[0];
        if (nd > 1) {
            *w++ = '.';
            for (int i = 1; i < nd; i++) *w++ = digits[i];
        }
        sprintf(w, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    return dup(buf);
}

// lora_alpha is an int in PEFT's configs; keep an integral value integral.
static char *js_number(double v) {
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.0f", v);
        return dup(buf);
    }
    return js_float(v);
}

static char *js_int(long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", v);
    return dup(buf);
}

// A list of pre-rendered items at nesting level 1: "[\n    a,\n    b\n  ]".
static char *js_list(char **items, int n) {
    if (n == 0) return dup("[]");
    size_t len = 16;
    for (int i = 0; i < n; i++) {
        if (!items[i]) return NULL;
        len += strlen(items[i]) + 8;
    }
    char *out = malloc(len), *w = out;
    if (!out) return NULL;
    w += sprintf(w, "[\n");
    for (int i = 0; i < n; i++) w += sprintf(w, "    %s%s\n", items[i], i + 1 < n ? "," : "");
    sprintf(w, "  ]");
    return out;
}

static char *js_str_list(const char *const *names, int n) {
    char **items = calloc((size_t)n + 1, sizeof(char *));
    if (!items) return NULL;
    for (int i = 0; i < n; i++) items[i] = js_string(names[i]);
    char *out = js_list(items, n);
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
    return out;
}

static char *js_int_list(const int *v, int n) {
    char **items = calloc((size_t)n + 1, sizeof(char *));
    if (!items) return NULL;
    for (int i = 0; i < n; i++) items[i] = js_int(v[i]);
    char *out = js_list(items, n);
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
    return out;
}

static int cmp_field(const void *a, const void *b) {
    return strcmp(((const JField *)a)->key, ((const JField *)b)->key);
}

// Renders, frees the values and writes the file atomically (no trailing newline, as PEFT).
static int render_write(JObj *o, const char *path, char *err) {
    int rc = 0;
    char *out = NULL;
    if (o->oom) {
        rc = ftk_err(err, "%s: out of memory, or a string that is not valid UTF-8", path);
        goto done;
    }
    qsort(o->f, (size_t)o->n, sizeof(JField), cmp_field);
    size_t len = 8;
    for (int i = 0; i < o->n; i++) len += strlen(o->f[i].key) + strlen(o->f[i].val) + 10;
    out = malloc(len);
    if (!out) {
        rc = ftk_err(err, "%s: out of memory", path);
        goto done;
    }
    char *w = out;
    w += sprintf(w, "{\n");
    for (int i = 0; i < o->n; i++) w += sprintf(w, "  \"%s\": %s%s\n", o->f[i].key, o->f[i].val, i + 1 < o->n ? "," : "");
    w += sprintf(w, "}");
    rc = ftk_write_file_atomic(path, out, (size_t)(w - out), err);
done:
    free(out);
    for (int i = 0; i < o->n; i++) free(o->f[i].val);
    o->n = 0;
    return rc;
}

int peft_config_write_lora(const char *path, const PeftLoraFields *f, const char *base, char *err) {
    JObj o = {0};
    static const char *const score[] = {"score"};
    put(&o, "alpha_pattern", dup("{}"));
    put(&o, "auto_mapping", dup("null"));
    put(&o, "base_model_name_or_path", js_string(base));
    put(&o, "bias", dup("\"none\""));
    put(&o, "fan_in_fan_out", dup(f->fan_in_fan_out ? "true" : "false"));
    put(&o, "inference_mode", dup("true"));
    put(&o, "init_lora_weights", dup(f->init == LORA_INIT_GAUSSIAN ? "\"gaussian\"" : f->init == LORA_INIT_NONE ? "false" : "true"));
    put(&o, "layer_replication", dup("null"));
    put(&o, "layers_pattern", dup("null"));
    put(&o, "layers_to_transform", f->layers ? js_int_list(f->layers, f->n_layers) : dup("null"));
    put(&o, "loftq_config", dup("{}"));
    put(&o, "lora_alpha", js_number(f->alpha));
    put(&o, "lora_dropout", js_float(f->dropout));
    put(&o, "megatron_config", dup("null"));
    put(&o, "megatron_core", dup("\"megatron.core\""));
    put(&o, "modules_to_save", f->score_head ? js_str_list(score, 1) : dup("null"));
    put(&o, "peft_type", dup("\"LORA\""));
    put(&o, "r", js_int(f->r));
    put(&o, "rank_pattern", dup("{}"));
    put(&o, "revision", dup("null"));
    put(&o, "target_modules", js_str_list(f->targets, f->n_targets));
    // A reward model is a sequence classifier to PEFT / TRL (AutoModelForSequenceClassification).
    put(&o, "task_type", dup(f->score_head ? "\"SEQ_CLS\"" : "\"CAUSAL_LM\""));
    put(&o, "use_dora", dup("false"));
    put(&o, "use_rslora", dup(f->use_rslora ? "true" : "false"));
    return render_write(&o, path, err);
}

int peft_config_write_prompt(const char *path, const AdapterConfig *cfg, const ModelConfig *mc, const char *base,
                             char *err) {
    static const char *const init_names[] = {"RANDOM", "TEXT", "SAMPLE_VOCAB"};
    JObj o = {0};
    const int text = cfg->prompt_init == PROMPT_INIT_TEXT;
    // PEFT refuses TEXT init without a tokenizer name; the base model's own tokenizer is the one used.
    const char *tok = cfg->tokenizer_name_or_path[0] ? cfg->tokenizer_name_or_path : text ? base : NULL;
    char quoted[32];
    snprintf(quoted, sizeof quoted, "\"%s\"", init_names[cfg->prompt_init]);
    put(&o, "auto_mapping", dup("null"));
    put(&o, "base_model_name_or_path", js_string(base));
    put(&o, "inference_mode", dup("true"));
    put(&o, "num_attention_heads", js_int(mc->n_heads));
    put(&o, "num_layers", js_int(mc->n_layers));
    put(&o, "num_transformer_submodules", js_int(1));
    put(&o, "num_virtual_tokens", js_int(cfg->num_virtual_tokens));
    put(&o, "peft_type", dup("\"PROMPT_TUNING\""));
    put(&o, "prompt_tuning_init", dup(quoted));
    put(&o, "prompt_tuning_init_text", text ? js_string(cfg->prompt_init_text) : dup("null"));
    put(&o, "revision", dup("null"));
    put(&o, "task_type", dup("\"CAUSAL_LM\""));
    put(&o, "token_dim", js_int(mc->dim));
    put(&o, "tokenizer_kwargs", dup("null"));
    put(&o, "tokenizer_name_or_path", js_string(tok));
    return render_write(&o, path, err);
}

// ---------------------------------------------------------------------------------------------
// Reading.

static int is_null(const cJSON *x) {
    return !x || cJSON_IsNull(x);
}

// An empty / absent object, list or null.
static int is_empty(const cJSON *x) {
    return is_null(x) || ((cJSON_IsObject(x) || cJSON_IsArray(x)) && !x->child) || (cJSON_IsFalse(x));
}

static int get_int(const cJSON *root, const char *key, int *out, int lo, int hi, const char *path, char *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    if (is_null(x)) return 0;
    if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < lo || x->valuedouble > hi)
        return ftk_err(err, "%s: \"%s\" must be an integer in [%d, %d]", path, key, lo, hi);
    *out = (int)x->valuedouble;
    return 0;
}

static int get_string(const cJSON *root, const char *key, char *out, size_t n, const char *path, char *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    if (is_null(x)) return 0;
    if (!cJSON_IsString(x)) return ftk_err(err, "%s: \"%s\" must be a string", path, key);
    if (strlen(x->valuestring) >= n) return ftk_err(err, "%s: \"%s\" is longer than %zu bytes", path, key, n - 1);
    strcpy(out, x->valuestring);
    return 0;
}

// A target_modules regex string reduced to names: "name", "a|b", optionally "(a|b)", prefixed with
// ".*", ".*\." or ".*." and ended with "$". Anything else is refused (full regexes are not supported).
static int regex_to_names(const char *re, char *out, size_t n, const char *path, char *err) {
    const char *s = re;
    if (strncmp(s, ".*", 2) == 0) {
        s += 2;
        if (strncmp(s, "\\.", 2) == 0) s += 2;
        else if (*s == '.') s++;
    }
    size_t len = strlen(s);
    if (len && s[len - 1] == '$') len--;
    if (len >= 2 && s[0] == '(' && s[len - 1] == ')') {
        s++;
        len -= 2;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < len && s[i + 1] == '.') {
            c = '.';
            i++;
        } else if (c == '|') {
            c = ',';
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) {
            return ftk_err(err, "%s: target_modules regex \"%s\" is not supported (only a name or an alternation "
                                "of names, e.g. \".*\\\\.(q_proj|v_proj)\")", path, re);
        }
        if (k + 1 >= n) return ftk_err(err, "%s: target_modules is too long", path);
        out[k++] = c;
    }
    out[k] = 0;
    if (!k) return ftk_err(err, "%s: target_modules regex \"%s\" names no module", path, re);
    return 0;
}

static int read_lora(AdapterConfig *cfg, const cJSON *root, const ModelConfig *mc, double *lora_alpha, const char *path,
                     char *err) {
    int rc;
    const cJSON *x;
    if ((rc = get_int(root, "r", &cfg->r, 1, 65536, path, err))) return rc;
    x = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
    if (!is_null(x)) {
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) return ftk_err(err, "%s: \"lora_alpha\" must be a number", path);
        cfg->alpha = (float)x->valuedouble;
    }
    if (lora_alpha) *lora_alpha = is_null(x) ? (double)cfg->alpha : x->valuedouble;
    x = cJSON_GetObjectItemCaseSensitive(root, "lora_dropout");
    if (!is_null(x)) {
        if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble < 1))
            return ftk_err(err, "%s: \"lora_dropout\" must be a number in [0, 1)", path);
        cfg->dropout = (float)x->valuedouble;
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "use_rslora");
    if (!is_null(x)) {
        if (!cJSON_IsBool(x)) return ftk_err(err, "%s: \"use_rslora\" must be true or false", path);
        cfg->use_rslora = cJSON_IsTrue(x);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_dora")))
        return ftk_err(err, "%s: use_dora is true: DoRA adapters are not supported", path);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "lora_bias")))
        return ftk_err(err, "%s: lora_bias is true: LoRA biases are not supported", path);
    x = cJSON_GetObjectItemCaseSensitive(root, "bias");
    if (!is_null(x) && !(cJSON_IsString(x) && strcmp(x->valuestring, "none") == 0))
        return ftk_err(err, "%s: bias \"%s\" is not supported (only \"none\")", path,
                       cJSON_IsString(x) ? x->valuestring : "?");
    static const char *const refused[] = {"rank_pattern", "alpha_pattern", "exclude_modules", "layer_replication",
                                          "target_parameters"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!is_empty(cJSON_GetObjectItemCaseSensitive(root, refused[i])))
            return ftk_err(err, "%s: \"%s\" is set: not supported", path, refused[i]);
    x = cJSON_GetObjectItemCaseSensitive(root, "init_lora_weights");
    if (!is_null(x)) {
        if (cJSON_IsBool(x)) cfg->init = cJSON_IsTrue(x) ? LORA_INIT_DEFAULT : LORA_INIT_NONE;
        else if (cJSON_IsString(x) && strcmp(x->valuestring, "gaussian") == 0) cfg->init = LORA_INIT_GAUSSIAN;
        // eva / orthogonal only choose starting values; the saved A, B are a plain LoRA.
        else if (cJSON_IsString(x) && (!strcmp(x->valuestring, "eva") || !strcmp(x->valuestring, "orthogonal")))
            cfg->init = LORA_INIT_DEFAULT;
        else
            // pissa / olora / corda / loftq rewrite the base weights at init: the adapter needs that residual model.
            return ftk_err(err, "%s: init_lora_weights %s is not supported (it changes the base model)", path,
                           cJSON_IsString(x) ? x->valuestring : "of this type");
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    char *t = cfg->target_modules;
    const size_t tn = sizeof cfg->target_modules;
    if (is_null(x)) {
        // PEFT's per-architecture default (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
        snprintf(t, tn, "%s", mc->arch == ARCH_GPT2 ? "c_attn" : "q_proj,v_proj");
    } else if (cJSON_IsString(x)) {
        if (strcmp(x->valuestring, "all-linear") == 0) snprintf(t, tn, "all-linear");
        else if ((rc = regex_to_names(x->valuestring, t, tn, path, err))) return rc;
    } else if (cJSON_IsArray(x)) {
        size_t k = 0;
        t[0] = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, x) {
            if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, ','))
                return ftk_err(err, "%s: target_modules must be a list of module names", path);
            size_t l = strlen(e->valuestring);
            if (k + l + 2 > tn) return ftk_err(err, "%s: target_modules is too long", path);
            k += (size_t)sprintf(t + k, "%s%s", k ? "," : "", e->valuestring);
        }
        if (!k) return ftk_err(err, "%s: target_modules is an empty list", path);
    } else {
        return ftk_err(err, "%s: target_modules must be a list, a string or null", path);
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "layers_to_transform");
    char *lt = cfg->layers_to_transform;
    lt[0] = 0;
    if (cJSON_IsNumber(x)) {
        snprintf(lt, sizeof cfg->layers_to_transform, "%d", (int)x->valuedouble);
    } else if (cJSON_IsArray(x)) {
        size_t k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, x) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 || e->valuedouble > 1e6)
                return ftk_err(err, "%s: layers_to_transform must hold layer indices", path);
            if (k + 16 > sizeof cfg->layers_to_transform) return ftk_err(err, "%s: layers_to_transform is too long", path);
            k += (size_t)sprintf(lt + k, "%s%d", k ? "," : "", (int)e->valuedouble);
        }
    } else if (!is_null(x)) {
        return ftk_err(err, "%s: layers_to_transform must be an integer, a list or null", path);
    }
    x = cJSON_GetObjectItemCaseSensitive(root, "modules_to_save");
    if (cJSON_IsArray(x)) {
        const cJSON *e;
        // Only "score" is modelled; other names are rejected later if the file holds tensors for them.
        cJSON_ArrayForEach(e, x) if (cJSON_IsString(e) && strcmp(e->valuestring, "score") == 0) cfg->score_head = 1;
    } else if (!is_null(x)) {
        return ftk_err(err, "%s: modules_to_save must be a list or null", path);
    }
    cfg->types |= ADAPTER_LORA;
    return 0;
}

static int read_prompt(AdapterConfig *cfg, const cJSON *root, const ModelConfig *mc, const char *path, char *err) {
    int rc, subs = 1, token_dim = mc->dim;
    cfg->num_virtual_tokens = 0;
    if ((rc = get_int(root, "num_virtual_tokens", &cfg->num_virtual_tokens, 1, 1 << 24, path, err))) return rc;
    if (cfg->num_virtual_tokens <= 0) return ftk_err(err, "%s: num_virtual_tokens is missing", path);
    if ((rc = get_int(root, "num_transformer_submodules", &subs, 1, 2, path, err))) return rc;
    if (subs != 1) return ftk_err(err, "%s: num_transformer_submodules = %d (encoder-decoder) is not supported", path, subs);
    if ((rc = get_int(root, "token_dim", &token_dim, 1, 1 << 24, path, err))) return rc;
    if (token_dim != mc->dim)
        return ftk_err(err, "%s: token_dim %d does not match the model's hidden size %d", path, token_dim, mc->dim);
    char init[32] = "RANDOM";
    if ((rc = get_string(root, "prompt_tuning_init", init, sizeof init, path, err))) return rc;
    if (!strcmp(init, "RANDOM")) cfg->prompt_init = PROMPT_INIT_RANDOM;
    else if (!strcmp(init, "TEXT")) cfg->prompt_init = PROMPT_INIT_TEXT;
    else if (!strcmp(init, "SAMPLE_VOCAB") || !strcmp(init, "RANDOM_DISCRETE")) cfg->prompt_init = PROMPT_INIT_SAMPLE_VOCAB;
    else return ftk_err(err, "%s: prompt_tuning_init \"%s\" is not one of RANDOM, TEXT, SAMPLE_VOCAB", path, init);
    if ((rc = get_string(root, "prompt_tuning_init_text", cfg->prompt_init_text, sizeof cfg->prompt_init_text, path, err)))
        return rc;
    if ((rc = get_string(root, "tokenizer_name_or_path", cfg->tokenizer_name_or_path,
                         sizeof cfg->tokenizer_name_or_path, path, err)))
        return rc;
    cfg->types |= ADAPTER_PROMPT;
    return 0;
}

int peft_config_read(AdapterConfig *cfg, const char *path, const ModelConfig *mc, double *lora_alpha, char *err) {
    char *text;
    size_t len;
    int rc = ftk_read_file(path, &text, &len, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ftk_err(err, "%s: not a JSON object", path);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(root, "task_type");
    if (!cJSON_IsString(type)) {
        rc = ftk_err(err, "%s: \"peft_type\" is missing", path);
    } else if (!is_null(task) && !(cJSON_IsString(task) && (!strcmp(task->valuestring, "CAUSAL_LM") ||
                                                             !strcmp(task->valuestring, "SEQ_CLS")))) {
        rc = ftk_err(err, "%s: task_type %s is not supported (CAUSAL_LM, SEQ_CLS)", path,
                     cJSON_IsString(task) ? task->valuestring : "?");
    } else if (!strcmp(type->valuestring, "LORA")) {
        rc = read_lora(cfg, root, mc, lora_alpha, path, err);
    } else if (!strcmp(type->valuestring, "PROMPT_TUNING")) {
        rc = read_prompt(cfg, root, mc, path, err);
    } else {
        rc = ftk_err(err, "%s: peft_type \"%s\" is not supported (LORA, PROMPT_TUNING)", path, type->valuestring);
    }
    cJSON_Delete(root);
    return rc;
}
