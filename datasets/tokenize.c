// tokenize.c — see tokenize.h.
#include "datasets/tokenize.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/tokenizer.h"

static int encode_with_tokenizer(void *ctx, const char *text, int continuation, int parse_special, int **ids,
                                 int *n_ids, char *err) {
    const Tokenizer *t = ctx;
    size_t len = strlen(text);
    if (continuation && t->add_space_prefix) {
        // A continuation must not get the dummy leading space (SentencePiece, or GPT-2's
        // add_prefix_space). tokenizer_encode reads the flag from the struct, so a shallow copy
        // with the flag off encodes with the same vocabulary and tables.
        Tokenizer cont = *t;
        cont.add_space_prefix = 0;
        return tokenizer_encode_ex(&cont, text, len, 0, 0, parse_special, ids, n_ids, err);
    }
    return tokenizer_encode_ex(t, text, len, 0, 0, parse_special, ids, n_ids, err);
}

void tok_encoder_init(TokEncoder *e, const Tokenizer *t) {
    e->encode = encode_with_tokenizer;
    e->ctx = (void *)t;
    e->bos_id = (t->add_bos && t->bos_id >= 0) ? t->bos_id : -1;
    e->eos_id = t->eos_id;
    e->pad_id = t->pad_id >= 0 ? t->pad_id : t->eos_id >= 0 ? t->eos_id : 0;
}

void tokseq_free(TokSeq *s) {
    free(s->ids);
    free(s->mask);
    memset(s, 0, sizeof *s);
}

static int encode(const TokEncoder *e, const char *text, int continuation, int parse_special, int **ids, int *n,
                  char *err) {
    *ids = NULL;
    *n = 0;
    if (!*text) return 0;
    if (e->encode(e->ctx, text, continuation, parse_special, ids, n, err) != 0) return -1;
    if (*n < 0 || (*n > 0 && !*ids)) return ftk_err(err, "tokenizer returned an invalid result");
    return 0;
}

// Response tokens (no EOS) of `response` after `prompt` whose own tokens are p (np of them).
static int encode_response(const TokEncoder *e, int parse_special, const char *prompt, const int *p, int np,
                           const char *response, int **r, int *nr, int *fallback, char *err) {
    *r = NULL;
    *nr = 0;
    if (!*response) return 0;
    if (!*prompt) return encode(e, response, 0, parse_special, r, nr, err);
    size_t lp = strlen(prompt), lr = strlen(response);
    char *whole = malloc(lp + lr + 1);
    if (!whole) return ftk_err(err, "out of memory");
    memcpy(whole, prompt, lp);
    memcpy(whole + lp, response, lr + 1);
    int *full;
    int nfull;
    int rc = encode(e, whole, 0, parse_special, &full, &nfull, err);
    free(whole);
    if (rc != 0) return -1;
    if (nfull >= np && (np == 0 || memcmp(full, p, (size_t)np * sizeof(int)) == 0)) {
        // The prompt's tokens are a prefix of the whole: the rest is the response.
        *nr = nfull - np;
        *r = malloc(((size_t)*nr + 1) * sizeof(int));
        if (!*r) {
            free(full);
            return ftk_err(err, "out of memory");
        }
        if (*nr > 0) memcpy(*r, full + np, (size_t)*nr * sizeof(int));
        free(full);
        return 0;
    }
    free(full);
    *fallback = 1;
    return encode(e, response, 1, parse_special, r, nr, err);
}

int tokenize_example(const TokEncoder *e, const TokenizeOptions *o, const char *prompt,
                     const char *const *responses, int n_resp, TokSeq *out, TokFlags *flags, char *err) {
    int n_out = n_resp > 0 ? n_resp : 1;
    memset(out, 0, (size_t)n_out * sizeof *out);
    memset(flags, 0, sizeof *flags);
    if (n_resp < 0 || n_resp > 2) return ftk_err(err, "tokenize_example: n_resp must be 0, 1 or 2");

    int *p = NULL, np = 0;
    int *r[2] = {NULL, NULL}, nr[2] = {0, 0};
    int rc = -1;
    if (encode(e, prompt, 0, o->parse_special, &p, &np, err) != 0) goto done;
    for (int k = 0; k < n_resp; k++)
        if (encode_response(e, o->parse_special, prompt, p, np, responses[k], &r[k], &nr[k], &flags->prefix_fallback, err) != 0)
            goto done;

    const int nb = e->bos_id >= 0 ? 1 : 0;
    const int ne = (o->add_eos && e->eos_id >= 0) ? 1 : 0;
    const int M = o->max_seq_length;
    int len_resp[2] = {nr[0] + ne, nr[1] + ne};   // response tokens incl. EOS
    int longest_resp = 0;
    for (int k = 0; k < n_resp; k++)
        if (len_resp[k] > longest_resp) longest_resp = len_resp[k];

    // The prompt leaves no room for a response token (prompt-only: does not fit at all).
    int prompt_too_long = M > 0 && (n_resp > 0 ? nb + np >= M : nb + np > M);
    if (prompt_too_long && o->long_prompt == LONG_PROMPT_ERROR) {
        ftk_err(err, "prompt is %d tokens, longer than max_seq_length %d allows", nb + np, M);
        goto done;
    }
    if (prompt_too_long && o->long_prompt == LONG_PROMPT_SKIP) {
        ftk_err(err, "prompt longer than max_seq_length");
        rc = TOK_DROP_LONG_PROMPT;
        goto done;
    }

    // Truncation: cut the prompt's start first, then the responses' ends.
    int cut_prompt = 0, keep_resp[2] = {len_resp[0], len_resp[1]};
    if (M > 0 && nb + np + longest_resp > M) {
        flags->truncated = 1;
        int over = nb + np + longest_resp - M;
        cut_prompt = over < np ? over : np;
        int room = M - nb - (np - cut_prompt);   // tokens left for each response
        if (room < 0) room = 0;
        for (int k = 0; k < n_resp; k++)
            if (keep_resp[k] > room) keep_resp[k] = room;
    }
    for (int k = 0; k < n_resp; k++) {
        if (keep_resp[k] == 0) {
            ftk_err(err, "no response tokens left after truncation");
            rc = TOK_DROP_EMPTY;
            goto done;
        }
    }
    int np_kept = np - cut_prompt;
    if (n_resp == 0 && nb + np_kept == 0) {
        ftk_err(err, "empty prompt");
        rc = TOK_DROP_EMPTY;
        goto done;
    }

    for (int k = 0; k < n_out; k++) {
        int kr = n_resp > 0 ? keep_resp[k] : 0;
        TokSeq *s = &out[k];
        s->len = nb + np_kept + kr;
        s->n_prompt = nb + np_kept;
        s->ids = malloc((size_t)s->len * sizeof(int));
        s->mask = malloc((size_t)s->len);
        if (!s->ids || !s->mask) {
            ftk_err(err, "out of memory");
            goto done;
        }
        int t = 0;
        if (nb) {
            s->ids[t] = e->bos_id;
            s->mask[t++] = 0;
        }
        for (int i = cut_prompt; i < np; i++) {
            s->ids[t] = p[i];
            s->mask[t++] = o->train_on_prompt ? 1 : 0;
        }
        for (int i = 0; i < kr; i++) {   // response tokens, then EOS (if kept)
            s->ids[t] = i < nr[k] ? r[k][i] : e->eos_id;
            s->mask[t++] = 1;
        }
    }
    rc = TOK_OK;
done:
    if (rc != TOK_OK)
        for (int k = 0; k < n_out; k++) tokseq_free(&out[k]);
    free(p);
    free(r[0]);
    free(r[1]);
    return rc;
}
