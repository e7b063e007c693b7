/* cmd_tokenize.c — `lorq tokenize`: text <-> token ids from the command line.
 *
 *   lorq tokenize --model DIR [--no-special] TEXT      ids, space-separated
 *   lorq tokenize --model DIR [--no-special]           same, TEXT read from stdin
 *   lorq tokenize --model DIR --decode [--skip-special] ID...
 *   lorq tokenize --model DIR --jsonl                  batch mode (tests)
 *
 * Batch mode reads JSON lines from stdin, each {"text": "..."} or
 * {"hex": "..."} (raw bytes, possibly invalid UTF-8) with an optional
 * "add_special_tokens" (default true), or {"ids": [...]}; it answers each with
 * one line: "ids" (for text), "decode" and "decode_skip" (skip_special_tokens)
 * of those ids, and the streaming-decode pieces "stream" / "stream_skip" with
 * their final flushes "stream_flush" / "stream_skip_flush". A bad line gets
 * {"error": "..."} and the exit status becomes 1. "ids_only": true skips the
 * decoding (for very long inputs). One process can so check
 * thousands of strings against the reference library. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "tokenizer.h"

typedef struct options {
    const char *model;
    int decode, no_special, skip_special, jsonl;
    int first_arg; /* index of the first TEXT / ID argument */
} options;

static void usage(void) {
    fprintf(stderr,
            "usage: lorq tokenize --model DIR [--no-special] [TEXT]\n"
            "       lorq tokenize --model DIR --decode [--skip-special] ID...\n"
            "       lorq tokenize --model DIR --jsonl < requests.jsonl\n");
}

static int parse_options(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model") && i + 1 < argc) o->model = argv[++i];
        else if (!strncmp(a, "--model=", 8)) o->model = a + 8;
        else if (!strcmp(a, "--decode")) o->decode = 1;
        else if (!strcmp(a, "--no-special")) o->no_special = 1;
        else if (!strcmp(a, "--skip-special")) o->skip_special = 1;
        else if (!strcmp(a, "--jsonl")) o->jsonl = 1;
        else if (!strcmp(a, "--")) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "lorq tokenize: unknown option '%s'\n", a);
            return -1;
        } else
            break;
    }
    o->first_arg = i;
    if (!o->model) {
        fprintf(stderr, "lorq tokenize: --model DIR is required\n");
        return -1;
    }
    return 0;
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) free(buf);
            buf = b;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

static int print_ids(const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    return 0;
}

static int run_encode(const lq_tokenizer *tok, const options *o, int argc, char **argv) {
    char *text = NULL;
    size_t len = 0;
    int from_stdin = o->first_arg >= argc;
    if (from_stdin) {
        text = read_stdin(&len);
        if (!text) return fprintf(stderr, "lorq tokenize: out of memory\n"), 1;
    } else {
        text = argv[o->first_arg];
        len = strlen(text);
        if (o->first_arg + 1 < argc) return usage(), 2;
    }
    int32_t *ids;
    size_t n;
    lq_error err;
    int rc = tok_encode(tok, text, len, !o->no_special, &ids, &n, &err);
    if (from_stdin) free(text);
    if (rc != 0) return fprintf(stderr, "lorq tokenize: %s\n", err.msg), 1;
    print_ids(ids, n);
    free(ids);
    return 0;
}

static int run_decode(const lq_tokenizer *tok, const options *o, int argc, char **argv) {
    size_t n = (size_t)(argc - o->first_arg);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return 1;
    for (size_t i = 0; i < n; i++) {
        const char *a = argv[o->first_arg + (int)i];
        char *end;
        errno = 0;
        long v = strtol(a, &end, 10);
        if (errno || *end || end == a || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "lorq tokenize: '%s' is not a token id\n", a);
            free(ids);
            return 2;
        }
        ids[i] = (int32_t)v;
    }
    lq_error err;
    size_t len;
    char *text = tok_decode(tok, ids, n, o->skip_special, &len, &err);
    free(ids);
    if (!text) return fprintf(stderr, "lorq tokenize: %s\n", err.msg), 1;
    fwrite(text, 1, len, stdout);
    printf("\n");
    free(text);
    return 0;
}

/* ---- batch mode ---- */

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static char *unhex(const char *s, size_t len, size_t *out_len) {
    if (len % 2) return NULL;
    char *out = malloc(len / 2 + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[i] = (char)(hi * 16 + lo);
    }
    *out_len = len / 2;
    return out;
}

static json_t *ids_json(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static int add_decode(json_t *res, const char *key, const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip,
                      lq_error *err) {
    size_t len;
    char *text = tok_decode(tok, ids, n, skip, &len, err);
    if (!text) return -1;
    json_object_set_new(res, key, json_stringn(text, len));
    free(text);
    return 0;
}

/* Streams ids one by one, recording the non-empty pieces and the flush. */
static int add_stream(json_t *res, const char *key, const char *flush_key, const lq_tokenizer *tok,
                      const int32_t *ids, size_t n, int skip, lq_error *err) {
    lq_tok_stream *s = tok_stream_new(tok, skip);
    if (!s) return lq_fail(err, "out of memory");
    json_t *pieces = json_array();
    const char *text;
    size_t len;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = tok_stream_push(s, ids[i], &text, &len, err);
        if (rc == 0 && len) json_array_append_new(pieces, json_stringn(text, len));
    }
    if (rc == 0) rc = tok_stream_flush(s, &text, &len, err);
    if (rc == 0) json_object_set_new(res, flush_key, json_stringn(text, len));
    json_object_set_new(res, key, pieces);
    tok_stream_free(s);
    return rc;
}

static int request_ids(json_t *req, const lq_tokenizer *tok, json_t *res, int32_t **ids, size_t *n, lq_error *err) {
    json_t *text = json_object_get(req, "text"), *hex = json_object_get(req, "hex"), *list = json_object_get(req, "ids");
    if (json_is_array(list)) {
        *n = json_array_size(list);
        *ids = malloc((*n ? *n : 1) * sizeof **ids);
        if (!*ids) return lq_fail(err, "out of memory");
        for (size_t i = 0; i < *n; i++) {
            json_t *v = json_array_get(list, i);
            if (!json_is_integer(v)) return lq_fail(err, "ids[%zu] is not an integer", i);
            json_int_t x = json_integer_value(v);
            (*ids)[i] = x < 0 || x > INT32_MAX ? -1 : (int32_t)x;
        }
        return 0;
    }
    json_t *add = json_object_get(req, "add_special_tokens");
    int add_special = add ? json_is_true(add) : 1;
    char *bytes = NULL;
    size_t len;
    if (json_is_string(text)) {
        bytes = malloc(json_string_length(text) + 1);
        if (!bytes) return lq_fail(err, "out of memory");
        len = json_string_length(text);
        memcpy(bytes, json_string_value(text), len);
    } else if (json_is_string(hex)) {
        bytes = unhex(json_string_value(hex), json_string_length(hex), &len);
        if (!bytes) return lq_fail(err, "'hex' must be an even number of hex digits");
    } else {
        return lq_fail(err, "a request needs \"text\", \"hex\" or \"ids\"");
    }
    int rc = tok_encode(tok, bytes, len, add_special, ids, n, err);
    free(bytes);
    if (rc == 0) json_object_set_new(res, "ids", ids_json(*ids, *n));
    return rc;
}

static json_t *answer(const lq_tokenizer *tok, const char *line, size_t len) {
    json_error_t je;
    lq_error err;
    json_t *res = json_object();
    json_t *req = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc;
    if (!req) rc = lq_fail(&err, "invalid JSON: %s", je.text);
    else if (!json_is_object(req)) rc = lq_fail(&err, "a request must be a JSON object");
    else rc = request_ids(req, tok, res, &ids, &n, &err);
    int ids_only = rc == 0 && json_is_true(json_object_get(req, "ids_only"));
    if (rc == 0 && !ids_only) rc = add_decode(res, "decode", tok, ids, n, 0, &err);
    if (rc == 0 && !ids_only) rc = add_decode(res, "decode_skip", tok, ids, n, 1, &err);
    if (rc == 0 && !ids_only) rc = add_stream(res, "stream", "stream_flush", tok, ids, n, 0, &err);
    if (rc == 0 && !ids_only) rc = add_stream(res, "stream_skip", "stream_skip_flush", tok, ids, n, 1, &err);
    free(ids);
    json_decref(req);
    if (rc != 0) {
        json_decref(res);
        res = json_pack("{s:s}", "error", err.msg);
    }
    return res;
}

static int run_jsonl(const lq_tokenizer *tok) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int status = 0;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (line[len - 1] == '\n') len--;
        if (len == 0) continue;
        json_t *res = answer(tok, line, (size_t)len);
        if (json_object_get(res, "error")) status = 1;
        char *out = json_dumps(res, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (out) puts(out);
        else {
            puts("{\"error\": \"cannot encode the answer as JSON\"}");
            status = 1;
        }
        free(out);
        json_decref(res);
    }
    free(line);
    fflush(stdout);
    return status;
}

int cmd_tokenize(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    lq_error err;
    lq_tokenizer *tok = tok_load(o.model, &err);
    if (!tok) {
        fprintf(stderr, "lorq tokenize: %s\n", err.msg);
        return 1;
    }
    int rc = o.jsonl ? run_jsonl(tok) : o.decode ? run_decode(tok, &o, argc, argv) : run_encode(tok, &o, argc, argv);
    tok_free(tok);
    return rc;
}
