// test_decode.c — KV-cache decoding against the training-style full forward, and across thread
// counts. Synthetic llama (GQA) and gpt2 models with LoRA on q and v (as `ftk bench` and PPO
// rollouts use them), shapes wide enough that par_sgemm cuts the products into several blocks:
//   - greedy decode of 8 prompts of different lengths as one batch-8 cache, and of one prompt as a
//     batch-1 cache: every step's logits equal model_forward + lm_head_logits over the whole
//     sequence within 1e-4 absolute (logits of magnitude ~5), and the greedy tokens are the
//     argmax of the full forward's logits;
//   - the same runs at 1 and 2 threads give bit-identical logits and tokens (prefill included);
//   - generate() of 8 prompts, sampled at temperature 0.8 with top-k: the same tokens and log-probs
//     at 1 and 2 threads (bitwise), log-probs within 1e-5 of a double log-softmax of the full forward;
//   - the decode bench's bound counts the K/V cache bytes a step reads.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/parallel.h"
#include "model/synthetic.h"
#include "model/transformer.h"
#include "sft/bench_decode.h"

#define N_SEQ 8
#define N_NEW 12     // logits rows per sequence: the prefill's, then N_NEW - 1 decode steps
#define TOL 1e-4

typedef struct {
    Model m;
    LoraHook hooks_mem[4 * LSLOT_COUNT];
    float lora_mem[2][4][2 * 4 * 256];   // per layer, per slot (q, v): A then B
    ModelAdapters ad;
    int prompts[N_SEQ][24], plens[N_SEQ];
} Fixture;

static void fixture_init(Fixture *f, Arch arch) {
    char err[FTK_ERR_LEN];
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 64; c.n_layers = 2; c.n_heads = 8; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 8; c.head_dim = 8;
    c.ffn_dim = 320; c.vocab_size = 1000; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = -1; c.eos_id = -1;
    if (model_init_synthetic(&f->m, &c, 11, err)) fail_msg("%s", err);
    memset(f->hooks_mem, 0, sizeof f->hooks_mem);
    uint64_t rng = 5;
    const int qd = model_q_dim(&f->m.cfg), kvd = model_kv_dim(&f->m.cfg), r = 4;
    for (int l = 0; l < c.n_layers; l++)
        for (int k = 0; k < 2; k++) {
            const int out = k == 0 ? qd : kvd, off = k == 0 ? 0 : qd + kvd;
            float *A = f->lora_mem[l][k], *B = A + r * c.dim;
            for (int i = 0; i < r * c.dim; i++) A[i] = 0.2f * ftk_rand_normal(&rng);
            for (int i = 0; i < out * r; i++) B[i] = 0.2f * ftk_rand_normal(&rng);
            f->hooks_mem[l * LSLOT_COUNT + (k == 0 ? LSLOT_Q : LSLOT_V)] =
                (LoraHook){r, c.dim, out, off, 2.0f, 0.0f, A, B, NULL, NULL};
        }
    f->ad = (ModelAdapters){f->hooks_mem, 0, NULL, NULL, 0};
    for (int s = 0; s < N_SEQ; s++) {
        f->plens[s] = 3 + 2 * s;   // 3 .. 17 tokens
        for (int i = 0; i < f->plens[s]; i++) f->prompts[s][i] = (int)(ftk_rand_u32(&rng) % (uint32_t)c.vocab_size);
    }
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// Greedy decoding of the first n_seq prompts in one cache: logits (N_NEW, n_seq, V), row k of
// sequence s = the next-token logits after k generated tokens; toks (n_seq, N_NEW) the greedy ids.
static void decode_run(Fixture *f, int n_seq, float *logits, int *toks) {
    char err[FTK_ERR_LEN];
    const int V = f->m.cfg.vocab_size;
    KVCache *kv;
    assert_int_equal(kvcache_create(&kv, &f->m, n_seq, 17 + N_NEW, err), 0);
    int seqs[N_SEQ], next[N_SEQ];
    for (int s = 0; s < n_seq; s++) {
        float *z = logits + (size_t)s * V;
        assert_int_equal(kvcache_prefill(&f->m, &f->ad, kv, s, f->prompts[s], f->plens[s], z, err), 0);
        seqs[s] = s;
        next[s] = toks[s * N_NEW] = argmax(z, V);
    }
    for (int k = 1; k < N_NEW; k++) {
        float *z = logits + (size_t)k * n_seq * V;
        assert_int_equal(kvcache_decode(&f->m, &f->ad, kv, seqs, next, n_seq, z, err), 0);
        for (int s = 0; s < n_seq; s++) next[s] = toks[s * N_NEW + k] = argmax(z + (size_t)s * V, V);
    }
    kvcache_free(kv);
}

// Full forward of sequence s (prompt + its generated tokens but the last) with the same adapters;
// compares its logits with the decode's and its argmax with the greedy tokens. Returns max |diff|.
static double check_against_forward(Fixture *f, int s, int n_seq, const float *logits, const int *toks) {
    char err[FTK_ERR_LEN];
    const int V = f->m.cfg.vocab_size, plen = f->plens[s], T = plen + N_NEW - 1;
    int seq[64];
    memcpy(seq, f->prompts[s], (size_t)plen * sizeof(int));
    for (int k = 0; k + 1 < N_NEW; k++) seq[plen + k] = toks[s * N_NEW + k];
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &f->m, 1, T, 0, err), 0);
    assert_int_equal(model_forward(&f->m, &f->ad, rs, seq, 1, T, NULL, NULL, NULL, err), 0);
    float *full = malloc((size_t)T * V * sizeof(float));
    lm_head_logits(&f->m, runstate_final_hidden(rs), T, full);   // (T, C) @ (C, V)
    double worst = 0.0;
    for (int k = 0; k < N_NEW; k++) {
        const float *ref = full + (size_t)(plen - 1 + k) * V, *got = logits + ((size_t)k * n_seq + s) * V;
        const double d = max_abs_diff(ref, got, (size_t)V);
        worst = d > worst ? d : worst;
        assert_int_equal(argmax(ref, V), toks[s * N_NEW + k]);
    }
    free(full);
    runstate_free(rs);
    return worst;
}

static void run_arch(Arch arch) {
    Fixture *f = calloc(1, sizeof *f);
    fixture_init(f, arch);
    const int V = f->m.cfg.vocab_size;
    const size_t n8 = (size_t)N_NEW * N_SEQ * V, n1 = (size_t)N_NEW * V;
    float *l8[2] = {malloc(n8 * sizeof(float)), malloc(n8 * sizeof(float))};
    float *l1[2] = {malloc(n1 * sizeof(float)), malloc(n1 * sizeof(float))};
    int t8[2][N_SEQ * N_NEW], t1[2][N_NEW];
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(par_set_threads(threads), threads);
        decode_run(f, N_SEQ, l8[threads - 1], t8[threads - 1]);
        decode_run(f, 1, l1[threads - 1], t1[threads - 1]);
    }
    par_set_threads(1);
    // bit-identical at 1 and 2 threads
    assert_memory_equal(l8[0], l8[1], n8 * sizeof(float));
    assert_memory_equal(l1[0], l1[1], n1 * sizeof(float));
    assert_memory_equal(t8[0], t8[1], sizeof t8[0]);
    assert_memory_equal(t1[0], t1[1], sizeof t1[0]);
    // against the full forward: batch 8, every sequence; batch 1
    double worst8 = 0.0, mag = 0.0;
    for (int s = 0; s < N_SEQ; s++) {
        const double d = check_against_forward(f, s, N_SEQ, l8[0], t8[0]);
        worst8 = d > worst8 ? d : worst8;
    }
    const double worst1 = check_against_forward(f, 0, 1, l1[0], t1[0]);
    for (size_t i = 0; i < n1; i++) mag = fabsf(l1[0][i]) > mag ? fabsf(l1[0][i]) : mag;
    fprintf(stderr, "%s: decode vs full forward, max |logit diff| batch 8 %.3g, batch 1 %.3g (max |logit| %.2f)\n",
            arch == ARCH_LLAMA ? "llama" : "gpt2", worst8, worst1, mag);
    assert_true(worst8 <= TOL && worst1 <= TOL);
    assert_true(mag > 1.0);   // the tolerance is small against the logits' scale
    // batch 1 generates what sequence 0 of the batch generates
    for (int k = 0; k < N_NEW; k++) assert_int_equal(t1[0][k], t8[0][k]);
    for (int i = 0; i < 2; i++) {
        free(l8[i]);
        free(l1[i]);
    }
    model_free(&f->m);
    free(f);
}

static void test_decode_llama(void **state) { (void)state; run_arch(ARCH_LLAMA); }
static void test_decode_gpt2(void **state) { (void)state; run_arch(ARCH_GPT2); }

static void test_generate_threads_logp(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Fixture *f = calloc(1, sizeof *f);
    fixture_init(f, ARCH_LLAMA);
    const int V = f->m.cfg.vocab_size;
    const int *prompts[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) prompts[s] = f->prompts[s];
    GenParams p = gen_params_default();
    p.max_new_tokens = N_NEW;
    p.temperature = 0.8f;
    p.top_k = 50;
    int *toks[2][N_SEQ], lens[2][N_SEQ];
    float *lps[2][N_SEQ];
    for (int t = 0; t < 2; t++) {
        par_set_threads(t + 1);
        uint64_t rng = 99;
        assert_int_equal(generate(&f->m, &f->ad, prompts, f->plens, N_SEQ, &p, &rng, toks[t], lens[t], lps[t], err), 0);
    }
    par_set_threads(1);
    double worst = 0.0;
    for (int s = 0; s < N_SEQ; s++) {
        assert_int_equal(lens[0][s], N_NEW);
        assert_int_equal(lens[1][s], N_NEW);
        assert_memory_equal(toks[0][s], toks[1][s], N_NEW * sizeof(int));
        assert_memory_equal(lps[0][s], lps[1][s], N_NEW * sizeof(float));
        // reference: log_softmax in double of the full forward's logits
        const int plen = f->plens[s], T = plen + N_NEW - 1;
        int seq[64];
        memcpy(seq, f->prompts[s], (size_t)plen * sizeof(int));
        memcpy(seq + plen, toks[0][s], (size_t)(N_NEW - 1) * sizeof(int));
        float *full;
        assert_int_equal(model_logits_all(&f->m, &f->ad, seq, T, &full, err), 0);
        for (int k = 0; k < N_NEW; k++) {
            const float *z = full + (size_t)(plen - 1 + k) * V;
            double mx = z[0], sum = 0.0;
            for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
            for (int j = 0; j < V; j++) sum += exp(z[j] - mx);
            const double ref = z[toks[0][s][k]] - mx - log(sum), d = fabs(ref - lps[0][s][k]);
            worst = d > worst ? d : worst;
        }
        free(full);
        for (int t = 0; t < 2; t++) {
            free(toks[t][s]);
            free(lps[t][s]);
        }
    }
    fprintf(stderr, "generate: log-probs vs double log-softmax of the full forward: max diff %.3g\n", worst);
    assert_true(worst <= 1e-5);
    model_free(&f->m);
    free(f);
}

// bench_decode: batch 3, 5-token prompts, 4 steps: step k reads 5 + k + 1 positions of K and V in
// each of the 2 layers, kv_dim 16 (2 kv heads x 8); the bound is batch * bw / (weights + cache).
static void test_bench_kv_bytes(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Fixture *f = calloc(1, sizeof *f);
    fixture_init(f, ARCH_LLAMA);
    BenchDecode d;
    assert_int_equal(bench_decode(&f->m, &f->ad, 3, 5, 4, 1, NULL, NULL, &d, err), 0);
    const double mean_len = (6 + 7 + 8 + 9) / 4.0;
    assert_true(fabs(d.kv_bytes_step - 3 * 2 * 2 * 16 * 4 * mean_len) < 1e-9);
    assert_true(fabs(bench_decode_bound_tok_s(3, 1000, 500.0, 3e9) - 3 * 3e9 / 1500.0) < 1e-3);
    model_free(&f->m);
    free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_llama),
        cmocka_unit_test(test_decode_gpt2),
        cmocka_unit_test(test_generate_threads_logp),
        cmocka_unit_test(test_bench_kv_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
