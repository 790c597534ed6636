// reward_rule.c — see reward_rule.h.
#include "rlhf/reward_rule.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/tokenizer.h"

static int is_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

int reward_rule_parse(RewardRule *r, const char *spec, char *err) {
    memset(r, 0, sizeof *r);
    const char *colon = spec ? strchr(spec, ':') : NULL;
    if (!colon) return ftk_err(err, "reward rule '%s': expected contains:WORD or count:WORD", spec ? spec : "");
    size_t klen = (size_t)(colon - spec);
    if (klen == 8 && strncmp(spec, "contains", 8) == 0) r->kind = REWARD_RULE_CONTAINS;
    else if (klen == 5 && strncmp(spec, "count", 5) == 0) r->kind = REWARD_RULE_COUNT;
    else return ftk_err(err, "reward rule '%s': unknown kind '%.*s' (contains, count)", spec, (int)klen, spec);
    const char *w = colon + 1;
    size_t n = strlen(w);
    if (n == 0) return ftk_err(err, "reward rule '%s': empty word", spec);
    if (n >= sizeof r->word) return ftk_err(err, "reward rule '%s': word longer than %zu bytes", spec, sizeof r->word - 1);
    if (!is_word_byte((unsigned char)w[0]) || !is_word_byte((unsigned char)w[n - 1]))
        return ftk_err(err, "reward rule '%s': the word must start and end with a letter, digit or '_'", spec);
    memcpy(r->word, w, n + 1);
    return 0;
}

int word_count(const char *text, size_t len, const char *word) {
    const size_t k = strlen(word);
    int count = 0;
    if (k == 0 || len < k) return 0;
    for (size_t i = 0; i + k <= len;) {
        size_t j = 0;
        while (j < k && lower((unsigned char)text[i + j]) == lower((unsigned char)word[j])) j++;
        int left_ok = i == 0 || !is_word_byte((unsigned char)text[i - 1]);
        int right_ok = i + k == len || !is_word_byte((unsigned char)text[i + k]);
        if (j == k && left_ok && right_ok) {
            count++;
            i += k;
        } else {
            i++;
        }
    }
    return count;
}

float reward_rule_score_text(const RewardRule *r, const char *text, size_t len) {
    int c = word_count(text, len, r->word);
    if (r->kind == REWARD_RULE_CONTAINS) return c > 0 ? 1.0f : 0.0f;
    return (float)c;
}

int reward_rule_score(const RewardRule *r, const struct Tokenizer *tok, int prev, const int *ids, int n, float *score,
                      char *err) {
    size_t cap = 256, len = 0;
    char *text = malloc(cap);
    if (!text) return ftk_err(err, "reward rule: out of memory");
    char piece[256];
    for (int i = 0; i < n; i++) {
        int k = ids[i] >= 0 && ids[i] < tok->n_vocab ? tokenizer_token_bytes(tok, prev, ids[i], piece) : 0;
        if (len + (size_t)k + 1 > cap) {
            while (len + (size_t)k + 1 > cap) cap *= 2;
            char *grown = realloc(text, cap);
            if (!grown) {
                free(text);
                return ftk_err(err, "reward rule: out of memory");
            }
            text = grown;
        }
        memcpy(text + len, piece, (size_t)k);
        len += (size_t)k;
        prev = ids[i];
    }
    text[len] = 0;
    *score = reward_rule_score_text(r, text, len);
    free(text);
    return 0;
}
