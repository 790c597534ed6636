// test_llama2c.c — the llama2.c .bin loader: config of stories260K, every weight against the
// independently converted HF safetensors (q/k row permutation included), an unshared classifier
// on a synthetic file, and tokenizer discovery beside the model.
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/model.h"
#include "model/tokenizer.h"

static void test_stories_config(void **state) {
    (void)state;
    Model m = {0};
    char err[FTK_ERR_LEN];
    int rc = llama2c_load_weights(&m, shared_path("models/stories260K/stories260K.bin"), err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(m.cfg.arch, ARCH_LLAMA);
    assert_int_equal(m.cfg.dim, 64);
    assert_int_equal(m.cfg.ffn_dim, 172);
    assert_int_equal(m.cfg.n_layers, 5);
    assert_int_equal(m.cfg.n_heads, 8);
    assert_int_equal(m.cfg.n_kv_heads, 4);
    assert_int_equal(m.cfg.head_dim, 8);
    assert_int_equal(m.cfg.vocab_size, 512);
    assert_int_equal(m.cfg.max_seq_len, 512);
    assert_int_equal(m.cfg.tied_head, 1);
    assert_int_equal(m.cfg.bos_id, 1);
    assert_int_equal(m.cfg.eos_id, 2);
    assert_true(m.cfg.rope_theta == 10000.0f);
    assert_true(m.cfg.norm_eps == 1e-5f);
    assert_string_equal(m.format, "llama2c");
    assert_string_equal(m.src_dtype, "F32");
    assert_ptr_equal(m.w.lm_head, m.w.tok_emb);
    // 260K parameters: the exact count of the file minus freq_cis (512*4*2 floats).
    assert_int_equal(model_param_count(&m.cfg), (1056540 - 28) / 4 - 4096);
    model_free(&m);
}

// Every tensor equals the HF conversion bit for bit (that conversion permuted q/k rows itself).
static void test_stories_weights_match_hf(void **state) {
    (void)state;
    Model m = {0};
    char err[FTK_ERR_LEN];
    if (llama2c_load_weights(&m, shared_path("models/stories260K/stories260K.bin"), err)) fail_msg("%s", err);
    const char *st = shared_path("models/stories260K-hf/model.safetensors");
    const size_t C = 64, F = 172, KV = 32, V = 512;
    char name[256];
    assert_equal_st_tensor(st, "model.embed_tokens.weight", m.w.tok_emb, V * C, 0);
    assert_equal_st_tensor(st, "model.norm.weight", m.w.out_norm_w, C, 0);
    for (int l = 0; l < 5; l++) {
        const LayerWeights *L = &m.w.layers[l];
        struct { const char *suffix; const float *w; size_t n; } t[] = {
            {"input_layernorm.weight", L->attn_norm_w, C},
            {"self_attn.q_proj.weight", L->wq, C * C},
            {"self_attn.k_proj.weight", L->wk, KV * C},
            {"self_attn.v_proj.weight", L->wv, KV * C},
            {"self_attn.o_proj.weight", L->wo, C * C},
            {"post_attention_layernorm.weight", L->ffn_norm_w, C},
            {"mlp.gate_proj.weight", L->w_gate, F * C},
            {"mlp.up_proj.weight", L->w_up, F * C},
            {"mlp.down_proj.weight", L->w_down, C * F},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, t[i].suffix);
            assert_equal_st_tensor(st, name, t[i].w, t[i].n, 0);
        }
        // the fused buffers really are [q; k; v] and [gate; up]
        assert_ptr_equal(L->wk, L->wqkv + C * C);
        assert_ptr_equal(L->wv, L->wqkv + C * C + KV * C);
        assert_ptr_equal(L->w_up, L->w_gate_up + F * C);
    }
    model_free(&m);
}

// A synthetic unshared-classifier file (vocab_size < 0) whose every float is its own index:
// checks where each array lands and the q/k permutation against an independent formula.
static void test_synthetic_unshared(void **state) {
    (void)state;
    const int C = 8, F = 12, L = 2, NH = 2, NKV = 1, V = 5, T = 3, hs = C / NH, kvd = NKV * hs;
    const size_t n = (size_t)V * C + L * C + L * C * C + 2 * L * kvd * C + L * C * C + L * C + 3 * L * F * C + C +
                     (size_t)T * hs + (size_t)V * C;
    float *vals = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) vals[i] = (float)i;
    int32_t hdr[7] = {C, F, L, NH, NKV, -V, T};
    const char *dir = test_tmpdir("l2c");
    char bin[600], tokp[600], err[FTK_ERR_LEN];
    snprintf(bin, sizeof bin, "%s/model.bin", dir);
    FILE *f = fopen(bin, "wb");
    fwrite(hdr, 4, 7, f);
    fwrite(vals, 4, n, f);
    fclose(f);
    Model m = {0};
    if (llama2c_load_weights(&m, bin, err)) fail_msg("%s", err);
    assert_int_equal(m.cfg.vocab_size, V);
    assert_int_equal(m.cfg.tied_head, 0);
    assert_int_equal(m.cfg.max_seq_len, T);
    assert_true(m.w.lm_head != m.w.tok_emb);
    // offsets of the arrays in float units
    size_t o_emb = 0, o_att = o_emb + V * C, o_wq = o_att + L * C, o_wk = o_wq + L * C * C, o_wv = o_wk + L * kvd * C,
           o_wo = o_wv + L * kvd * C, o_ffn = o_wo + L * C * C, o_w1 = o_ffn + L * C, o_w2 = o_w1 + L * F * C,
           o_w3 = o_w2 + L * C * F, o_fin = o_w3 + L * F * C, o_cls = o_fin + C + T * hs;
    assert_true(m.w.tok_emb[7] == 7.0f);
    assert_true(m.w.lm_head[3] == (float)(o_cls + 3));
    assert_true(m.w.out_norm_w[1] == (float)(o_fin + 1));
    for (int l = 0; l < L; l++) {
        const LayerWeights *W = &m.w.layers[l];
        assert_true(W->attn_norm_w[2] == (float)(o_att + l * C + 2));
        assert_true(W->ffn_norm_w[2] == (float)(o_ffn + l * C + 2));
        assert_true(W->wv[5] == (float)(o_wv + l * kvd * C + 5));
        assert_true(W->wo[9] == (float)(o_wo + l * C * C + 9));
        assert_true(W->w_gate[11] == (float)(o_w1 + l * F * C + 11));
        assert_true(W->w_down[11] == (float)(o_w2 + l * C * F + 11));
        assert_true(W->w_up[11] == (float)(o_w3 + l * F * C + 11));
        // HF row (head h, half s, pair j) = Meta row (h, pair j, s): hf = h*hs + s*hs/2 + j, meta = h*hs + 2j + s
        for (int h = 0; h < NH; h++)
            for (int s = 0; s < 2; s++)
                for (int j = 0; j < hs / 2; j++) {
                    int hf = h * hs + s * hs / 2 + j, meta = h * hs + 2 * j + s;
                    assert_true(W->wq[hf * C + 3] == (float)(o_wq + l * C * C + meta * C + 3));
                    if (h < NKV) assert_true(W->wk[hf * C + 3] == (float)(o_wk + l * kvd * C + meta * C + 3));
                }
    }
    model_free(&m);

    // Tokenizer discovery: none beside the model -> clear error naming the model file.
    int rc = load_llama2c(&m, bin, NULL, err);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, "no tokenizer found beside"));
    assert_non_null(strstr(err, bin));
    model_free(&m);
    // A directory with exactly one model .bin: found; the tokenizer step then names the tok*.bin it chose.
    snprintf(tokp, sizeof tokp, "%s/tok7.bin", dir);
    f = fopen(tokp, "wb");
    fputs("garbage", f);
    fclose(f);
    rc = load_llama2c(&m, dir, NULL, err);
    assert_int_not_equal(rc, 0);  // the tokenizer file is garbage
    assert_non_null(strstr(err, "tok7.bin"));
    model_free(&m);
    // tokenizer.bin wins over tok*.bin
    snprintf(tokp, sizeof tokp, "%s/tokenizer.bin", dir);
    f = fopen(tokp, "wb");
    fputs("garbage", f);
    fclose(f);
    rc = load_llama2c(&m, bin, NULL, err);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, "tokenizer.bin"));
    model_free(&m);
    free(vals);
    test_rmtree(dir);
}

// The full loader with the tokenizer found beside the model (tok512.bin) and through the directory.
static void test_stories_with_tokenizer(void **state) {
    (void)state;
    Model m = {0};
    char err[FTK_ERR_LEN];
    const char *paths[] = {shared_path("models/stories260K/stories260K.bin"), shared_path("models/stories260K")};
    for (int i = 0; i < 2; i++) {
        if (model_load(&m, paths[i], NULL, err)) fail_msg("%s", err);
        assert_string_equal(m.format, "llama2c");
        assert_non_null(m.tok);
        assert_int_equal(m.tok->n_vocab, 512);
        assert_int_equal(m.tok->bos_id, 1);
        assert_int_equal(m.tok->eos_id, 2);
        assert_int_equal(m.cfg.vocab_size, 512);
        model_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_config),
        cmocka_unit_test(test_stories_weights_match_hf),
        cmocka_unit_test(test_synthetic_unshared),
        cmocka_unit_test(test_stories_with_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
