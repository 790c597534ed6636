// flags.c — a small flag parser: --name value, --name=value, boolean --name, --help.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "model/parallel.h"

void cli_print_help(const Command *cmd) {
    printf("ftk %s — %s\n\nUsage: %s\n\nFlags:\n", cmd->name, cmd->summary, cmd->usage);
    for (const Flag *f = cmd->flags; f->name; f++) {
        const char *t = f->type == FLAG_INT ? " N" : f->type == FLAG_FLOAT ? " X" : f->type == FLAG_BOOL ? "" : " S";
        char left[64];
        snprintf(left, sizeof left, "%s%s", f->name, t);
        printf("  %-30s %s", left, f->help);
        if (f->def && f->type != FLAG_BOOL) printf(" (default: %s)", f->def);
        printf("\n");
    }
    printf("  %-30s %s\n", "--help", "show this help");
}

void cli_with_commas(size_t v, char *out) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%zu", v), k = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) out[k++] = ',';
        out[k++] = tmp[i];
    }
    out[k] = 0;
}

void cli_usage_error(const Command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ftk %s: ", cmd ? cmd->name : "");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'ftk %s --help' for the flags.\n", cmd ? cmd->name : "");
    exit(EXIT_USAGE);
}

void cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ftk: error: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(EXIT_RUNTIME);
}

static int find_flag(const Command *cmd, const char *name, size_t len) {
    for (int i = 0; cmd->flags[i].name; i++)
        if (strlen(cmd->flags[i].name) == len && strncmp(cmd->flags[i].name, name, len) == 0) return i;
    return -1;
}

static void check_number(Command *cmd, int i) {
    const Flag *f = &cmd->flags[i];
    const char *v = cmd->value[i];
    char *end = NULL;
    if (!v) return;
    if (f->type == FLAG_INT) {
        strtol(v, &end, 10);
    } else if (f->type == FLAG_FLOAT) {
        strtod(v, &end);
    } else {
        return;
    }
    if (end == v || *end) cli_usage_error(cmd, "%s expects a number, got '%s'", f->name, v);
}

void cli_parse(Command *cmd, int argc, char **argv) {
    int n_flags = 0;
    while (cmd->flags[n_flags].name) n_flags++;
    if (n_flags > CLI_MAX_FLAGS) {
        fprintf(stderr, "internal error: too many flags for ftk %s\n", cmd->name);
        abort();
    }
    cmd->list_used = 0;
    for (int i = 0; i < n_flags; i++) {
        cmd->value[i] = cmd->flags[i].def;
        cmd->given[i] = 0;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(cmd);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            if (cmd->n_positional >= cmd->n_positional_max) cli_usage_error(cmd, "unexpected argument '%s'", a);
            cmd->positional[cmd->n_positional++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        int k = find_flag(cmd, a, len);
        if (k < 0) cli_usage_error(cmd, "unknown flag '%.*s'", (int)len, a);
        const Flag *f = &cmd->flags[k];
        const char *val;
        if (f->type == FLAG_BOOL) {
            val = eq ? eq + 1 : "1";
            if (strcmp(val, "true") == 0) val = "1";
            if (strcmp(val, "false") == 0) val = "0";
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) cli_usage_error(cmd, "%s needs a value", f->name);
            val = argv[++i];
        }
        if (f->type == FLAG_LIST) {   // repeats join with ','; the joined text lives in cmd->list_store
            const char *prev = cmd->given[k] ? cmd->value[k] : NULL;
            size_t n = (prev ? strlen(prev) + 1 : 0) + strlen(val) + 1;
            if (n > sizeof cmd->list_store - cmd->list_used) cli_usage_error(cmd, "the values of %s are too long", f->name);
            char *nb = cmd->list_store + cmd->list_used;
            if (prev) snprintf(nb, n, "%s,%s", prev, val);
            else snprintf(nb, n, "%s", val);
            cmd->list_used += n;
            cmd->value[k] = nb;
        } else {
            cmd->value[k] = val;
        }
        cmd->given[k] = 1;
        check_number(cmd, k);
    }
}

void cli_free_flags(Command *cmd) {
    cmd->list_used = 0;   // nothing is allocated: list values live in cmd->list_store
}

static int flag_index(const Command *cmd, const char *name) {
    int k = find_flag(cmd, name, strlen(name));
    if (k < 0) {
        fprintf(stderr, "internal error: flag %s not declared for ftk %s\n", name, cmd->name);
        abort();
    }
    return k;
}

const char *cli_str(const Command *cmd, const char *name) { return cmd->value[flag_index(cmd, name)]; }
int cli_int(const Command *cmd, const char *name) {
    const char *v = cli_str(cmd, name);
    return v ? (int)strtol(v, NULL, 10) : 0;
}
double cli_float(const Command *cmd, const char *name) {
    const char *v = cli_str(cmd, name);
    return v ? strtod(v, NULL) : 0.0;
}
int cli_bool(const Command *cmd, const char *name) {
    const char *v = cli_str(cmd, name);
    return v && strcmp(v, "0") != 0 && *v;
}
int cli_given(const Command *cmd, const char *name) { return cmd->given[flag_index(cmd, name)]; }

int cli_stderr_is_tty(void) { return isatty(2); }

// ftk's pool does the threading (model/parallel.h; OpenBLAS runs single-threaded): n threads,
// 0 = one per online CPU.
void cli_set_threads(int n) { par_set_threads(n); }
