// dataset_testutil.h — helpers for the dataset suites (test_dataset.c, test_dataset_badinput.c):
// byte-level fake encoders and writing small (gzipped) files.
#ifndef FTK_DATASET_TESTUTIL_H
#define FTK_DATASET_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "datasets/tokenize.h"

// Fake ids: BOS 1, EOS 2, PAD 0, byte c -> c + 3. With ctx != NULL the pair "ab" merges into id 300,
// so a prompt ending in 'a' followed by a response starting with 'b' crosses a merge. With
// parse_special, "<|im_end|>" is the special token 301.
#define FAKE_BOS 1
#define FAKE_EOS 2
#define FAKE_AB 300
#define FAKE_IM_END 301
static inline int fake_encode(void *ctx, const char *text, int continuation, int parse_special, int **ids, int *n,
                              char *err) {
    (void)continuation;
    (void)err;
    size_t len = strlen(text);
    *ids = malloc((len + 1) * sizeof(int));
    *n = 0;
    for (size_t i = 0; i < len; i++) {
        if (parse_special && strncmp(text + i, "<|im_end|>", 10) == 0) {
            (*ids)[(*n)++] = FAKE_IM_END;
            i += 9;
        } else if (ctx && text[i] == 'a' && text[i + 1] == 'b') {
            (*ids)[(*n)++] = FAKE_AB;
            i++;
        } else {
            (*ids)[(*n)++] = (unsigned char)text[i] + 3;
        }
    }
    return 0;
}

static inline TokEncoder fake_encoder(int merge_ab) {
    static int on = 1;
    TokEncoder e = {fake_encode, merge_ab ? &on : NULL, FAKE_BOS, FAKE_EOS, 0};
    return e;
}

static inline void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

static inline void write_gz(const char *path, const char *text) {
    gzFile g = gzopen(path, "wb");
    gzwrite(g, text, (unsigned)strlen(text));
    gzclose(g);
}

#endif
