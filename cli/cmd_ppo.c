// cmd_ppo.c — `ftk ppo`: PPO (RLHF) of a LoRA / soft-prompt policy with a value head against a reward
// model from `ftk rm` or a rule, on the prompts of any dataset (rlhf/ppo_train.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/rlhf_common.h"
#include "cli/train_common.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/model.h"
#include "rlhf/kl.h"
#include "rlhf/ppo_train.h"
#include "rlhf/reward_model.h"
#include "rlhf/reward_rule.h"
#include "sft/metrics.h"
#include "sft/progress.h"

static const Flag PPO_OWN_FLAGS[] = {
    {"--model", FLAG_STR, NULL, "base model: HF dir, .gguf, or llama2.c .bin (frozen; policy, reference and RM share it)"},
    {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
    {"--train-file", FLAG_STR, NULL, "prompts: {prompt} JSONL, or any SFT / preference shape (its prompt part is used)"},
    {"--eval-file", FLAG_STR, NULL, "held-out prompts (the default --eval-rate-file)"},
    {"--output-dir", FLAG_STR, NULL, "where the adapter (+ value_head.safetensors), checkpoints and metrics go"},
    {"--overwrite-output-dir", FLAG_BOOL, NULL, "allow an output dir that already holds an adapter"},
    {"--sft-adapter", FLAG_STR, NULL,
     "PEFT adapter to start the policy from; the reference is then base + this adapter, frozen (default: a fresh "
     "adapter, reference = base with the adapter disabled)"},
    {"--reward-model", FLAG_STR, NULL, "reward model dir written by ftk rm"},
    {"--reward-model-base", FLAG_STR, NULL, "the reward model's base when it is not --model (loaded separately)"},
    {"--reward-rule", FLAG_STR, NULL, "a rule instead of a reward model: contains:WORD (1 or 0) or count:WORD"},
    {"--rm-eos", FLAG_STR, "auto",
     "end the sequences the RM scores in EOS: yes, no, or auto (as the RM was trained: no when its training_args.json "
     "says no-eos)"},
    {"--max-new-tokens", FLAG_INT, "53", "tokens sampled per response at most"},
    {"--response-length", FLAG_INT, "0", "rollout width: responses cut / padded to this (0 = the longest of each rollout)"},
    {"--temperature", FLAG_FLOAT, "0.7", "rollout sampling temperature (logp are of softmax(logits / T))"},
    {"--top-k", FLAG_INT, "0", "rollout top-k (0 = off)"},
    {"--top-p", FLAG_FLOAT, "1.0", "rollout nucleus threshold (1 = off)"},
    {"--no-stop", FLAG_BOOL, NULL, "do not stop responses at EOS"},
    {"--num-mini-batches", FLAG_INT, "1",
     "minibatches (optimizer updates) per PPO epoch; prompts per step = batch-size x accumulation x this"},
    {"--ppo-epochs", FLAG_INT, "4", "passes over each rollout"},
    {"--gamma", FLAG_FLOAT, "1.0", "GAE discount"},
    {"--lam", FLAG_FLOAT, "0.95", "GAE lambda"},
    {"--cliprange", FLAG_FLOAT, "0.2", "policy ratio clip epsilon"},
    {"--cliprange-value", FLAG_FLOAT, "0.2", "value clip around the rollout values (0 = unclipped)"},
    {"--vf-coef", FLAG_FLOAT, "0.1", "value loss coefficient"},
    {"--kl-coef", FLAG_FLOAT, "0.05", "KL penalty coefficient beta (initial value when adaptive)"},
    {"--target-kl", FLAG_FLOAT, "0", "adaptive beta: target per-sequence KL (0 = fixed beta)"},
    {"--kl-horizon", FLAG_FLOAT, "10000", "adaptive beta horizon, in samples"},
    {"--kl-estimator", FLAG_STR, "k1", "per-token KL in the reward: k1 (logp - ref), k2, k3, abs"},
    {"--score-clip", FLAG_FLOAT, "0", "clip scores to +-this (0 = off)"},
    {"--missing-eos-penalty", FLAG_FLOAT, "0", "subtracted from the score of a response that did not stop (0 = off)"},
    {"--sample-prompt", FLAG_STR, NULL, "greedy sample from this prompt before and after training"},
    {"--sample-tokens", FLAG_INT, "48", "length of those samples"},
    {0},
};

// PPO's own defaults for shared flags: no dropout (TRL disables it for PPO, so ratio = 1 at the
// start of each rollout), a LoRA learning rate that moves stories260K in tens of steps, a line per step.
static void set_default(Flag *flags, const char *name, const char *def) {
    for (Flag *f = flags; f->name; f++)
        if (strcmp(f->name, name) == 0) f->def = def;
}

// What the shared flags count in PPO.
static void set_help(Flag *flags, const char *name, const char *help) {
    for (Flag *f = flags; f->name; f++)
        if (strcmp(f->name, name) == 0) f->help = help;
}

static KlEstimator parse_estimator(const Command *cmd, const char *s) {
    if (strcmp(s, "k1") == 0 || strcmp(s, "kl") == 0) return KL_K1;
    if (strcmp(s, "k2") == 0 || strcmp(s, "mse") == 0) return KL_K2;
    if (strcmp(s, "k3") == 0) return KL_K3;
    if (strcmp(s, "abs") == 0) return KL_ABS;
    cli_usage_error(cmd, "--kl-estimator must be k1, k2, k3 or abs (got '%s')", s);
}

// Policy adapter from an SFT adapter: the same configuration plus a value head, its tensors copied.
static void policy_from_sft(Adapters *a, const Adapters *sft, const Model *m, float dropout, uint64_t seed) {
    char err[FTK_ERR_LEN];
    AdapterConfig ac = sft->cfg;
    ac.score_head = 0;
    ac.value_head = 1;
    ac.dropout = dropout;
    if (adapters_create(a, &ac, m, seed, err)) cli_die("%s", err);
    for (int i = 0; i < sft->n_views; i++) {
        const AdapterView *v = &sft->views[i];
        if (v->kind == VIEW_SCORE || v->kind == VIEW_VALUE_W || v->kind == VIEW_VALUE_B) continue;
        const AdapterView *w = adapters_find_view(a, v->name);
        if (!w || w->numel != v->numel) cli_die("--sft-adapter: tensor %s does not fit the policy adapter", v->name);
        memcpy(a->params + w->offset, sft->params + v->offset, v->numel * sizeof(float));
    }
}

// --rm-eos: yes / no, or auto = what `ftk rm` did (it appends EOS unless run with --no-eos).
static int rm_wants_eos(const Command *cmd, const char *rm_dir) {
    const char *v = cli_str(cmd, "--rm-eos");
    if (strcmp(v, "yes") == 0) return 1;
    if (strcmp(v, "no") == 0) return 0;
    if (strcmp(v, "auto") != 0) cli_usage_error(cmd, "--rm-eos must be yes, no or auto (got '%s')", v);
    char path[4200], err[FTK_ERR_LEN];
    snprintf(path, sizeof path, "%s/training_args.json", rm_dir);
    cJSON *args = NULL;
    if (!ftk_file_exists(path) || json_read_object(path, &args, err)) return 1;
    int no_eos = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "no-eos"));
    cJSON_Delete(args);
    return !no_eos;
}

typedef struct {
    TrainProgressCtx p;
    int logging_steps;
    double t_start;
    int64_t first_step;
} PpoPrintCtx;

static void print_step(void *ctx, const PpoStepStats *s) {
    PpoPrintCtx *c = ctx;
    if (c->first_step < 0) c->first_step = s->step - 1;
    int last = s->step == s->max_steps;
    if (!(s->step == c->first_step + 1 || last || (c->logging_steps > 0 && s->step % c->logging_steps == 0))) return;
    char eta[32];
    progress_hms(eta, sizeof eta,
                 progress_eta(ftk_now() - c->t_start, s->step - c->first_step, s->max_steps - s->step));
    fprintf(stderr,
            "step %lld/%lld | score %.4f (std %.3f) | kl %.4f (beta %.4f) | entropy %.3f | clip %.3f | approx_kl %.5f | "
            "vloss %.4f | len %.1f | lr %.2e | %.0f tok/s | eta %s\n",
            (long long)s->step, (long long)s->max_steps, s->score_mean, s->score_std, s->kl, s->kl_coef, s->entropy,
            s->clip_frac, s->approx_kl, s->value_loss, s->response_length, s->lr, s->tokens_per_sec, eta);
}

int cmd_ppo(int argc, char **argv) {
    Flag flags[CLI_MAX_FLAGS];
    const Flag *groups[] = {PPO_OWN_FLAGS, TRAIN_ADAPTER_FLAGS, TRAIN_DATA_FLAGS, TRAIN_OPT_FLAGS, EVAL_RATE_FLAGS};
    cli_flags_concat(flags, CLI_MAX_FLAGS, groups, 5);
    set_default(flags, "--lora-dropout", "0");
    set_default(flags, "--learning-rate", "3e-3");
    set_default(flags, "--logging-steps", "1");
    set_help(flags, "--max-steps", "PPO steps (rollout + updates; > 0 overrides --num-train-epochs)");
    set_help(flags, "--num-train-epochs", "passes over the prompts");
    set_help(flags, "--batch-size", "sequences per forward/backward (micro-batch)");
    set_help(flags, "--gradient-accumulation-steps", "micro-batches per minibatch (one optimizer update)");
    set_help(flags, "--max-seq-length", "prompt + response tokens at most (longer prompts are skipped)");
    set_help(flags, "--save-steps",
             "write a checkpoint every N PPO steps, named checkpoint-<optimizer updates> (0 = only the final adapter)");
    set_help(flags, "--logging-steps", "print every N PPO steps (metrics.jsonl gets every step)");
    Command cmd = {.name = "ppo",
                   .summary = "PPO (RLHF) of a LoRA policy + value head against a reward model or a rule",
                   .usage = "ftk ppo --model M --train-file PROMPTS (--reward-model D | --reward-rule contains:WORD) "
                            "--output-dir D [flags]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--train-file")) cli_usage_error(&cmd, "--train-file is required");
    if (!cli_str(&cmd, "--output-dir")) cli_usage_error(&cmd, "--output-dir is required");
    const char *rm_dir = cli_str(&cmd, "--reward-model"), *rule_spec = cli_str(&cmd, "--reward-rule");
    if (!!rm_dir == !!rule_spec) cli_usage_error(&cmd, "give exactly one of --reward-model and --reward-rule");
    if (cli_str(&cmd, "--reward-model-base") && !rm_dir) cli_usage_error(&cmd, "--reward-model-base needs --reward-model");
    const char *unused[] = {"--packing", "--train-on-prompt", "--no-eos", "--eval-steps"};
    for (size_t i = 0; i < sizeof unused / sizeof unused[0]; i++)
        if (cli_given(&cmd, unused[i])) cli_usage_error(&cmd, "%s does not apply to ppo", unused[i]);

    PpoConfig pc;
    ppo_config_default(&pc);
    AdapterConfig ac;
    train_parse_common(&cmd, &pc.train, &ac, 0);
    ac.value_head = 1;
    pc.train.logging_steps = cli_int(&cmd, "--logging-steps");
    pc.gen.max_new_tokens = cli_int(&cmd, "--max-new-tokens");
    pc.gen.temperature = (float)cli_float(&cmd, "--temperature");
    pc.gen.top_k = cli_int(&cmd, "--top-k");
    pc.gen.top_p = (float)cli_float(&cmd, "--top-p");
    pc.gen.stop_at_eos = !cli_bool(&cmd, "--no-stop");
    pc.response_length = cli_int(&cmd, "--response-length");
    pc.num_mini_batches = cli_int(&cmd, "--num-mini-batches");
    pc.ppo_epochs = cli_int(&cmd, "--ppo-epochs");
    pc.gamma = (float)cli_float(&cmd, "--gamma");
    pc.lam = (float)cli_float(&cmd, "--lam");
    pc.cliprange = (float)cli_float(&cmd, "--cliprange");
    pc.cliprange_value = (float)cli_float(&cmd, "--cliprange-value");
    pc.vf_coef = (float)cli_float(&cmd, "--vf-coef");
    pc.kl_coef = cli_float(&cmd, "--kl-coef");
    pc.target_kl = cli_float(&cmd, "--target-kl");
    pc.kl_horizon = cli_float(&cmd, "--kl-horizon");
    pc.kl_estimator = parse_estimator(&cmd, cli_str(&cmd, "--kl-estimator"));
    pc.score_clip = (float)cli_float(&cmd, "--score-clip");
    pc.missing_eos_penalty = (float)cli_float(&cmd, "--missing-eos-penalty");
    if (pc.gen.max_new_tokens < 1) cli_usage_error(&cmd, "--max-new-tokens must be >= 1");
    if (pc.response_length < 0) cli_usage_error(&cmd, "--response-length must be >= 0");
    if (!(pc.gen.temperature > 0)) cli_usage_error(&cmd, "--temperature must be > 0 (PPO needs a sampling policy)");
    if (pc.gen.top_k < 0) cli_usage_error(&cmd, "--top-k must be >= 0");
    if (!(pc.gen.top_p > 0 && pc.gen.top_p <= 1)) cli_usage_error(&cmd, "--top-p must be in (0, 1]");
    if (pc.num_mini_batches < 1 || pc.ppo_epochs < 1) cli_usage_error(&cmd, "--num-mini-batches and --ppo-epochs must be >= 1");
    if (!(pc.gamma >= 0 && pc.gamma <= 1) || !(pc.lam >= 0 && pc.lam <= 1))
        cli_usage_error(&cmd, "--gamma and --lam must be in [0, 1]");
    if (!(pc.cliprange > 0)) cli_usage_error(&cmd, "--cliprange must be > 0");
    if (pc.cliprange_value < 0 || pc.vf_coef < 0 || pc.kl_coef < 0 || pc.target_kl < 0 || pc.score_clip < 0 ||
        pc.missing_eos_penalty < 0)
        cli_usage_error(&cmd, "--cliprange-value, --vf-coef, --kl-coef, --target-kl, --score-clip and "
                              "--missing-eos-penalty must be >= 0");
    if (pc.target_kl > 0 && !(pc.kl_horizon > 0)) cli_usage_error(&cmd, "--kl-horizon must be > 0");
    RewardRule rule;
    char err[FTK_ERR_LEN];
    if (rule_spec && reward_rule_parse(&rule, rule_spec, err)) cli_usage_error(&cmd, "--reward-rule: %s", err);
    const char *out_dir = cli_str(&cmd, "--output-dir");
    train_check_output_dir(out_dir, pc.train.resume_from, cli_bool(&cmd, "--overwrite-output-dir"));

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));

    // policy (+ reference when starting from an SFT adapter)
    Adapters a, sft;
    int have_sft = 0;
    ModelAdapters ref_hooks;
    const char *sft_dir = cli_str(&cmd, "--sft-adapter");
    if (sft_dir) {
        if (peft_load(&sft, &m, sft_dir, err)) cli_die("%s", err);
        have_sft = 1;
        policy_from_sft(&a, &sft, &m, ac.dropout, pc.train.seed);
        adapters_hooks(&sft, 0, &ref_hooks);
        fprintf(stderr, "policy: initialised from %s (its LoRA/prompt configuration; --lora-* flags ignored)\n", sft_dir);
        fprintf(stderr, "reference: base + %s (frozen)\n", sft_dir);
    } else {
        if (adapters_create(&a, &ac, &m, pc.train.seed, err)) cli_die("%s", err);
        fprintf(stderr, "reference: the base model (policy adapter disabled)\n");
    }
    train_print_trainable(&a, &m);
    const int nv = (a.cfg.types & ADAPTER_PROMPT) ? a.cfg.num_virtual_tokens : 0;

    // reward
    Model rm_base;
    int have_rm_base = 0;
    RewardModel rm;
    int have_rm = 0;
    PpoRmScorer rm_scorer;
    PpoRuleScorer rule_scorer;
    PpoScoreFn score_fn;
    void *score_ctx;
    if (rm_dir) {
        const Model *base = &m;
        const char *rb = cli_str(&cmd, "--reward-model-base");
        if (rb && strcmp(rb, cli_str(&cmd, "--model")) != 0) {
            cli_load_model(&rm_base, rb, NULL);
            have_rm_base = 1;
            base = &rm_base;
        }
        if (rm_load(&rm, base, rm_dir, err)) cli_die("%s", err);
        have_rm = 1;
        rm_scorer = (PpoRmScorer){&m, base, &rm.hooks, rm.score_w, rm_wants_eos(&cmd, rm_dir)};
        score_fn = ppo_score_rm;
        score_ctx = &rm_scorer;
        fprintf(stderr, "reward: reward model %s%s%s, scored %s EOS\n", rm_dir,
                have_rm_base ? " on its own base " : " (same base)", have_rm_base ? rb : "",
                rm_scorer.end_with_eos ? "with" : "without");
    } else {
        rule_scorer = (PpoRuleScorer){rule, m.tok};
        score_fn = ppo_score_rule;
        score_ctx = &rule_scorer;
        fprintf(stderr, "reward: rule %s\n", rule_spec);
    }

    // prompts: prompt + response must fit --max-seq-length (and the context)
    DatasetOptions dopt = train_dataset_options(&cmd, DS_PROMPT, &m, nv);
    const int R_cap = pc.response_length > 0 ? pc.response_length : pc.gen.max_new_tokens;
    dopt.max_seq_length -= R_cap;
    if (dopt.max_seq_length < 1)
        cli_usage_error(&cmd, "--max-seq-length leaves no room for a prompt next to %d response tokens", R_cap);
    TokEncoder enc;
    tok_encoder_init(&enc, m.tok);
    Dataset prompts;
    if (dataset_load(&prompts, cli_str(&cmd, "--train-file"), &dopt, &enc, err)) cli_die("%s", err);
    train_print_dataset("prompt", &prompts);
    const int per_step = pc.train.batch_size * pc.train.grad_accum * pc.num_mini_batches;
    fprintf(stderr, "rollout: %d prompts per step (batch %d x accumulation %d x %d mini-batches), %d PPO epochs, "
                    "%d new tokens at most, T %.2g, top-k %d, top-p %.2g\n",
            per_step, pc.train.batch_size, pc.train.grad_accum, pc.num_mini_batches, pc.ppo_epochs,
            pc.gen.max_new_tokens, (double)pc.gen.temperature, pc.gen.top_k, (double)pc.gen.top_p);

    const char *sample = cli_str(&cmd, "--sample-prompt");
    int sample_tokens = cli_int(&cmd, "--sample-tokens");
    ModelAdapters policy_hooks;
    adapters_hooks(&a, 0, &policy_hooks);
    const ModelAdapters *ref_for_eval = have_sft ? &ref_hooks : NULL;
    if (sample && !pc.train.resume_from) train_print_sample("before", &m, ref_for_eval, sample, sample_tokens);
    const int rate = eval_rate_requested(&cmd);
    RateResult rate_before, rate_after;
    char rate_path[4200];
    if (rate && !pc.train.resume_from && !cli_bool(&cmd, "--eval-rate-skip-before")) {
        snprintf(rate_path, sizeof rate_path, "%s/rate_samples_before.jsonl", out_dir);
        if (ftk_mkdirs(out_dir, err)) cli_die("%s", err);
        eval_rate_run(&cmd, &m, ref_for_eval, "rate before (reference)", rate_path, &rate_before);
    }

    cJSON *args = train_args_json(&cmd);
    PpoResult res;
    PpoPrintCtx pctx = {{cli_stderr_is_tty(), 0}, pc.train.logging_steps, ftk_now(), -1};
    if (ppo_train(&m, &a, have_sft ? &ref_hooks : NULL, &prompts, &pc, score_fn, score_ctx, args, print_step, &pctx,
                  &res, err))
        cli_die("%s", err);
    fprintf(stderr, "\ntrained %lld PPO steps in %.1f s (%ld response tokens, %.0f tokens/s); mean score %.4f -> %.4f\n",
            (long long)res.steps_done, res.seconds, res.response_tokens,
            res.seconds > 0 ? res.response_tokens / res.seconds : 0.0, res.first_score, res.last_score);
    fprintf(stderr, "adapter (+ value head) saved to %s\n", out_dir);
    if (sample) train_print_sample("after", &m, &policy_hooks, sample, sample_tokens);
    if (rate) {
        snprintf(rate_path, sizeof rate_path, "%s/rate_samples_after.jsonl", out_dir);
        eval_rate_run(&cmd, &m, &policy_hooks, "rate after (policy)", rate_path, &rate_after);
    }
    cJSON_Delete(args);
    dataset_free(&prompts);
    if (have_rm) rm_free(&rm);
    if (have_rm_base) model_free(&rm_base);
    if (have_sft) adapters_free(&sft);
    adapters_free(&a);
    model_free(&m);
    return 0;
}
