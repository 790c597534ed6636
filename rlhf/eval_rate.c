// eval_rate.c — see eval_rate.h.
#include "rlhf/eval_rate.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "model/common.h"
#include "model/tokenizer.h"

void rate_options_default(RateOptions *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->word, sizeof o->word, "dog");
    o->samples_per_prompt = 10;
    o->gen = gen_params_default();
    o->gen.temperature = 1.0f;
    o->gen.top_p = 0.9f;
    o->gen.max_new_tokens = 128;
    o->seed = 8;
    o->chunk = 100;
}

static int is_word_char(unsigned char c) { return isalnum(c) || c == '_'; }

int text_has_word(const char *text, const char *word) {
    const size_t n = strlen(word);
    if (n == 0) return 0;
    for (const char *p = text; *p; p++) {
        if (strncasecmp(p, word, n) != 0) continue;
        int before_ok = p == text || !is_word_char((unsigned char)p[-1]);
        int after_ok = !is_word_char((unsigned char)p[n]);
        if (before_ok && after_ok) return 1;
    }
    return 0;
}

void wilson_interval(long k, long n, double z, double *lo, double *hi) {
    if (n <= 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    const double p = (double)k / n, z2 = z * z;
    const double den = 1 + z2 / n;
    const double centre = (p + z2 / (2.0 * n)) / den;
    const double half = z * sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / den;
    *lo = centre - half < 0 ? 0 : centre - half;
    *hi = centre + half > 1 ? 1 : centre + half;
}

int word_rate_eval(const Model *m, const ModelAdapters *hooks, const Dataset *prompts, const RateOptions *o,
                   const char *samples_jsonl, RateResult *res, char *err) {
    memset(res, 0, sizeof *res);
    if (!o->word[0] || strchr(o->word, ' ')) return ftk_err(err, "eval rate: the word must be non-empty without spaces");
    if (o->samples_per_prompt < 1) return ftk_err(err, "eval rate: samples per prompt must be >= 1");
    if (!m->tok) return ftk_err(err, "eval rate: the model has no tokenizer to decode samples");
    if (prompts->n < 1) return ftk_err(err, "%s: no prompts", prompts->path);
    const long total = (long)prompts->n * o->samples_per_prompt;
    const int chunk = o->chunk > 0 ? o->chunk : 100;
    const double t0 = ftk_now();
    const int **pp = malloc(sizeof(int *) * (size_t)chunk);
    int *plen = malloc(sizeof(int) * (size_t)chunk), *olen = malloc(sizeof(int) * (size_t)chunk);
    int **otok = calloc((size_t)chunk, sizeof(int *));
    cJSON *lines = samples_jsonl ? cJSON_CreateArray() : NULL;
    uint64_t rng = o->seed;
    long hits = 0, new_tokens = 0;
    int rc = -1;
    if (!pp || !plen || !olen || !otok || (samples_jsonl && !lines)) {
        ftk_err(err, "eval rate: out of memory");
        goto done;
    }
    // Sample j of prompt i is sequence i * samples_per_prompt + j, generated in chunks.
    for (long s0 = 0; s0 < total; s0 += chunk) {
        const int n = total - s0 < chunk ? (int)(total - s0) : chunk;
        for (int k = 0; k < n; k++) {
            const int item = (int)((s0 + k) / o->samples_per_prompt);
            pp[k] = dataset_seq_ids(prompts, item);
            plen[k] = dataset_seq(prompts, item)->len;
        }
        if (generate(m, hooks, pp, plen, n, &o->gen, &rng, otok, olen, NULL, err)) goto done;
        for (int k = 0; k < n; k++) {
            char *text = tokenizer_decode(m->tok, otok[k], olen[k]);
            if (!text) {
                ftk_err(err, "eval rate: out of memory decoding a sample");
                goto done;
            }
            const int match = text_has_word(text, o->word);
            hits += match;
            new_tokens += olen[k];
            if (lines) {
                cJSON *l = cJSON_CreateObject();
                cJSON_AddNumberToObject(l, "prompt_index", (double)((s0 + k) / o->samples_per_prompt));
                cJSON_AddNumberToObject(l, "sample", (double)((s0 + k) % o->samples_per_prompt));
                cJSON_AddStringToObject(l, "text", text);
                cJSON_AddBoolToObject(l, "match", match);
                cJSON_AddItemToArray(lines, l);
            }
            free(text);
            free(otok[k]);
            otok[k] = NULL;
        }
    }
    res->hits = hits;
    res->total = total;
    res->rate = (double)hits / (double)total;
    wilson_interval(hits, total, 1.96, &res->ci_lo, &res->ci_hi);
    res->mean_new_tokens = (double)new_tokens / (double)total;
    res->seconds = ftk_now() - t0;
    if (lines) {
        // One JSON object per line, written in one atomic file.
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        if (!buf) {
            ftk_err(err, "%s: out of memory", samples_jsonl);
            goto done;
        }
        for (cJSON *l = lines->child; l; l = l->next) {
            char *s = cJSON_PrintUnformatted(l);
            size_t sl = s ? strlen(s) : 0;
            while (s && len + sl + 2 > cap) {
                char *nb = realloc(buf, cap * 2);
                if (!nb) break;
                buf = nb;
                cap *= 2;
            }
            if (!s || len + sl + 2 > cap) {
                free(s);
                free(buf);
                ftk_err(err, "%s: out of memory", samples_jsonl);
                goto done;
            }
            memcpy(buf + len, s, sl);
            len += sl;
            buf[len++] = '\n';
            free(s);
        }
        int wrc = ftk_write_file_atomic(samples_jsonl, buf, len, err);
        free(buf);
        if (wrc) goto done;
    }
    rc = 0;
done:
    if (otok)
        for (int k = 0; k < chunk; k++) free(otok[k]);
    free(otok);
    free(pp);
    free(plen);
    free(olen);
    cJSON_Delete(lines);
    return rc;
}
