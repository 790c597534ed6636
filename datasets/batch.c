// batch.c — see batch.h.
#include "datasets/batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/shuffle.h"
#include "model/common.h"

// This epoch's order from cur.epoch_rng; next_rng becomes the state the next epoch starts from.
static void make_order(DataLoader *L) {
    for (int i = 0; i < L->ds->n; i++) L->order[i] = i;
    uint64_t rng = L->cur.epoch_rng;
    if (L->shuffle) shuffle_ints(L->order, L->ds->n, &rng);
    L->next_rng = rng;
}

void loader_free(DataLoader *L) {
    Batch *b = &L->batch;
    free(b->tokens);
    free(b->targets);
    free(b->lengths);
    free(b->pos_ids);
    free(b->seg_ids);
    free(b->items);
    free(L->order);
    free(L->row_mask);
    memset(L, 0, sizeof *L);
}

int loader_init(DataLoader *L, const Dataset *ds, int batch_size, int shuffle, uint64_t seed, int pack_len,
                char *err) {
    memset(L, 0, sizeof *L);
    if (batch_size < 1) return ftk_err(err, "%s: batch size %d must be at least 1", ds->path, batch_size);
    if (ds->n < 1) return ftk_err(err, "%s: empty dataset", ds->path);
    if (pack_len < 0) return ftk_err(err, "%s: packing length %d is negative", ds->path, pack_len);
    if (pack_len > 0 && ds->seqs_per_item != 1)
        return ftk_err(err, "%s: packing applies to SFT and prompt data, not to preference pairs", ds->path);
    int max_len = 0;
    for (int s = 0; s < ds->n * ds->seqs_per_item; s++)
        if (ds->seqs[s].len > max_len) max_len = ds->seqs[s].len;
    if (pack_len > 0 && max_len > pack_len)
        return ftk_err(err, "%s: a sequence of %d tokens does not fit a packed row of %d (set max_seq_length <= %d)",
                       ds->path, max_len, pack_len, pack_len);
    L->ds = ds;
    L->batch_size = batch_size;
    L->shuffle = shuffle;
    L->pack_len = pack_len;
    L->cur.seed = seed;
    L->cur.n_items = ds->n;
    L->cur.epoch_rng = shuffle_rng_init(seed, 0);

    // Capacity: rows x columns of the largest possible batch.
    size_t rows = (size_t)batch_size * (size_t)ds->seqs_per_item, cols = (size_t)(pack_len > 0 ? pack_len : max_len);
    size_t cells, bytes;
    if (ftk_mul(rows, cols, &cells) != 0 || ftk_mul(cells, sizeof(int), &bytes) != 0)
        return ftk_err(err, "%s: batch %zu x %zu too large", ds->path, rows, cols);
    Batch *b = &L->batch;
    b->tokens = malloc(bytes);
    b->targets = malloc(bytes);
    b->pos_ids = malloc(bytes);
    b->seg_ids = malloc(bytes);
    b->lengths = malloc(rows * sizeof(int));
    // Packing can put many short items in one batch: at most one per token.
    size_t max_items = pack_len > 0 ? cells : (size_t)batch_size;
    b->items = malloc(max_items * sizeof(int));
    L->row_mask = malloc(cells);
    L->order = malloc((size_t)ds->n * sizeof(int));
    if (!b->tokens || !b->targets || !b->pos_ids || !b->seg_ids || !b->lengths || !b->items || !L->row_mask ||
        !L->order) {
        loader_free(L);
        return ftk_err(err, "%s: out of memory for batches", ds->path);
    }
    make_order(L);
    return 0;
}

DataCursor loader_cursor(const DataLoader *L) { return L->cur; }

int loader_restore(DataLoader *L, const DataCursor *c, char *err) {
    if (c->seed != L->cur.seed)
        return ftk_err(err, "%s: data cursor was saved with seed %" PRIu64 ", this run uses %" PRIu64, L->ds->path,
                       c->seed, L->cur.seed);
    if (c->n_items != L->ds->n)
        return ftk_err(err, "%s: data cursor was saved for %" PRId64 " items, the dataset has %d", L->ds->path,
                       c->n_items, L->ds->n);
    if (c->epoch < 0 || c->position < 0 || c->position > L->ds->n)
        return ftk_err(err, "%s: data cursor out of range (epoch %" PRId64 ", position %" PRId64 ")", L->ds->path,
                       c->epoch, c->position);
    L->cur = *c;
    make_order(L);
    return 0;
}

// Copies sequence s into row b at column col, as the seg-th sequence of the row.
static void place(DataLoader *L, int T, int b, int col, int s, int seg) {
    const Dataset *ds = L->ds;
    const Example *e = dataset_seq(ds, s);
    const int *ids = dataset_seq_ids(ds, s);
    const unsigned char *mask = dataset_seq_mask(ds, s);
    Batch *B = &L->batch;
    size_t at = (size_t)b * (size_t)T + (size_t)col;
    memcpy(B->tokens + at, ids, (size_t)e->len * sizeof(int));
    memcpy(L->row_mask + at, mask, (size_t)e->len);
    for (int t = 0; t < e->len; t++) {
        B->pos_ids[at + (size_t)t] = t;
        B->seg_ids[at + (size_t)t] = seg;
    }
}

// Fills rows 0..B-1 with padding.
static void clear_rows(DataLoader *L, int rows, int T) {
    Batch *B = &L->batch;
    size_t cells = (size_t)rows * (size_t)T;
    for (size_t i = 0; i < cells; i++) {
        B->tokens[i] = L->ds->pad_id;
        B->pos_ids[i] = 0;
        B->seg_ids[i] = -1;
    }
    memset(L->row_mask, 0, cells);
}

// targets[b][t] = tokens[b][t+1] if t+1 is in the same sequence and trained, else -1.
static void make_targets(DataLoader *L) {
    Batch *B = &L->batch;
    B->n_targets = 0;
    for (int b = 0; b < B->B; b++) {
        size_t row = (size_t)b * (size_t)B->T;
        for (int t = 0; t < B->T; t++) {
            size_t i = row + (size_t)t;
            int trained = t + 1 < B->T && B->seg_ids[i] >= 0 && B->seg_ids[i + 1] == B->seg_ids[i] && L->row_mask[i + 1];
            B->targets[i] = trained ? B->tokens[i + 1] : -1;
            B->n_targets += trained;
        }
    }
}

int loader_next(DataLoader *L, const Batch **out, char *err) {
    const Dataset *ds = L->ds;
    Batch *B = &L->batch;
    *out = NULL;
    if (L->cur.position >= ds->n) {   // epoch used up: the next one starts
        L->cur.epoch++;
        L->cur.position = 0;
        L->cur.epoch_rng = L->next_rng;
        make_order(L);
    }
    B->epoch = L->cur.epoch;
    B->n_items = 0;
    if (L->pack_len > 0) {
        int T = L->pack_len, row = 0, col = 0, seg = 0;
        B->T = T;
        clear_rows(L, L->batch_size, T);
        for (int r = 0; r < L->batch_size; r++) B->lengths[r] = 0;
        while (L->cur.position < ds->n) {
            int item = L->order[L->cur.position];
            int len = ds->seqs[item].len;
            if (col + len > T) {   // does not fit what is left of this row: next row
                row++;
                col = 0;
                seg = 0;
                if (row == L->batch_size) break;
            }
            place(L, T, row, col, item, seg);
            B->items[B->n_items++] = item;
            col += len;
            seg++;
            B->lengths[row] = col;
            L->cur.position++;
        }
        B->B = col > 0 ? row + 1 : row;
        if (B->B > L->batch_size) B->B = L->batch_size;
    } else {
        int n_items = L->batch_size;
        if (n_items > ds->n - L->cur.position) n_items = (int)(ds->n - L->cur.position);
        int k = ds->seqs_per_item, T = 0;
        for (int i = 0; i < n_items; i++) {
            int item = L->order[L->cur.position + i];
            B->items[i] = item;
            for (int j = 0; j < k; j++)
                if (ds->seqs[item * k + j].len > T) T = ds->seqs[item * k + j].len;
        }
        B->n_items = n_items;
        B->B = n_items * k;
        B->T = T;
        clear_rows(L, B->B, T);
        // Side j of item i goes to row j * n_items + i (preference: chosen rows first).
        for (int i = 0; i < n_items; i++) {
            for (int j = 0; j < k; j++) {
                int s = B->items[i] * k + j, row = j * n_items + i;
                place(L, T, row, 0, s, 0);
                B->lengths[row] = ds->seqs[s].len;
            }
        }
        L->cur.position += n_items;
    }
    B->n_pairs = ds->seqs_per_item == 2 ? B->n_items : 0;
    B->last_in_epoch = L->cur.position >= ds->n;
    make_targets(L);
    if (B->B == 0) return ftk_err(err, "%s: empty batch", ds->path);
    *out = B;
    return 0;
}

int64_t loader_batches_in_epoch(const DataLoader *L) {
    const Dataset *ds = L->ds;
    if (L->pack_len == 0) return (ds->n + L->batch_size - 1) / L->batch_size;
    // Packing: replay the greedy row filling over this epoch's order.
    int64_t rows = 0;
    int col = 0;
    for (int p = 0; p < ds->n; p++) {
        int len = ds->seqs[L->order[p]].len;
        if (col + len > L->pack_len || p == 0) {
            rows++;
            col = 0;
        }
        col += len;
    }
    return (rows + L->batch_size - 1) / L->batch_size;
}

cJSON *batch_cursor_to_json(const DataCursor *c) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, c->seed);
    cJSON_AddStringToObject(j, "seed", buf);
    snprintf(buf, sizeof buf, "%" PRId64, c->n_items);
    cJSON_AddStringToObject(j, "n_items", buf);
    snprintf(buf, sizeof buf, "%" PRId64, c->epoch);
    cJSON_AddStringToObject(j, "epoch", buf);
    snprintf(buf, sizeof buf, "%" PRId64, c->position);
    cJSON_AddStringToObject(j, "position", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, c->epoch_rng);
    cJSON_AddStringToObject(j, "epoch_rng", buf);
    return j;
}

// Reads a decimal string field into a 64-bit value.
static int get_u64(const cJSON *j, const char *key, uint64_t *out, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsString(v) || !v->valuestring || !*v->valuestring)
        return ftk_err(err, "data cursor: \"%s\" missing or not a string", key);
    char *end;
    unsigned long long x = strtoull(v->valuestring, &end, 10);
    if (*end || v->valuestring[0] == '-') return ftk_err(err, "data cursor: \"%s\" is not a number", key);
    *out = (uint64_t)x;
    return 0;
}

int batch_cursor_from_json(const cJSON *j, DataCursor *c, char *err) {
    uint64_t n_items, epoch, position;
    if (!cJSON_IsObject(j)) return ftk_err(err, "data cursor: not a JSON object");
    if (get_u64(j, "seed", &c->seed, err) || get_u64(j, "n_items", &n_items, err) || get_u64(j, "epoch", &epoch, err) ||
        get_u64(j, "position", &position, err) || get_u64(j, "epoch_rng", &c->epoch_rng, err))
        return -1;
    if (n_items > INT64_MAX || epoch > INT64_MAX || position > INT64_MAX)
        return ftk_err(err, "data cursor: value out of range");
    c->n_items = (int64_t)n_items;
    c->epoch = (int64_t)epoch;
    c->position = (int64_t)position;
    return 0;
}
