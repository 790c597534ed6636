// cli.h — the ftk binary: one file per subcommand, a tiny flag parser, and the only place that
// prints for humans and exits. Exit codes: 0 ok, 1 runtime failure, 2 usage.
#ifndef FTK_CLI_H
#define FTK_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "model/transformer.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

// Flag table: a command declares its flags with defaults and help; cli_parse fills them.
typedef enum { FLAG_STR, FLAG_INT, FLAG_FLOAT, FLAG_BOOL, FLAG_LIST } FlagType;
typedef struct {
    const char *name;     // "--lora-r"
    FlagType type;
    const char *def;      // default as text (NULL = unset)
    const char *help;
} Flag;

#define CLI_MAX_FLAGS 96

typedef struct {
    const char *name;          // "sft"
    const char *summary;       // one line
    const char *usage;         // "ftk sft --model M --train-file F --output-dir D [flags]"
    const Flag *flags;         // terminated by a {0} entry
    int n_positional_max;      // how many positional arguments are accepted
    // filled by cli_parse:
    const char *positional[4];
    int n_positional;
    const char *value[CLI_MAX_FLAGS];  // per flag: last value given, or the default; FLAG_LIST joins with ','
    int given[CLI_MAX_FLAGS];
    char list_store[16384];     // FLAG_LIST values (joined with ','), no heap
    size_t list_used;
} Command;

// Parses argv (after the command name). Prints help and exits 0 on --help; prints the problem and
// exits 2 on a usage error.
void cli_parse(Command *cmd, int argc, char **argv);
// Resets the FLAG_LIST store (values of FLAG_LIST flags dangle afterwards). cli_parse allocates
// nothing, so a command that exits early leaks nothing either.
void cli_free_flags(Command *cmd);
const char *cli_str(const Command *cmd, const char *name);   // NULL when unset
int cli_int(const Command *cmd, const char *name);
double cli_float(const Command *cmd, const char *name);
int cli_bool(const Command *cmd, const char *name);
int cli_given(const Command *cmd, const char *name);
void cli_usage_error(const Command *cmd, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
void cli_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));  // "ftk: error: ..." exit 1
void cli_print_help(const Command *cmd);
void cli_with_commas(size_t v, char *out);   // 1234567 -> "1,234,567"; out holds at least 27 bytes
int cli_stderr_is_tty(void);
void cli_set_threads(int n);   // ftk worker threads (model/parallel.h); 0 = one per CPU

// Loads a model with its tokenizer or exits 1 with the loader's error.
void cli_load_model(Model *m, const char *path, const char *tokenizer);

// An adapter directory loaded for inference (generate, logits, eval); inactive when no dir given.
typedef struct {
    int active;
    void *adapters;          // lora/ Adapters
    ModelAdapters hooks;     // what the forward consumes
} CliAdapter;
void cli_load_adapter(CliAdapter *a, const Model *m, const char *dir);
void cli_free_adapter(CliAdapter *a);
// An inference command's --threads, --model, --tokenizer and --adapter: sets the worker threads,
// loads the model and the adapter (inactive without --adapter), or dies with the error.
void cli_load_inference(const Command *cmd, Model *m, CliAdapter *a);

// Trainable parameters of a LoRA (rank r > 0 on target_modules) and/or soft prompt for cfg.
int cli_info_trainable(const ModelConfig *cfg, int r, const char *targets, int n_virtual, size_t *out, char *err);

// Subcommands (cli/cmd_*.c)
int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_sft(int argc, char **argv);             // cmd_sft.c
int cmd_eval(int argc, char **argv);            // cmd_eval.c
int cmd_rm(int argc, char **argv);              // cmd_rm.c
int cmd_score(int argc, char **argv);           // cmd_score.c
int cmd_ppo(int argc, char **argv);             // cmd_ppo.c
int cmd_dpo(int argc, char **argv);             // cmd_dpo.c
int cmd_merge(int argc, char **argv);           // cmd_merge.c
int cmd_export_adapter(int argc, char **argv);  // cmd_export_adapter.c
int cmd_convert(int argc, char **argv);         // cmd_convert.c
int cmd_bench(int argc, char **argv);           // cmd_bench.c

#endif
