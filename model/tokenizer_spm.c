// tokenizer_spm.c — SentencePiece vocabularies from disk: tokenizer.model (protobuf) and
// llama2.c's tokenizer.bin.
//
// tokenizer.model is a ModelProto (sentencepiece_model.proto):
//   1: repeated SentencePiece { 1: piece (string), 2: score (float), 3: type (enum, default NORMAL) }
//   2: TrainerSpec { 3: model_type (1 UNIGRAM default, 2 BPE, 3 WORD, 4 CHAR), 35: byte_fallback,
//                    40: unk_id, 41: bos_id, 42: eos_id, 43: pad_id (int32, -1 = none) }
//   3: NormalizerSpec { 1: name, 3: add_dummy_prefix (default true) }
// Protobuf wire format: each field is a varint key (field << 3 | wire type) then the value:
// 0 varint, 1 8 bytes, 2 varint length + bytes, 5 4 bytes (3/4, groups, are not used here).
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

typedef struct {
    const unsigned char *p, *end, *base;
    const char *path;
} PbReader;

static int pb_varint(PbReader *r, uint64_t *v, char *err) {
    uint64_t x = 0;
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return ftk_err(err, "%s: varint runs past the end of its message at byte %zu", r->path,
                           (size_t)(r->p - r->base));
        unsigned char b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return ftk_err(err, "%s: varint longer than 10 bytes at byte %zu", r->path, (size_t)(r->p - r->base));
}

// A length-delimited value: *data, *n inside the reader's bounds.
static int pb_bytes(PbReader *r, const unsigned char **data, size_t *n, char *err) {
    uint64_t len;
    *data = NULL;
    *n = 0;
    if (pb_varint(r, &len, err)) return -1;
    if (len > (uint64_t)(r->end - r->p))
        return ftk_err(err, "%s: field of %llu bytes at byte %zu runs past the end (%zu left)", r->path,
                       (unsigned long long)len, (size_t)(r->p - r->base), (size_t)(r->end - r->p));
    *data = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int pb_fixed(PbReader *r, size_t n, unsigned char *out, char *err) {
    if ((size_t)(r->end - r->p) < n)
        return ftk_err(err, "%s: %zu-byte field at byte %zu runs past the end", r->path, n, (size_t)(r->p - r->base));
    memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

static int pb_skip(PbReader *r, int wire, char *err) {
    uint64_t v;
    const unsigned char *d;
    size_t n;
    unsigned char buf[8];
    switch (wire) {
    case 0: return pb_varint(r, &v, err);
    case 1: return pb_fixed(r, 8, buf, err);
    case 2: return pb_bytes(r, &d, &n, err);
    case 5: return pb_fixed(r, 4, buf, err);
    default:
        return ftk_err(err, "%s: unsupported protobuf wire type %d at byte %zu", r->path, wire,
                       (size_t)(r->p - r->base));
    }
}

static int pb_key(PbReader *r, int *field, int *wire, char *err) {
    uint64_t k;
    *field = 0;
    *wire = 0;
    if (pb_varint(r, &k, err)) return -1;
    *field = (int)(k >> 3);
    *wire = (int)(k & 7);
    if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF)
        return ftk_err(err, "%s: bad protobuf field number at byte %zu", r->path, (size_t)(r->p - r->base));
    return 0;
}

static PbReader pb_sub(const PbReader *r, const unsigned char *d, size_t n) {
    PbReader s = {d, d + n, r->base, r->path};
    return s;
}

// An int32 proto field arrives as a varint of its 64-bit two's complement.
static int pb_int32(uint64_t v) { return (int)(int32_t)(uint32_t)v; }

typedef struct {
    char **pieces;
    float *scores;
    int *types;
    int n, cap;
} PieceVec;

static void pvec_free(PieceVec *v) {
    for (int i = 0; i < v->n; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
}

static int pvec_push(PieceVec *v, const unsigned char *s, size_t n, float score, int type) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 256;
        char **p = realloc(v->pieces, (size_t)cap * sizeof(char *));
        if (p) v->pieces = p;
        float *sc = realloc(v->scores, (size_t)cap * sizeof(float));
        if (sc) v->scores = sc;
        int *ty = realloc(v->types, (size_t)cap * sizeof(int));
        if (ty) v->types = ty;
        if (!p || !sc || !ty) return -1;
        v->cap = cap;
    }
    char *c = malloc(n + 1);
    if (!c) return -1;
    memcpy(c, s, n);
    c[n] = 0;
    v->pieces[v->n] = c;
    v->scores[v->n] = score;
    v->types[v->n] = type;
    v->n++;
    return 0;
}

static int parse_piece(PbReader *r, PieceVec *v, char *err) {
    const unsigned char *text = NULL;
    size_t text_n = 0;
    float score = 0.0f;
    int type = TOKT_NORMAL, have_text = 0;
    while (r->p < r->end) {
        int field, wire;
        if (pb_key(r, &field, &wire, err)) return -1;
        if (field == 1 && wire == 2) {
            if (pb_bytes(r, &text, &text_n, err)) return -1;
            have_text = 1;
        } else if (field == 2 && wire == 5) {
            unsigned char b[4] = {0};
            if (pb_fixed(r, 4, b, err)) return -1;
            memcpy(&score, b, 4);  // little-endian float, as on every host we build for
        } else if (field == 3 && wire == 0) {
            uint64_t x;
            if (pb_varint(r, &x, err)) return -1;
            if (x < TOKT_NORMAL || x > TOKT_BYTE)
                return ftk_err(err, "%s: piece %d has unknown type %llu", r->path, v->n, (unsigned long long)x);
            type = (int)x;
        } else if (pb_skip(r, wire, err)) {
            return -1;
        }
    }
    if (!have_text) return ftk_err(err, "%s: piece %d has no text", r->path, v->n);
    if (memchr(text, 0, text_n)) return ftk_err(err, "%s: piece %d contains a NUL byte", r->path, v->n);
    if (pvec_push(v, text, text_n, score, type)) return ftk_err(err, "%s: out of memory", r->path);
    return 0;
}

typedef struct {
    int model_type, unk_id, bos_id, eos_id, pad_id, byte_fallback;
    int add_dummy_prefix;
} SpmSpec;

static int parse_trainer(PbReader *r, SpmSpec *s, char *err) {
    while (r->p < r->end) {
        int field, wire;
        uint64_t x;
        if (pb_key(r, &field, &wire, err)) return -1;
        if (wire == 0 && (field == 3 || field == 35 || (field >= 40 && field <= 43))) {
            if (pb_varint(r, &x, err)) return -1;
            if (field == 3) s->model_type = (int)x;
            else if (field == 35) s->byte_fallback = x != 0;
            else if (field == 40) s->unk_id = pb_int32(x);
            else if (field == 41) s->bos_id = pb_int32(x);
            else if (field == 42) s->eos_id = pb_int32(x);
            else s->pad_id = pb_int32(x);
        } else if (pb_skip(r, wire, err)) {
            return -1;
        }
    }
    return 0;
}

static int parse_normalizer(PbReader *r, SpmSpec *s, char *err) {
    while (r->p < r->end) {
        int field, wire;
        uint64_t x;
        if (pb_key(r, &field, &wire, err)) return -1;
        if (field == 3 && wire == 0) {
            if (pb_varint(r, &x, err)) return -1;
            s->add_dummy_prefix = x != 0;
        } else if (pb_skip(r, wire, err)) {
            return -1;
        }
    }
    return 0;
}

// A special id from the spec if it is in range, else the id of the named piece, else -1.
static int special_id(const PieceVec *v, int id, const char *name) {
    if (id >= 0 && id < v->n) return id;
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->pieces[i], name) == 0) return i;
    return -1;
}

int tokenizer_load_spm_model(Tokenizer **out, const char *path, char *err) {
    *out = NULL;
    char *data;
    size_t len;
    if (ftk_read_file(path, &data, &len, err)) return -1;
    if (len == 0) { free(data); return ftk_err(err, "%s: empty file", path); }
    const unsigned char *base = (const unsigned char *)data;
    PbReader r = {base, base + len, base, path};
    PieceVec v = {0};
    SpmSpec spec = {1, 0, 1, 2, -1, 0, 1};  // sentencepiece's defaults
    int rc = 0;
    while (!rc && r.p < r.end) {
        int field, wire;
        const unsigned char *d;
        size_t n;
        if (pb_key(&r, &field, &wire, err)) { rc = -1; break; }
        if (wire == 2 && (field == 1 || field == 2 || field == 3)) {
            if (pb_bytes(&r, &d, &n, err)) { rc = -1; break; }
            PbReader sub = pb_sub(&r, d, n);
            if (field == 1) rc = parse_piece(&sub, &v, err);
            else if (field == 2) rc = parse_trainer(&sub, &spec, err);
            else rc = parse_normalizer(&sub, &spec, err);
        } else {
            rc = pb_skip(&r, wire, err);
        }
    }
    free(data);
    if (!rc && v.n == 0) rc = ftk_err(err, "%s: no pieces (not a sentencepiece model?)", path);
    if (!rc && spec.model_type != 2)
        rc = ftk_err(err, "%s: sentencepiece model type %d is not BPE (2); only BPE models are supported", path,
                     spec.model_type);
    Tokenizer *t = NULL;
    if (!rc) {
        int unk = special_id(&v, spec.unk_id, "<unk>");
        int bos = special_id(&v, spec.bos_id, "<s>");
        int eos = special_id(&v, spec.eos_id, "</s>");
        char sub_err[FTK_ERR_LEN];
        if (tokenizer_create(&t, TOK_SPM, v.n, (const char *const *)v.pieces, v.scores, v.types, NULL, 0, bos, eos,
                             unk, sub_err))
            rc = ftk_err(err, "%s: %s", path, sub_err);
    }
    if (!rc) {
        t->pad_id = (spec.pad_id >= 0 && spec.pad_id < v.n) ? spec.pad_id : -1;
        t->add_bos = 1;
        t->add_space_prefix = spec.add_dummy_prefix;
        snprintf(t->source, sizeof t->source, "spm-model");
        *out = t;
    }
    pvec_free(&v);
    return rc;
}

// llama2.c tokenizer.bin: int32 max_token_length, then per token: float32 score, int32 length,
// bytes. llama2.c's exporter wrote "▁" as " " and BOS/EOS as "\n<s>\n" / "\n</s>\n"; both are
// turned back into the sentencepiece form so that encoding matches tokenizer.model.
int tokenizer_load_llama2c(Tokenizer **out, const char *path, int vocab_size, char *err) {
    *out = NULL;
    char *data;
    size_t len;
    if (ftk_read_file(path, &data, &len, err)) return -1;
    const unsigned char *p = (const unsigned char *)data, *end = p + len;
    PieceVec v = {0};
    int rc = 0;
    int32_t max_len = 0;
    if (len < 4) rc = ftk_err(err, "%s: %zu bytes is too short for a llama2.c tokenizer", path, len);
    else {
        memcpy(&max_len, p, 4);
        p += 4;
        if (max_len <= 0 || max_len > (1 << 20)) rc = ftk_err(err, "%s: bad max_token_length %d", path, max_len);
    }
    // vocab_size <= 0: read every token in the file
    for (int i = 0; !rc && (vocab_size > 0 ? i < vocab_size : p < end); i++) {
        float score;
        int32_t n;
        if (end - p < 8) {
            rc = ftk_err(err, "%s: truncated at token %d of %d (byte %zu)", path, i, vocab_size,
                         (size_t)(p - (const unsigned char *)data));
            break;
        }
        memcpy(&score, p, 4);
        memcpy(&n, p + 4, 4);
        p += 8;
        if (n < 0 || n > max_len || n > end - p) {
            rc = ftk_err(err, "%s: token %d has length %d (max_token_length %d, %zu bytes left)", path, i, n, max_len,
                         (size_t)(end - p));
            break;
        }
        if (memchr(p, 0, (size_t)n)) { rc = ftk_err(err, "%s: token %d contains a NUL byte", path, i); break; }
        // " " -> "▁" (3 bytes each)
        size_t cap = (size_t)n * 3 + 1, k = 0;
        unsigned char *s = malloc(cap);
        if (!s) { rc = ftk_err(err, "%s: out of memory", path); break; }
        for (int j = 0; j < n; j++) {
            if (p[j] == ' ') { memcpy(s + k, "\xE2\x96\x81", 3); k += 3; }
            else s[k++] = p[j];
        }
        p += n;
        int type = TOKT_NORMAL;
        if (i == 0 && k == 5 && memcmp(s, "<unk>", 5) == 0) type = TOKT_UNKNOWN;
        if ((i == 1 || i == 2) && k >= 3 && s[0] == '\n' && s[k - 1] == '\n') {  // "\n<s>\n" -> "<s>"
            memmove(s, s + 1, k - 2);
            k -= 2;
        }
        if (i == 1 || i == 2) type = TOKT_CONTROL;
        if (k == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') type = TOKT_BYTE;
        if (pvec_push(&v, s, k, score, type)) rc = ftk_err(err, "%s: out of memory", path);
        free(s);
    }
    free(data);
    if (!rc && v.n < 3) rc = ftk_err(err, "%s: only %d tokens", path, v.n);
    Tokenizer *t = NULL;
    if (!rc) {
        char sub_err[FTK_ERR_LEN];
        if (tokenizer_create(&t, TOK_SPM, v.n, (const char *const *)v.pieces, v.scores, v.types, NULL, 0, 1, 2,
                             v.types[0] == TOKT_UNKNOWN ? 0 : -1, sub_err))
            rc = ftk_err(err, "%s: %s", path, sub_err);
    }
    if (!rc) {
        snprintf(t->source, sizeof t->source, "llama2c");
        *out = t;
    }
    pvec_free(&v);
    return rc;
}
