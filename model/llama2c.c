// llama2c.c — loader for Karpathy's llama2.c checkpoint format (.bin, fp32, "version 0").
//
// File layout (llama2.c run.c, read_checkpoint / memory_map_weights):
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//   (vocab_size < 0 means the classifier is NOT shared with the token embedding)
//   float token_embedding (V, C), rms_att (L, C), wq (L, C, C), wk (L, kvd, C), wv (L, kvd, C),
//         wo (L, C, C), rms_ffn (L, C), w1 (L, F, C), w2 (L, C, F), w3 (L, F, C), rms_final (C),
//         freq_cis_real (seq_len, hs/2), freq_cis_imag (seq_len, hs/2), [wcls (V, C) if unshared]
// w1 = gate, w3 = up, w2 = down. q/k rows are in Meta's interleaved RoPE order and are permuted
// to the HF rotate-half order here (DESIGN §2).
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/tokenizer.h"

#define L2C_HEADER_BYTES 28  // 7 x int32

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// A tokenizer file name as llama2.c ships them: tokenizer.bin or tok<N>.bin.
static int is_tokenizer_name(const char *name) {
    return strcmp(name, "tokenizer.bin") == 0 || (strncmp(name, "tok", 3) == 0 && ends_with(name, ".bin"));
}

// Copies `count` floats from the mapped file at byte offset *off into dst and advances *off.
// The caller has already checked that the whole file has the expected size.
static void take_floats(float *dst, const uint8_t *base, size_t *off, size_t count) {
    memcpy(dst, base + *off, count * sizeof(float));
    *off += count * sizeof(float);
}

// Expected byte size of a llama2.c file for the given header; -1 on overflow.
static int expected_size(size_t C, size_t F, size_t L, size_t kvd, size_t V, size_t T, size_t hs, int shared,
                         size_t *out) {
    // Per-layer floats: rms_att C + wq C*C + wk kvd*C + wv kvd*C + wo C*C + rms_ffn C + w1,w2,w3 3*F*C
    size_t cc, kc, fc, per_layer = 0, t, total = 0;
    if (ftk_mul(C, C, &cc) || ftk_mul(kvd, C, &kc) || ftk_mul(F, C, &fc)) return -1;
    size_t parts[] = {C, cc, kc, kc, cc, C, fc, fc, fc};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (ftk_add(per_layer, parts[i], &per_layer)) return -1;
    if (ftk_mul(per_layer, L, &total)) return -1;
    size_t vc;
    if (ftk_mul(V, C, &vc) || ftk_add(total, vc, &total)) return -1;   // token_embedding
    if (ftk_add(total, C, &total)) return -1;                           // rms_final
    if (ftk_mul(T, hs, &t) || ftk_add(total, t, &total)) return -1;     // freq_cis real + imag: 2*T*(hs/2)
    if (!shared && ftk_add(total, vc, &total)) return -1;               // wcls
    if (ftk_mul(total, sizeof(float), &total) || ftk_add(total, L2C_HEADER_BYTES, &total)) return -1;
    *out = total;
    return 0;
}

int llama2c_load_weights(Model *m, const char *path, char *err) {
    void *map;
    size_t len;
    if (ftk_map_file(path, &map, &len, err)) return -1;
    if (len < L2C_HEADER_BYTES) {
        ftk_unmap(map, len);
        return ftk_err(err, "%s: too small for a llama2.c header (%zu bytes, need %d)", path, len, L2C_HEADER_BYTES);
    }
    const uint8_t *base = map;
    int32_t h[7];
    memcpy(h, base, sizeof h);
    const int32_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4], vocab_raw = h[5], seq = h[6];
    if (dim <= 0 || hidden <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv <= 0 || seq <= 0 || vocab_raw == 0 ||
        vocab_raw == INT32_MIN) {
        ftk_unmap(map, len);
        return ftk_err(err, "%s: bad llama2.c header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, "
                            "vocab_size %d, seq_len %d)", path, dim, hidden, n_layers, n_heads, n_kv, vocab_raw, seq);
    }
    if (dim % n_heads != 0 || n_kv > n_heads || n_heads % n_kv != 0 || (dim / n_heads) % 2 != 0) {
        ftk_unmap(map, len);
        return ftk_err(err, "%s: bad llama2.c header: dim %d, n_heads %d, n_kv_heads %d (need dim %% n_heads == 0, "
                            "n_heads %% n_kv_heads == 0, even head size)", path, dim, n_heads, n_kv);
    }
    const int shared = vocab_raw > 0;
    const int vocab = shared ? vocab_raw : -vocab_raw;
    const int hs = dim / n_heads, kvd = n_kv * hs;
    size_t want;
    if (expected_size((size_t)dim, (size_t)hidden, (size_t)n_layers, (size_t)kvd, (size_t)vocab, (size_t)seq,
                      (size_t)hs, shared, &want)) {
        ftk_unmap(map, len);
        return ftk_err(err, "%s: llama2.c header dimensions overflow (dim %d, hidden_dim %d, n_layers %d, vocab %d)",
                       path, dim, hidden, n_layers, vocab);
    }
    if (want != len) {
        ftk_unmap(map, len);
        return ftk_err(err, "%s: size mismatch: header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, "
                            "vocab %d%s, seq_len %d) needs %zu bytes but the file has %zu",
                       path, dim, hidden, n_layers, n_heads, n_kv, vocab, shared ? "" : " unshared", seq, want, len);
    }

    ModelConfig cfg = {0};
    cfg.arch = ARCH_LLAMA;
    cfg.dim = dim;
    cfg.n_layers = n_layers;
    cfg.n_heads = n_heads;
    cfg.n_kv_heads = n_kv;
    cfg.head_dim = hs;
    cfg.ffn_dim = hidden;
    cfg.vocab_size = vocab;
    cfg.max_seq_len = seq;
    cfg.norm_eps = 1e-5f;
    cfg.rope_theta = 10000.0f;
    cfg.tied_head = shared;
    cfg.bos_id = 1;
    cfg.eos_id = 2;
    if (!m->path[0]) snprintf(m->path, sizeof m->path, "%s", path);
    if (model_alloc_weights(m, &cfg, err)) {
        ftk_unmap(map, len);
        return -1;
    }

    // The size check above covers every read below.
    const size_t C = (size_t)dim, F = (size_t)hidden, KV = (size_t)kvd, L = (size_t)n_layers;
    ModelWeights *w = &m->w;
    size_t off = L2C_HEADER_BYTES;
    take_floats(w->tok_emb, base, &off, (size_t)vocab * C);
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].attn_norm_w, base, &off, C);
    for (size_t l = 0; l < L; l++) {
        take_floats(w->layers[l].wq, base, &off, C * C);
        permute_rows_meta_to_hf(w->layers[l].wq, n_heads, hs, dim);
    }
    for (size_t l = 0; l < L; l++) {
        take_floats(w->layers[l].wk, base, &off, KV * C);
        permute_rows_meta_to_hf(w->layers[l].wk, n_kv, hs, dim);
    }
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].wv, base, &off, KV * C);
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].wo, base, &off, C * C);
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].ffn_norm_w, base, &off, C);
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].w_gate, base, &off, F * C);  // w1
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].w_down, base, &off, C * F);  // w2
    for (size_t l = 0; l < L; l++) take_floats(w->layers[l].w_up, base, &off, F * C);    // w3
    take_floats(w->out_norm_w, base, &off, C);
    off += (size_t)seq * (size_t)hs * sizeof(float);  // freq_cis_real + freq_cis_imag: recomputed by RoPE
    if (!shared) take_floats(w->lm_head, base, &off, (size_t)vocab * C);
    ftk_unmap(map, len);

    snprintf(m->format, sizeof m->format, "llama2c");
    snprintf(m->src_dtype, sizeof m->src_dtype, "F32");
    return 0;
}

// Resolves `path` (a .bin or a directory holding exactly one model .bin) to the model file.
static int find_model_bin(const char *path, char *out, size_t n, char *err) {
    if (!ftk_is_dir(path)) {
        if (snprintf(out, n, "%s", path) >= (int)n) return ftk_err(err, "%s: path too long", path);
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) return ftk_err(err, "%s: cannot open directory", path);
    int found = 0;
    char name[1024] = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!ends_with(e->d_name, ".bin") || is_tokenizer_name(e->d_name)) continue;
        if (found++ == 0) snprintf(name, sizeof name, "%s", e->d_name);
    }
    closedir(d);
    if (found == 0) return ftk_err(err, "%s: no llama2.c model .bin in this directory (and no config.json)", path);
    if (found > 1) return ftk_err(err, "%s: %d model .bin files in this directory; pass the file itself", path, found);
    return ftk_path_join(out, n, path, name, err);
}

// Tokenizer beside the model: tokenizer.bin, else the single tok*.bin.
static int find_tokenizer(const char *model_bin, char *out, size_t n, char *err) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", model_bin);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    char cand[4200];
    if (ftk_path_join(cand, sizeof cand, dir, "tokenizer.bin", err)) return -1;
    if (ftk_file_exists(cand)) {
        if (snprintf(out, n, "%s", cand) >= (int)n) return ftk_err(err, "%s: path too long", cand);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) return ftk_err(err, "no tokenizer found beside %s (pass --tokenizer)", model_bin);
    int found = 0;
    char name[1024] = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!is_tokenizer_name(e->d_name)) continue;
        if (found++ == 0) snprintf(name, sizeof name, "%s", e->d_name);
    }
    closedir(d);
    if (found == 0) return ftk_err(err, "no tokenizer found beside %s (pass --tokenizer)", model_bin);
    if (found > 1)
        return ftk_err(err, "%d tok*.bin tokenizers beside %s; pass the one to use with --tokenizer", found, model_bin);
    return ftk_path_join(out, n, dir, name, err);
}

int load_llama2c(Model *m, const char *path, const char *tok_path, char *err) {
    char bin[4096], tok[4200];
    if (find_model_bin(path, bin, sizeof bin, err)) return -1;
    if (tok_path) {
        if (!ftk_file_exists(tok_path)) return ftk_err(err, "%s: tokenizer file not found", tok_path);
        snprintf(tok, sizeof tok, "%s", tok_path);
    } else if (find_tokenizer(bin, tok, sizeof tok, err)) {
        return -1;
    }
    if (llama2c_load_weights(m, bin, err)) return -1;
    if (tokenizer_load_llama2c(&m->tok, tok, m->cfg.vocab_size, err)) return -1;
    return 0;
}
