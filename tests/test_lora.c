// test_lora.c — lora/adapter.c and lora/init.c: initial value statistics as PEFT/torch draw them,
// seeded determinism, PEFT trainable-parameter counts for real model sizes, the flat-buffer views
// and the hook wiring (offsets, GQA dims, scaling) on llama and gpt2 configurations.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lora/adapter.h"
#include "model/common.h"
#include "model/model.h"
#include "model/tokenizer.h"

static ModelConfig llama_cfg(int dim, int layers, int heads, int kv_heads, int ffn, int vocab) {
    ModelConfig c = {0};
    c.arch = ARCH_LLAMA;
    c.dim = dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = dim / heads;
    c.ffn_dim = ffn;
    c.vocab_size = vocab;
    c.max_seq_len = 4096;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

static ModelConfig gpt2_cfg(int dim, int layers, int heads, int vocab) {
    ModelConfig c = llama_cfg(dim, layers, heads, heads, 4 * dim, vocab);
    c.arch = ARCH_GPT2;
    c.max_seq_len = 1024;
    c.tied_head = 1;
    return c;
}

// A synthetic model (weights zero except the token embeddings, row v filled with v + c/1000).
static void make_model(Model *m, const ModelConfig *c) {
    char err[FTK_ERR_LEN];
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "synthetic");
    assert_int_equal(model_alloc_weights(m, c, err), 0);
    for (int v = 0; v < c->vocab_size; v++)
        for (int j = 0; j < c->dim; j++) m->w.tok_emb[(size_t)v * c->dim + j] = (float)v + j / 1000.0f;
}

static void stats(const float *x, size_t n, double *mean, double *std, double *maxabs) {
    double s = 0, s2 = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
        if (fabs(x[i]) > m) m = fabs(x[i]);
    }
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
    *maxabs = m;
}

static int all_zero(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f) return 0;
    return 1;
}

// Default init: A ~ U(+-1/sqrt(in)) (kaiming_uniform a=sqrt 5), B = 0.
static void test_init_default(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(256, 2, 8, 2, 512, 50);
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.target_modules[0] = 0;
    snprintf(ac.target_modules, sizeof ac.target_modules, "q_proj,down_proj");
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 42, err), 0);
    int n_a = 0;
    for (int i = 0; i < a.n_views; i++) {
        const AdapterView *v = &a.views[i];
        const float *x = a.params + v->offset;
        if (v->kind == VIEW_LORA_B) {
            assert_true(all_zero(x, v->numel));
            continue;
        }
        double mean, std, mx, bound = 1.0 / sqrt((double)v->shape[1]);  // in = 256 (q) or 512 (down)
        stats(x, v->numel, &mean, &std, &mx);
        assert_true(mx <= bound);
        assert_true(mx > 0.98 * bound);                      // fills the whole interval
        assert_true(fabs(std - bound / sqrt(3.0)) < 0.05 * bound / sqrt(3.0));  // U(-b, b) has std b/sqrt 3
        assert_true(fabs(mean) < 0.05 * bound);
        n_a++;
    }
    assert_int_equal(n_a, 4);
    adapters_free(&a);
    model_free(&m);
}

// "gaussian": A ~ N(0, std = 1/r), B = 0. init false (NONE): B ~ U(+-1/sqrt(r)).
static void test_init_gaussian_and_none(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(256, 2, 8, 8, 512, 50);
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = 4;
    ac.init = LORA_INIT_GAUSSIAN;
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 7, err), 0);
    for (int i = 0; i < a.n_views; i++) {
        const AdapterView *v = &a.views[i];
        double mean, std, mx;
        stats(a.params + v->offset, v->numel, &mean, &std, &mx);
        if (v->kind == VIEW_LORA_B) assert_true(mx == 0.0);
        else assert_true(fabs(std - 0.25) < 0.02 && fabs(mean) < 0.02);
    }
    adapters_free(&a);

    ac.init = LORA_INIT_NONE;
    ac.r = 16;
    assert_int_equal(adapters_create(&a, &ac, &m, 7, err), 0);
    for (int i = 0; i < a.n_views; i++) {
        const AdapterView *v = &a.views[i];
        double mean, std, mx, bound = v->kind == VIEW_LORA_B ? 0.25 : 1.0 / 16;  // 1/sqrt(r=16), 1/sqrt(in=256)
        stats(a.params + v->offset, v->numel, &mean, &std, &mx);
        assert_true(mx <= bound && mx > 0.95 * bound);
        assert_true(fabs(std - bound / sqrt(3.0)) < 0.06 * bound);
    }
    adapters_free(&a);
    model_free(&m);
}

static void test_init_prompt_and_heads(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(512, 1, 8, 8, 64, 300);
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = ADAPTER_LORA | ADAPTER_PROMPT;
    ac.num_virtual_tokens = 20;
    ac.score_head = 1;
    ac.value_head = 1;
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 3, err), 0);
    double mean, std, mx;
    stats(a.prompt, 20 * 512, &mean, &std, &mx);   // nn.Embedding: N(0, 1)
    assert_true(fabs(mean) < 0.03 && fabs(std - 1.0) < 0.03);
    stats(a.score, 512, &mean, &std, &mx);         // N(0, 0.02)
    assert_true(fabs(std - 0.02) < 0.003);
    stats(a.value_w, 512, &mean, &std, &mx);       // U(+-1/sqrt(512))
    assert_true(mx <= 1.0 / sqrt(512.0) && mx > 0.9 / sqrt(512.0));
    assert_true(fabs(a.value_b[0]) <= 1.0 / sqrt(512.0) && a.value_b[0] != 0.0f);
    // the views sit back to back in the documented order: LoRA, prompt, score, value w, value b
    const AdapterView *vp = adapters_find_view(&a, "prompt_embeddings");
    const AdapterView *vs = adapters_find_view(&a, "base_model.model.score.weight");
    const AdapterView *vw = adapters_find_view(&a, "v_head.summary.weight");
    const AdapterView *vb = adapters_find_view(&a, "v_head.summary.bias");
    assert_non_null(vp);
    assert_non_null(vs);
    assert_non_null(vw);
    assert_non_null(vb);
    assert_int_equal(vp->offset, 2 * (8 * 512 + 512 * 8));
    assert_int_equal(vs->offset, vp->offset + 20 * 512);
    assert_int_equal(vw->offset, vs->offset + 512);
    assert_int_equal(vb->offset, vw->offset + 512);
    assert_int_equal(vb->ndim, 1);
    assert_int_equal(vb->shape[0], 1);
    assert_int_equal(a.n_params, vb->offset + 1);
    assert_ptr_equal(a.prompt, a.params + vp->offset);
    assert_ptr_equal(a.dvalue_b, a.grads + vb->offset);
    adapters_free(&a);

    // SAMPLE_VOCAB: every row is a row of the embedding table (row v = v + j/1000).
    ac.types = ADAPTER_PROMPT;
    ac.score_head = ac.value_head = 0;
    ac.prompt_init = PROMPT_INIT_SAMPLE_VOCAB;
    assert_int_equal(adapters_create(&a, &ac, &m, 5, err), 0);
    int distinct = 0;
    for (int i = 0; i < 20; i++) {
        float v = a.prompt[(size_t)i * 512];
        assert_true(v == floorf(v) && v >= 0 && v < 300);
        assert_memory_equal(a.prompt + (size_t)i * 512, m.w.tok_emb + (size_t)v * 512, 512 * sizeof(float));
        distinct += i > 0 && v != a.prompt[(size_t)(i - 1) * 512];
    }
    assert_true(distinct > 10);
    adapters_free(&a);
    model_free(&m);
}

// TEXT: the embeddings of the tokenized text (with BOS, as HF's tokenizer call), cycled to n_virtual.
static void test_init_prompt_text(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(64, 1, 8, 2, 160, 512);
    Model m;
    make_model(&m, &c);
    char err[FTK_ERR_LEN];
    assert_int_equal(tokenizer_load_spm_model(&m.tok, shared_path("models/tiny-llama-hf/tokenizer.model"), err), 0);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 12;
    ac.prompt_init = PROMPT_INIT_TEXT;
    snprintf(ac.prompt_init_text, sizeof ac.prompt_init_text, "Once upon a time");
    Adapters a;
    assert_int_equal(adapters_create(&a, &ac, &m, 1, err), 0);
    // PROVENANCE of tiny-llama-hf: "Once upon a time, ..." -> [1, 403, 407, 261, 378, ...]
    const int want[12] = {1, 403, 407, 261, 378, 1, 403, 407, 261, 378, 1, 403};
    for (int i = 0; i < 12; i++) assert_true(a.prompt[(size_t)i * 64] == (float)want[i]);
    adapters_free(&a);
    // truncation: 3 virtual tokens take the first 3 ids
    ac.num_virtual_tokens = 3;
    assert_int_equal(adapters_create(&a, &ac, &m, 1, err), 0);
    assert_true(a.prompt[2 * 64] == 407.0f);
    adapters_free(&a);
    model_free(&m);   // frees m.tok
}

static void test_deterministic(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(64, 3, 8, 2, 160, 100);
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.init = LORA_INIT_NONE;
    ac.types = ADAPTER_LORA | ADAPTER_PROMPT;
    ac.num_virtual_tokens = 4;
    Adapters a, b, d;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 1234, err), 0);
    assert_int_equal(adapters_create(&b, &ac, &m, 1234, err), 0);
    assert_int_equal(adapters_create(&d, &ac, &m, 1235, err), 0);
    assert_int_equal(a.n_params, b.n_params);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof(float));
    assert_true(memcmp(a.params, d.params, a.n_params * sizeof(float)) != 0);
    adapters_free(&a);
    adapters_free(&b);
    adapters_free(&d);
    model_free(&m);
}

static size_t count(const AdapterConfig *ac, const ModelConfig *mc) {
    size_t n = 0;
    char err[FTK_ERR_LEN];
    int rc = adapters_param_count_for(ac, mc, &n, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    return n;
}

// PEFT print_trainable_parameters on real configurations (no weights allocated).
static void test_param_counts(void **state) {
    (void)state;
    ModelConfig l7 = llama_cfg(4096, 32, 32, 32, 11008, 32000);   // LLaMA-2-7B
    AdapterConfig ac;
    adapter_config_default(&ac);                                 // r 8, q_proj + v_proj
    assert_int_equal(count(&ac, &l7), 4194304);
    ac.r = 16;
    snprintf(ac.target_modules, sizeof ac.target_modules, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
    assert_int_equal(count(&ac, &l7), 39976960);
    snprintf(ac.target_modules, sizeof ac.target_modules, "all-linear");
    assert_int_equal(count(&ac, &l7), 39976960);
    // layers_to_transform: 2 of 32 layers
    adapter_config_default(&ac);
    snprintf(ac.layers_to_transform, sizeof ac.layers_to_transform, "0, 31");
    assert_int_equal(count(&ac, &l7), 4194304 / 16);
    // + 20 virtual tokens + score head
    adapter_config_default(&ac);
    ac.types |= ADAPTER_PROMPT;
    ac.num_virtual_tokens = 20;
    ac.score_head = 1;
    assert_int_equal(count(&ac, &l7), 4194304 + 20 * 4096 + 4096);
    // GQA (TinyLlama-1.1B: 2048 hidden, 22 layers, 4 kv heads of 64): v_proj B is (256, r)
    ModelConfig tl = llama_cfg(2048, 22, 32, 4, 5632, 32000);
    adapter_config_default(&ac);
    assert_int_equal(count(&ac, &tl), 22 * 8 * ((2048 + 2048) + (2048 + 256)));   // 1,126,400

    ModelConfig g = gpt2_cfg(768, 12, 12, 50257);                 // GPT-2 124M
    adapter_config_default(&ac);
    snprintf(ac.target_modules, sizeof ac.target_modules, "c_attn");
    assert_int_equal(count(&ac, &g), 294912);
    adapter_config_default(&ac);                                 // ftk's gpt2 default: q and v blocks
    assert_int_equal(count(&ac, &g), 12 * 2 * 8 * (768 + 768));
    snprintf(ac.target_modules, sizeof ac.target_modules, "all-linear");  // c_attn, c_proj x2, c_fc
    assert_int_equal(count(&ac, &g), 12 * 8 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768)));
    adapter_config_default(&ac);
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 10;
    ac.value_head = 1;
    assert_int_equal(count(&ac, &g), 10 * 768 + 768 + 1);
}

static void check_hook(const Adapters *a, int layer, LoraSlot s, int in, int out, int off) {
    const LoraHook *h = &a->hooks[layer * LSLOT_COUNT + s];
    assert_int_equal(h->r, a->cfg.r);
    assert_int_equal(h->in, in);
    assert_int_equal(h->out, out);
    assert_int_equal(h->out_offset, off);
    assert_true(h->scale == a->scale);
    // A, B are the named views of this module
    char path[128], name[160];
    assert_int_equal(lora_module_path(&a->mcfg, layer, s, path, sizeof path), 0);
    snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", path);
    const AdapterView *va = adapters_find_view(a, name);
    snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", path);
    const AdapterView *vb = adapters_find_view(a, name);
    assert_non_null(va);
    assert_non_null(vb);
    assert_ptr_equal(h->A, a->params + va->offset);
    assert_ptr_equal(h->B, a->params + vb->offset);
    assert_int_equal(va->shape[0], a->cfg.r);
    assert_int_equal(va->shape[1], in);
    assert_int_equal(vb->shape[0], out);
    assert_int_equal(vb->shape[1], a->cfg.r);
    assert_int_equal(vb->offset, va->offset + va->numel);   // A then B
}

static void test_hooks_llama(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(64, 3, 8, 2, 160, 100);   // head_dim 8: q 64 rows, k/v 16 rows
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = 4;
    ac.alpha = 16;
    ac.dropout = 0.1f;
    snprintf(ac.target_modules, sizeof ac.target_modules, "all-linear");
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_true(a.scale == 4.0f);
    for (int l = 0; l < 3; l++) {
        check_hook(&a, l, LSLOT_Q, 64, 64, 0);
        check_hook(&a, l, LSLOT_K, 64, 16, 64);
        check_hook(&a, l, LSLOT_V, 64, 16, 80);
        check_hook(&a, l, LSLOT_O, 64, 64, 0);
        check_hook(&a, l, LSLOT_GATE, 64, 160, 0);
        check_hook(&a, l, LSLOT_UP, 64, 160, 160);
        check_hook(&a, l, LSLOT_DOWN, 160, 64, 0);
        assert_int_equal(a.hooks[l * LSLOT_COUNT + LSLOT_QKV].r, 0);
    }
    assert_string_equal(a.views[0].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    assert_string_equal(a.views[a.n_views - 1].name, "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight");
    assert_int_equal(a.n_params, 3 * 4 * (5 * 64 + 2 * 16 + 64 + 2 * 160 + 160 + 2 * 64 + 64));

    ModelAdapters ma;
    adapters_hooks(&a, 1, &ma);
    assert_ptr_equal(ma.hooks, a.hooks);
    assert_int_equal(ma.n_virtual, 0);
    assert_int_equal(ma.disabled, 0);
    const AdapterView *v = adapters_find_view(&a, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    assert_ptr_equal(a.hooks[LSLOT_COUNT + LSLOT_V].dB, a.grads + v->offset);
    assert_true(a.hooks[LSLOT_COUNT + LSLOT_V].dropout == 0.1f);
    adapters_hooks(&a, 0, &ma);   // frozen: no gradient pointers
    assert_null(a.hooks[LSLOT_COUNT + LSLOT_V].dB);
    assert_null(a.hooks[0].dA);
    adapters_hooks(&a, 1, &ma);
    for (size_t i = 0; i < a.n_params; i++) a.grads[i] = 1.0f;
    adapters_zero_grad(&a);
    assert_true(all_zero(a.grads, a.n_params));
    adapters_free(&a);

    // rsLoRA: alpha / sqrt(r); q,v only, layer 1 only
    adapter_config_default(&ac);
    ac.r = 16;
    ac.alpha = 8;
    ac.use_rslora = 1;
    snprintf(ac.layers_to_transform, sizeof ac.layers_to_transform, "1");
    assert_int_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_true(a.scale == 2.0f);
    assert_int_equal(a.n_views, 4);
    check_hook(&a, 1, LSLOT_Q, 64, 64, 0);
    check_hook(&a, 1, LSLOT_V, 64, 16, 80);
    assert_int_equal(a.hooks[LSLOT_Q].r, 0);
    assert_int_equal(a.hooks[2 * LSLOT_COUNT + LSLOT_V].r, 0);
    adapters_free(&a);
}

static void test_hooks_gpt2(void **state) {
    (void)state;
    ModelConfig c = gpt2_cfg(64, 2, 4, 100);
    Model m;
    make_model(&m, &c);   // model_alloc_weights accepts the hand-made config
    AdapterConfig ac;
    adapter_config_default(&ac);   // q and v blocks of c_attn
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 1, err), 0);
    assert_true(a.scale == 1.0f);
    for (int l = 0; l < 2; l++) {
        check_hook(&a, l, LSLOT_Q, 64, 64, 0);
        check_hook(&a, l, LSLOT_V, 64, 64, 128);
        assert_int_equal(a.hooks[l * LSLOT_COUNT + LSLOT_K].r, 0);
        assert_int_equal(a.hooks[l * LSLOT_COUNT + LSLOT_QKV].r, 0);
    }
    assert_string_equal(a.views[0].name, "base_model.model.transformer.h.0.attn.q_proj.lora_A.weight");
    adapters_free(&a);

    // c_proj names both attn.c_proj (slot O) and mlp.c_proj (slot DOWN), as PEFT's suffix match does.
    snprintf(ac.target_modules, sizeof ac.target_modules, "c_attn, c_proj, c_fc");
    assert_int_equal(adapters_alloc(&a, &ac, &c, err), 0);
    for (int l = 0; l < 2; l++) {
        check_hook(&a, l, LSLOT_QKV, 64, 192, 0);
        check_hook(&a, l, LSLOT_O, 64, 64, 0);
        check_hook(&a, l, LSLOT_UP, 64, 256, 0);
        check_hook(&a, l, LSLOT_DOWN, 256, 64, 0);
    }
    assert_non_null(adapters_find_view(&a, "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight"));
    adapters_free(&a);
    snprintf(ac.target_modules, sizeof ac.target_modules, "attn.c_proj");
    assert_int_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_int_equal(a.n_views, 4);
    assert_int_equal(a.hooks[LSLOT_O].r, 8);
    assert_int_equal(a.hooks[LSLOT_DOWN].r, 0);
    adapters_free(&a);
    // the soft prompt reaches the model through the hook struct
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 3;
    assert_int_equal(adapters_create(&a, &ac, &m, 1, err), 0);
    ModelAdapters ma;
    adapters_hooks(&a, 1, &ma);
    assert_null(ma.hooks);
    assert_int_equal(ma.n_virtual, 3);
    assert_ptr_equal(ma.prompt, a.prompt);
    assert_ptr_equal(ma.dprompt, a.dprompt);
    adapters_free(&a);
    model_free(&m);
}

static void test_bad_configs(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(64, 2, 8, 2, 160, 100), g = gpt2_cfg(64, 2, 4, 100);
    AdapterConfig ac;
    Adapters a;
    char err[FTK_ERR_LEN];
    adapter_config_default(&ac);
    snprintf(ac.target_modules, sizeof ac.target_modules, "q_proj,qproj");
    assert_int_not_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_non_null(strstr(err, "\"qproj\""));
    assert_non_null(strstr(err, "gate_proj"));   // lists the valid names
    snprintf(ac.target_modules, sizeof ac.target_modules, "c_attn");   // a gpt2 name on llama
    assert_int_not_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_non_null(strstr(err, "c_attn"));
    snprintf(ac.target_modules, sizeof ac.target_modules, "gate_proj");   // a llama name on gpt2
    assert_int_not_equal(adapters_alloc(&a, &ac, &g, err), 0);
    assert_non_null(strstr(err, "c_fc"));
    snprintf(ac.target_modules, sizeof ac.target_modules, "c_attn,q_proj");
    assert_int_not_equal(adapters_alloc(&a, &ac, &g, err), 0);
    assert_non_null(strstr(err, "cannot be combined"));
    adapter_config_default(&ac);
    snprintf(ac.layers_to_transform, sizeof ac.layers_to_transform, "2");
    assert_int_not_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_non_null(strstr(err, "layers_to_transform"));
    adapter_config_default(&ac);
    ac.r = 0;
    assert_int_not_equal(adapters_alloc(&a, &ac, &c, err), 0);
    adapter_config_default(&ac);
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 0;
    assert_int_not_equal(adapters_alloc(&a, &ac, &c, err), 0);
    ac.num_virtual_tokens = 2;
    ac.score_head = 1;   // a score head lives in the LoRA adapter's modules_to_save
    assert_int_not_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_null(a.params);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_default),     cmocka_unit_test(test_init_gaussian_and_none),
        cmocka_unit_test(test_init_prompt_and_heads), cmocka_unit_test(test_init_prompt_text),
        cmocka_unit_test(test_deterministic),    cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_hooks_llama),      cmocka_unit_test(test_hooks_gpt2),
        cmocka_unit_test(test_bad_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
