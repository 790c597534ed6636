// tokenizer_gguf.c — a tokenizer from a GGUF file's tokenizer.ggml.* keys (FORMATS §2c):
// model ("llama" = SentencePiece -> TOK_SPM, "gpt2" = byte-level BPE -> TOK_BPE), tokens,
// scores, token_type, merges, special ids, the add_bos / add_eos / add_space_prefix flags and,
// for byte-level BPE, the pre-tokenizer named by tokenizer.ggml.pre.
// Works for vocab-only GGUFs (no tensors).
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

// How a byte-level BPE splits text before merging, by the tokenizer.ggml.pre value llama.cpp's
// converter writes. The names are grouped as llama.cpp's llama-vocab.cpp groups them by regex.
typedef struct {
    PretokKind kind;
    int split_digits;    // 1: each digit is its own pre-token first (HF Digits(individual_digits))
    int llama3_options;  // llama.cpp turns on ignore_merges and add_bos for these
} BpePretok;

static int bpe_pretok_by_name(const char *name, BpePretok *out) {
    static const char *const gpt2[] = {"default", "gpt-2", "phi-2", "roberta-bpe", "mpt", "olmo", "jais"};
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3"};
    static const char *const qwen2[] = {"qwen2", "stablelm2", "megrez"};
    // GPT-2 regex after splitting every digit off (llama.cpp's "\p{N}" expression first).
    static const char *const digits[] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"};
    struct { const char *const *names; size_t n; BpePretok p; } groups[] = {
        {gpt2, sizeof gpt2 / sizeof *gpt2, {PRETOK_GPT2, 0, 0}},
        {llama3, sizeof llama3 / sizeof *llama3, {PRETOK_LLAMA3, 0, 1}},
        {qwen2, sizeof qwen2 / sizeof *qwen2, {PRETOK_QWEN2, 0, 0}},
        {digits, sizeof digits / sizeof *digits, {PRETOK_GPT2, 1, 0}},
    };
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
        for (size_t i = 0; i < groups[g].n; i++)
            if (strcmp(name, groups[g].names[i]) == 0) {
                *out = groups[g].p;
                return 0;
            }
    return -1;
}

// tokenizer.ggml.pre of a byte-level BPE: absent means GPT-2 (files converted before the key
// existed); a name we do not implement is an error, as in llama.cpp, rather than wrong ids.
// llama.cpp's own "default" BPE split also cuts punctuation runs first; we read it as GPT-2.
static int get_bpe_pretok(const GgufFile *f, BpePretok *out, char *err) {
    BpePretok gpt2 = {PRETOK_GPT2, 0, 0};
    *out = gpt2;
    char *pre = NULL;
    int rc = gguf_get_str(f, "tokenizer.ggml.pre", &pre, err);
    if (rc == GGUF_ABSENT) return 0;
    if (rc) return -1;
    if (bpe_pretok_by_name(pre, out))
        rc = ftk_err(err, "%s: unknown pre-tokenizer type '%s' (tokenizer.ggml.pre)", f->path, pre);
    free(pre);
    return rc ? -1 : 0;
}

// An optional token id key: -1 when absent; an id outside the vocabulary is an error.
static int get_token_id(const GgufFile *f, const char *key, size_t n_vocab, int *out, char *err) {
    uint32_t v;
    *out = -1;
    int rc = gguf_get_u32(f, key, &v, err);
    if (rc == GGUF_ABSENT) return 0;
    if (rc) return -1;
    if (v >= n_vocab) return ftk_err(err, "%s: %s = %u is outside the vocabulary (%zu tokens)", f->path, key, v, n_vocab);
    *out = (int)v;
    return 0;
}

static int get_flag(const GgufFile *f, const char *key, int *out, char *err) {
    int rc = gguf_get_bool(f, key, out, err);
    return rc == GGUF_ABSENT ? 0 : rc;
}

static int load_from(const GgufFile *f, Tokenizer **out, char *err) {
    char *model = NULL, **tokens = NULL, **merges = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    size_t n_tokens = 0, n_merges = 0, n_scores = 0, n_types = 0;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model, err);
    if (rc == GGUF_ABSENT) return ftk_err(err, "%s: no tokenizer in this GGUF (key tokenizer.ggml.model missing)", f->path);
    if (rc) return -1;
    TokKind kind;
    if (strcmp(model, "llama") == 0) kind = TOK_SPM;
    else if (strcmp(model, "gpt2") == 0) kind = TOK_BPE;
    else {
        ftk_err(err, "%s: unsupported tokenizer model '%s' (llama, gpt2)", f->path, model);
        free(model);
        return -1;
    }
    free(model);
    int bos, eos, unk, pad;
    BpePretok pretok = {PRETOK_GPT2, 0, 0};   // SentencePiece has none (llama.cpp ignores the key)
    if (kind == TOK_BPE && get_bpe_pretok(f, &pretok, err)) return -1;
    // llama.cpp defaults: SentencePiece adds BOS and a dummy-prefix space, byte-level BPE neither
    // (Llama-3 style BPE adds BOS).
    int add_bos = kind == TOK_SPM || pretok.llama3_options, add_eos = 0, add_space_prefix = kind == TOK_SPM;
    rc = gguf_get_str_array(f, "tokenizer.ggml.tokens", &tokens, &n_tokens, err);
    if (rc == GGUF_ABSENT) rc = ftk_err(err, "%s: missing key 'tokenizer.ggml.tokens'", f->path);
    if (!rc && (n_tokens == 0 || n_tokens > (1u << 24)))
        rc = ftk_err(err, "%s: tokenizer.ggml.tokens has %zu entries", f->path, n_tokens);
    if (!rc) {
        int r = gguf_get_f32_array(f, "tokenizer.ggml.scores", &scores, &n_scores, err);
        if (r == 0 && n_scores != n_tokens)
            r = ftk_err(err, "%s: tokenizer.ggml.scores has %zu entries for %zu tokens", f->path, n_scores, n_tokens);
        rc = r == GGUF_ABSENT ? 0 : r;
    }
    if (!rc) {
        int r = gguf_get_i32_array(f, "tokenizer.ggml.token_type", &types, &n_types, err);
        if (r == 0 && n_types != n_tokens)
            r = ftk_err(err, "%s: tokenizer.ggml.token_type has %zu entries for %zu tokens", f->path, n_types, n_tokens);
        rc = r == GGUF_ABSENT ? 0 : r;
    }
    if (!rc) {
        int r = gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &n_merges, err);
        if (r == 0 && n_merges > (size_t)1 << 30) r = ftk_err(err, "%s: too many merges (%zu)", f->path, n_merges);
        rc = r == GGUF_ABSENT ? 0 : r;
    }
    if (!rc) rc = get_token_id(f, "tokenizer.ggml.bos_token_id", n_tokens, &bos, err) ||
                  get_token_id(f, "tokenizer.ggml.eos_token_id", n_tokens, &eos, err) ||
                  get_token_id(f, "tokenizer.ggml.unknown_token_id", n_tokens, &unk, err) ||
                  get_token_id(f, "tokenizer.ggml.padding_token_id", n_tokens, &pad, err) ||
                  get_flag(f, "tokenizer.ggml.add_bos_token", &add_bos, err) ||
                  get_flag(f, "tokenizer.ggml.add_eos_token", &add_eos, err) ||
                  get_flag(f, "tokenizer.ggml.add_space_prefix", &add_space_prefix, err);
    int *itypes = NULL;
    if (!rc && types) {   // tokenizer_create takes int; values are TOKT_* codes
        itypes = malloc(n_tokens * sizeof *itypes);
        if (!itypes) rc = ftk_err(err, "%s: out of memory", f->path);
        for (size_t i = 0; !rc && i < n_tokens; i++) itypes[i] = types[i];
    }
    if (!rc) {
        char inner[FTK_ERR_LEN] = {0};
        rc = tokenizer_create(out, kind, (int)n_tokens, (const char *const *)tokens, scores, itypes,
                              (const char *const *)merges, (int)n_merges, bos, eos, unk, inner);
        if (rc) ftk_err(err, "%s: %s", f->path, inner);
    }
    if (!rc) {
        Tokenizer *t = *out;
        t->pad_id = pad;
        t->add_bos = add_bos;
        t->add_eos = add_eos;
        t->add_space_prefix = add_space_prefix;
        if (kind == TOK_BPE) {
            tokenizer_set_pretok(t, pretok.kind);
            tokenizer_set_split_digits(t, pretok.split_digits);
            tokenizer_set_ignore_merges(t, pretok.llama3_options);
        }
        snprintf(t->source, sizeof t->source, "gguf");
    }
    gguf_free_str_array(tokens, n_tokens);
    gguf_free_str_array(merges, n_merges);
    free(scores);
    free(types);
    free(itypes);
    return rc ? -1 : 0;
}

int tokenizer_load_gguf(Tokenizer **out, const char *path, char *err) {
    *out = NULL;
    GgufFile f;
    if (gguf_open(&f, path, err)) return -1;
    int rc = load_from(&f, out, err);
    gguf_close(&f);
    return rc;
}

const char *tokenizer_gguf_pre_name(const Tokenizer *t) {
    if (t->kind == TOK_SPM) return "default";
    const TokImpl *im = t->impl;
    if (im->pretok == PRETOK_LLAMA3) return "llama-bpe";
    if (im->pretok == PRETOK_QWEN2) return "qwen2";
    if (im->split_digits) return "smollm";
    return "gpt-2";
}
