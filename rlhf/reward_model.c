// reward_model.c — see reward_model.h.
#include "rlhf/reward_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "datasets/batch.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/tokenizer.h"
#include "rlhf/reward_loss.h"
#include "rlhf/score_head.h"
#include "sft/metrics.h"

#define RM_SCORE_CHUNK 16   // sequences per forward in rm_score_sequences

static int hooks_n_virtual(const ModelAdapters *h) { return h && !h->disabled ? h->n_virtual : 0; }

int rm_forward_batch(const Model *m, const ModelAdapters *hooks, RunState *rs, const float *score_w,
                     const int *tokens, const int *lengths, int B, int T, uint64_t *dropout_rng, int *rows,
                     float *scores, char *err) {
    const int C = m->cfg.dim, nv = hooks_n_virtual(hooks);
    if (!score_w) return ftk_err(err, "reward model: no score head");
    if (model_forward(m, hooks, rs, tokens, B, T, NULL, NULL, dropout_rng, err)) return -1;
    // The last REAL token: b*(nv+T) + nv + len-1, not the row's last position (padding).
    if (last_token_index(lengths, B, nv + T, nv, rows, err)) return -1;
    const float *hidden = runstate_final_hidden(rs);
    float *h_last = malloc((size_t)B * C * sizeof(float));
    if (!h_last) return ftk_err(err, "reward model: out of memory for %d score rows", B);
    gather_rows(h_last, hidden, rows, B, C);
    scalar_head_forward(h_last, B, C, score_w, NULL, scores);   // (B, C) @ (C, 1)
    free(h_last);
    return 0;
}

int rm_backward_batch(const Model *m, const ModelAdapters *hooks, RunState *rs, const float *score_w,
                      float *dscore_w, const int *rows, const float *dscores, int B, char *err) {
    const int C = m->cfg.dim;
    // h_last (B, C), dh_last (B, C), and a (1, C) sink for dw when the head is frozen
    float *h_last = malloc(((size_t)2 * B + 1) * C * sizeof(float));
    if (!h_last) return ftk_err(err, "reward model: out of memory for %d score rows", B);
    float *dh_last = h_last + (size_t)B * C, *dw_sink = dh_last + (size_t)B * C;
    memset(dh_last, 0, ((size_t)B + 1) * C * sizeof(float));
    gather_rows(h_last, runstate_final_hidden(rs), rows, B, C);
    // dscore_w += dscores^T h_last (B, C); dh_last = dscores score_w
    scalar_head_backward(h_last, B, C, score_w, dscores, dscore_w ? dscore_w : dw_sink, NULL, dh_last);
    scatter_add_rows(runstate_d_final_hidden(rs), dh_last, rows, B, C);
    free(h_last);
    return model_backward(m, hooks, rs, err);
}

int rm_score_sequences(const Model *m, const ModelAdapters *hooks, const float *score_w, const int *const *seqs,
                       const int *lens, int n, float *scores, char *err) {
    if (n <= 0) return 0;
    if (!score_w) return ftk_err(err, "rm_score_sequences: no score head");
    const int nv = hooks_n_virtual(hooks);
    int max_len = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] < 1) return ftk_err(err, "rm_score_sequences: sequence %d is empty", i);
        if (nv + lens[i] > m->cfg.max_seq_len)
            return ftk_err(err, "rm_score_sequences: sequence %d has %d tokens (+%d virtual), more than the model's "
                                "context of %d", i, lens[i], nv, m->cfg.max_seq_len);
        if (lens[i] > max_len) max_len = lens[i];
    }
    const int Bc = n < RM_SCORE_CHUNK ? n : RM_SCORE_CHUNK;
    RunState *rs = NULL;
    if (runstate_create(&rs, m, Bc, nv + max_len, 0, err)) return -1;
    int *tokens = malloc((size_t)Bc * max_len * sizeof(int));
    int *rows = malloc((size_t)Bc * sizeof(int));
    int rc = -1;
    if (!tokens || !rows) {
        ftk_err(err, "rm_score_sequences: out of memory");
        goto done;
    }
    for (int i0 = 0; i0 < n; i0 += Bc) {
        const int B = n - i0 < Bc ? n - i0 : Bc;
        // Each chunk is as wide as its longest sequence; the rest of a row is padding (id 0), which
        // the causal mask keeps out of every real position.
        int T = 0;
        for (int b = 0; b < B; b++)
            if (lens[i0 + b] > T) T = lens[i0 + b];
        for (int b = 0; b < B; b++) {
            int *row = tokens + (size_t)b * T;
            memcpy(row, seqs[i0 + b], (size_t)lens[i0 + b] * sizeof(int));
            for (int t = lens[i0 + b]; t < T; t++) row[t] = 0;
        }
        if (rm_forward_batch(m, hooks, rs, score_w, tokens, lens + i0, B, T, NULL, rows, scores + i0, err)) goto done;
    }
    rc = 0;
done:
    free(tokens);
    free(rows);
    runstate_free(rs);
    return rc;
}

static int dataset_max_len(const Dataset *ds) {
    int mx = 0;
    for (int s = 0; s < ds->n * ds->seqs_per_item; s++)
        if (ds->seqs[s].len > mx) mx = ds->seqs[s].len;
    return mx;
}

int rm_evaluate(const Model *m, const ModelAdapters *hooks, const float *score_w, const Dataset *ds, int batch_pairs,
                RmEvalStats *st, float *chosen_out, float *rejected_out, char *err) {
    memset(st, 0, sizeof *st);
    if (ds->kind != DS_PREFERENCE || ds->seqs_per_item != 2)
        return ftk_err(err, "%s: reward-model evaluation needs preference pairs", ds->path);
    if (ds->n < 1) return ftk_err(err, "%s: no pairs to evaluate", ds->path);
    if (batch_pairs < 1) batch_pairs = 1;
    const int nv = hooks_n_virtual(hooks);
    const int T_max = nv + dataset_max_len(ds);
    if (T_max > m->cfg.max_seq_len)
        return ftk_err(err, "%s: sequences of %d positions exceed the model's context %d", ds->path, T_max,
                       m->cfg.max_seq_len);
    RunState *rs = NULL;
    DataLoader L;
    memset(&L, 0, sizeof L);
    int *rows = malloc((size_t)2 * batch_pairs * sizeof(int));
    float *r = malloc((size_t)2 * batch_pairs * sizeof(float));
    int rc = -1;
    double loss = 0, correct = 0, margin = 0, csum = 0, rsum = 0;
    if (!rows || !r) {
        ftk_err(err, "reward model evaluation: out of memory");
        goto done;
    }
    if (runstate_create(&rs, m, 2 * batch_pairs, T_max, 0, err)) goto done;
    if (loader_init(&L, ds, batch_pairs, 0, 0, 0, err)) goto done;
    int64_t n_batches = loader_batches_in_epoch(&L);
    for (int64_t k = 0; k < n_batches; k++) {
        const Batch *bt;
        if (loader_next(&L, &bt, err)) goto done;
        if (rm_forward_batch(m, hooks, rs, score_w, bt->tokens, bt->lengths, bt->B, bt->T, NULL, rows, r, err))
            goto done;
        const int P = bt->n_pairs;
        for (int i = 0; i < P; i++) {
            double c = r[i], j = r[P + i];
            loss += stable_softplus(-(c - j));
            correct += c > j;
            margin += c - j;
            csum += c;
            rsum += j;
            if (chosen_out) chosen_out[bt->items[i]] = (float)c;
            if (rejected_out) rejected_out[bt->items[i]] = (float)j;
        }
    }
    st->n_pairs = ds->n;
    st->accuracy = correct / ds->n;
    st->margin_mean = margin / ds->n;
    st->loss = loss / ds->n;
    st->chosen_mean = csum / ds->n;
    st->rejected_mean = rsum / ds->n;
    rc = 0;
done:
    free(rows);
    free(r);
    loader_free(&L);
    runstate_free(rs);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// loading and identity checks

void rm_tokenizer_fingerprint(const Model *m, char out[17]) {
    out[0] = 0;
    const Tokenizer *t = m->tok;
    if (!t) return;
    uint64_t h = 0xcbf29ce484222325ull;   // FNV-1a 64
    for (int i = 0; i < t->n_vocab; i++) {
        for (const unsigned char *p = (const unsigned char *)t->pieces[i]; *p; p++) {
            h ^= *p;
            h *= 0x100000001b3ull;
        }
        h ^= 0xff;   // piece separator (0xff never occurs in UTF-8)
        h *= 0x100000001b3ull;
    }
    const int ids[2] = {t->bos_id, t->eos_id};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < 32; s += 8) {
            h ^= (uint64_t)((unsigned)ids[k] >> s) & 0xff;
            h *= 0x100000001b3ull;
        }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

int rm_save_info(const Model *m, const char *dir, const char *base_model, int append_eos, char *err) {
    char path[4200], fp[17];
    if (ftk_path_join(path, sizeof path, dir, "reward_model.json", err)) return -1;
    rm_tokenizer_fingerprint(m, fp);
    cJSON *o = cJSON_CreateObject();
    if (!o) return ftk_err(err, "%s: out of memory", path);
    cJSON_AddStringToObject(o, "architecture", m->cfg.arch == ARCH_GPT2 ? "gpt2" : "llama");
    cJSON_AddNumberToObject(o, "hidden_size", m->cfg.dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", m->cfg.n_layers);
    cJSON_AddNumberToObject(o, "vocab_size", m->cfg.vocab_size);
    cJSON_AddStringToObject(o, "tokenizer_fingerprint", fp);
    cJSON_AddBoolToObject(o, "append_eos", append_eos);
    if (base_model) cJSON_AddStringToObject(o, "base_model", base_model);
    int rc = json_write_atomic(path, o, err);
    cJSON_Delete(o);
    return rc;
}

// Compares <dir>/reward_model.json (when present) with m; *append_eos from it (1 when absent).
static int rm_check_info(const Model *m, const char *dir, int *append_eos, char *err) {
    char path[4200], fp[17];
    *append_eos = 1;
    if (ftk_path_join(path, sizeof path, dir, "reward_model.json", err)) return -1;
    if (!ftk_file_exists(path)) return 0;   // an RM written by PEFT/TRL: only the shapes are checked
    cJSON *o = NULL;
    if (json_read_object(path, &o, err)) return -1;
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(o, "append_eos");
    if (cJSON_IsBool(ae)) *append_eos = cJSON_IsTrue(ae);
    const char *base = "?";
    const cJSON *bm = cJSON_GetObjectItemCaseSensitive(o, "base_model");
    if (cJSON_IsString(bm)) base = bm->valuestring;
    const char *keys[3] = {"hidden_size", "num_hidden_layers", "vocab_size"};
    const int want[3] = {m->cfg.dim, m->cfg.n_layers, m->cfg.vocab_size};
    for (int k = 0; k < 3; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        if (!cJSON_IsNumber(v)) {
            ftk_err(err, "%s: \"%s\" missing or not a number", path, keys[k]);
            cJSON_Delete(o);
            return -1;
        }
        if ((int)v->valuedouble != want[k]) {
            ftk_err(err, "%s: reward model was trained on a different base model (%s: %s %d, but %s has %d)", dir,
                    base, keys[k], (int)v->valuedouble, m->path, want[k]);
            cJSON_Delete(o);
            return -1;
        }
    }
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "tokenizer_fingerprint");
    rm_tokenizer_fingerprint(m, fp);
    if (cJSON_IsString(f) && f->valuestring[0] && fp[0] && strcmp(f->valuestring, fp) != 0) {
        ftk_err(err, "%s: reward model was trained with a different tokenizer (base %s, fingerprint %s; %s has %s)",
                dir, base, f->valuestring, m->path, fp);
        cJSON_Delete(o);
        return -1;
    }
    cJSON_Delete(o);
    return 0;
}

int rm_load(RewardModel *rm, const Model *m, const char *dir, char *err) {
    memset(rm, 0, sizeof *rm);
    if (!ftk_is_dir(dir)) return ftk_err(err, "%s: no such reward model directory", dir);
    int append_eos;
    if (rm_check_info(m, dir, &append_eos, err)) return -1;
    char sub[FTK_ERR_LEN];
    if (peft_load(&rm->adapters, m, dir, sub)) {
        ftk_err(err, "%s: cannot load the reward model for %s: %s", dir, m->path, sub);
        return -1;
    }
    if (!rm->adapters.score) {
        adapters_free(&rm->adapters);
        return ftk_err(err, "%s: not a reward model (no \"score\" head in modules_to_save)", dir);
    }
    adapters_hooks(&rm->adapters, 0, &rm->hooks);
    rm->score_w = rm->adapters.score;
    rm->append_eos = append_eos;
    return 0;
}

void rm_free(RewardModel *rm) {
    adapters_free(&rm->adapters);
    memset(rm, 0, sizeof *rm);
}
