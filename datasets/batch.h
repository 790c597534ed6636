// batch.h — batches of B rows x T tokens from a Dataset: shuffled per epoch from a seed,
// right-padded or packed, with a cursor that a checkpoint saves so a resumed run sees exactly the
// same batches (DESIGN §4).
//
// Targets: targets[b][t] = tokens[b][t+1] when token t+1 belongs to the same example and its loss
// mask is 1, else -1. The LM head needs evaluating only where targets >= 0.
// Without packing a row is one sequence, padded on the right with the pad id (target -1), and
// T = the longest row of the batch. Preference data: a batch of P pairs has 2P rows, the chosen
// sequences in rows [0, P) and the rejected ones in rows [P, 2P), pair i in rows i and P + i.
// With packing (SFT and prompt data only) T = pack_len: whole sequences are laid end to end in the
// dataset's order (greedy; a sequence that does not fit in what is left of a row starts the next
// row, the rest of the row is padding); pos_ids restart at 0 for each sequence and seg_ids number
// the sequences of a row (attention must not cross seg_ids). A sequence never straddles two rows:
// the dataset must be built with max_seq_length <= pack_len.
// Epochs: every epoch visits every item once, in a fresh permutation when shuffling; the last
// batch of an epoch may hold fewer items (it is not mixed with the next epoch).
#ifndef FTK_BATCH_H
#define FTK_BATCH_H

#include <stdint.h>
#include <cjson/cJSON.h>

#include "datasets/dataset.h"

typedef struct {
    int B, T;           // rows and columns of this batch
    int *tokens;        // (B, T)
    int *targets;       // (B, T) next token where trained, else -1
    int *lengths;       // (B) real tokens in the row; the rest of the row is padding
    int *pos_ids;       // (B, T) position within the row's sequence (0 on padding)
    int *seg_ids;       // (B, T) sequence number within the row: 0 without packing; -1 on padding
    int n_items;        // dataset items in this batch (examples, or pairs)
    int *items;         // (n_items) their indices in the dataset, in batch order
    int n_pairs;        // preference batches: n_items (chosen rows first); else 0
    int64_t epoch;      // the epoch the batch belongs to (0-based)
    int last_in_epoch;  // 1: this batch used up the epoch
    long n_targets;     // targets >= 0
} Batch;

// Where a loader stands; plain values so a checkpoint can store it (batch_cursor_to_json).
typedef struct {
    uint64_t seed;       // the loader's seed
    int64_t n_items;     // dataset size when saved (checked on restore)
    int64_t epoch;       // epoch in progress (0-based)
    int64_t position;    // items of this epoch's order already handed out
    uint64_t epoch_rng;  // RNG state at the start of this epoch, before its shuffle
} DataCursor;

typedef struct {
    const Dataset *ds;  // borrowed
    int batch_size;     // rows (SFT, prompt) or pairs (preference) per batch; packing: rows
    int shuffle;        // 0: file order every epoch
    int pack_len;       // 0: no packing
    DataCursor cur;
    int *order;         // (ds->n) this epoch's item order
    uint64_t next_rng;  // RNG state after this epoch's shuffle = next epoch's epoch_rng
    unsigned char *row_mask;   // (B*T capacity) scratch: loss mask laid out like tokens
    Batch batch;        // buffers reused by every loader_next
} DataLoader;

int loader_init(DataLoader *L, const Dataset *ds, int batch_size, int shuffle, uint64_t seed, int pack_len,
                char *err);
void loader_free(DataLoader *L);

// The next batch (valid until the next call). Moves to the next epoch when the current one is used up.
int loader_next(DataLoader *L, const Batch **out, char *err);

// Batches the current epoch has in all (from its start).
int64_t loader_batches_in_epoch(const DataLoader *L);

DataCursor loader_cursor(const DataLoader *L);
// Continues from a saved cursor: the following batches equal those the saving run got next.
int loader_restore(DataLoader *L, const DataCursor *c, char *err);

// JSON form for checkpoints (64-bit values as decimal strings, which JSON numbers cannot hold exactly).
cJSON *batch_cursor_to_json(const DataCursor *c);
int batch_cursor_from_json(const cJSON *j, DataCursor *c, char *err);

#endif
