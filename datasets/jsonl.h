// jsonl.h — streams JSON records out of a file: JSONL (one object per line) or one top-level JSON
// array `[ {...}, {...} ]`, either plain or gzip-compressed. Gzip is detected by its magic bytes
// (1f 8b), not by the file name; the format by the first non-blank byte ('[' = array). Nothing is
// read into memory beyond one record. Line numbers are those of the (decompressed) text, 1-based.
#ifndef FTK_JSONL_H
#define FTK_JSONL_H

#include <cjson/cJSON.h>

typedef struct JsonReader JsonReader;

enum {
    JR_END = 0,     // no more records
    JR_RECORD = 1,  // *rec holds a parsed record
    JR_BAD = 2,     // one record is not valid JSON; err = "path:line: reason"; reading may go on
};

int json_reader_open(JsonReader **out, const char *path, char *err);

// Reads the next record. Returns JR_RECORD (*rec is a cJSON tree the caller frees with
// cJSON_Delete, *line the line it starts on), JR_BAD (*rec NULL, *line set, err filled; the reader
// has moved past the bad record), JR_END, or -1 on a fault that stops reading (I/O error,
// truncated or corrupt gzip, broken array structure; err = "path[:line]: reason").
// Blank lines are not records and are passed over.
int json_reader_next(JsonReader *r, cJSON **rec, int *line, char *err);

int json_reader_is_gzip(const JsonReader *r);
int json_reader_is_array(const JsonReader *r);
void json_reader_close(JsonReader *r);

#endif
