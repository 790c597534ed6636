// tokenizer.c — Tokenizer construction, lookup tables, encoding and decoding.
//
// Encoding runs in three modes:
//   TOK_SPM without merges: llama.cpp / sentencepiece BPE. Text -> dummy-prefix space -> " " to "▁"
//     -> UTF-8 characters; then repeatedly merge the adjacent pair whose concatenation is a piece
//     with the highest score (ties: leftmost); symbols without a piece fall back to <0xXX> bytes.
//   TOK_SPM with merges: the same normalisation, but merges by rank from the merges list (HF
//     tokenizers' BPE with byte_fallback, how TinyLlama / Mistral ship tokenizer.json).
//   TOK_BPE: GPT-2 byte-level BPE: pre-tokenizer regex, each byte one symbol, merges by rank.
// CONTROL and USER_DEFINED pieces found verbatim in the text are split out before any of this.
// All merge loops are a linked list of symbols plus a binary heap of candidate pairs, so encoding
// is O(n log n) in the text length; stale heap entries are skipped when popped.
#include "model/tokenizer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/tokenizer_internal.h"
#include "model/unicode.h"

static const char SPM_SPACE[] = "\xE2\x96\x81";  // "▁" U+2581, SentencePiece's visible space

// ---------------------------------------------------------------------------------------------
// Hash maps

static uint64_t hash_bytes(const char *s, size_t n) {  // FNV-1a
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static uint64_t hash_u64(uint64_t x) {  // splitmix64 finalizer
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

// Id of the piece equal to s[0..n), or -1.
static int lookup(const Tokenizer *t, const char *s, size_t n) {
    const TokImpl *im = t->impl;
    for (size_t h = hash_bytes(s, n) & im->piece_mask;; h = (h + 1) & im->piece_mask) {
        int id = im->piece_slots[h];
        if (id < 0) return -1;
        if (im->piece_len[id] == n && memcmp(t->pieces[id], s, n) == 0) return id;
    }
}

// Like lookup, but only pieces that BPE may produce (NORMAL and USER_DEFINED): sentencepiece
// never merges into control, unknown, byte or unused pieces.
static int lookup_mergeable(const Tokenizer *t, const char *s, size_t n) {
    int id = lookup(t, s, n);
    if (id >= 0 && t->types[id] != TOKT_NORMAL && t->types[id] != TOKT_USER) return -1;
    return id;
}

static int pair_find(const TokImpl *im, int a, int b, int *result) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t h = hash_u64(key) & im->pair_mask;; h = (h + 1) & im->pair_mask) {
        if (im->pair_rank[h] < 0) return -1;
        if (im->pair_keys[h] == key) {
            *result = im->pair_result[h];
            return im->pair_rank[h];
        }
    }
}

static void pair_insert(TokImpl *im, int a, int b, int rank, int result) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t h = hash_u64(key) & im->pair_mask;; h = (h + 1) & im->pair_mask) {
        if (im->pair_rank[h] < 0) {
            im->pair_keys[h] = key;
            im->pair_rank[h] = rank;
            im->pair_result[h] = result;
            return;
        }
        if (im->pair_keys[h] == key) return;  // a repeated merge keeps its first (best) rank
    }
}

// ---------------------------------------------------------------------------------------------
// Construction

void tokenizer_set_pretok(Tokenizer *t, PretokKind kind) { ((TokImpl *)t->impl)->pretok = kind; }
void tokenizer_set_byte_fallback(Tokenizer *t, int on) { ((TokImpl *)t->impl)->byte_fallback = on; }
void tokenizer_set_ignore_merges(Tokenizer *t, int on) { ((TokImpl *)t->impl)->ignore_merges = on; }
void tokenizer_set_split_digits(Tokenizer *t, int mode) { ((TokImpl *)t->impl)->split_digits = mode; }

// "<0xAB>" -> 0xAB, else -1.
static int parse_byte_piece(const char *p) {
    if (strlen(p) != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int cmp_special(const void *pa, const void *pb, void *ctx) {
    const Tokenizer *t = ctx;
    int a = *(const int *)pa, b = *(const int *)pb;
    unsigned char fa = (unsigned char)t->pieces[a][0], fb = (unsigned char)t->pieces[b][0];
    if (fa != fb) return fa < fb ? -1 : 1;
    size_t la = strlen(t->pieces[a]), lb = strlen(t->pieces[b]);
    if (la != lb) return la > lb ? -1 : 1;  // longest first
    return a < b ? -1 : a > b;
}

int tokenizer_rebuild_specials(Tokenizer *t, char *err) {
    TokImpl *im = t->impl;
    free(im->special_ids);
    im->special_ids = NULL;
    im->n_special = 0;
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if ((t->types[i] == TOKT_CONTROL || t->types[i] == TOKT_USER) && t->pieces[i][0]) n++;
    im->special_ids = malloc((size_t)(n ? n : 1) * sizeof(int));
    if (!im->special_ids) return ftk_err(err, "tokenizer: out of memory");
    n = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if ((t->types[i] == TOKT_CONTROL || t->types[i] == TOKT_USER) && t->pieces[i][0]) im->special_ids[n++] = i;
    qsort_r(im->special_ids, (size_t)n, sizeof(int), cmp_special, t);
    im->n_special = n;
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && (unsigned char)t->pieces[im->special_ids[k]][0] < b) k++;
        im->special_start[b] = k;
    }
    return 0;
}

// Splits merge string m ("left right") at the space where both sides and their concatenation
// are pieces (a piece may itself contain a space). Returns 0 and the three ids, or -1.
static int split_merge(const Tokenizer *t, const char *m, char *scratch, int *a, int *b, int *ab) {
    size_t n = strlen(m);
    for (size_t p = 0; p < n; p++) {
        if (m[p] != ' ') continue;
        int ia = lookup(t, m, p), ib = lookup(t, m + p + 1, n - p - 1);
        if (ia < 0 || ib < 0) continue;
        memcpy(scratch, m, p);
        memcpy(scratch + p, m + p + 1, n - p - 1);
        int iab = lookup(t, scratch, n - 1);
        if (iab < 0) continue;
        *a = ia; *b = ib; *ab = iab;
        return 0;
    }
    return -1;
}

static int build_merges(Tokenizer *t, char *err) {
    TokImpl *im = t->impl;
    im->pair_mask = pow2_at_least((size_t)t->n_merges * 2 + 1) - 1;
    size_t cap = im->pair_mask + 1;
    im->pair_keys = malloc(cap * sizeof(uint64_t));
    im->pair_rank = malloc(cap * sizeof(int));
    im->pair_result = malloc(cap * sizeof(int));
    size_t longest = 1;
    for (int i = 0; i < t->n_merges; i++) {
        size_t l = strlen(t->merges[i]);
        if (l > longest) longest = l;
    }
    char *scratch = malloc(longest);
    if (!im->pair_keys || !im->pair_rank || !im->pair_result || !scratch) {
        free(scratch);
        return ftk_err(err, "tokenizer: out of memory for %d merges", t->n_merges);
    }
    for (size_t i = 0; i < cap; i++) im->pair_rank[i] = -1;
    for (int r = 0; r < t->n_merges; r++) {
        int a, b, ab;
        if (split_merge(t, t->merges[r], scratch, &a, &b, &ab) != 0) {
            // Name the part that is missing, for the common single-space case.
            const char *m = t->merges[r], *sp = strchr(m, ' ');
            int rc;
            if (!sp)
                rc = ftk_err(err, "tokenizer: merge %d \"%.200s\" is not two pieces separated by a space", r, m);
            else if (lookup(t, m, (size_t)(sp - m)) < 0)
                rc = ftk_err(err, "tokenizer: merge %d \"%.200s\" names unknown token \"%.*s\"", r, m,
                             (int)(sp - m > 200 ? 200 : sp - m), m);
            else if (lookup(t, sp + 1, strlen(sp + 1)) < 0)
                rc = ftk_err(err, "tokenizer: merge %d \"%.200s\" names unknown token \"%.200s\"", r, m, sp + 1);
            else
                rc = ftk_err(err, "tokenizer: merge %d \"%.200s\": the merged token is not in the vocabulary", r, m);
            free(scratch);
            return rc;
        }
        pair_insert(im, a, b, r, ab);
    }
    free(scratch);
    return 0;
}

// Copies n strings into one block; dst[i] points into it. Returns the block or NULL.
static char *copy_strings(char **dst, const char *const *src, int n, size_t *lens) {
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(src[i]);
        if (lens) lens[i] = l;
        if (ftk_add(total, l + 1, &total)) return NULL;
    }
    char *block = malloc(total), *p = block;
    if (!block) return NULL;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(src[i]);
        memcpy(p, src[i], l + 1);
        dst[i] = p;
        p += l + 1;
    }
    return block;
}

int tokenizer_create(Tokenizer **out, TokKind kind, int n_vocab, const char *const *pieces, const float *scores,
                     const int *types, const char *const *merges, int n_merges, int bos_id, int eos_id, int unk_id,
                     char *err) {
    *out = NULL;
    if (kind != TOK_SPM && kind != TOK_BPE) return ftk_err(err, "tokenizer: unknown kind %d", (int)kind);
    if (n_vocab <= 0 || n_vocab > INT_MAX / 4 || !pieces)
        return ftk_err(err, "tokenizer: bad vocabulary size %d", n_vocab);
    if (n_merges < 0 || (n_merges > 0 && !merges)) return ftk_err(err, "tokenizer: bad merge count %d", n_merges);
    for (int i = 0; i < n_vocab; i++)
        if (!pieces[i]) return ftk_err(err, "tokenizer: piece %d is NULL", i);
    for (int i = 0; i < n_merges; i++)
        if (!merges[i]) return ftk_err(err, "tokenizer: merge %d is NULL", i);
    if (bos_id < -1 || bos_id >= n_vocab || eos_id < -1 || eos_id >= n_vocab || unk_id < -1 || unk_id >= n_vocab)
        return ftk_err(err, "tokenizer: special ids bos=%d eos=%d unk=%d outside the vocabulary of %d", bos_id,
                       eos_id, unk_id, n_vocab);

    Tokenizer *t = calloc(1, sizeof(Tokenizer));
    TokImpl *im = calloc(1, sizeof(TokImpl));
    if (!t || !im) { free(t); free(im); return ftk_err(err, "tokenizer: out of memory"); }
    t->impl = im;
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->bos_id = bos_id;
    t->eos_id = eos_id;
    t->unk_id = unk_id;
    t->pad_id = -1;
    t->add_bos = (kind == TOK_SPM);
    t->add_eos = 0;
    t->add_space_prefix = (kind == TOK_SPM);
    im->byte_fallback = 1;
    im->pretok = PRETOK_GPT2;

    size_t nv = (size_t)n_vocab;
    t->pieces = calloc(nv, sizeof(char *));
    t->types = malloc(nv * sizeof(int));
    im->piece_len = malloc(nv * sizeof(size_t));
    if (scores) t->scores = malloc(nv * sizeof(float));
    if (!t->pieces || !t->types || !im->piece_len || (scores && !t->scores)) goto oom;
    im->piece_block = copy_strings(t->pieces, pieces, n_vocab, im->piece_len);
    if (!im->piece_block) goto oom;
    if (scores) memcpy(t->scores, scores, nv * sizeof(float));

    // Types: as given (values outside 1..6, e.g. GGUF's 0 = undefined, count as NORMAL), or
    // derived: <0xXX> pieces of an SPM vocabulary are bytes, bos/eos are control, unk is unknown.
    for (int i = 0; i < n_vocab; i++) {
        int ty = types ? types[i] : TOKT_NORMAL;
        if (ty < TOKT_NORMAL || ty > TOKT_BYTE) ty = TOKT_NORMAL;
        if (!types && kind == TOK_SPM && parse_byte_piece(t->pieces[i]) >= 0) ty = TOKT_BYTE;
        t->types[i] = ty;
    }
    if (!types) {
        if (bos_id >= 0) t->types[bos_id] = TOKT_CONTROL;
        if (eos_id >= 0) t->types[eos_id] = TOKT_CONTROL;
        if (unk_id >= 0) t->types[unk_id] = TOKT_UNKNOWN;
    }

    // piece -> id (the first id wins when a piece repeats; empty pieces are not looked up)
    im->piece_mask = pow2_at_least(nv * 2) - 1;
    im->piece_slots = malloc((im->piece_mask + 1) * sizeof(int));
    if (!im->piece_slots) goto oom;
    for (size_t i = 0; i <= im->piece_mask; i++) im->piece_slots[i] = -1;
    for (int i = 0; i < n_vocab; i++) {
        if (im->piece_len[i] == 0) continue;
        size_t h = hash_bytes(t->pieces[i], im->piece_len[i]) & im->piece_mask;
        int dup = 0;
        for (; im->piece_slots[h] >= 0; h = (h + 1) & im->piece_mask) {
            int j = im->piece_slots[h];
            if (im->piece_len[j] == im->piece_len[i] && memcmp(t->pieces[j], t->pieces[i], im->piece_len[i]) == 0) {
                dup = 1;
                break;
            }
        }
        if (!dup) im->piece_slots[h] = i;
    }

    // Byte tokens and the GPT-2 decode table.
    for (int b = 0; b < 256; b++) {
        char buf[8];
        if (kind == TOK_SPM) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            im->byte_ids[b] = lookup(t, buf, 6);
        } else {
            int l = utf8_encode(gpt2_byte_to_cp((unsigned char)b), buf);
            im->byte_ids[b] = lookup(t, buf, (size_t)l);
        }
    }
    for (uint32_t cp = 0; cp < 0x144; cp++) im->cp_byte[cp] = gpt2_cp_to_byte(cp);

    // Bytes that some piece holds right before a "▁" (see encode_spm_words).
    for (int i = 0; i < n_vocab; i++) {
        const char *p = t->pieces[i];
        for (const char *q = strstr(p, SPM_SPACE); q; q = strstr(q + 1, SPM_SPACE))
            if (q > p) im->glue_byte[(unsigned char)q[-1]] = 1;
    }

    if (n_merges > 0) {
        t->merges = calloc((size_t)n_merges, sizeof(char *));
        if (!t->merges) goto oom;
        im->merge_block = copy_strings(t->merges, merges, n_merges, NULL);
        if (!im->merge_block) goto oom;
    }
    t->n_merges = n_merges;
    // An empty pair map still needs one slot so that lookups terminate.
    if (build_merges(t, err) || tokenizer_rebuild_specials(t, err)) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
oom:
    tokenizer_free(t);
    return ftk_err(err, "tokenizer: out of memory for %d pieces", n_vocab);
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    TokImpl *im = t->impl;
    if (im) {
        free(im->piece_slots);
        free(im->piece_len);
        free(im->pair_keys);
        free(im->pair_rank);
        free(im->pair_result);
        free(im->special_ids);
        free(im->piece_block);
        free(im->merge_block);
        free(im);
    }
    free(t->pieces);
    free(t->scores);
    free(t->types);
    free(t->merges);
    free(t);
}

int tokenizer_piece_id(const Tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    return lookup(t, piece, strlen(piece));
}

// ---------------------------------------------------------------------------------------------
// Encoding: growable arrays and the merge machinery

typedef struct {
    int *v;
    size_t n, cap;
} IntVec;

static int ivec_push(IntVec *a, int x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int *v = realloc(a->v, cap * sizeof(int));
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

// A candidate merge of symbols left and right. key: smaller pops first (rank, or -score);
// ties go to the leftmost pair. a, b: what the pair looked like when pushed (ids in rank mode,
// the total byte length in score mode), to recognise entries made stale by earlier merges.
typedef struct {
    double key;
    int left, right, a, b, result;
} Cand;

typedef struct {
    Cand *c;
    size_t n, cap;
} Heap;

static int cand_before(const Cand *x, const Cand *y) {
    return x->key < y->key || (x->key == y->key && x->left < y->left);
}

static int heap_push(Heap *h, Cand c) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        Cand *v = realloc(h->c, cap * sizeof(Cand));
        if (!v) return -1;
        h->c = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {  // sift up
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h->c[p])) break;
        h->c[i] = h->c[p];
        i = p;
    }
    h->c[i] = c;
    return 0;
}

static Cand heap_pop(Heap *h) {
    Cand top = h->c[0], last = h->c[--h->n];
    size_t i = 0;
    for (;;) {  // sift down
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const Cand *best = &last;
        if (l < h->n && cand_before(&h->c[l], best)) { m = l; best = &h->c[l]; }
        if (r < h->n && cand_before(&h->c[r], best)) { m = r; }
        if (m == i) break;
        h->c[i] = h->c[m];
        i = m;
    }
    if (h->n > 0) h->c[i] = last;
    return top;
}

// Byte-level BPE: the ids of each pre-token already encoded in this call (natural text repeats
// its words, so most pre-tokens are looked up instead of merged). Keys live in `keys`, ids in
// `ids`; a slot with key_len 0 is empty.
typedef struct {
    uint64_t hash;
    size_t key_off, key_len, ids_off, ids_len;
} CacheSlot;

typedef struct {
    CacheSlot *slots;
    size_t mask, used;
    char *keys;
    size_t keys_n, keys_cap;
    IntVec ids;
} WordCache;

#define CACHE_MAX_WORD 64  // longer pre-tokens are rare and not cached

static void cache_free(WordCache *c) {
    free(c->slots);
    free(c->keys);
    free(c->ids.v);
}

// The slot for (s, n): the matching one, or the empty one where it would go.
static CacheSlot *cache_slot(const WordCache *c, const char *s, size_t n, uint64_t h) {
    for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
        CacheSlot *sl = &c->slots[i];
        if (sl->key_len == 0) return sl;
        if (sl->hash == h && sl->key_len == n && memcmp(c->keys + sl->key_off, s, n) == 0) return sl;
    }
}

// Remembers ids[0..n_ids) for the pre-token s[0..n). Returns -1 on OOM.
static int cache_put(WordCache *c, const char *s, size_t n, uint64_t h, const int *ids, size_t n_ids) {
    if ((c->used + 1) * 2 > c->mask + 1 || !c->slots) {  // grow to keep the load under 1/2
        size_t cap = c->slots ? (c->mask + 1) * 2 : 1024;
        CacheSlot *slots = calloc(cap, sizeof(CacheSlot));
        if (!slots) return -1;
        WordCache grown = *c;
        grown.slots = slots;
        grown.mask = cap - 1;
        for (size_t i = 0; c->slots && i <= c->mask; i++)
            if (c->slots[i].key_len)
                *cache_slot(&grown, c->keys + c->slots[i].key_off, c->slots[i].key_len, c->slots[i].hash) = c->slots[i];
        free(c->slots);
        *c = grown;
    }
    if (c->keys_n + n > c->keys_cap) {
        size_t cap = (c->keys_cap + n) * 2;
        char *k = realloc(c->keys, cap);
        if (!k) return -1;
        c->keys = k;
        c->keys_cap = cap;
    }
    CacheSlot *sl = cache_slot(c, s, n, h);
    memcpy(c->keys + c->keys_n, s, n);
    *sl = (CacheSlot){h, c->keys_n, n, c->ids.n, n_ids};
    c->keys_n += n;
    for (size_t i = 0; i < n_ids; i++)
        if (ivec_push(&c->ids, ids[i])) return -1;
    c->used++;
    return 0;
}

// Symbols of one merge run: a doubly linked list over arrays.
typedef struct {
    int *id;         // token id of the symbol (-1: no piece, score mode only)
    size_t *start;   // byte offset in the text (score mode)
    size_t *len;     // byte length; 0 = merged away
    int *prev, *next;
    size_t cap;
    Heap heap;
    uint32_t *cps;   // pre-tokenizer: code points of a segment and their byte offsets
    size_t *offs;
    size_t cps_cap;
    char *text;      // SPM: normalised text
    size_t text_cap;
    IntVec init;     // SPM rank mode: ids before merging
    WordCache cache; // BPE: pre-token -> ids, for this call
} Work;

static void work_free(Work *w) {
    free(w->id); free(w->start); free(w->len); free(w->prev); free(w->next);
    free(w->heap.c); free(w->cps); free(w->offs); free(w->text); free(w->init.v);
    cache_free(&w->cache);
}

static int work_reserve(Work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t cap = n < 64 ? 64 : n;
    int *id = realloc(w->id, cap * sizeof(int));
    if (id) w->id = id;
    size_t *start = realloc(w->start, cap * sizeof(size_t));
    if (start) w->start = start;
    size_t *len = realloc(w->len, cap * sizeof(size_t));
    if (len) w->len = len;
    int *prev = realloc(w->prev, cap * sizeof(int));
    if (prev) w->prev = prev;
    int *next = realloc(w->next, cap * sizeof(int));
    if (next) w->next = next;
    if (!id || !start || !len || !prev || !next) return -1;
    w->cap = cap;
    return 0;
}

// Rank-ordered BPE over the token ids w->id[0..n) (their len[] must be non-zero), appended to out.
static int merge_by_rank(const Tokenizer *t, Work *w, size_t n, IntVec *out) {
    const TokImpl *im = t->impl;
    if (n > (size_t)INT_MAX) return -1;
    w->heap.n = 0;
    for (size_t i = 0; i < n; i++) {
        w->prev[i] = (int)i - 1;
        w->next[i] = (i + 1 < n) ? (int)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int result, rank = pair_find(im, w->id[i], w->id[i + 1], &result);
        if (rank >= 0 && heap_push(&w->heap, (Cand){rank, (int)i, (int)i + 1, w->id[i], w->id[i + 1], result}))
            return -1;
    }
    while (w->heap.n > 0) {
        Cand c = heap_pop(&w->heap);
        int l = c.left, r = c.right;
        if (w->len[l] == 0 || w->len[r] == 0 || w->next[l] != r || w->id[l] != c.a || w->id[r] != c.b) continue;
        w->id[l] = c.result;
        w->len[l] += w->len[r];
        w->len[r] = 0;
        w->next[l] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = l;
        int p = w->prev[l], q = w->next[l], result, rank;
        if (p >= 0 && (rank = pair_find(im, w->id[p], w->id[l], &result)) >= 0 &&
            heap_push(&w->heap, (Cand){rank, p, l, w->id[p], w->id[l], result}))
            return -1;
        if (q >= 0 && (rank = pair_find(im, w->id[l], w->id[q], &result)) >= 0 &&
            heap_push(&w->heap, (Cand){rank, l, q, w->id[l], w->id[q], result}))
            return -1;
    }
    for (int i = 0; i >= 0 && (size_t)i < n; i = w->next[i])
        if (ivec_push(out, w->id[i])) return -1;
    return 0;
}

// Score mode: the candidate for merging symbols l and r (adjacent spans of s), if it is a piece.
static int push_score_pair(const Tokenizer *t, Work *w, const char *s, int l, int r) {
    if (l < 0 || r < 0) return 0;
    size_t total = w->len[l] + w->len[r];
    int id = lookup_mergeable(t, s + w->start[l], total);
    if (id < 0) return 0;
    double key = t->scores ? -(double)t->scores[id] : 0.0;
    return heap_push(&w->heap, (Cand){key, l, r, (int)total, 0, id});
}

// Appends the fallback for a symbol with no piece: its bytes as <0xXX> tokens, else <unk>.
static int push_fallback(const Tokenizer *t, const unsigned char *s, size_t n, IntVec *out, char *err) {
    const TokImpl *im = t->impl;
    int all_bytes = im->byte_fallback;
    for (size_t i = 0; i < n && all_bytes; i++)
        if (im->byte_ids[s[i]] < 0) all_bytes = 0;
    if (all_bytes) {
        for (size_t i = 0; i < n; i++)
            if (ivec_push(out, im->byte_ids[s[i]])) return ftk_err(err, "tokenizer: out of memory");
        return 0;
    }
    if (t->unk_id < 0)
        return ftk_err(err, "tokenizer: cannot encode byte 0x%02X: no piece, no byte token and no <unk>", s[0]);
    if (ivec_push(out, t->unk_id)) return ftk_err(err, "tokenizer: out of memory");
    return 0;
}

// SentencePiece-BPE of one word s[0..n) of normalised text (spaces already "▁").
static int encode_spm_word(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out, char *err) {
    if (work_reserve(w, n + 1)) return ftk_err(err, "tokenizer: out of memory");
    // One symbol per UTF-8 character (a malformed byte is a character of its own).
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        w->start[ns] = i;
        w->len[ns] = (size_t)l;
        w->id[ns] = lookup_mergeable(t, s + i, (size_t)l);
        ns++;
        i += (size_t)l;
    }
    if (t->n_merges > 0) {
        // HF BPE with byte_fallback: characters without a piece become byte tokens (or one
        // fused <unk> per run) before merging, and merges go by rank.
        IntVec *init = &w->init;
        init->n = 0;
        for (size_t k = 0; k < ns; k++) {
            if (w->id[k] >= 0) {
                if (ivec_push(init, w->id[k])) return ftk_err(err, "tokenizer: out of memory");
            } else {
                size_t before = init->n;
                if (push_fallback(t, (const unsigned char *)s + w->start[k], w->len[k], init, err)) return -1;
                // fuse_unk: consecutive <unk> collapse into one
                if (init->n == before + 1 && init->v[before] == t->unk_id && before > 0 &&
                    init->v[before - 1] == t->unk_id)
                    init->n--;
            }
        }
        if (work_reserve(w, init->n + 1)) return ftk_err(err, "tokenizer: out of memory");
        for (size_t k = 0; k < init->n; k++) {
            w->id[k] = init->v[k];
            w->len[k] = 1;
        }
        if (merge_by_rank(t, w, init->n, out)) return ftk_err(err, "tokenizer: out of memory");
        return 0;
    }
    // Score mode (llama.cpp llm_tokenizer_spm): merge the best-scoring adjacent pair first.
    w->heap.n = 0;
    for (size_t k = 0; k < ns; k++) {
        w->prev[k] = (int)k - 1;
        w->next[k] = (k + 1 < ns) ? (int)k + 1 : -1;
    }
    for (size_t k = 0; k + 1 < ns; k++)
        if (push_score_pair(t, w, s, (int)k, (int)k + 1)) return ftk_err(err, "tokenizer: out of memory");
    while (w->heap.n > 0) {
        Cand c = heap_pop(&w->heap);
        int l = c.left, r = c.right;
        if (w->len[l] == 0 || w->len[r] == 0 || w->next[l] != r || w->len[l] + w->len[r] != (size_t)c.a) continue;
        w->id[l] = c.result;
        w->len[l] += w->len[r];
        w->len[r] = 0;
        w->next[l] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = l;
        if (push_score_pair(t, w, s, w->prev[l], l) || push_score_pair(t, w, s, l, w->next[l]))
            return ftk_err(err, "tokenizer: out of memory");
    }
    for (int k = 0; k >= 0 && (size_t)k < ns; k = w->next[k]) {
        if (w->id[k] >= 0) {
            if (ivec_push(out, w->id[k])) return ftk_err(err, "tokenizer: out of memory");
        } else if (push_fallback(t, (const unsigned char *)s + w->start[k], w->len[k], out, err)) {
            return -1;
        }
    }
    return 0;
}

// Cuts normalised text into words that no merge can span, and encodes each on its own. A merge
// spans the boundary in front of a "▁" only if some piece holds the byte before it followed by
// "▁" (im->glue_byte). Merges on the two sides of a boundary no merge spans never interact,
// and within a word the heap order (best first, then leftmost) is the same as over the whole
// text, so the result is exactly that of one merge run over the whole text, with small heaps.
static int encode_spm_words(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out, char *err) {
    const TokImpl *im = t->impl;
    size_t word = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        if (memcmp(s + i, SPM_SPACE, 3) != 0 || im->glue_byte[(unsigned char)s[i - 1]]) continue;
        if (encode_spm_word(t, w, s + word, i - word, out, err)) return -1;
        word = i;
    }
    return encode_spm_word(t, w, s + word, n - word, out, err);
}

// SPM: one run of plain text between special tokens. Adds the dummy prefix when asked, turns
// spaces into "▁" and encodes.
static int encode_spm_segment(const Tokenizer *t, Work *w, const char *s, size_t n, int prefix, IntVec *out,
                              char *err) {
    size_t need;
    if (ftk_mul(n + 1, 3, &need)) return ftk_err(err, "tokenizer: text too long");
    if (need > w->text_cap) {
        char *p = realloc(w->text, need);
        if (!p) return ftk_err(err, "tokenizer: out of memory");
        w->text = p;
        w->text_cap = need;
    }
    size_t k = 0;
    if (prefix) { memcpy(w->text, SPM_SPACE, 3); k = 3; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(w->text + k, SPM_SPACE, 3); k += 3; }
        else w->text[k++] = s[i];
    }
    return encode_spm_words(t, w, w->text, k, out, err);
}

// Byte-level BPE of one pre-token s[0..n).
static int encode_bpe_word_uncached(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out, char *err) {
    const TokImpl *im = t->impl;
    if (im->ignore_merges) {
        // The whole pre-token in its byte-unicode form, if that is a piece.
        char buf[512];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 4 < sizeof buf; i++)
            k += (size_t)utf8_encode(gpt2_byte_to_cp((unsigned char)s[i]), buf + k);
        int id = (n * 4 < sizeof buf) ? lookup(t, buf, k) : -1;
        if (id >= 0) return ivec_push(out, id) ? ftk_err(err, "tokenizer: out of memory") : 0;
    }
    if (work_reserve(w, n + 1)) return ftk_err(err, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) {
        int id = im->byte_ids[(unsigned char)s[i]];
        if (id < 0) id = t->unk_id;
        if (id < 0) return ftk_err(err, "tokenizer: byte 0x%02X has no token", (unsigned char)s[i]);
        w->id[i] = id;
        w->len[i] = 1;
    }
    if (merge_by_rank(t, w, n, out)) return ftk_err(err, "tokenizer: out of memory");
    return 0;
}

static int encode_bpe_word(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out, char *err) {
    if (n > CACHE_MAX_WORD) return encode_bpe_word_uncached(t, w, s, n, out, err);
    uint64_t h = hash_bytes(s, n);
    const CacheSlot *sl = w->cache.slots ? cache_slot(&w->cache, s, n, h) : NULL;
    if (sl && sl->key_len) {
        for (size_t i = 0; i < sl->ids_len; i++)
            if (ivec_push(out, w->cache.ids.v[sl->ids_off + i])) return ftk_err(err, "tokenizer: out of memory");
        return 0;
    }
    size_t before = out->n;
    if (encode_bpe_word_uncached(t, w, s, n, out, err)) return -1;
    if (cache_put(&w->cache, s, n, h, out->v + before, out->n - before)) return ftk_err(err, "tokenizer: out of memory");
    return 0;
}

static int encode_bpe_segment(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out, char *err) {
    const TokImpl *im = t->impl;
    if (t->add_space_prefix && s[0] != ' ') {
        // ByteLevel add_prefix_space: the segment is encoded as if it began with a space.
        if (n + 2 > w->text_cap) {
            char *p = realloc(w->text, n + 2);
            if (!p) return ftk_err(err, "tokenizer: out of memory");
            w->text = p;
            w->text_cap = n + 2;
        }
        w->text[0] = ' ';
        memcpy(w->text + 1, s, n);
        s = w->text;
        n++;
    }
    if (n + 1 > w->cps_cap) {
        uint32_t *cps = realloc(w->cps, (n + 1) * sizeof(uint32_t));
        if (cps) w->cps = cps;
        size_t *offs = realloc(w->offs, (n + 1) * sizeof(size_t));
        if (offs) w->offs = offs;
        if (!cps || !offs) return ftk_err(err, "tokenizer: out of memory");
        w->cps_cap = n + 1;
    }
    size_t ncp = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        w->cps[ncp] = cp;
        w->offs[ncp++] = i;
        i += (size_t)l;
    }
    w->offs[ncp] = n;
    // HF Digits pre-tokenizer (before ByteLevel): numbers are split off first, each digit alone or
    // each run of digits; the regex then runs on the stretches between them separately.
    for (size_t a = 0; a < ncp;) {
        size_t b = ncp;
        if (im->split_digits && unicode_is_number(w->cps[a])) {
            b = a + 1;
            while (im->split_digits == 2 && b < ncp && unicode_is_number(w->cps[b])) b++;
            if (encode_bpe_word(t, w, s + w->offs[a], w->offs[b] - w->offs[a], out, err)) return -1;
            a = b;
            continue;
        }
        if (im->split_digits)
            for (b = a; b < ncp && !unicode_is_number(w->cps[b]);) b++;
        const uint32_t *cps = w->cps + a;
        for (size_t i = 0; i < b - a;) {
            size_t j = im->pretok == PRETOK_LLAMA3  ? pretok_llama3_next(cps, b - a, i)
                     : im->pretok == PRETOK_QWEN2 ? pretok_qwen2_next(cps, b - a, i)
                                                  : pretok_gpt2_next(cps, b - a, i);
            if (encode_bpe_word(t, w, s + w->offs[a + i], w->offs[a + j] - w->offs[a + i], out, err)) return -1;
            i = j;
        }
        a = b;
    }
    return 0;
}

// The special token (CONTROL unless !parse_special, or USER_DEFINED) that s[pos..n) starts with, or -1.
static int match_special(const Tokenizer *t, const char *s, size_t n, size_t pos, int parse_special) {
    const TokImpl *im = t->impl;
    unsigned char b = (unsigned char)s[pos];
    for (int k = im->special_start[b]; k < im->special_start[b + 1]; k++) {
        int id = im->special_ids[k];
        if (!parse_special && t->types[id] == TOKT_CONTROL) continue;
        size_t l = im->piece_len[id];
        if (l <= n - pos && memcmp(s + pos, t->pieces[id], l) == 0) return id;
    }
    return -1;
}

static int encode_segment(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out, char *err) {
    if (n == 0) return 0;
    if (t->kind == TOK_SPM) return encode_spm_segment(t, w, s, n, t->add_space_prefix, out, err);
    return encode_bpe_segment(t, w, s, n, out, err);
}

int tokenizer_encode_ex(const Tokenizer *t, const char *text, size_t len, int add_bos, int add_eos,
                        int parse_special, int **ids, int *n_ids, char *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!t || !text) return ftk_err(err, "tokenizer_encode: NULL argument");
    if (add_bos < 0) add_bos = t->add_bos;
    if (add_eos < 0) add_eos = t->add_eos;
    IntVec out = {0};
    Work w = {0};
    const TokImpl *im = t->impl;
    int rc = 0;
    if (add_bos && t->bos_id >= 0 && ivec_push(&out, t->bos_id)) rc = ftk_err(err, "tokenizer: out of memory");
    // Split out special tokens; the text between them is encoded on its own. Every such run
    // starts the text or follows a special token, so in SPM each gets the dummy prefix
    // (llama.cpp's is_prev_special).
    size_t seg = 0, pos = 0;
    while (!rc && pos < len) {
        int id = -1;
        unsigned char b = (unsigned char)text[pos];
        if (im->special_start[b] < im->special_start[b + 1]) id = match_special(t, text, len, pos, parse_special);
        if (id < 0) { pos++; continue; }
        rc = encode_segment(t, &w, text + seg, pos - seg, &out, err);
        if (!rc && ivec_push(&out, id)) rc = ftk_err(err, "tokenizer: out of memory");
        pos += im->piece_len[id];
        seg = pos;
    }
    if (!rc) rc = encode_segment(t, &w, text + seg, len - seg, &out, err);
    if (!rc && add_eos && t->eos_id >= 0 && ivec_push(&out, t->eos_id)) rc = ftk_err(err, "tokenizer: out of memory");
    work_free(&w);
    if (rc) { free(out.v); return -1; }
    if (out.n > (size_t)INT_MAX) { free(out.v); return ftk_err(err, "tokenizer: too many tokens"); }
    if (!out.v) out.v = malloc(sizeof(int));  // a valid pointer even for zero tokens
    if (!out.v) return ftk_err(err, "tokenizer: out of memory");
    *ids = out.v;
    *n_ids = (int)out.n;
    return 0;
}

int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int add_eos, int **ids, int *n_ids,
                     char *err) {
    if (!text) return ftk_err(err, "tokenizer_encode: NULL text");
    return tokenizer_encode_ex(t, text, strlen(text), add_bos, add_eos, 1, ids, n_ids, err);
}

// ---------------------------------------------------------------------------------------------
// Decoding

static void put(char *out, size_t cap, size_t *k, char c) {
    if (*k < cap) out[*k] = c;
    (*k)++;
}

// Writes the text token id stands for into out (at most cap bytes) and returns its full length.
// strip_space: drop a leading space (the SPM dummy prefix).
static size_t render_token(const Tokenizer *t, int id, int strip_space, char *out, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    const TokImpl *im = t->impl;
    const char *p = t->pieces[id];
    size_t n = im->piece_len[id], k = 0;
    int ty = t->types[id];
    if (ty == TOKT_CONTROL || ty == TOKT_UNUSED) return 0;
    if (ty == TOKT_BYTE && parse_byte_piece(p) >= 0) {
        put(out, cap, &k, (char)parse_byte_piece(p));
        return k;
    }
    if (ty != TOKT_NORMAL) {  // USER_DEFINED and UNKNOWN: the piece text as it is
        for (size_t i = 0; i < n; i++) put(out, cap, &k, p[i]);
        return k;
    }
    if (t->kind == TOK_SPM) {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(p + i, SPM_SPACE, 3) == 0) {
                if (!(strip_space && k == 0)) put(out, cap, &k, ' ');
                strip_space = 0;
                i += 3;
            } else {
                strip_space = 0;
                put(out, cap, &k, p[i++]);
            }
        }
        return k;
    }
    for (size_t i = 0; i < n;) {  // byte-level: each code point of the piece is one byte
        uint32_t cp;
        int l = utf8_decode((const unsigned char *)p + i, n - i, &cp);
        if (cp < 0x144 && im->cp_byte[cp] >= 0) {
            put(out, cap, &k, (char)im->cp_byte[cp]);
        } else {
            for (int j = 0; j < l; j++) put(out, cap, &k, p[i + j]);
        }
        i += (size_t)l;
    }
    return k;
}

// Whether the token after `prev` starts a text run (decode drops its dummy-prefix space).
static int starts_run(const Tokenizer *t, int prev) {
    return prev < 0 || prev >= t->n_vocab || t->types[prev] == TOKT_CONTROL;
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids) {
    if (!t || (n_ids > 0 && !ids)) return NULL;
    const TokImpl *im = t->impl;
    size_t cap = 1;
    for (int i = 0; i < n_ids; i++)
        if (ids[i] >= 0 && ids[i] < t->n_vocab) cap += im->piece_len[ids[i]];
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t k = 0;
    int strip_ok = (t->kind == TOK_SPM && t->add_space_prefix);
    for (int i = 0; i < n_ids; i++) {
        int strip = strip_ok && starts_run(t, i > 0 ? ids[i - 1] : -1);
        k += render_token(t, ids[i], strip, s + k, cap - 1 - k);
    }
    s[k] = 0;
    return s;
}

int tokenizer_token_bytes(const Tokenizer *t, int prev, int id, char *buf) {
    int strip = t->kind == TOK_SPM && t->add_space_prefix && starts_run(t, prev);
    size_t n = render_token(t, id, strip, buf, 255);
    if (n > 255) n = 255;
    buf[n] = 0;
    return (int)n;
}
