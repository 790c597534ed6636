// tokenizer_write.c — tokenizer.model, vocab.json/merges.txt, HF tokenizer configs and GGUF
// tokenizer keys from a Tokenizer (lora/tokenizer_write.h).
#include "lora/tokenizer_write.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

// ---------------------------------------------------------------------------------------------
// Protobuf encoding (sentencepiece_model.proto): key = field << 3 | wire type; varints LE base 128.

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} Buf;

static void buf_put(Buf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void pb_varint(Buf *b, uint64_t v) {
    uint8_t tmp[10];
    int k = 0;
    do {
        tmp[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) tmp[k] |= 0x80;
        k++;
    } while (v);
    buf_put(b, tmp, (size_t)k);
}

static void pb_key(Buf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }
// int32 fields are varints of the sign-extended 64-bit value (-1 -> ten bytes).
static void pb_int(Buf *b, int field, int64_t v) { pb_key(b, field, 0); pb_varint(b, (uint64_t)v); }
static void pb_bytes(Buf *b, int field, const void *d, size_t n) {
    pb_key(b, field, 2);
    pb_varint(b, n);
    buf_put(b, d, n);
}
static void pb_str(Buf *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }
static void pb_float(Buf *b, int field, float f) {
    pb_key(b, field, 5);
    uint8_t le[4];
    memcpy(le, &f, 4);   // x86/ARM little-endian, as protobuf's fixed32
    buf_put(b, le, 4);
}

// The piece id of the unknown token: t->unk_id, else "<unk>", else -1.
static int unk_piece(const Tokenizer *t) {
    if (t->unk_id >= 0) return t->unk_id;
    return tokenizer_piece_id(t, "<unk>");
}

int tokenizer_write_spm_model(const Tokenizer *t, const char *path, char *err) {
    if (t->kind != TOK_SPM) return ftk_err(err, "%s: tokenizer.model holds SentencePiece vocabularies only", path);
    if (!t->scores)
        return ftk_err(err, "%s: the vocabulary has no piece scores, which a SentencePiece model needs", path);
    const int unk = unk_piece(t);
    if (unk < 0) return ftk_err(err, "%s: the vocabulary has no unknown token, which sentencepiece requires", path);
    Buf out = {0}, sub = {0};
    int has_bytes = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        int type = i == unk ? TOKT_UNKNOWN : t->types[i];
        if (type == TOKT_UNKNOWN && i != unk) type = TOKT_CONTROL;   // only one UNKNOWN piece
        if (type == TOKT_BYTE) has_bytes = 1;
        sub.n = 0;
        pb_str(&sub, 1, t->pieces[i]);
        pb_float(&sub, 2, t->scores[i]);
        if (type != TOKT_NORMAL) pb_int(&sub, 3, type);   // NORMAL is the proto default: omitted
        pb_bytes(&out, 1, sub.p, sub.n);
    }
    // trainer_spec: model_type BPE, vocab_size, byte_fallback, special ids and pieces.
    sub.n = 0;
    pb_int(&sub, 3, 2);
    pb_int(&sub, 4, t->n_vocab);
    if (has_bytes) pb_int(&sub, 35, 1);
    pb_int(&sub, 40, unk);
    pb_int(&sub, 41, t->bos_id);
    pb_int(&sub, 42, t->eos_id);
    pb_int(&sub, 43, t->pad_id);
    pb_str(&sub, 45, t->pieces[unk]);
    if (t->bos_id >= 0) pb_str(&sub, 46, t->pieces[t->bos_id]);
    if (t->eos_id >= 0) pb_str(&sub, 47, t->pieces[t->eos_id]);
    if (t->pad_id >= 0) pb_str(&sub, 48, t->pieces[t->pad_id]);
    pb_bytes(&out, 2, sub.p, sub.n);
    // normalizer_spec: identity, dummy prefix as the tokenizer does, spaces kept and escaped to "▁".
    sub.n = 0;
    pb_str(&sub, 1, "identity");
    pb_int(&sub, 3, t->add_space_prefix ? 1 : 0);
    pb_int(&sub, 4, 0);
    pb_int(&sub, 5, 1);
    pb_bytes(&out, 3, sub.p, sub.n);
    int rc = out.oom || sub.oom ? ftk_err(err, "%s: out of memory", path) : ftk_write_file_atomic(path, out.p, out.n, err);
    free(out.p);
    free(sub.p);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// GPT-2 files and HF configs

static int write_json(const char *dir, const char *name, cJSON *root, int formatted, char *err) {
    char path[4096];
    if (ftk_path_join(path, sizeof path, dir, name, err)) return -1;
    char *text = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    if (!text) return ftk_err(err, "%s: out of memory", path);
    size_t n = strlen(text);
    char *withnl = malloc(n + 2);
    int rc;
    if (!withnl) rc = ftk_err(err, "%s: out of memory", path);
    else {
        memcpy(withnl, text, n);
        withnl[n] = '\n';
        rc = ftk_write_file_atomic(path, withnl, n + 1, err);
    }
    free(withnl);
    cJSON_free(text);
    return rc;
}

int tokenizer_write_gpt2_files(const Tokenizer *t, const char *dir, char *err) {
    if (t->kind != TOK_BPE) return ftk_err(err, "%s: vocab.json + merges.txt hold byte-level BPE vocabularies only", dir);
    cJSON *vocab = cJSON_CreateObject();
    int rc = vocab ? 0 : ftk_err(err, "out of memory");
    for (int i = 0; i < t->n_vocab && !rc; i++) {
        if (tokenizer_piece_id(t, t->pieces[i]) != i)
            rc = ftk_err(err, "%s: piece %d \"%s\" occurs twice; vocab.json cannot hold it", dir, i, t->pieces[i]);
        else if (!cJSON_AddNumberToObject(vocab, t->pieces[i], i))
            rc = ftk_err(err, "out of memory");
    }
    if (!rc) rc = write_json(dir, "vocab.json", vocab, 0, err);
    cJSON_Delete(vocab);
    if (rc) return -1;
    Buf b = {0};
    const char *head = "#version: 0.2\n";
    buf_put(&b, head, strlen(head));
    for (int i = 0; i < t->n_merges; i++) {
        buf_put(&b, t->merges[i], strlen(t->merges[i]));
        buf_put(&b, "\n", 1);
    }
    char path[4096];
    if (b.oom) rc = ftk_err(err, "out of memory");
    else if (!ftk_path_join(path, sizeof path, dir, "merges.txt", err)) rc = ftk_write_file_atomic(path, b.p, b.n, err);
    else rc = -1;
    free(b.p);
    return rc;
}

static const char *piece_or_null(const Tokenizer *t, int id) { return id >= 0 && id < t->n_vocab ? t->pieces[id] : NULL; }

static void add_str_or_null(cJSON *o, const char *key, const char *s) {
    if (s) cJSON_AddStringToObject(o, key, s);
    else cJSON_AddNullToObject(o, key);
}

int tokenizer_write_hf_configs(const Tokenizer *t, const char *dir, int model_max_length, char *err) {
    const int spm = t->kind == TOK_SPM;
    const int unk = spm ? unk_piece(t) : t->unk_id;
    cJSON *cfg = cJSON_CreateObject(), *map = cJSON_CreateObject();
    cJSON *added = cJSON_CreateObject();
    if (!cfg || !map || !added) {
        cJSON_Delete(cfg);
        cJSON_Delete(map);
        cJSON_Delete(added);
        return ftk_err(err, "out of memory");
    }
    cJSON_AddBoolToObject(cfg, "add_bos_token", t->add_bos);
    cJSON_AddBoolToObject(cfg, "add_eos_token", t->add_eos);
    if (!spm) cJSON_AddBoolToObject(cfg, "add_prefix_space", t->add_space_prefix);
    // Control tokens are special added tokens for transformers (never split, skipped when decoding).
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->types[i] != TOKT_CONTROL && i != unk) continue;
        cJSON *e = cJSON_CreateObject();
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        cJSON_AddStringToObject(e, "content", t->pieces[i]);
        cJSON_AddBoolToObject(e, "lstrip", 0);
        cJSON_AddBoolToObject(e, "normalized", 1);
        cJSON_AddBoolToObject(e, "rstrip", 0);
        cJSON_AddBoolToObject(e, "single_word", 0);
        cJSON_AddBoolToObject(e, "special", 1);
        cJSON_AddItemToObject(added, id, e);
    }
    cJSON_AddItemToObject(cfg, "added_tokens_decoder", added);
    add_str_or_null(cfg, "bos_token", piece_or_null(t, t->bos_id));
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", !spm);
    add_str_or_null(cfg, "eos_token", piece_or_null(t, t->eos_id));
    if (spm) cJSON_AddBoolToObject(cfg, "legacy", 1);
    cJSON_AddNumberToObject(cfg, "model_max_length", model_max_length);
    add_str_or_null(cfg, "pad_token", piece_or_null(t, t->pad_id));
    if (spm) {
        cJSON_AddItemToObject(cfg, "sp_model_kwargs", cJSON_CreateObject());
        cJSON_AddBoolToObject(cfg, "spaces_between_special_tokens", 0);
    }
    cJSON_AddStringToObject(cfg, "tokenizer_class", spm ? "LlamaTokenizer" : "GPT2Tokenizer");
    add_str_or_null(cfg, "unk_token", piece_or_null(t, unk));
    if (piece_or_null(t, t->bos_id)) cJSON_AddStringToObject(map, "bos_token", t->pieces[t->bos_id]);
    if (piece_or_null(t, t->eos_id)) cJSON_AddStringToObject(map, "eos_token", t->pieces[t->eos_id]);
    if (piece_or_null(t, t->pad_id)) cJSON_AddStringToObject(map, "pad_token", t->pieces[t->pad_id]);
    if (piece_or_null(t, unk)) cJSON_AddStringToObject(map, "unk_token", t->pieces[unk]);
    int rc = write_json(dir, "tokenizer_config.json", cfg, 1, err) || write_json(dir, "special_tokens_map.json", map, 1, err);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return rc ? -1 : 0;
}

int tokenizer_write_hf_dir(const Tokenizer *t, const char *dir, int model_max_length, char *err) {
    int rc;
    if (t->kind == TOK_SPM) {
        char path[4096];
        rc = ftk_path_join(path, sizeof path, dir, "tokenizer.model", err) || tokenizer_write_spm_model(t, path, err);
    } else {
        rc = tokenizer_write_gpt2_files(t, dir, err);
    }
    return rc || tokenizer_write_hf_configs(t, dir, model_max_length, err) ? -1 : 0;
}

// ---------------------------------------------------------------------------------------------
// GGUF keys

static int set_id(GgufWriter *w, const char *key, int id, char *err) {
    return id >= 0 ? gguf_writer_set_u32(w, key, (uint32_t)id, err) : 0;
}

int tokenizer_gguf_set_keys(GgufWriter *w, const Tokenizer *t, int n_vocab, char *err) {
    const int spm = t->kind == TOK_SPM;
    if (spm && !t->scores)
        return ftk_err(err, "the SentencePiece vocabulary has no scores, which GGUF tokenizer.ggml.scores needs");
    if (n_vocab < t->n_vocab) return ftk_err(err, "GGUF vocabulary of %d is smaller than the tokenizer's %d", n_vocab, t->n_vocab);
    const size_t nv = (size_t)n_vocab;
    // Rows of the embedding beyond the tokenizer get "[PAD<id>]" pieces of type UNUSED and score
    // -1000, as convert_hf_to_gguf.py pads them.
    int32_t *types = malloc(nv * sizeof(int32_t));
    float *scores = malloc(nv * sizeof(float));
    const char **pieces = malloc(nv * sizeof(char *));
    char *pad_names = malloc((nv - (size_t)t->n_vocab) * 32 + 1);
    int rc = types && scores && pieces && pad_names ? 0 : ftk_err(err, "out of memory");
    for (size_t i = 0; i < nv && !rc; i++) {
        if (i < (size_t)t->n_vocab) {
            types[i] = t->types ? (int32_t)t->types[i] : TOKT_NORMAL;
            scores[i] = t->scores ? t->scores[i] : 0.0f;
            pieces[i] = t->pieces[i];
        } else {
            char *p = pad_names + (i - (size_t)t->n_vocab) * 32;
            snprintf(p, 32, "[PAD%zu]", i);
            types[i] = TOKT_UNUSED;
            scores[i] = -1000.0f;
            pieces[i] = p;
        }
    }
    if (!rc)
        rc = gguf_writer_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", err) ||
             gguf_writer_set_str(w, "tokenizer.ggml.pre", tokenizer_gguf_pre_name(t), err) ||
             gguf_writer_set_str_array(w, "tokenizer.ggml.tokens", pieces, nv, err);
    if (!rc && spm) rc = gguf_writer_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, nv, err);
    if (!rc) rc = gguf_writer_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, nv, err);
    if (!rc && !spm)
        rc = gguf_writer_set_str_array(w, "tokenizer.ggml.merges", (const char *const *)t->merges, (size_t)t->n_merges, err);
    if (!rc)
        rc = set_id(w, "tokenizer.ggml.bos_token_id", t->bos_id, err) ||
             set_id(w, "tokenizer.ggml.eos_token_id", t->eos_id, err) ||
             set_id(w, "tokenizer.ggml.unknown_token_id", t->unk_id, err) ||
             set_id(w, "tokenizer.ggml.padding_token_id", t->pad_id, err) ||
             gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos, err) ||
             gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos, err);
    if (!rc && spm) rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix, err);
    free(types);
    free(scores);
    free(pieces);
    free(pad_names);
    return rc ? -1 : 0;
}
