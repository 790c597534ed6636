// checkpoint.c — see checkpoint.h.
#include "sft/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "model/common.h"
#include "sft/metrics.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "optimizer.bin stores the moments as little-endian floats"
#endif

#define OPT_MAGIC "FTKADAMW"
#define OPT_VERSION 1u
#define OPT_HEADER 32
#define MAX_JSON_INT 9007199254740992.0  // 2^53: integers up to here survive a JSON double

// ---------------------------------------------------------------------------- optimizer.bin

static void put_le(unsigned char *p, uint64_t x, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(x >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes) {
    uint64_t x = 0;
    for (int i = 0; i < bytes; i++) x |= (uint64_t)p[i] << (8 * i);
    return x;
}

static uint32_t moments_crc(const float *m, const float *v, size_t bytes) {
    uLong crc = crc32_z(0L, Z_NULL, 0);
    crc = crc32_z(crc, (const Bytef *)m, bytes);
    crc = crc32_z(crc, (const Bytef *)v, bytes);
    return (uint32_t)crc;
}

int optimizer_save(const char *path, const AdamW *opt, char *err) {
    size_t bytes;
    if (ftk_mul(opt->n, sizeof(float), &bytes)) return ftk_err(err, "%s: %zu parameters overflow", path, opt->n);
    unsigned char hdr[OPT_HEADER];
    memcpy(hdr, OPT_MAGIC, 8);
    put_le(hdr + 8, OPT_VERSION, 4);
    put_le(hdr + 12, moments_crc(opt->m, opt->v, bytes), 4);
    put_le(hdr + 16, opt->n, 8);
    put_le(hdr + 24, (uint64_t)opt->step, 8);
    AtomicFile af;
    if (atomic_open(&af, path, err)) return -1;
    if (atomic_write(&af, hdr, sizeof hdr, err)) return -1;
    if (atomic_write(&af, opt->m, bytes, err)) return -1;
    if (atomic_write(&af, opt->v, bytes, err)) return -1;
    return atomic_commit(&af, err);
}

// Validates the whole file before touching opt; expected_step >= 0 also requires that step.
static int optimizer_load_checked(const char *path, AdamW *opt, int64_t expected_step, char *err) {
    void *map;
    size_t len;
    if (ftk_map_file(path, &map, &len, err)) return -1;
    const unsigned char *p = map;
    int rc = -1;
    if (len < OPT_HEADER) {
        ftk_err(err, "%s: truncated: %zu bytes, shorter than the %d-byte header", path, len, OPT_HEADER);
        goto done;
    }
    if (memcmp(p, OPT_MAGIC, 8) != 0) {
        ftk_err(err, "%s: not an ftk optimizer state (bad magic)", path);
        goto done;
    }
    uint32_t version = (uint32_t)get_le(p + 8, 4), crc = (uint32_t)get_le(p + 12, 4);
    uint64_t n = get_le(p + 16, 8);
    int64_t step = (int64_t)get_le(p + 24, 8);
    if (version != OPT_VERSION) {
        ftk_err(err, "%s: unsupported version %u (this build reads version %u)", path, version, OPT_VERSION);
        goto done;
    }
    if (n != (uint64_t)opt->n) {
        ftk_err(err, "%s: checkpoint has %llu parameters, the adapter has %zu", path, (unsigned long long)n, opt->n);
        goto done;
    }
    size_t bytes, both, need;
    if (ftk_mul(opt->n, sizeof(float), &bytes) || ftk_mul(bytes, 2, &both) || ftk_add(both, OPT_HEADER, &need)) {
        ftk_err(err, "%s: parameter count %zu overflows", path, opt->n);
        goto done;
    }
    if (len != need) {
        ftk_err(err, "%s: %zu bytes, expected %zu for %zu parameters (%s)", path, len, need, opt->n,
                len < need ? "truncated" : "trailing bytes");
        goto done;
    }
    if (step < 0) {
        ftk_err(err, "%s: negative step %lld", path, (long long)step);
        goto done;
    }
    if (expected_step >= 0 && step != expected_step) {
        ftk_err(err, "%s: optimizer is at step %lld but trainer_state.json says %lld", path, (long long)step,
                (long long)expected_step);
        goto done;
    }
    const float *m = (const float *)(p + OPT_HEADER), *v = m + opt->n;
    if (moments_crc(m, v, bytes) != crc) {
        ftk_err(err, "%s: checksum mismatch: the moments are corrupted", path);
        goto done;
    }
    memcpy(opt->m, m, bytes);
    memcpy(opt->v, v, bytes);
    opt->step = step;
    rc = 0;
done:
    ftk_unmap(map, len);
    return rc;
}

int optimizer_load(const char *path, AdamW *opt, char *err) { return optimizer_load_checked(path, opt, -1, err); }

// ---------------------------------------------------------------------------- trainer_state.json

static const char *const reserved_keys[] = {"global_step",    "epoch",          "data_cursor",   "dropout_rng_state",
                                            "best_eval_loss", "best_eval_step", "last_eval_loss"};
#define N_RESERVED (sizeof reserved_keys / sizeof reserved_keys[0])

static int is_reserved(const char *key) {
    for (size_t i = 0; i < N_RESERVED; i++)
        if (strcmp(key, reserved_keys[i]) == 0) return 1;
    return 0;
}

void trainer_state_init(TrainerState *ts) {
    *ts = (TrainerState){.best_eval_loss = NAN, .best_eval_step = -1, .last_eval_loss = NAN};
}

void trainer_state_free(TrainerState *ts) {
    cJSON_Delete(ts->extra);
    trainer_state_init(ts);
}

// uint64 as a decimal string: a JSON number is a double and would lose the low bits.
static void add_u64_string(cJSON *obj, const char *key, uint64_t x) {
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)x);
    cJSON_AddStringToObject(obj, key, buf);
}

static void add_number_or_null(cJSON *obj, const char *key, double x, int present) {
    if (present) cJSON_AddNumberToObject(obj, key, x);
    else cJSON_AddNullToObject(obj, key);
}

int trainer_state_save(const char *path, const TrainerState *ts, char *err) {
    if (ts->extra && !cJSON_IsObject(ts->extra)) return ftk_err(err, "%s: trainer state extras must be an object", path);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "global_step", (double)ts->global_step);
    cJSON_AddNumberToObject(root, "epoch", ts->epoch);
    cJSON *cursor = cJSON_AddObjectToObject(root, "data_cursor");
    cJSON_AddNumberToObject(cursor, "epoch", (double)ts->data_epoch);
    cJSON_AddNumberToObject(cursor, "position", (double)ts->data_position);
    add_u64_string(cursor, "rng_state", ts->data_rng);
    add_u64_string(root, "dropout_rng_state", ts->dropout_rng);
    add_number_or_null(root, "best_eval_loss", ts->best_eval_loss, isfinite(ts->best_eval_loss));
    add_number_or_null(root, "best_eval_step", (double)ts->best_eval_step, ts->best_eval_step >= 0);
    add_number_or_null(root, "last_eval_loss", ts->last_eval_loss, isfinite(ts->last_eval_loss));
    for (const cJSON *kv = ts->extra ? ts->extra->child : NULL; kv; kv = kv->next) {
        if (!kv->string || is_reserved(kv->string) || cJSON_HasObjectItem(root, kv->string)) {
            cJSON_Delete(root);
            return ftk_err(err, "%s: extra key \"%s\" clashes with a trainer state field", path,
                           kv->string ? kv->string : "(null)");
        }
        cJSON_AddItemToObject(root, kv->string, cJSON_Duplicate(kv, 1));
    }
    int rc = json_write_atomic(path, root, err);
    cJSON_Delete(root);
    return rc;
}

static const cJSON *get_field(const cJSON *obj, const char *key, const char *where, const char *path, char *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) ftk_err(err, "%s: missing field \"%s%s\"", path, where, key);
    return it;
}

// A non-negative integer stored as a JSON number (null allowed when allow_null; then *out = -1).
static int get_count(const cJSON *obj, const char *key, const char *where, int allow_null, int64_t *out,
                     const char *path, char *err) {
    const cJSON *it = get_field(obj, key, where, path, err);
    if (!it) return -1;
    if (allow_null && cJSON_IsNull(it)) {
        *out = -1;
        return 0;
    }
    double x = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
    if (!(x >= 0 && x <= MAX_JSON_INT && x == floor(x)))
        return ftk_err(err, "%s: field \"%s%s\" must be a non-negative integer", path, where, key);
    *out = (int64_t)x;
    return 0;
}

// A finite JSON number, or null (-> NAN) when allow_null.
static int get_real(const cJSON *obj, const char *key, int allow_null, double *out, const char *path, char *err) {
    const cJSON *it = get_field(obj, key, "", path, err);
    if (!it) return -1;
    if (allow_null && cJSON_IsNull(it)) {
        *out = NAN;
        return 0;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return ftk_err(err, "%s: field \"%s\" must be a number%s", path, key, allow_null ? " or null" : "");
    *out = it->valuedouble;
    return 0;
}

// A uint64 stored as a string of 1..20 decimal digits.
static int get_u64_string(const cJSON *obj, const char *key, const char *where, uint64_t *out, const char *path,
                          char *err) {
    const cJSON *it = get_field(obj, key, where, path, err);
    if (!it) return -1;
    const char *s = cJSON_IsString(it) ? it->valuestring : NULL;
    size_t len = s ? strlen(s) : 0;
    int ok = len >= 1 && len <= 20;
    for (size_t i = 0; ok && i < len; i++) ok = s[i] >= '0' && s[i] <= '9';
    if (ok) {
        errno = 0;
        unsigned long long x = strtoull(s, NULL, 10);
        ok = errno == 0;
        *out = (uint64_t)x;
    }
    if (!ok) return ftk_err(err, "%s: field \"%s%s\" must be a uint64 as a decimal string", path, where, key);
    return 0;
}

int trainer_state_load(const char *path, TrainerState *ts, char *err) {
    cJSON *root;
    if (json_read_object(path, &root, err)) return -1;
    TrainerState t;
    trainer_state_init(&t);
    const cJSON *cursor = NULL;
    int rc = get_count(root, "global_step", "", 0, &t.global_step, path, err);
    if (!rc) rc = get_real(root, "epoch", 0, &t.epoch, path, err);
    if (!rc && !(cursor = get_field(root, "data_cursor", "", path, err))) rc = -1;
    if (!rc && !cJSON_IsObject(cursor)) rc = ftk_err(err, "%s: field \"data_cursor\" must be an object", path);
    if (!rc) rc = get_count(cursor, "epoch", "data_cursor.", 0, &t.data_epoch, path, err);
    if (!rc) rc = get_count(cursor, "position", "data_cursor.", 0, &t.data_position, path, err);
    if (!rc) rc = get_u64_string(cursor, "rng_state", "data_cursor.", &t.data_rng, path, err);
    if (!rc) rc = get_u64_string(root, "dropout_rng_state", "", &t.dropout_rng, path, err);
    if (!rc) rc = get_real(root, "best_eval_loss", 1, &t.best_eval_loss, path, err);
    if (!rc) rc = get_count(root, "best_eval_step", "", 1, &t.best_eval_step, path, err);
    if (!rc) rc = get_real(root, "last_eval_loss", 1, &t.last_eval_loss, path, err);
    if (rc) {
        cJSON_Delete(root);
        return -1;
    }
    t.extra = cJSON_CreateObject();
    for (const cJSON *kv = root->child; kv; kv = kv->next)
        if (!is_reserved(kv->string)) cJSON_AddItemToObject(t.extra, kv->string, cJSON_Duplicate(kv, 1));
    cJSON_Delete(root);
    trainer_state_free(ts);
    *ts = t;
    return 0;
}

// ---------------------------------------------------------------------------- directories

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int rmtree(const char *dir, char *err) {
    if (!ftk_file_exists(dir)) return 0;
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ftk_err(err, "%s: cannot remove: %s", dir, strerror(errno));
    return 0;
}

// Makes a rename or a new file in dir durable.
static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

// "checkpoint-<digits>" exactly -> its step; -1 otherwise (checkpoint-N.tmp, .old, other names).
static int64_t checkpoint_step_of(const char *name) {
    const char *prefix = "checkpoint-";
    size_t k = strlen(prefix), len = strlen(name);
    if (strncmp(name, prefix, k) != 0 || len == k || len - k > 18) return -1;
    int64_t step = 0;
    for (size_t i = k; i < len; i++) {
        if (name[i] < '0' || name[i] > '9') return -1;
        step = step * 10 + (name[i] - '0');
    }
    return step;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Steps of the checkpoint-N directories in output_dir, ascending; *steps is malloc'ed.
static int list_checkpoints(const char *output_dir, int64_t **steps, size_t *count, char *err) {
    *steps = NULL;
    *count = 0;
    DIR *d = opendir(output_dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return ftk_err(err, "%s: cannot list: %s", output_dir, strerror(errno));
    }
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t step = checkpoint_step_of(e->d_name);
        char path[4096];
        if (step < 0 || ftk_path_join(path, sizeof path, output_dir, e->d_name, NULL) || !ftk_is_dir(path)) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *grown = realloc(*steps, cap * sizeof **steps);
            if (!grown) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return ftk_err(err, "%s: out of memory listing checkpoints", output_dir);
            }
            *steps = grown;
        }
        (*steps)[(*count)++] = step;
    }
    closedir(d);
    qsort(*steps, *count, sizeof **steps, cmp_i64);
    return 0;
}

static int checkpoint_dir(char *out, size_t n, const char *output_dir, int64_t step, const char *suffix, char *err) {
    int k = snprintf(out, n, "%s/checkpoint-%lld%s", output_dir, (long long)step, suffix);
    if (k < 0 || (size_t)k >= n) return ftk_err(err, "%s: checkpoint path too long", output_dir);
    return 0;
}

int checkpoint_latest(const char *output_dir, char *out, size_t n, int64_t *step, char *err) {
    int64_t *steps;
    size_t count;
    *step = -1;
    if (n) out[0] = 0;
    if (list_checkpoints(output_dir, &steps, &count, err)) return -1;
    int rc = 0;
    if (count) {
        rc = checkpoint_dir(out, n, output_dir, steps[count - 1], "", err);
        if (!rc) *step = steps[count - 1];
    }
    free(steps);
    return rc;
}

// Deletes the lowest-numbered checkpoints, except `keep`, until at most limit remain.
static int prune_checkpoints(const char *output_dir, int limit, int64_t keep, char *err) {
    int64_t *steps;
    size_t count;
    if (list_checkpoints(output_dir, &steps, &count, err)) return -1;
    size_t excess = count > (size_t)limit ? count - (size_t)limit : 0;
    int rc = 0;
    for (size_t i = 0; i < count && excess > 0 && !rc; i++) {
        if (steps[i] == keep) continue;
        char path[4096];
        rc = checkpoint_dir(path, sizeof path, output_dir, steps[i], "", err);
        if (!rc) rc = rmtree(path, err);
        excess--;
    }
    free(steps);
    return rc;
}

int checkpoint_save(const char *output_dir, const AdamW *opt, const TrainerState *ts, const cJSON *training_args,
                    CheckpointWriteFn write_adapter, void *user, int save_total_limit, char *err) {
    if (opt->step != ts->global_step)
        return ftk_err(err, "%s: optimizer is at step %lld but the trainer state is at step %lld", output_dir,
                       (long long)opt->step, (long long)ts->global_step);
    char final[4096], tmp[4096], old[4096], path[4096];
    if (checkpoint_dir(final, sizeof final, output_dir, ts->global_step, "", err) ||
        checkpoint_dir(tmp, sizeof tmp, output_dir, ts->global_step, ".tmp", err) ||
        checkpoint_dir(old, sizeof old, output_dir, ts->global_step, ".old", err))
        return -1;
    // a checkpoint-N.tmp left by a crash is incomplete by construction
    if (ftk_mkdirs(output_dir, err) || rmtree(tmp, err) || ftk_mkdirs(tmp, err)) return -1;
    int rc = ftk_path_join(path, sizeof path, tmp, "optimizer.bin", err);
    if (!rc) rc = optimizer_save(path, opt, err);
    if (!rc) rc = ftk_path_join(path, sizeof path, tmp, "trainer_state.json", err);
    if (!rc) rc = trainer_state_save(path, ts, err);
    if (!rc && training_args) rc = ftk_path_join(path, sizeof path, tmp, "training_args.json", err);
    if (!rc && training_args) rc = json_write_atomic(path, training_args, err);
    if (!rc && write_adapter) rc = write_adapter(tmp, user, err);
    if (rc) {
        rmtree(tmp, NULL);
        return -1;
    }
    fsync_dir(tmp);
    // Replace an existing checkpoint-N (a run resumed from an earlier step saves N again).
    int replacing = ftk_is_dir(final);
    if (replacing && rmtree(old, err)) {
        rmtree(tmp, NULL);
        return -1;
    }
    if (replacing && rename(final, old) != 0) {
        ftk_err(err, "%s: cannot move aside: %s", final, strerror(errno));
        rmtree(tmp, NULL);
        return -1;
    }
    if (rename(tmp, final) != 0) {
        ftk_err(err, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        if (replacing) rename(old, final);  // best effort: put the previous checkpoint-N back
        rmtree(tmp, NULL);
        return -1;
    }
    fsync_dir(output_dir);
    if (replacing && rmtree(old, err)) return -1;
    if (save_total_limit > 0) return prune_checkpoints(output_dir, save_total_limit, ts->global_step, err);
    return 0;
}

int checkpoint_load(const char *dir, AdamW *opt, TrainerState *ts, char *err) {
    char path[4096];
    if (!ftk_is_dir(dir)) return ftk_err(err, "%s: not a checkpoint directory", dir);
    TrainerState t;
    trainer_state_init(&t);
    if (ftk_path_join(path, sizeof path, dir, "trainer_state.json", err) || trainer_state_load(path, &t, err))
        return -1;
    if (ftk_path_join(path, sizeof path, dir, "optimizer.bin", err) ||
        optimizer_load_checked(path, opt, t.global_step, err)) {
        trainer_state_free(&t);
        return -1;
    }
    trainer_state_free(ts);
    *ts = t;
    return 0;
}
