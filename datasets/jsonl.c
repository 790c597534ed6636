// jsonl.c — see jsonl.h. A byte source (plain FILE or zlib inflate over it) feeds a line reader
// (JSONL) or a bracket scanner (JSON array) that cuts out one record at a time for cJSON.
#include "datasets/jsonl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "model/common.h"

#define CHUNK 65536
#define MAX_RECORD_BYTES ((size_t)1 << 30)   // one record (line / array element) may not exceed 1 GiB

struct JsonReader {
    char path[4096];
    FILE *f;
    int gz;               // 1: the file is gzip, bytes come through inflate
    z_stream zs;
    int zs_ready;         // inflateInit2 done
    int member_done;      // inflate reached the end of the current gzip member
    unsigned char in[CHUNK];              // compressed bytes (gz only)
    unsigned char out[CHUNK];             // text bytes ready to be consumed
    size_t out_pos, out_len;
    int eof;              // the text is exhausted
    long line;            // line number of the next byte to be consumed (1-based)
    int started;          // format detected
    int array;            // 1: top-level JSON array
    int array_done;       // its closing ']' was consumed
    long n_elems;         // array elements returned so far
    char *rec;            // the current record's text
    size_t rec_len, rec_cap;
};

int json_reader_is_gzip(const JsonReader *r) { return r->gz; }
int json_reader_is_array(const JsonReader *r) { return r->array; }

int json_reader_open(JsonReader **out, const char *path, char *err) {
    *out = NULL;
    JsonReader *r = calloc(1, sizeof *r);
    if (!r) return ftk_err(err, "%s: out of memory", path);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->f = fopen(path, "rb");
    if (!r->f) {
        int e = errno;
        free(r);
        return ftk_err(err, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(r->f), &st) == 0 && S_ISDIR(st.st_mode)) {   // else the first read fails as "line 1"
        fclose(r->f);
        free(r);
        return ftk_err(err, "%s: is a directory, expected a data file", path);
    }
    unsigned char magic[2];
    size_t got = fread(magic, 1, 2, r->f);
    r->gz = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (fseek(r->f, 0, SEEK_SET) != 0) {
        fclose(r->f);
        free(r);
        return ftk_err(err, "%s: cannot seek", path);
    }
    if (r->gz) {
        // 16 + MAX_WBITS: expect a gzip header and trailer (CRC and size are checked by zlib).
        if (inflateInit2(&r->zs, 16 + MAX_WBITS) != Z_OK) {
            fclose(r->f);
            free(r);
            return ftk_err(err, "%s: cannot initialise zlib", path);
        }
        r->zs_ready = 1;
    }
    r->line = 1;
    *out = r;
    return 0;
}

void json_reader_close(JsonReader *r) {
    if (!r) return;
    if (r->zs_ready) inflateEnd(&r->zs);
    if (r->f) fclose(r->f);
    free(r->rec);
    free(r);
}

// Refills r->out. Returns 1 if bytes are available, 0 at the end of the text, -1 on a fault.
static int refill(JsonReader *r, char *err) {
    r->out_pos = r->out_len = 0;
    if (r->eof) return 0;
    if (!r->gz) {
        size_t n = fread(r->out, 1, CHUNK, r->f);
        if (n == 0) {
            if (ferror(r->f)) return ftk_err(err, "%s:%ld: read error", r->path, r->line);
            r->eof = 1;
            return 0;
        }
        r->out_len = n;
        return 1;
    }
    for (;;) {
        if (r->zs.avail_in == 0) {
            size_t n = fread(r->in, 1, CHUNK, r->f);
            if (n == 0 && ferror(r->f)) return ftk_err(err, "%s:%ld: read error", r->path, r->line);
            r->zs.next_in = r->in;
            r->zs.avail_in = (uInt)n;
            if (n == 0) {
                if (r->member_done) {  // clean end: the last member ended exactly at end of file
                    r->eof = 1;
                    return 0;
                }
                return ftk_err(err, "%s:%ld: truncated gzip file (compressed data ends before the stream does)",
                               r->path, r->line);
            }
        }
        if (r->member_done) {
            // More bytes after a complete member: gzip allows concatenated members.
            if (inflateReset(&r->zs) != Z_OK) return ftk_err(err, "%s: zlib reset failed", r->path);
            r->member_done = 0;
        }
        r->zs.next_out = r->out;
        r->zs.avail_out = CHUNK;
        int ret = inflate(&r->zs, Z_NO_FLUSH);
        if (ret == Z_STREAM_END) {
            r->member_done = 1;
        } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
            return ftk_err(err, "%s:%ld: corrupt gzip data (%s)", r->path, r->line,
                           r->zs.msg ? r->zs.msg : "inflate failed");
        }
        r->out_len = CHUNK - r->zs.avail_out;
        if (r->out_len > 0) return 1;
    }
}

// Next byte (0..255), -1 at the end of the text, -2 on a fault (err filled).
static int next_byte(JsonReader *r, char *err) {
    if (r->out_pos == r->out_len) {
        int rc = refill(r, err);
        if (rc < 0) return -2;
        if (rc == 0) return -1;
    }
    return r->out[r->out_pos++];
}

// Like next_byte but does not consume.
static int peek_byte(JsonReader *r, char *err) {
    int c = next_byte(r, err);
    if (c >= 0) r->out_pos--;
    return c;
}

static int rec_push(JsonReader *r, const void *bytes, size_t n, char *err) {
    size_t need;
    if (ftk_add(r->rec_len, n + 1, &need) != 0 || need > MAX_RECORD_BYTES)
        return ftk_err(err, "%s:%ld: record longer than %zu bytes", r->path, r->line, MAX_RECORD_BYTES);
    if (need > r->rec_cap) {
        size_t cap = r->rec_cap ? r->rec_cap : 4096;
        while (cap < need) cap *= 2;
        char *p = realloc(r->rec, cap);
        if (!p) return ftk_err(err, "%s:%ld: out of memory", r->path, r->line);
        r->rec = p;
        r->rec_cap = cap;
    }
    memcpy(r->rec + r->rec_len, bytes, n);
    r->rec_len += n;
    r->rec[r->rec_len] = 0;
    return 0;
}

static int is_blank(int c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Skips blanks (counting lines). Returns the next non-blank byte without consuming it, -1 at end, -2 fault.
static int skip_blanks(JsonReader *r, char *err) {
    for (;;) {
        int c = peek_byte(r, err);
        if (c < 0 || !is_blank(c)) return c;
        r->out_pos++;
        if (c == '\n') r->line++;
    }
}

// Detects the format: optional UTF-8 BOM, then '[' means a JSON array (consumed), anything else JSONL.
static int detect_format(JsonReader *r, char *err) {
    r->started = 1;
    int c = peek_byte(r, err);
    if (c == -2) return -1;
    if (c == 0xEF) {  // UTF-8 byte-order mark EF BB BF
        r->out_pos++;
        int c2 = next_byte(r, err), c3 = next_byte(r, err);
        if (c2 == -2 || c3 == -2) return -1;
        if (c2 != 0xBB || c3 != 0xBF) return ftk_err(err, "%s:1: not valid UTF-8 at the start of the file", r->path);
    }
    c = skip_blanks(r, err);
    if (c == -2) return -1;
    if (c == '[') {
        r->out_pos++;
        r->array = 1;
    }
    return 0;
}

// Parses r->rec as one record. Returns JR_RECORD or JR_BAD (err filled).
static int parse_record(JsonReader *r, long line, cJSON **rec, char *err) {
    // cJSON would cut a string at a raw NUL byte and accept the rest: refuse it instead.
    const char *nul = memchr(r->rec, 0, r->rec_len);
    if (nul) {
        ftk_err(err, "%s:%ld: not valid JSON (NUL byte at column %ld)", r->path, line, (long)(nul - r->rec) + 1);
        return JR_BAD;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(r->rec, r->rec_len, &end, 0);
    if (!j) {
        if (!r->array && end && end >= r->rec && end <= r->rec + r->rec_len)
            ftk_err(err, "%s:%ld: not valid JSON (column %ld)", r->path, line, (long)(end - r->rec) + 1);
        else
            ftk_err(err, "%s:%ld: not valid JSON", r->path, line);
        return JR_BAD;
    }
    for (const char *p = end; p < r->rec + r->rec_len; p++) {
        if (!is_blank((unsigned char)*p)) {
            cJSON_Delete(j);
            ftk_err(err, "%s:%ld: not valid JSON (extra data after the record, column %ld)", r->path, line,
                    (long)(p - r->rec) + 1);
            return JR_BAD;
        }
    }
    *rec = j;
    return JR_RECORD;
}

static int next_jsonl(JsonReader *r, cJSON **rec, int *line, char *err) {
    for (;;) {
        r->rec_len = 0;
        long start_line = r->line;
        int got_any = 0, blank = 1;
        for (;;) {
            if (r->out_pos == r->out_len) {
                int rc = refill(r, err);
                if (rc < 0) return -1;
                if (rc == 0) break;
            }
            unsigned char *p = r->out + r->out_pos;
            size_t avail = r->out_len - r->out_pos;
            unsigned char *nl = memchr(p, '\n', avail);
            size_t take = nl ? (size_t)(nl - p) : avail;
            for (size_t i = 0; i < take && blank; i++) blank = is_blank(p[i]);
            if (rec_push(r, p, take, err) != 0) return -1;
            got_any = 1;
            r->out_pos += take;
            if (nl) {
                r->out_pos++;  // the '\n'
                r->line++;
                break;
            }
        }
        if (!got_any) return JR_END;
        if (blank) continue;
        *line = (int)start_line;
        return parse_record(r, start_line, rec, err);
    }
}

static int next_array(JsonReader *r, cJSON **rec, int *line, char *err) {
    int c = skip_blanks(r, err);
    if (c == -2) return -1;
    if (r->array_done) {
        if (c == -1) return JR_END;
        return ftk_err(err, "%s:%ld: unexpected data after the closing ']' of the JSON array", r->path, r->line);
    }
    if (c == -1) return ftk_err(err, "%s:%ld: unexpected end of file inside the JSON array (no closing ']')",
                                r->path, r->line);
    if (c == ']') {
        r->out_pos++;
        if (r->n_elems > 0)
            return ftk_err(err, "%s:%ld: expected a record after ',' in the JSON array", r->path, r->line);
        r->array_done = 1;
        return next_array(r, rec, line, err);
    }
    // Cut out one element: bytes up to the ',' or ']' at nesting depth 0, outside strings.
    long start_line = r->line;
    r->rec_len = 0;
    int depth = 0, in_str = 0, esc = 0;
    for (;;) {
        int b = next_byte(r, err);
        if (b == -2) return -1;
        if (b == -1)
            return ftk_err(err, "%s:%ld: unexpected end of file inside the JSON array (no closing ']'; "
                                "record starting on line %ld)", r->path, r->line, start_line);
        if (b == '\n') r->line++;
        if (in_str) {
            if (esc) esc = 0;
            else if (b == '\\') esc = 1;
            else if (b == '"') in_str = 0;
        } else if (b == '"') {
            in_str = 1;
        } else if (b == '{' || b == '[') {
            depth++;
        } else if (b == '}' || b == ']') {
            if (depth == 0 && b == ']') {
                r->array_done = 1;
                break;
            }
            if (depth > 0) depth--;
        } else if (b == ',' && depth == 0) {
            break;
        }
        char ch = (char)b;
        if (rec_push(r, &ch, 1, err) != 0) return -1;
    }
    r->n_elems++;
    int empty = 1;
    for (size_t i = 0; i < r->rec_len && empty; i++) empty = is_blank((unsigned char)r->rec[i]);
    if (empty) return ftk_err(err, "%s:%ld: empty element in the JSON array", r->path, start_line);
    *line = (int)start_line;
    return parse_record(r, start_line, rec, err);
}

int json_reader_next(JsonReader *r, cJSON **rec, int *line, char *err) {
    *rec = NULL;
    *line = (int)r->line;
    if (!r->started && detect_format(r, err) != 0) return -1;
    return r->array ? next_array(r, rec, line, err) : next_jsonl(r, rec, line, err);
}
