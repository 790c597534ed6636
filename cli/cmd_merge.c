// cmd_merge.c — (STUB: to be implemented).
#include <stdio.h>
#include "cli/cli.h"
int cmd_merge(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "ftk: this command is not implemented yet\n");
    return 1;
}
