// test_hf.c — model/hf.c: config.json parsing (llama, mistral, gpt2; parameter counts of real
// LLaMA-2-7B and GPT-2-124M configs) and weight loading of the shared HF fixtures. Every weight
// is compared with values read straight from the file bytes by a small reader in this test that
// does not use model/safetensors.c, so a misplaced, untransposed or mis-fused tensor shows.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/model.h"
#include "model/safetensors.h"

// ---------------------------------------------------------------------------------------------
// Independent raw reader: finds "name" in the header text, then its dtype and data_offsets.

static float *raw_tensor(const char *path, const char *name, size_t *n_out) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
    char *hdr = calloc(1, hlen + 1);
    assert_int_equal(fread(hdr, 1, hlen, f), hlen);
    char key[300];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *p = strstr(hdr, key);
    if (!p) fail_msg("%s: no tensor %s", path, name);
    char *dt = strstr(p, "\"dtype\"");
    dt = strchr(dt + 7, '"') + 1;
    int is_bf16 = strncmp(dt, "BF16\"", 5) == 0, is_f32 = strncmp(dt, "F32\"", 4) == 0;
    assert_true(is_bf16 || is_f32);
    char *o = strchr(strstr(p, "\"data_offsets\""), '[') + 1;
    char *end;
    size_t b = strtoull(o, &end, 10);
    size_t e = strtoull(strchr(end, ',') + 1, NULL, 10);
    size_t es = is_bf16 ? 2 : 4, n = (e - b) / es;
    uint8_t *bytes = malloc(e - b + 1);
    assert_int_equal(fseek(f, (long)(8 + hlen + b), SEEK_SET), 0);
    assert_int_equal(fread(bytes, 1, e - b, f), e - b);
    fclose(f);
    float *out = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) {
        if (is_f32) {
            memcpy(&out[i], bytes + 4 * i, 4);
        } else {
            uint32_t bits = (uint32_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
            memcpy(&out[i], &bits, 4);
        }
    }
    free(bytes);
    free(hdr);
    *n_out = n;
    return out;
}

// Asserts that dst[0..n) equals tensor `name` of `path` bit for bit.
static void expect_same(const char *path, const char *name, const float *dst, size_t n) {
    size_t got;
    float *want = raw_tensor(path, name, &got);
    if (got != n) fail_msg("%s: %zu elements, model slot holds %zu", name, got, n);
    if (memcmp(want, dst, n * sizeof(float)) != 0) fail_msg("%s: loaded values differ from the file", name);
    free(want);
}

// dst (c, r) must be the transpose of tensor `name` (r, c).
static void expect_transposed(const char *path, const char *name, const float *dst, size_t r, size_t c) {
    size_t got;
    float *src = raw_tensor(path, name, &got);
    assert_int_equal(got, r * c);
    for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < c; j++)
            if (dst[j * r + i] != src[i * c + j]) fail_msg("%s: element (%zu, %zu) not transposed", name, i, j);
    free(src);
}

// ---------------------------------------------------------------------------------------------

static void test_tiny_llama(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m = {0};
    const char *dir = shared_path("models/tiny-llama-hf");
    if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
    const ModelConfig *c = &m.cfg;
    assert_int_equal(c->arch, ARCH_LLAMA);
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->n_layers, 3);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 2);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->ffn_dim, 160);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->max_seq_len, 256);
    assert_true(c->norm_eps == 1e-5f);
    assert_true(c->rope_theta == 10000.0f);
    assert_int_equal(c->tied_head, 0);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->eos_id, 2);
    assert_string_equal(m.format, "hf");
    assert_string_equal(m.src_dtype, "F32");
    assert_non_null(m.hf_config_json);
    assert_non_null(strstr(m.hf_config_json, "\"num_key_value_heads\": 2"));
    assert_null(m.tok);

    char file[4200], name[200];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    const size_t C = 64, F = 160, QD = 64, KVD = 16;
    expect_same(file, "model.embed_tokens.weight", m.w.tok_emb, 512 * C);
    expect_same(file, "lm_head.weight", m.w.lm_head, 512 * C);
    assert_true(m.w.lm_head != m.w.tok_emb);
    expect_same(file, "model.norm.weight", m.w.out_norm_w, C);
    for (int l = 0; l < 3; l++) {
        const LayerWeights *L = &m.w.layers[l];
        // The fused buffers: wqkv = [q (QD rows); k (KVD); v (KVD)], w_gate_up = [gate (F); up (F)].
        assert_ptr_equal(L->wk, L->wqkv + QD * C);
        assert_ptr_equal(L->wv, L->wqkv + (QD + KVD) * C);
        assert_ptr_equal(L->w_up, L->w_gate_up + F * C);
        const struct { const char *suffix; const float *dst; size_t n; } parts[] = {
            {"input_layernorm.weight", L->attn_norm_w, C},
            {"self_attn.q_proj.weight", L->wqkv, QD * C},
            {"self_attn.k_proj.weight", L->wqkv + QD * C, KVD * C},
            {"self_attn.v_proj.weight", L->wqkv + (QD + KVD) * C, KVD * C},
            {"self_attn.o_proj.weight", L->wo, C * QD},
            {"post_attention_layernorm.weight", L->ffn_norm_w, C},
            {"mlp.gate_proj.weight", L->w_gate_up, F * C},
            {"mlp.up_proj.weight", L->w_gate_up + F * C, F * C},
            {"mlp.down_proj.weight", L->w_down, C * F},
        };
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, parts[i].suffix);
            expect_same(file, name, parts[i].dst, parts[i].n);
        }
    }
    // Every float of the block is accounted for: 512*64*2 + 64 + 3 * (64 + 96*64 + 64*64 + 64 + 2*160*64 + 64*160)
    assert_int_equal(m.n_weight_floats, 512 * 64 * 2 + 64 + 3 * (64 + 96 * 64 + 64 * 64 + 64 + 320 * 64 + 64 * 160));
    model_free(&m);
}

static void test_tiny_gpt2(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m = {0};
    const char *dir = shared_path("models/tiny-gpt2-hf");
    if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
    const ModelConfig *c = &m.cfg;
    assert_int_equal(c->arch, ARCH_GPT2);
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->n_layers, 2);
    assert_int_equal(c->n_heads, 4);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 16);
    assert_int_equal(c->ffn_dim, 256);   // n_inner null -> 4 * n_embd
    assert_int_equal(c->vocab_size, 50257);
    assert_int_equal(c->max_seq_len, 256);
    assert_true(c->norm_eps == 1e-5f);
    assert_int_equal(c->tied_head, 1);
    assert_int_equal(c->bos_id, 50256);
    assert_int_equal(c->eos_id, 50256);
    assert_string_equal(m.src_dtype, "F32");
    assert_ptr_equal(m.w.lm_head, m.w.tok_emb);

    char file[4200], name[200];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    const size_t C = 64, F = 256;
    expect_same(file, "transformer.wte.weight", m.w.tok_emb, 50257 * C);
    expect_same(file, "transformer.wpe.weight", m.w.pos_emb, 256 * C);
    expect_same(file, "transformer.ln_f.weight", m.w.out_norm_w, C);
    expect_same(file, "transformer.ln_f.bias", m.w.out_norm_b, C);
    for (int l = 0; l < 2; l++) {
        const LayerWeights *L = &m.w.layers[l];
#define NAME(s) (snprintf(name, sizeof name, "transformer.h.%d.%s", l, s), name)
        expect_same(file, NAME("ln_1.weight"), L->attn_norm_w, C);
        expect_same(file, NAME("ln_1.bias"), L->attn_norm_b, C);
        expect_same(file, NAME("ln_2.weight"), L->ffn_norm_w, C);
        expect_same(file, NAME("ln_2.bias"), L->ffn_norm_b, C);
        // Conv1D (in, out) -> ftk (out, in)
        expect_transposed(file, NAME("attn.c_attn.weight"), L->wqkv, C, 3 * C);
        expect_same(file, NAME("attn.c_attn.bias"), L->bqkv, 3 * C);
        expect_transposed(file, NAME("attn.c_proj.weight"), L->wo, C, C);
        expect_same(file, NAME("attn.c_proj.bias"), L->bo, C);
        expect_transposed(file, NAME("mlp.c_fc.weight"), L->w_up, C, F);
        expect_same(file, NAME("mlp.c_fc.bias"), L->b_up, F);
        expect_transposed(file, NAME("mlp.c_proj.weight"), L->w_down, F, C);
        expect_same(file, NAME("mlp.c_proj.bias"), L->b_down, C);
#undef NAME
    }
    // One element by hand: c_attn.weight of layer 1 at (in 5, out 130) is the v block (out >= 2C),
    // so it sits in row 130 of wqkv = row 2 of wv, column 5.
    size_t n;
    float *ca = raw_tensor(file, "transformer.h.1.attn.c_attn.weight", &n);
    assert_true(m.w.layers[1].wv[2 * C + 5] == ca[5 * 3 * C + 130]);
    free(ca);
    assert_int_equal(model_param_count(c), m.n_weight_floats);
    model_free(&m);
}

// The bf16 sharded copy must equal the bf16 rounding of the F32 model, every float of it.
static void test_bf16_sharded(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model f32 = {0}, bf = {0};
    if (hf_load_weights(&f32, shared_path("models/tiny-llama-hf"), err)) fail_msg("%s", err);
    if (hf_load_weights(&bf, shared_path("models/tiny-llama-hf-bf16-sharded"), err)) fail_msg("%s", err);
    assert_string_equal(bf.src_dtype, "BF16");
    assert_non_null(strstr(bf.hf_config_json, "bfloat16"));
    assert_int_equal(bf.n_weight_floats, f32.n_weight_floats);
    assert_memory_equal(&bf.cfg, &f32.cfg, sizeof(ModelConfig));
    size_t diffs = 0, changed = 0;
    for (size_t i = 0; i < f32.n_weight_floats; i++) {
        float want = ftk_bf16_to_f32(ftk_f32_to_bf16(f32.weight_mem[i]));
        if (memcmp(&want, &bf.weight_mem[i], 4) != 0) diffs++;
        if (want != f32.weight_mem[i]) changed++;
    }
    assert_int_equal(diffs, 0);
    assert_true(changed > f32.n_weight_floats / 2);   // the rounding really happened
    model_free(&f32);
    model_free(&bf);
}

static void test_stories260K(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m = {0};
    const char *dir = shared_path("models/stories260K-hf");
    if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
    const ModelConfig *c = &m.cfg;
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->ffn_dim, 172);
    assert_int_equal(c->max_seq_len, 512);
    assert_int_equal(c->tied_head, 1);
    assert_ptr_equal(m.w.lm_head, m.w.tok_emb);
    char file[4200];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    expect_same(file, "model.embed_tokens.weight", m.w.tok_emb, 512 * 64);
    expect_same(file, "model.layers.4.self_attn.v_proj.weight", m.w.layers[4].wqkv + (64 + 32) * 64, 32 * 64);
    expect_same(file, "model.layers.2.mlp.up_proj.weight", m.w.layers[2].w_gate_up + 172 * 64, 172 * 64);
    model_free(&m);
}

// ---------------------------------------------------------------------------------------------
// Synthetic directories written with the safetensors writer from a real fixture.

static void copy_file(const char *src, const char *dst) {
    char *data, err[FTK_ERR_LEN];
    size_t len;
    assert_int_equal(ftk_read_file(src, &data, &len, err), 0);
    assert_int_equal(ftk_write_file_atomic(dst, data, len, err), 0);
    free(data);
}

// Rewrites src_dir's model.safetensors into dst_dir with every tensor stored as `dt`, except
// `other_name` stored as `other_dt`; extra_name (if not NULL) is added as a copy of extra_src.
static void rewrite_model(const char *src_dir, const char *dst_dir, StDtype dt, const char *other_name,
                          StDtype other_dt, const char *extra_name, const char *extra_src) {
    char err[FTK_ERR_LEN], p[4200], q[4200];
    snprintf(p, sizeof p, "%s/config.json", src_dir);
    snprintf(q, sizeof q, "%s/config.json", dst_dir);
    copy_file(p, q);
    snprintf(p, sizeof p, "%s/model.safetensors", src_dir);
    StFile f;
    assert_int_equal(st_open(&f, p, err), 0);
    float **bufs = calloc((size_t)f.n_tensors + 1, sizeof *bufs);
    StWriter *w;
    assert_int_equal(st_writer_create(&w, err), 0);
    for (int i = 0; i <= f.n_tensors; i++) {
        const StTensor *t = i < f.n_tensors ? &f.tensors[i] : (extra_name ? st_find(&f, extra_src) : NULL);
        if (!t) continue;
        const char *name = i < f.n_tensors ? t->name : extra_name;
        bufs[i] = malloc(t->numel * sizeof(float) + 1);
        assert_int_equal(st_read_f32(&f, t, bufs[i], t->numel, err), 0);
        StDtype out = other_name && strcmp(name, other_name) == 0 ? other_dt : dt;
        assert_int_equal(st_writer_add_f32(w, name, t->ndim, t->shape, bufs[i], out, err), 0);
    }
    snprintf(q, sizeof q, "%s/model.safetensors", dst_dir);
    assert_int_equal(st_writer_write(w, q, err), 0);
    st_writer_free(w);
    for (int i = 0; i <= f.n_tensors; i++) free(bufs[i]);
    free(bufs);
    st_close(&f);
}

// F16 weights convert exactly; one BF16 tensor makes the model "mixed".
static void test_f16_and_mixed(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    const char *src = shared_path("models/tiny-llama-hf");
    Model ref = {0}, m = {0};
    if (hf_load_weights(&ref, src, err)) fail_msg("%s", err);

    const char *dir = test_tmpdir("hf-f16");
    rewrite_model(src, dir, ST_F16, NULL, ST_F16, NULL, NULL);
    if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
    assert_string_equal(m.src_dtype, "F16");
    for (size_t i = 0; i < ref.n_weight_floats; i++)
        assert_true(m.weight_mem[i] == ftk_f16_to_f32(ftk_f32_to_f16(ref.weight_mem[i])));
    model_free(&m);
    test_rmtree(dir);

    dir = test_tmpdir("hf-mixed");
    rewrite_model(src, dir, ST_F32, "model.norm.weight", ST_BF16, NULL, NULL);
    if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
    assert_string_equal(m.src_dtype, "mixed");
    assert_memory_equal(m.w.tok_emb, ref.w.tok_emb, 512 * 64 * sizeof(float));
    for (int i = 0; i < 64; i++) assert_true(m.w.out_norm_w[i] == ftk_bf16_to_f32(ftk_f32_to_bf16(ref.w.out_norm_w[i])));
    model_free(&m);
    test_rmtree(dir);
    model_free(&ref);
}

// A tied model whose file also carries lm_head.weight (some exporters write it) still loads,
// with the head shared with the embeddings as HF does.
static void test_tied_with_lm_head_copy(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    const char *dir = test_tmpdir("hf-tiedcopy");
    rewrite_model(shared_path("models/stories260K-hf"), dir, ST_F32, NULL, ST_F32, "lm_head.weight",
                  "model.embed_tokens.weight");
    Model m = {0};
    if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
    assert_ptr_equal(m.w.lm_head, m.w.tok_emb);
    model_free(&m);
    test_rmtree(dir);
}

// ---------------------------------------------------------------------------------------------
// config.json only

static const char *LLAMA2_7B =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 11008, \"max_position_embeddings\": 4096, \"model_type\": \"llama\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 32,"
    " \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": null, \"tie_word_embeddings\": false,"
    " \"torch_dtype\": \"float16\", \"transformers_version\": \"4.31.0.dev0\", \"use_cache\": true,"
    " \"vocab_size\": 32000}";

static const char *GPT2_124M =
    "{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"], \"attn_pdrop\": 0.1,"
    " \"bos_token_id\": 50256, \"embd_pdrop\": 0.1, \"eos_token_id\": 50256, \"initializer_range\": 0.02,"
    " \"layer_norm_epsilon\": 1e-05, \"model_type\": \"gpt2\", \"n_ctx\": 1024, \"n_embd\": 768, \"n_head\": 12,"
    " \"n_layer\": 12, \"n_positions\": 1024, \"resid_pdrop\": 0.1, \"summary_activation\": null,"
    " \"summary_first_dropout\": 0.1, \"summary_proj_to_labels\": true, \"summary_type\": \"cls_index\","
    " \"summary_use_proj\": true, \"vocab_size\": 50257}";

// LLaMA-3-8B style: eos list, larger rope_theta, explicit head_dim; and a Mistral config.
static const char *LLAMA3 =
    "{\"model_type\": \"llama\", \"hidden_size\": 4096, \"intermediate_size\": 14336,"
    " \"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"head_dim\": 128,"
    " \"vocab_size\": 128256, \"max_position_embeddings\": 8192, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 500000.0, \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128009]}";
static const char *MISTRAL =
    "{\"model_type\": \"mistral\", \"hidden_size\": 4096, \"intermediate_size\": 14336,"
    " \"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8,"
    " \"vocab_size\": 32000, \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 1000000.0, \"sliding_window\": 4096, \"tie_word_embeddings\": false}";

static void write_config(const char *dir, const char *json) {
    char p[600], err[FTK_ERR_LEN];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(ftk_write_file_atomic(p, json, strlen(json), err), 0);
}

static void test_config_only(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], file[600];
    ModelConfig c;
    const char *dir = test_tmpdir("hf-cfg");
    snprintf(file, sizeof file, "%s/config.json", dir);

    write_config(dir, LLAMA2_7B);
    if (model_config_from_hf(&c, dir, err)) fail_msg("%s", err);
    assert_int_equal(c.arch, ARCH_LLAMA);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.n_kv_heads, 32);
    assert_int_equal(c.tied_head, 0);
    assert_int_equal(model_param_count(&c), 6738415616ull);
    memset(&c, 0, sizeof c);
    if (model_config_from_hf(&c, file, err)) fail_msg("%s", err);   // the file itself works too
    assert_int_equal(model_param_count(&c), 6738415616ull);

    write_config(dir, GPT2_124M);
    if (model_config_from_hf(&c, dir, err)) fail_msg("%s", err);
    assert_int_equal(c.arch, ARCH_GPT2);
    assert_int_equal(c.ffn_dim, 3072);   // n_inner absent -> 4 * n_embd
    assert_int_equal(c.max_seq_len, 1024);
    assert_int_equal(c.tied_head, 1);
    assert_int_equal(model_param_count(&c), 124439808ull);

    write_config(dir, LLAMA3);
    if (model_config_from_hf(&c, dir, err)) fail_msg("%s", err);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.eos_id, 128001);   // first of the list
    assert_int_equal(c.bos_id, 128000);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.tied_head, 0);
    // Meta-Llama-3-8B has 8,030,261,248 parameters.
    assert_int_equal(model_param_count(&c), 8030261248ull);

    write_config(dir, MISTRAL);
    if (model_config_from_hf(&c, dir, err)) fail_msg("%s", err);
    assert_int_equal(c.arch, ARCH_LLAMA);
    assert_int_equal(c.max_seq_len, 32768);
    assert_true(c.norm_eps == 1e-5f);
    assert_int_equal(c.bos_id, -1);   // absent
    // Mistral-7B-v0.1 has 7,241,732,096 parameters.
    assert_int_equal(model_param_count(&c), 7241732096ull);

    // Defaults: num_key_value_heads = heads, rope_theta 1e4, rms_norm_eps 1e-6, untied.
    write_config(dir, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128,"
                      " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100,"
                      " \"max_position_embeddings\": 64, \"num_key_value_heads\": null}");
    if (model_config_from_hf(&c, dir, err)) fail_msg("%s", err);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_true(c.rope_theta == 10000.0f);
    assert_true(c.norm_eps == 1e-6f);
    assert_int_equal(c.tied_head, 0);
    test_rmtree(dir);
}

// load_hf_dir adds the tokenizer; until one loads, it fails with a clear "no tokenizer" error
// after the weights loaded.
static void test_load_with_tokenizer(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    const char *dir = shared_path("models/tiny-llama-hf");
    int rc = model_load(&m, dir, NULL, err);
    if (rc == 0) {
        assert_non_null(m.tok);
        assert_string_equal(m.format, "hf");
        model_free(&m);
    } else {
        assert_non_null(strstr(err, "no tokenizer"));
        assert_non_null(strstr(err, "tiny-llama-hf"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_llama),
        cmocka_unit_test(test_tiny_gpt2),
        cmocka_unit_test(test_bf16_sharded),
        cmocka_unit_test(test_stories260K),
        cmocka_unit_test(test_f16_and_mixed),
        cmocka_unit_test(test_tied_with_lm_head_copy),
        cmocka_unit_test(test_config_only),
        cmocka_unit_test(test_load_with_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
