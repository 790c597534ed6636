// tokenizer_hf.c — Hugging Face tokenizer files: vocab.json + merges.txt (GPT-2), tokenizer.json
// (byte-level BPE, or SentencePiece-style BPE with byte_fallback; FORMATS.md §2d) and a model
// directory with tokenizer_config.json / special_tokens_map.json / config.json for BOS/EOS.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

// Largest id accepted from a vocab file: a guard against a huge allocation from one bad number.
#define MAX_VOCAB_ID (1 << 24)

// A vocabulary being assembled: pieces by id (NULL = no piece yet), types, merges.
typedef struct {
    char **pieces;
    int *types;
    int n;  // 1 + the largest id seen
    int cap;
    char **merges;
    int n_merges;
} Vocab;

static void vocab_free(Vocab *v) {
    for (int i = 0; i < v->n; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->types);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->merges);
}

// Puts piece at id (replacing what was there). Returns -1 on OOM.
static int vocab_set(Vocab *v, int id, const char *piece, int type) {
    if (id >= v->cap) {
        int cap = v->cap ? v->cap : 1024;
        while (cap <= id) cap *= 2;
        char **p = realloc(v->pieces, (size_t)cap * sizeof(char *));
        if (p) v->pieces = p;
        int *t = realloc(v->types, (size_t)cap * sizeof(int));
        if (t) v->types = t;
        if (!p || !t) return -1;
        for (int i = v->cap; i < cap; i++) { v->pieces[i] = NULL; v->types[i] = TOKT_NORMAL; }
        v->cap = cap;
    }
    char *c = strdup(piece);
    if (!c) return -1;
    free(v->pieces[id]);
    v->pieces[id] = c;
    v->types[id] = type;
    if (id >= v->n) v->n = id + 1;
    return 0;
}

// Ids no file named get an empty UNUSED piece, so that the id space has no holes.
static int vocab_fill_holes(Vocab *v) {
    for (int i = 0; i < v->n; i++)
        if (!v->pieces[i]) {
            v->pieces[i] = strdup("");
            if (!v->pieces[i]) return -1;
            v->types[i] = TOKT_UNUSED;
        }
    return 0;
}

static int vocab_find(const Vocab *v, const char *piece) {
    for (int i = 0; i < v->n; i++)
        if (v->pieces[i] && strcmp(v->pieces[i], piece) == 0) return i;
    return -1;
}

// A JSON vocabulary object {"piece": id, ...}.
static int vocab_from_json(Vocab *v, const cJSON *obj, const char *path, char *err) {
    if (!cJSON_IsObject(obj)) return ftk_err(err, "%s: vocab is not a JSON object", path);
    int count = 0;
    for (const cJSON *e = obj->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || !e->string)
            return ftk_err(err, "%s: vocab entry \"%.100s\" is not a number", path, e->string ? e->string : "");
        double d = e->valuedouble;
        if (d < 0 || d >= MAX_VOCAB_ID || d != floor(d))
            return ftk_err(err, "%s: vocab entry \"%.100s\" has bad id %g", path, e->string, d);
        int id = (int)d;
        if (id < v->n && v->pieces[id])
            return ftk_err(err, "%s: id %d given to both \"%.100s\" and \"%.100s\"", path, id, v->pieces[id], e->string);
        if (vocab_set(v, id, e->string, TOKT_NORMAL)) return ftk_err(err, "%s: out of memory", path);
        count++;
    }
    if (count == 0) return ftk_err(err, "%s: empty vocab", path);
    return 0;
}

static int vocab_add_merge(Vocab *v, const char *a, const char *b, size_t *cap) {
    if ((size_t)v->n_merges == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        char **m = realloc(v->merges, c * sizeof(char *));
        if (!m) return -1;
        v->merges = m;
        *cap = c;
    }
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return -1;
    memcpy(s, a, la);
    s[la] = ' ';
    memcpy(s + la + 1, b, lb + 1);
    v->merges[v->n_merges++] = s;
    return 0;
}

static cJSON *read_json(const char *path, char *err) {
    char *data;
    size_t len;
    if (ftk_read_file(path, &data, &len, err)) return NULL;
    if (len == 0) { free(data); ftk_err(err, "%s: empty file", path); return NULL; }
    cJSON *j = cJSON_ParseWithLength(data, len);
    if (!j) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = (at && at >= data && at <= data + len) ? (size_t)(at - data) : 0;
        ftk_err(err, "%s: not valid JSON (error near byte %zu)", path, off);
    }
    free(data);
    return j;
}

// Creates the tokenizer from v; errors from tokenizer_create are prefixed with path.
static int vocab_create(Tokenizer **out, Vocab *v, TokKind kind, int bos, int eos, int unk, const char *path,
                        char *err) {
    char sub[FTK_ERR_LEN];
    if (vocab_fill_holes(v)) return ftk_err(err, "%s: out of memory", path);
    if (tokenizer_create(out, kind, v->n, (const char *const *)v->pieces, NULL, v->types,
                         (const char *const *)v->merges, v->n_merges, bos, eos, unk, sub))
        return ftk_err(err, "%s: %s", path, sub);
    return 0;
}

int tokenizer_load_gpt2_files(Tokenizer **out, const char *vocab_json, const char *merges_txt, char *err) {
    *out = NULL;
    Vocab v = {0};
    size_t merge_cap = 0;
    int rc = 0;
    cJSON *j = read_json(vocab_json, err);
    if (!j) return -1;
    rc = vocab_from_json(&v, j, vocab_json, err);
    cJSON_Delete(j);
    char *text = NULL;
    size_t len = 0;
    if (!rc) rc = ftk_read_file(merges_txt, &text, &len, err);
    if (!rc && len == 0) rc = ftk_err(err, "%s: empty file", merges_txt);
    // One merge "a b" per line; a first line "#version: ..." is a comment.
    int line_no = 0;
    for (char *line = text; !rc && line && line < text + len; line_no++) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        char *end = nl ? nl : text + len;
        if (end > line && end[-1] == '\r') end--;
        *end = 0;
        char *next = nl ? nl + 1 : NULL;
        if (strlen(line) != (size_t)(end - line)) {
            rc = ftk_err(err, "%s: line %d contains a NUL byte", merges_txt, line_no + 1);
        } else if (line[0] && !(line_no == 0 && strncmp(line, "#version", 8) == 0)) {
            char *sp = strchr(line, ' ');
            if (!sp || sp == line || !sp[1]) {
                rc = ftk_err(err, "%s: line %d \"%.100s\" is not \"a b\"", merges_txt, line_no + 1, line);
            } else {
                *sp = 0;
                if (vocab_add_merge(&v, line, sp + 1, &merge_cap)) rc = ftk_err(err, "%s: out of memory", merges_txt);
            }
        }
        line = next;
    }
    free(text);
    if (!rc) {
        int eot = vocab_find(&v, "<|endoftext|>");
        if (eot >= 0) v.types[eot] = TOKT_CONTROL;
        rc = vocab_create(out, &v, TOK_BPE, eot, eot, -1, merges_txt, err);
    }
    if (!rc) snprintf((*out)->source, sizeof (*out)->source, "vocab+merges");
    vocab_free(&v);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static int jtype_is(const cJSON *o, const char *type) {
    const char *t = jstr(o, "type");
    return t && strcmp(t, type) == 0;
}

// The components of a normalizer / pre_tokenizer / decoder: the object itself, or the members
// of a "Sequence" (key "normalizers", "pretokenizers", "decoders", "processors").
static int components(const cJSON *o, const char *seq_key, const cJSON **out, int max) {
    if (!cJSON_IsObject(o)) return 0;
    if (!jtype_is(o, "Sequence")) { out[0] = o; return 1; }
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, seq_key);
    int n = 0;
    for (const cJSON *e = cJSON_IsArray(arr) ? arr->child : NULL; e && n < max; e = e->next)
        if (cJSON_IsObject(e)) out[n++] = e;
    return n;
}

static const char GPT2_REGEX[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_REGEX[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                  "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// What a tokenizer.json's normalizer, pre_tokenizer and decoder say about the algorithm.
typedef struct {
    int byte_level;        // ByteLevel pre-tokenizer or decoder
    int bl_prefix_space;   // ByteLevel add_prefix_space
    int spm_style;         // "▁" normalizer / Metaspace / byte_fallback
    int spm_prefix;        // a "▁" is prepended (Prepend normalizer, Metaspace prepend)
    PretokKind pretok;
    int split_digits;      // Digits pre-tokenizer: 1 individual_digits, 2 runs
} JsonStyle;

static int is_spm_space(const char *s) { return s && strcmp(s, "\xE2\x96\x81") == 0; }

static int read_style(const cJSON *root, const cJSON *model, JsonStyle *st, const char *path, char *err) {
    const cJSON *parts[16];
    memset(st, 0, sizeof *st);
    st->pretok = PRETOK_GPT2;
    int n = components(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizers", parts, 16);
    for (int i = 0; i < n; i++) {
        const cJSON *p = parts[i];
        if (jtype_is(p, "Prepend") && is_spm_space(jstr(p, "prepend"))) { st->spm_style = 1; st->spm_prefix = 1; }
        else if (jtype_is(p, "Replace") && is_spm_space(jstr(p, "content"))) st->spm_style = 1;
        else if (jtype_is(p, "NFC") || jtype_is(p, "NFKC") || jtype_is(p, "NFD") || jtype_is(p, "NFKD") ||
                 jtype_is(p, "Lowercase"))
            return ftk_err(err, "%s: normalizer %s is not supported", path, jstr(p, "type"));
    }
    int have_regex = 0;
    n = components(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pretokenizers", parts, 16);
    for (int i = 0; i < n; i++) {
        const cJSON *p = parts[i];
        if (jtype_is(p, "ByteLevel")) {
            st->byte_level = 1;
            st->bl_prefix_space = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space"));
            const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
            if (!cJSON_IsFalse(use_regex)) have_regex = 1;
        } else if (jtype_is(p, "Digits")) {
            st->split_digits = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "individual_digits")) ? 1 : 2;
        } else if (jtype_is(p, "Metaspace")) {
            st->spm_style = 1;
            const char *scheme = jstr(p, "prepend_scheme");
            const cJSON *aps = cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space");
            st->spm_prefix = scheme ? strcmp(scheme, "never") != 0 : !cJSON_IsFalse(aps);
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "split")))
                return ftk_err(err, "%s: Metaspace with split=true is not supported", path);
        } else if (jtype_is(p, "Split")) {
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
            const char *re = jstr(pat, "Regex");
            if (re && strcmp(re, GPT2_REGEX) == 0) st->pretok = PRETOK_GPT2;
            else if (re && strcmp(re, LLAMA3_REGEX) == 0) st->pretok = PRETOK_LLAMA3;
            else if (re && strcmp(re, QWEN2_REGEX) == 0) st->pretok = PRETOK_QWEN2;
            else
                return ftk_err(err, "%s: pre-tokenizer Split pattern \"%.200s\" is not supported (GPT-2 and Llama-3 "
                               "patterns are)", path, re ? re : "(not a regex)");
            have_regex = 2;
        } else {
            return ftk_err(err, "%s: pre-tokenizer %s is not supported", path, jstr(p, "type") ? jstr(p, "type") : "?");
        }
    }
    if (st->split_digits && !st->byte_level)
        return ftk_err(err, "%s: the Digits pre-tokenizer is supported only with ByteLevel", path);
    if (st->byte_level && !have_regex)
        return ftk_err(err, "%s: byte-level BPE without a pre-tokenizer regex is not supported", path);
    n = components(cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoders", parts, 16);
    for (int i = 0; i < n; i++) {
        if (jtype_is(parts[i], "ByteLevel")) st->byte_level = 1;
        if (jtype_is(parts[i], "Metaspace") || (jtype_is(parts[i], "Replace") && jstr(parts[i], "content") &&
                                                 strcmp(jstr(parts[i], "content"), " ") == 0))
            st->spm_style = 1;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"))) st->spm_style = 1;
    return 0;
}

// post_processor TemplateProcessing: special tokens before / after "$A" in the single template.
static void read_template(const cJSON *pp, const Vocab *v, int *bos, int *add_bos, int *eos, int *add_eos) {
    const cJSON *parts[8];
    int n = components(pp, "processors", parts, 8);
    for (int i = 0; i < n; i++) {
        if (!jtype_is(parts[i], "TemplateProcessing")) continue;
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(parts[i], "single");
        int seen_seq = 0;
        for (const cJSON *e = cJSON_IsArray(single) ? single->child : NULL; e; e = e->next) {
            if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) { seen_seq = 1; continue; }
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
            const char *name = jstr(sp, "id");
            int id = name ? vocab_find(v, name) : -1;
            if (id < 0) continue;
            if (!seen_seq) { *bos = id; *add_bos = 1; }
            else { *eos = id; *add_eos = 1; }
        }
    }
}

int tokenizer_load_hf_json(Tokenizer **out, const char *path, char *err) {
    *out = NULL;
    cJSON *root = read_json(path, err);
    if (!root) return -1;
    Vocab v = {0};
    size_t merge_cap = 0;
    int rc = 0;
    JsonStyle st;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = jstr(model, "type");
    if (!cJSON_IsObject(model)) rc = ftk_err(err, "%s: no \"model\" object", path);
    else if (mtype && strcmp(mtype, "BPE") != 0)
        rc = ftk_err(err, "%s: model type %s is not supported (only BPE)", path, mtype);
    if (!rc) rc = vocab_from_json(&v, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path, err);
    if (!rc) rc = read_style(root, model, &st, path, err);
    if (!rc && !st.byte_level && !st.spm_style)
        rc = ftk_err(err, "%s: BPE that is neither byte-level nor SentencePiece-style is not supported", path);
    if (!rc && (jstr(model, "continuing_subword_prefix") && jstr(model, "continuing_subword_prefix")[0]))
        rc = ftk_err(err, "%s: continuing_subword_prefix is not supported", path);
    if (!rc && (jstr(model, "end_of_word_suffix") && jstr(model, "end_of_word_suffix")[0]))
        rc = ftk_err(err, "%s: end_of_word_suffix is not supported", path);
    // merges: ["a b", ...] (before tokenizers 0.20) or [["a", "b"], ...]
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!rc && merges && !cJSON_IsArray(merges)) rc = ftk_err(err, "%s: model.merges is not an array", path);
    int idx = 0;
    for (const cJSON *m = merges ? merges->child : NULL; !rc && m; m = m->next, idx++) {
        char *a = NULL, *b = NULL, *buf = NULL;
        if (cJSON_IsString(m)) {
            buf = strdup(m->valuestring);
            char *sp = buf ? strchr(buf, ' ') : NULL;
            if (sp) { *sp = 0; a = buf; b = sp + 1; }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
        }
        if (cJSON_IsString(m) && !buf) rc = ftk_err(err, "%s: out of memory", path);
        else if (!a || !a[0] || !b[0]) rc = ftk_err(err, "%s: merge %d is not \"a b\" or [\"a\", \"b\"]", path, idx);
        else if (vocab_add_merge(&v, a, b, &merge_cap)) rc = ftk_err(err, "%s: out of memory", path);
        free(buf);
    }
    // added_tokens: [{id, content, special}, ...] — special ones are CONTROL, the rest USER_DEFINED.
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    for (const cJSON *a = cJSON_IsArray(added) ? added->child : NULL; !rc && a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const char *content = jstr(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_VOCAB_ID ||
            id->valuedouble != floor(id->valuedouble) || !content || !content[0]) {
            rc = ftk_err(err, "%s: bad entry in added_tokens", path);
            break;
        }
        int type = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")) ? TOKT_CONTROL : TOKT_USER;
        if (vocab_set(&v, (int)id->valuedouble, content, type)) rc = ftk_err(err, "%s: out of memory", path);
    }
    Tokenizer *t = NULL;
    if (!rc) {
        int unk = jstr(model, "unk_token") ? vocab_find(&v, jstr(model, "unk_token")) : -1;
        if (unk >= 0) v.types[unk] = TOKT_UNKNOWN;
        int bos = -1, eos = -1, add_bos = 0, add_eos = 0;
        read_template(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &v, &bos, &add_bos, &eos, &add_eos);
        TokKind kind = st.byte_level ? TOK_BPE : TOK_SPM;
        // SentencePiece-style vocabularies list their byte tokens as ordinary pieces.
        if (kind == TOK_SPM)
            for (int i = 0; i < v.n; i++) {
                const char *p = v.pieces[i];
                if (p && v.types[i] == TOKT_NORMAL && strlen(p) == 6 && strncmp(p, "<0x", 3) == 0 && p[5] == '>')
                    v.types[i] = TOKT_BYTE;
            }
        const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>"};
        const char *eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
        for (int i = 0; i < 3 && bos < 0; i++) bos = vocab_find(&v, bos_names[i]);
        for (int i = 0; i < 3 && eos < 0; i++) eos = vocab_find(&v, eos_names[i]);
        rc = vocab_create(&t, &v, kind, bos, eos, unk, path, err);
        if (!rc) {
            t->add_bos = add_bos;
            t->add_eos = add_eos;
            t->add_space_prefix = kind == TOK_SPM ? st.spm_prefix : 0;
            if (kind == TOK_BPE && st.bl_prefix_space) t->add_space_prefix = 1;
            tokenizer_set_pretok(t, st.pretok);
            tokenizer_set_split_digits(t, kind == TOK_BPE ? st.split_digits : 0);
            tokenizer_set_byte_fallback(t, kind == TOK_SPM ? cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")) : 1);
            tokenizer_set_ignore_merges(t, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")));
            snprintf(t->source, sizeof t->source, "hf-json");
            *out = t;
        }
    }
    vocab_free(&v);
    cJSON_Delete(root);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// HF model directory

// Reads dir/name as JSON if it exists: 0 with *out NULL when absent, -1 on a parse error.
static int read_optional_json(const char *dir, const char *name, cJSON **out, char *err) {
    char path[4096];
    *out = NULL;
    if (ftk_path_join(path, sizeof path, dir, name, err)) return -1;
    if (!ftk_file_exists(path)) return 0;
    *out = read_json(path, err);
    return *out ? 0 : -1;
}

// A token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
static int named_token_id(const Tokenizer *t, const cJSON *x) {
    const char *name = cJSON_IsString(x) ? x->valuestring : jstr(x, "content");
    return name ? tokenizer_piece_id(t, name) : -1;
}

// An id in config.json: a number, or the first of a list (generation_config eos_token_id may be one).
static int config_id(const cJSON *cfg, const char *key, int n_vocab) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsArray(x)) x = x->child;
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= n_vocab) return -1;
    return (int)x->valuedouble;
}

int tokenizer_load_hf_dir(Tokenizer **out, const char *dir, char *err) {
    *out = NULL;
    char p1[4096], p2[4096];
    Tokenizer *t = NULL;
    int rc;
    if (!ftk_is_dir(dir)) return ftk_err(err, "%s: not a directory", dir);
    if (ftk_path_join(p1, sizeof p1, dir, "tokenizer.json", err)) return -1;
    if (ftk_file_exists(p1)) {
        rc = tokenizer_load_hf_json(&t, p1, err);
    } else {
        if (ftk_path_join(p1, sizeof p1, dir, "tokenizer.model", err)) return -1;
        if (ftk_file_exists(p1)) {
            rc = tokenizer_load_spm_model(&t, p1, err);
        } else {
            if (ftk_path_join(p1, sizeof p1, dir, "vocab.json", err) ||
                ftk_path_join(p2, sizeof p2, dir, "merges.txt", err))
                return -1;
            if (!ftk_file_exists(p1) || !ftk_file_exists(p2))
                return ftk_err(err, "%s: no tokenizer (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt)",
                               dir);
            rc = tokenizer_load_gpt2_files(&t, p1, p2, err);
        }
    }
    if (rc) return -1;

    // tokenizer_config.json (then special_tokens_map.json) name the special tokens and say
    // whether BOS/EOS are added; config.json / generation_config.json fill in ids still missing.
    const char *names[] = {"tokenizer_config.json", "special_tokens_map.json", "config.json", "generation_config.json"};
    cJSON *js[4] = {0};
    for (int i = 0; i < 4 && !rc; i++) rc = read_optional_json(dir, names[i], &js[i], err);
    if (!rc) {
        int bos = -1, eos = -1, unk = -1, pad = -1;
        for (int i = 0; i < 2; i++) {
            if (!js[i]) continue;
            if (bos < 0) bos = named_token_id(t, cJSON_GetObjectItemCaseSensitive(js[i], "bos_token"));
            if (eos < 0) eos = named_token_id(t, cJSON_GetObjectItemCaseSensitive(js[i], "eos_token"));
            if (unk < 0) unk = named_token_id(t, cJSON_GetObjectItemCaseSensitive(js[i], "unk_token"));
            if (pad < 0) pad = named_token_id(t, cJSON_GetObjectItemCaseSensitive(js[i], "pad_token"));
        }
        if (bos >= 0) t->bos_id = bos;
        if (eos >= 0) t->eos_id = eos;
        if (unk >= 0) t->unk_id = unk;
        if (pad >= 0) t->pad_id = pad;
        for (int i = 2; i < 4; i++) {
            if (!js[i]) continue;
            if (t->bos_id < 0) t->bos_id = config_id(js[i], "bos_token_id", t->n_vocab);
            if (t->eos_id < 0) t->eos_id = config_id(js[i], "eos_token_id", t->n_vocab);
            if (t->pad_id < 0) t->pad_id = config_id(js[i], "pad_token_id", t->n_vocab);
        }
        // BOS/EOS are control tokens whatever the vocabulary file said (so decode drops them).
        int changed = 0;
        if (t->bos_id >= 0 && t->types[t->bos_id] == TOKT_NORMAL) { t->types[t->bos_id] = TOKT_CONTROL; changed = 1; }
        if (t->eos_id >= 0 && t->types[t->eos_id] == TOKT_NORMAL) { t->types[t->eos_id] = TOKT_CONTROL; changed = 1; }
        if (changed) rc = tokenizer_rebuild_specials(t, err);
        if (js[0]) {
            const cJSON *ab = cJSON_GetObjectItemCaseSensitive(js[0], "add_bos_token");
            const cJSON *ae = cJSON_GetObjectItemCaseSensitive(js[0], "add_eos_token");
            if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
            if (cJSON_IsBool(ae)) t->add_eos = cJSON_IsTrue(ae);
        }
    }
    for (int i = 0; i < 4; i++) cJSON_Delete(js[i]);
    if (rc) { tokenizer_free(t); return -1; }
    *out = t;
    return 0;
}
