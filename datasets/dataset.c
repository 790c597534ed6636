// dataset.c — see dataset.h.
#include "datasets/dataset.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/jsonl.h"
#include "datasets/shuffle.h"
#include "model/common.h"

DatasetOptions dataset_options_default(DatasetKind kind) {
    DatasetOptions o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.template_kind = TPL_AUTO;
    o.add_eos = 1;
    o.long_prompt = LONG_PROMPT_AUTO;
    return o;
}

void dataset_free(Dataset *ds) {
    free(ds->seqs);
    free(ds->ids);
    free(ds->mask);
    memset(ds, 0, sizeof *ds);
}

static void init_empty(Dataset *ds, DatasetKind kind, const char *path, int bos, int eos, int pad) {
    memset(ds, 0, sizeof *ds);
    ds->kind = kind;
    snprintf(ds->path, sizeof ds->path, "%s", path);
    ds->seqs_per_item = kind == DS_PREFERENCE ? 2 : 1;
    ds->bos_id = bos;
    ds->eos_id = eos;
    ds->pad_id = pad;
}

// Grows the arenas to hold one more item of k sequences with `tokens` tokens in all.
static int reserve(Dataset *ds, int k, size_t tokens, char *err) {
    size_t need;
    if (ftk_add(ds->n_tokens, tokens, &need) != 0) return ftk_err(err, "%s: dataset too large", ds->path);
    if (need > ds->cap_tokens) {
        size_t cap = ds->cap_tokens ? ds->cap_tokens : (size_t)1 << 16, bytes;
        while (cap < need)
            if (ftk_mul(cap, 2, &cap) != 0) return ftk_err(err, "%s: dataset too large", ds->path);
        if (ftk_mul(cap, sizeof(int), &bytes) != 0) return ftk_err(err, "%s: dataset too large", ds->path);
        int *ids = realloc(ds->ids, bytes);
        if (!ids) return ftk_err(err, "%s: out of memory", ds->path);
        ds->ids = ids;
        unsigned char *mask = realloc(ds->mask, cap);
        if (!mask) return ftk_err(err, "%s: out of memory", ds->path);
        ds->mask = mask;
        ds->cap_tokens = cap;
    }
    int n_seqs = ds->n * ds->seqs_per_item;
    if (n_seqs > (1 << 30) - k) return ftk_err(err, "%s: too many records", ds->path);
    if (n_seqs + k > ds->cap_seqs) {
        int cap = ds->cap_seqs ? ds->cap_seqs : 1024;
        while (cap < n_seqs + k) cap *= 2;
        Example *seqs = realloc(ds->seqs, (size_t)cap * sizeof(Example));
        if (!seqs) return ftk_err(err, "%s: out of memory", ds->path);
        ds->seqs = seqs;
        ds->cap_seqs = cap;
    }
    return 0;
}

// Appends one item (seqs_per_item sequences given as ids/mask arrays).
static int push_item(Dataset *ds, const int *const *ids, const unsigned char *const *mask, const int *len,
                     const int *n_prompt, int line, char *err) {
    size_t tokens = 0;
    for (int k = 0; k < ds->seqs_per_item; k++) tokens += (size_t)len[k];
    if (reserve(ds, ds->seqs_per_item, tokens, err) != 0) return -1;
    for (int k = 0; k < ds->seqs_per_item; k++) {
        Example *e = &ds->seqs[ds->n * ds->seqs_per_item + k];
        e->offset = ds->n_tokens;
        e->len = len[k];
        e->n_prompt = n_prompt[k];
        e->line = line;
        memcpy(ds->ids + ds->n_tokens, ids[k], (size_t)len[k] * sizeof(int));
        memcpy(ds->mask + ds->n_tokens, mask[k], (size_t)len[k]);
        ds->n_tokens += (size_t)len[k];
    }
    ds->n++;
    return 0;
}

// Token statistics over every sequence.
static void compute_token_stats(Dataset *ds) {
    DatasetSummary *s = &ds->summary;
    s->records_used = ds->n;
    s->total_tokens = s->trained_tokens = 0;
    s->max_len = 0;
    int n_seqs = ds->n * ds->seqs_per_item;
    for (int i = 0; i < n_seqs; i++) {
        const Example *e = &ds->seqs[i];
        s->total_tokens += e->len;
        for (int t = 0; t < e->len; t++) s->trained_tokens += ds->mask[e->offset + (size_t)t];
        if (e->len > s->max_len) s->max_len = e->len;
    }
    s->mean_len = n_seqs > 0 ? (double)s->total_tokens / n_seqs : 0.0;
}

// Counts a skipped record under its reason (grouped without details in parentheses).
static void count_skip(DatasetSummary *s, const char *reason, int line) {
    char key[sizeof s->skip_reasons[0].reason];
    snprintf(key, sizeof key, "%.*s", (int)sizeof key - 1, reason);
    char *paren = strstr(key, " (");
    if (paren) *paren = 0;
    s->skipped++;
    for (int i = 0; i < s->n_skip_reasons; i++) {
        if (strcmp(s->skip_reasons[i].reason, key) == 0) {
            s->skip_reasons[i].count++;
            return;
        }
    }
    SkipCount *c;
    if (s->n_skip_reasons < DS_MAX_SKIP_REASONS) {
        c = &s->skip_reasons[s->n_skip_reasons++];
        snprintf(c->reason, sizeof c->reason, "%s", s->n_skip_reasons == DS_MAX_SKIP_REASONS ? "other reasons" : key);
        c->first_line = line;
    } else {
        c = &s->skip_reasons[DS_MAX_SKIP_REASONS - 1];
    }
    c->count++;
}

// One record from JSON to the arena. Returns 0 (used, dropped, or a bad record: *bad = 1 with the
// reason in `reason`), or -1 on a fault that stops loading (err filled).
static int load_record(Dataset *ds, const cJSON *json, int line, const DatasetOptions *opt,
                       const TokenizeOptions *to, const TokEncoder *enc, int *bad, char *reason, size_t reason_len,
                       char *err) {
    Record rec;
    TemplatedText tt;
    *bad = 0;
    if (record_parse(json, ds->kind, &rec, reason, reason_len) != 0) {
        *bad = 1;
        return 0;
    }
    if (template_apply(opt->template_kind, &rec, ds->kind, &tt, reason, reason_len) != 0) {
        record_free(&rec);
        *bad = 1;
        return 0;
    }
    const char *responses[2] = {tt.response, tt.rejected};
    int n_resp = ds->kind == DS_SFT ? 1 : ds->kind == DS_PREFERENCE ? 2 : 0;
    TokSeq seq[2];
    TokFlags flags;
    char msg[FTK_ERR_LEN];
    TokenizeOptions rec_opt = *to;
    rec_opt.parse_special = tt.used == TPL_CHATML;   // the template's markers may be special tokens
    int rc = tokenize_example(enc, &rec_opt, tt.prompt, responses, n_resp, seq, &flags, msg);
    int out = 0;
    if (rc < 0) {
        out = ftk_err(err, "%s:%d: %s", ds->path, line, msg);
    } else if (rc == TOK_DROP_EMPTY) {
        ds->summary.dropped_empty++;
    } else if (rc == TOK_DROP_LONG_PROMPT) {
        ds->summary.dropped_long_prompt++;
    } else {
        const int *ids[2] = {seq[0].ids, seq[1].ids};
        const unsigned char *mask[2] = {seq[0].mask, seq[1].mask};
        int len[2] = {seq[0].len, seq[1].len}, n_prompt[2] = {seq[0].n_prompt, seq[1].n_prompt};
        out = push_item(ds, ids, mask, len, n_prompt, line, err);
        ds->summary.truncated += flags.truncated;
        ds->summary.prefix_fallbacks += flags.prefix_fallback;
        ds->summary.shapes[rec.shape]++;
        for (int k = 0; k < (n_resp > 0 ? n_resp : 1); k++) tokseq_free(&seq[k]);
    }
    templated_free(&tt);
    record_free(&rec);
    return out;
}

int dataset_load(Dataset *ds, const char *path, const DatasetOptions *opt, const TokEncoder *enc, char *err) {
    init_empty(ds, opt->kind, path, enc->bos_id, enc->eos_id, enc->pad_id);
    if (opt->max_seq_length < 0 || opt->max_seq_length == 1)
        return ftk_err(err, "%s: max_seq_length %d is too small (0 = no limit, else at least 2)", path,
                       opt->max_seq_length);
    TokenizeOptions to;
    to.max_seq_length = opt->max_seq_length;
    to.add_eos = opt->add_eos;
    to.train_on_prompt = opt->train_on_prompt;
    to.long_prompt = opt->long_prompt;
    to.parse_special = 0;
    if (to.long_prompt == LONG_PROMPT_AUTO) to.long_prompt = opt->kind == DS_SFT ? LONG_PROMPT_TRUNCATE : LONG_PROMPT_SKIP;

    JsonReader *r;
    if (json_reader_open(&r, path, err) != 0) return -1;
    char msg[FTK_ERR_LEN], reason[FTK_ERR_LEN];
    int rc = 0;
    for (;;) {
        cJSON *json = NULL;
        int line = 0, bad = 0;
        int got = json_reader_next(r, &json, &line, msg);
        if (got < 0) {
            rc = ftk_err(err, "%s", msg);
            break;
        }
        if (got == JR_END) break;
        ds->summary.records_read++;
        if (got == JR_BAD) {
            // msg is "path:line: reason"; keep the reason for the counts.
            char prefix[4200];
            int pl = snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
            snprintf(reason, sizeof reason, "%s", strncmp(msg, prefix, (size_t)pl) == 0 ? msg + pl : msg);
            bad = 1;
        } else {
            rc = load_record(ds, json, line, opt, &to, enc, &bad, reason, sizeof reason, err);
            cJSON_Delete(json);
            if (rc != 0) break;
        }
        if (bad) {
            if (!opt->skip_bad_lines) {
                rc = ftk_err(err, "%s:%d: %s", path, line, reason);
                break;
            }
            count_skip(&ds->summary, reason, line);
        }
    }
    json_reader_close(r);
    if (rc == 0 && ds->summary.records_read == 0) rc = ftk_err(err, "%s: no records (empty file)", path);
    if (rc == 0 && ds->n == 0)
        rc = ftk_err(err, "%s: no usable records (%ld read, %ld skipped as bad, %ld dropped: %ld empty after "
                          "truncation, %ld with a prompt longer than max_seq_length)",
                     path, ds->summary.records_read, ds->summary.skipped,
                     ds->summary.dropped_empty + ds->summary.dropped_long_prompt, ds->summary.dropped_empty,
                     ds->summary.dropped_long_prompt);
    if (rc != 0) {
        dataset_free(ds);
        return -1;
    }
    compute_token_stats(ds);
    return 0;
}

// Copies item i of src to the end of dst.
static int copy_item(Dataset *dst, const Dataset *src, int i, char *err) {
    const int *ids[2];
    const unsigned char *mask[2];
    int len[2], n_prompt[2];
    for (int k = 0; k < src->seqs_per_item; k++) {
        int s = i * src->seqs_per_item + k;
        ids[k] = dataset_seq_ids(src, s);
        mask[k] = dataset_seq_mask(src, s);
        len[k] = src->seqs[s].len;
        n_prompt[k] = src->seqs[s].n_prompt;
    }
    return push_item(dst, ids, mask, len, n_prompt, src->seqs[i * src->seqs_per_item].line, err);
}

int dataset_split(const Dataset *all, double fraction, uint64_t seed, Dataset *train, Dataset *val, char *err) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (!(fraction > 0.0 && fraction < 1.0))
        return ftk_err(err, "%s: validation split %g must be between 0 and 1", all->path, fraction);
    if (all->n < 2) return ftk_err(err, "%s: %d record(s) cannot be split into train and validation", all->path, all->n);
    int n_val = (int)(fraction * all->n + 0.5);
    if (n_val < 1) n_val = 1;
    if (n_val > all->n - 1) n_val = all->n - 1;

    // The first n_val indices of a seeded permutation go to validation.
    int *perm = malloc((size_t)all->n * sizeof(int));
    unsigned char *is_val = calloc((size_t)all->n, 1);
    if (!perm || !is_val) {
        free(perm);
        free(is_val);
        return ftk_err(err, "%s: out of memory", all->path);
    }
    for (int i = 0; i < all->n; i++) perm[i] = i;
    uint64_t rng = shuffle_rng_init(seed, 0x5B117);   // stream reserved for the validation split
    shuffle_ints(perm, all->n, &rng);
    for (int i = 0; i < n_val; i++) is_val[perm[i]] = 1;
    free(perm);

    init_empty(train, all->kind, all->path, all->bos_id, all->eos_id, all->pad_id);
    init_empty(val, all->kind, all->path, all->bos_id, all->eos_id, all->pad_id);
    int rc = 0;
    for (int i = 0; i < all->n && rc == 0; i++) rc = copy_item(is_val[i] ? val : train, all, i, err);
    free(is_val);
    if (rc != 0) {
        dataset_free(train);
        dataset_free(val);
        return -1;
    }
    train->summary = all->summary;
    compute_token_stats(train);
    compute_token_stats(val);
    return 0;
}

// snprintf at buf + *off, advancing *off (never past n).
static void appendf(char *buf, size_t n, size_t *off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t n, size_t *off, const char *fmt, ...) {
    if (*off >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *off, n - *off, fmt, ap);
    va_end(ap);
    if (w > 0) *off += (size_t)w;
}

void dataset_summary_format(const Dataset *ds, char *buf, size_t n) {
    const DatasetSummary *s = &ds->summary;
    size_t off = 0;
    if (n) buf[0] = 0;
    appendf(buf, n, &off, "%s: %ld records read, %ld %s used", ds->path, s->records_read, s->records_used,
            ds->kind == DS_PREFERENCE ? "pairs" : "examples");
    int first = 1;
    for (int i = 0; i < REC_N_SHAPES; i++) {
        if (!s->shapes[i]) continue;
        appendf(buf, n, &off, "%s%s %ld", first ? " (" : ", ", record_shape_name((RecordShape)i), s->shapes[i]);
        first = 0;
    }
    appendf(buf, n, &off, "%s\n", first ? "" : ")");
    appendf(buf, n, &off,
            "  skipped %ld, truncated %ld, dropped %ld (empty after truncation %ld, long prompt %ld), "
            "prompt/response encoded separately %ld\n",
            s->skipped, s->truncated, s->dropped_empty + s->dropped_long_prompt, s->dropped_empty,
            s->dropped_long_prompt, s->prefix_fallbacks);
    for (int i = 0; i < s->n_skip_reasons; i++)
        appendf(buf, n, &off, "  skipped %ld: %s (first at line %d)\n", s->skip_reasons[i].count,
                s->skip_reasons[i].reason, s->skip_reasons[i].first_line);
    appendf(buf, n, &off, "  tokens %ld, trained %ld, length max %d mean %.1f\n", s->total_tokens, s->trained_tokens,
            s->max_len, s->mean_len);
}
