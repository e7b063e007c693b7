/* job.c — msgpack codecs of the wire protocol (see job.h, docs/protocol.md).
 *
 * Encoding goes through msgpack-c's packer into an lq_buf. Decoding unpacks
 * the whole document with msgpack-c (which bounds nesting depth) and then
 * walks the top-level map once, dispatching on the key: each field has a
 * small typed reader that reports the field's name when the type is wrong.
 * Integers are accepted from either msgpack integer family when in range, and
 * floats from float32, float64 or an integer, as other writers (Python's
 * msgpack, Redis's Lua cmsgpack) choose the narrowest encoding. */
#include "job.h"

#include <float.h>
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

void lq_buf_free(lq_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_write(void *data, const char *bytes, size_t n) {
    lq_buf *b = data;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->failed = 1;
            return -1;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

/* ---- names ---- */

int lq_adapter_id_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0) return 1;
    if (n > LQ_ADAPTER_ID_MAX || s[0] == '.' || s[0] == '/') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '/' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

int lq_job_id_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > LQ_JOB_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

/* ---- parameters ---- */

lq_job_params lq_job_params_default(void) {
    lq_job_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 1.0;
    p.top_p = 1.0;
    p.typical_p = 1.0;
    p.repetition_penalty = 1.0;
    return p;
}

const char *lq_job_params_check(const lq_job_params *p) {
    if (!(p->temperature > 0) || !isfinite(p->temperature)) return "temperature must be strictly positive";
    if (!(p->top_p > 0 && p->top_p <= 1)) return "top_p must be > 0.0 and <= 1.0";
    if (!(p->typical_p > 0 && p->typical_p <= 1)) return "typical_p must be > 0.0 and <= 1.0";
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return "repetition_penalty must be strictly positive";
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2)) return "frequency_penalty must be >= -2.0 and <= 2.0";
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2)) return "presence_penalty must be >= -2.0 and <= 2.0";
    if (p->top_k < 0) return "top_k must be >= 0";
    if (p->top_n_tokens < 0 || p->top_n_tokens > LQ_JOB_MAX_TOP_N) return "top_n_tokens must be between 0 and 32";
    if (p->n_stop < 0 || p->n_stop > LQ_JOB_MAX_STOP) return "too many stop sequences (at most 16)";
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !p->stop[i][0] || strlen(p->stop[i]) > LQ_JOB_MAX_STOP_LEN)
            return "stop sequences must be 1 to 256 bytes";
    return NULL;
}

/* ---- encoding ---- */

static void pack_str(msgpack_packer *pk, const char *s, size_t n) {
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_key(msgpack_packer *pk, const char *k) { pack_str(pk, k, strlen(k)); }

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
    pack_key(pk, k);
    pack_str(pk, v ? v : "", v ? strlen(v) : 0);
}

static void pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v) {
    pack_key(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void pack_kv_f64(msgpack_packer *pk, const char *k, double v) {
    pack_key(pk, k);
    msgpack_pack_double(pk, v);
}

static void pack_kv_bool(msgpack_packer *pk, const char *k, int v) {
    pack_key(pk, k);
    if (v) msgpack_pack_true(pk);
    else msgpack_pack_false(pk);
}

static void pack_params(msgpack_packer *pk, const lq_job_params *p) {
    msgpack_pack_map(pk, 12 + (p->has_seed ? 1 : 0));
    pack_kv_bool(pk, "do_sample", p->do_sample);
    pack_kv_f64(pk, "temperature", p->temperature);
    pack_kv_u64(pk, "top_k", (uint64_t)p->top_k);
    pack_kv_f64(pk, "top_p", p->top_p);
    pack_kv_f64(pk, "typical_p", p->typical_p);
    pack_kv_f64(pk, "repetition_penalty", p->repetition_penalty);
    pack_kv_f64(pk, "frequency_penalty", p->frequency_penalty);
    pack_kv_f64(pk, "presence_penalty", p->presence_penalty);
    if (p->has_seed) pack_kv_u64(pk, "seed", p->seed);
    pack_key(pk, "stop");
    msgpack_pack_array(pk, (size_t)p->n_stop);
    for (int i = 0; i < p->n_stop; i++) pack_str(pk, p->stop[i], strlen(p->stop[i]));
    pack_kv_u64(pk, "top_n_tokens", (uint64_t)p->top_n_tokens);
    pack_kv_bool(pk, "decoder_input_details", p->decoder_input_details);
    pack_kv_bool(pk, "ignore_eos", p->ignore_eos);
}

int lq_job_encode(const lq_job *j, lq_buf *out, lq_error *err) {
    if (!j->id || !lq_job_id_valid(j->id)) return lq_fail(err, "job id is not valid");
    if (!lq_adapter_id_valid(j->adapter ? j->adapter : "")) return lq_fail(err, "adapter id is not valid");
    const char *bad = lq_job_params_check(&j->params);
    if (bad) return lq_fail(err, "%s", bad);
    out->len = 0;
    out->failed = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    msgpack_pack_map(&pk, 10);
    pack_kv_u64(&pk, "v", LQ_PROTOCOL_VERSION);
    pack_kv_str(&pk, "id", j->id);
    pack_kv_str(&pk, "tenant", j->tenant);
    pack_kv_str(&pk, "adapter", j->adapter);
    pack_key(&pk, "prompt");
    msgpack_pack_array(&pk, (size_t)j->n_prompt);
    for (int i = 0; i < j->n_prompt; i++) msgpack_pack_uint32(&pk, (uint32_t)j->prompt[i]);
    pack_kv_u64(&pk, "max_new_tokens", (uint64_t)j->max_new_tokens);
    pack_key(&pk, "params");
    pack_params(&pk, &j->params);
    pack_kv_u64(&pk, "deadline_ms", (uint64_t)(j->deadline_ms > 0 ? j->deadline_ms : 0));
    pack_kv_u64(&pk, "created_ms", (uint64_t)(j->created_ms > 0 ? j->created_ms : 0));
    pack_kv_u64(&pk, "attempt", (uint64_t)j->attempt);
    if (out->failed) return lq_fail(err, "out of memory encoding a job");
    return 0;
}

static void pack_top(msgpack_packer *pk, int32_t id, const float *lp, const char *text) {
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint32(pk, (uint32_t)id);
    if (lp) msgpack_pack_double(pk, *lp);
    else msgpack_pack_nil(pk);
    pack_str(pk, text ? text : "", text ? strlen(text) : 0);
}

static void pack_token_event(msgpack_packer *pk, const lq_event *e) {
    msgpack_pack_map(pk, 8 + (e->n_top > 0 ? 1 : 0) + (e->last >= 0 ? 1 : 0));
    pack_kv_u64(pk, "v", LQ_PROTOCOL_VERSION);
    pack_kv_str(pk, "type", "token");
    pack_kv_str(pk, "job", e->job);
    pack_kv_u64(pk, "index", (uint64_t)e->index);
    pack_kv_u64(pk, "token", (uint32_t)e->token);
    pack_key(pk, "text");
    pack_str(pk, e->text ? e->text : "", e->text ? e->text_len : 0);
    pack_kv_f64(pk, "logprob", e->logprob);
    pack_kv_bool(pk, "special", e->special);
    if (e->last >= 0) pack_kv_bool(pk, "last", e->last);
    if (e->n_top > 0) {
        pack_key(pk, "top");
        msgpack_pack_array(pk, (size_t)e->n_top);
        for (int i = 0; i < e->n_top; i++) pack_top(pk, e->top[i].id, &e->top[i].logprob, e->top[i].text);
    }
}

static void pack_end_event(msgpack_packer *pk, const lq_event *e) {
    int is_error = e->error != NULL;
    int n = 8 + (e->has_seed ? 1 : 0) + (e->n_prefill > 0 ? 1 : 0) + (is_error ? 2 : 0) + (e->worker ? 1 : 0) +
            (e->queue_ms >= 0 ? 1 : 0) + (e->run_ms >= 0 ? 1 : 0);
    msgpack_pack_map(pk, (size_t)n);
    pack_kv_u64(pk, "v", LQ_PROTOCOL_VERSION);
    pack_kv_str(pk, "type", "end");
    pack_kv_str(pk, "job", e->job);
    pack_kv_u64(pk, "index", (uint64_t)e->index);
    pack_kv_str(pk, "finish_reason", e->finish_reason);
    pack_key(pk, "text");
    pack_str(pk, e->text ? e->text : "", e->text ? e->text_len : 0);
    pack_kv_u64(pk, "generated_tokens", (uint64_t)e->generated_tokens);
    pack_kv_u64(pk, "prompt_tokens", (uint64_t)e->prompt_tokens);
    if (e->has_seed) pack_kv_u64(pk, "seed", e->seed);
    if (e->n_prefill > 0) {
        pack_key(pk, "prefill");
        msgpack_pack_array(pk, (size_t)e->n_prefill);
        for (int i = 0; i < e->n_prefill; i++) {
            const lq_prefill_token *t = &e->prefill[i];
            pack_top(pk, t->id, t->has_logprob ? &t->logprob : NULL, t->text);
        }
    }
    if (is_error) {
        pack_kv_str(pk, "error", e->error);
        pack_kv_str(pk, "error_type", e->error_type ? e->error_type : "internal");
    }
    if (e->worker) pack_kv_str(pk, "worker", e->worker);
    if (e->queue_ms >= 0) pack_kv_u64(pk, "queue_ms", (uint64_t)e->queue_ms);
    if (e->run_ms >= 0) pack_kv_u64(pk, "run_ms", (uint64_t)e->run_ms);
}

int lq_event_encode(const lq_event *e, lq_buf *out, lq_error *err) {
    if (!e->job) return lq_fail(err, "event without a job id");
    if (e->type == LQ_EVENT_END && !e->finish_reason) return lq_fail(err, "end event without a finish_reason");
    out->len = 0;
    out->failed = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    if (e->type == LQ_EVENT_TOKEN) pack_token_event(&pk, e);
    else if (e->type == LQ_EVENT_END) pack_end_event(&pk, e);
    else return lq_fail(err, "unknown event type %d", (int)e->type);
    if (out->failed) return lq_fail(err, "out of memory encoding an event");
    return 0;
}

/* ---- decoding ---- */

static int key_is(const msgpack_object *k, const char *name) {
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static int read_int(const msgpack_object *o, const char *field, int64_t lo, int64_t hi, int64_t *out, lq_error *err) {
    int64_t v;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return lq_fail(err, "field '%s' is out of range", field);
        v = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        v = o->via.i64;
    } else {
        return lq_fail(err, "field '%s' must be an integer", field);
    }
    if (v < lo || v > hi) return lq_fail(err, "field '%s' is out of range (%lld)", field, (long long)v);
    *out = v;
    return 0;
}

static int read_u64(const msgpack_object *o, const char *field, uint64_t *out, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return lq_fail(err, "field '%s' must be a non-negative integer", field);
    *out = o->via.u64;
    return 0;
}

static int read_num(const msgpack_object *o, const char *field, double *out, lq_error *err) {
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) *out = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) *out = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *out = (double)o->via.i64;
    else return lq_fail(err, "field '%s' must be a number", field);
    if (!isfinite(*out)) return lq_fail(err, "field '%s' must be finite", field);
    return 0;
}

/* A number stored as a float (logprobs): it must fit one, or it would come back as infinity. */
static int read_float(const msgpack_object *o, const char *field, float *out, lq_error *err) {
    double d;
    if (read_num(o, field, &d, err)) return -1;
    if (fabs(d) > FLT_MAX) return lq_fail(err, "field '%s' is out of the range of a float", field);
    *out = (float)d;
    return 0;
}

static int read_bool(const msgpack_object *o, const char *field, int *out, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return lq_fail(err, "field '%s' must be a boolean", field);
    *out = o->via.boolean ? 1 : 0;
    return 0;
}

/* Copies a msgpack string. Names (ids, reasons) may not contain NUL bytes;
 * text, whose length the caller takes (len != NULL), may: a byte-fallback
 * token can decode to one. */
static int read_str(const msgpack_object *o, const char *field, char **out, size_t *len, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_STR) return lq_fail(err, "field '%s' must be a string", field);
    if (!len && memchr(o->via.str.ptr, 0, o->via.str.size)) return lq_fail(err, "field '%s' contains a NUL byte", field);
    char *s = malloc(o->via.str.size + 1);
    if (!s) return lq_fail(err, "out of memory");
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    free(*out);
    *out = s;
    if (len) *len = o->via.str.size;
    return 0;
}

static int read_token_ids(const msgpack_object *o, const char *field, int32_t **out, int *n, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY) return lq_fail(err, "field '%s' must be an array of token ids", field);
    uint32_t size = o->via.array.size;
    int32_t *ids = malloc(sizeof *ids * (size ? size : 1));
    if (!ids) return lq_fail(err, "out of memory");
    for (uint32_t i = 0; i < size; i++) {
        int64_t v;
        if (read_int(&o->via.array.ptr[i], field, 0, INT32_MAX, &v, err)) {
            free(ids);
            return -1;
        }
        ids[i] = (int32_t)v;
    }
    free(*out);
    *out = ids;
    *n = (int)size;
    return 0;
}

static void free_stop(lq_job_params *p) {
    for (int i = 0; i < p->n_stop; i++) {
        free(p->stop[i]);
        p->stop[i] = NULL;
    }
    p->n_stop = 0;
}

static int read_stop(const msgpack_object *o, lq_job_params *p, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY) return lq_fail(err, "field 'params.stop' must be an array of strings");
    if (o->via.array.size > LQ_JOB_MAX_STOP) return lq_fail(err, "field 'params.stop' has more than 16 sequences");
    free_stop(p); /* a repeated key replaces, as it does for every other field */
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        if (read_str(&o->via.array.ptr[i], "params.stop", &p->stop[p->n_stop], NULL, err)) return -1;
        p->n_stop++;
    }
    return 0;
}

static int read_param(const msgpack_object *k, const msgpack_object *v, lq_job_params *p, lq_error *err) {
    int64_t i;
    if (key_is(k, "do_sample")) return read_bool(v, "params.do_sample", &p->do_sample, err);
    if (key_is(k, "temperature")) return read_num(v, "params.temperature", &p->temperature, err);
    if (key_is(k, "top_p")) return read_num(v, "params.top_p", &p->top_p, err);
    if (key_is(k, "typical_p")) return read_num(v, "params.typical_p", &p->typical_p, err);
    if (key_is(k, "repetition_penalty")) return read_num(v, "params.repetition_penalty", &p->repetition_penalty, err);
    if (key_is(k, "frequency_penalty")) return read_num(v, "params.frequency_penalty", &p->frequency_penalty, err);
    if (key_is(k, "presence_penalty")) return read_num(v, "params.presence_penalty", &p->presence_penalty, err);
    if (key_is(k, "seed")) {
        p->has_seed = 1;
        return read_u64(v, "params.seed", &p->seed, err);
    }
    if (key_is(k, "stop")) return read_stop(v, p, err);
    if (key_is(k, "decoder_input_details"))
        return read_bool(v, "params.decoder_input_details", &p->decoder_input_details, err);
    if (key_is(k, "ignore_eos")) return read_bool(v, "params.ignore_eos", &p->ignore_eos, err);
    if (key_is(k, "top_k")) {
        if (read_int(v, "params.top_k", 0, INT32_MAX, &i, err)) return -1;
        p->top_k = (int)i;
        return 0;
    }
    if (key_is(k, "top_n_tokens")) {
        if (read_int(v, "params.top_n_tokens", 0, LQ_JOB_MAX_TOP_N, &i, err)) return -1;
        p->top_n_tokens = (int)i;
        return 0;
    }
    return 0; /* unknown parameters are ignored */
}

static int read_params(const msgpack_object *o, lq_job_params *p, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_MAP) return lq_fail(err, "field 'params' must be a map");
    for (uint32_t i = 0; i < o->via.map.size; i++)
        if (read_param(&o->via.map.ptr[i].key, &o->via.map.ptr[i].val, p, err)) return -1;
    const char *bad = lq_job_params_check(p);
    if (bad) return lq_fail(err, "params: %s", bad);
    return 0;
}

static uint64_t read_be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Bytes after a msgpack type byte: the length field's size (lenbytes), the
 * fixed payload (fixed), and whether the element count makes children
 * (mult: 1 for arrays, 2 for maps). Returns 0 for the never-used byte 0xc1. */
static int header_shape(unsigned c, int *lenbytes, int *fixed, int *mult, uint64_t *inline_n) {
    *lenbytes = *fixed = *mult = 0;
    *inline_n = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 1;
    if (c <= 0x8f) return *mult = 2, *inline_n = c & 0x0f, 1;
    if (c <= 0x9f) return *mult = 1, *inline_n = c & 0x0f, 1;
    if (c <= 0xbf) return *fixed = (int)(c & 0x1f), 1;
    switch (c) {
    case 0xc4: case 0xd9: *lenbytes = 1; return 1;  /* bin8, str8 */
    case 0xc5: case 0xda: *lenbytes = 2; return 1;  /* bin16, str16 */
    case 0xc6: case 0xdb: *lenbytes = 4; return 1;  /* bin32, str32 */
    case 0xc7: *lenbytes = 1, *fixed = 1; return 1; /* ext8: type byte after the length */
    case 0xc8: *lenbytes = 2, *fixed = 1; return 1;
    case 0xc9: *lenbytes = 4, *fixed = 1; return 1;
    case 0xca: case 0xce: case 0xd2: *fixed = 4; return 1;
    case 0xcb: case 0xcf: case 0xd3: *fixed = 8; return 1;
    case 0xcc: case 0xd0: *fixed = 1; return 1;
    case 0xcd: case 0xd1: *fixed = 2; return 1;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: *fixed = 1 + (1 << (c - 0xd4)); return 1; /* fixext */
    case 0xdc: *lenbytes = 2, *mult = 1; return 1;
    case 0xdd: *lenbytes = 4, *mult = 1; return 1;
    case 0xde: *lenbytes = 2, *mult = 2; return 1;
    case 0xdf: *lenbytes = 4, *mult = 2; return 1;
    }
    return 0;
}

/* msgpack-c allocates for an array's or map's declared size before it reads
 * the elements, so a few bytes claiming 2^32 elements would make it ask for
 * gigabytes. Every element takes at least one byte: walk the first document's
 * headers (no recursion, no allocation) and refuse one whose declared
 * elements or lengths exceed the bytes it has. */
static int sizes_fit(const unsigned char *p, size_t len) {
    size_t pos = 0;
    uint64_t pending = 1; /* elements still to read */
    while (pending > 0) {
        if (pos >= len) return 0;
        int lenbytes, fixed, mult;
        uint64_t n;
        if (!header_shape(p[pos++], &lenbytes, &fixed, &mult, &n)) return 0;
        pending--;
        if ((size_t)lenbytes > len - pos) return 0;
        if (lenbytes) n = read_be(p + pos, lenbytes);
        pos += (size_t)lenbytes;
        uint64_t payload = (uint64_t)fixed + (mult ? 0 : n);
        if (payload > len - pos) return 0;
        pos += (size_t)payload;
        pending += mult ? n * (uint64_t)mult : 0;
        if (pending > len - pos) return 0;
    }
    return 1;
}

/* Unpacks one whole msgpack map; trailing bytes are an error. */
static int unpack_map(const void *data, size_t len, msgpack_unpacked *u, const char *what, lq_error *err) {
    size_t off = 0;
    msgpack_unpacked_init(u);
    if (!sizes_fit(data, len)) return lq_fail(err, "%s is not valid msgpack (truncated, or sizes beyond its end)", what);
    msgpack_unpack_return r = msgpack_unpack_next(u, data, len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS && r != MSGPACK_UNPACK_EXTRA_BYTES)
        return lq_fail(err, "%s is not valid msgpack", what);
    if (off != len) return lq_fail(err, "%s has %zu trailing bytes after the msgpack document", what, len - off);
    if (u->data.type != MSGPACK_OBJECT_MAP) return lq_fail(err, "%s is not a msgpack map", what);
    return 0;
}

static int check_version(const msgpack_object *v, const char *what, lq_error *err) {
    int64_t ver = 0;
    if (read_int(v, "v", 0, INT32_MAX, &ver, err)) return -1;
    if (ver != LQ_PROTOCOL_VERSION)
        return lq_fail(err, "%s has schema version %lld; this build reads version %d", what, (long long)ver,
                       LQ_PROTOCOL_VERSION);
    return 0;
}

enum { HAS_V = 1, HAS_ID = 2, HAS_ADAPTER = 4, HAS_PROMPT = 8, HAS_MAX_NEW = 16 };

static int read_job_field(const msgpack_object *k, const msgpack_object *v, lq_job *j, unsigned *seen,
                          lq_error *err) {
    int64_t i;
    if (key_is(k, "v")) {
        *seen |= HAS_V;
        return check_version(v, "job", err);
    }
    if (key_is(k, "id")) {
        *seen |= HAS_ID;
        return read_str(v, "id", &j->id, NULL, err);
    }
    if (key_is(k, "tenant")) return read_str(v, "tenant", &j->tenant, NULL, err);
    if (key_is(k, "adapter")) {
        *seen |= HAS_ADAPTER;
        return read_str(v, "adapter", &j->adapter, NULL, err);
    }
    if (key_is(k, "prompt")) {
        *seen |= HAS_PROMPT;
        return read_token_ids(v, "prompt", &j->prompt, &j->n_prompt, err);
    }
    if (key_is(k, "max_new_tokens")) {
        *seen |= HAS_MAX_NEW;
        if (read_int(v, "max_new_tokens", 1, INT32_MAX, &i, err)) return -1;
        j->max_new_tokens = (int)i;
        return 0;
    }
    if (key_is(k, "params")) return read_params(v, &j->params, err);
    if (key_is(k, "deadline_ms")) return read_int(v, "deadline_ms", 0, INT64_MAX, &j->deadline_ms, err);
    if (key_is(k, "created_ms")) return read_int(v, "created_ms", 0, INT64_MAX, &j->created_ms, err);
    if (key_is(k, "attempt")) {
        if (read_int(v, "attempt", 0, INT32_MAX, &i, err)) return -1;
        j->attempt = (int)i;
        return 0;
    }
    return 0;
}

static int check_job(const lq_job *j, unsigned seen, lq_error *err) {
    static const struct { unsigned bit; const char *name; } required[] = {
        {HAS_V, "v"}, {HAS_ID, "id"}, {HAS_ADAPTER, "adapter"}, {HAS_PROMPT, "prompt"}, {HAS_MAX_NEW, "max_new_tokens"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(seen & required[i].bit)) return lq_fail(err, "job lacks the field '%s'", required[i].name);
    if (!lq_job_id_valid(j->id)) return lq_fail(err, "field 'id' is not a valid job id");
    if (!lq_adapter_id_valid(j->adapter)) return lq_fail(err, "field 'adapter' is not a valid adapter id");
    if (j->n_prompt < 1) return lq_fail(err, "field 'prompt' is empty");
    return 0;
}

int lq_job_decode(const void *data, size_t len, lq_job *j, lq_error *err) {
    memset(j, 0, sizeof *j);
    j->params = lq_job_params_default();
    msgpack_unpacked u;
    int rc = unpack_map(data, len, &u, "job", err);
    unsigned seen = 0;
    for (uint32_t i = 0; rc == 0 && i < u.data.via.map.size; i++)
        rc = read_job_field(&u.data.via.map.ptr[i].key, &u.data.via.map.ptr[i].val, j, &seen, err);
    if (rc == 0) rc = check_job(j, seen, err);
    if (rc == 0 && !j->tenant && !(j->tenant = strdup(""))) rc = lq_fail(err, "out of memory");
    msgpack_unpacked_destroy(&u);
    if (rc) lq_job_clear(j);
    return rc;
}

void lq_job_clear(lq_job *j) {
    free(j->id);
    free(j->tenant);
    free(j->adapter);
    free(j->prompt);
    free_stop(&j->params);
    memset(j, 0, sizeof *j);
}

/* [id, logprob or nil, text] */
static int read_triple(const msgpack_object *o, const char *field, int32_t *id, int *has_lp, float *lp, char **text,
                       lq_error *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3)
        return lq_fail(err, "field '%s' must hold [id, logprob, text] triples", field);
    const msgpack_object *a = o->via.array.ptr;
    int64_t v;
    if (read_int(&a[0], field, 0, INT32_MAX, &v, err)) return -1;
    *id = (int32_t)v;
    *has_lp = a[1].type != MSGPACK_OBJECT_NIL;
    *lp = 0;
    if (*has_lp && read_float(&a[1], field, lp, err)) return -1;
    size_t text_len;
    return read_str(&a[2], field, text, &text_len, err);
}

static void free_top(lq_event *e) {
    for (int i = 0; i < e->n_top; i++) free(e->top[i].text);
    free(e->top);
    e->top = NULL;
    e->n_top = 0;
}

static void free_prefill(lq_event *e) {
    for (int i = 0; i < e->n_prefill; i++) free(e->prefill[i].text);
    free(e->prefill);
    e->prefill = NULL;
    e->n_prefill = 0;
}

static int read_top(const msgpack_object *o, lq_event *e, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY) return lq_fail(err, "field 'top' must be an array");
    if (o->via.array.size > LQ_JOB_MAX_TOP_N) return lq_fail(err, "field 'top' has more than 32 entries");
    free_top(e); /* a repeated key replaces the earlier one */
    e->top = calloc(o->via.array.size ? o->via.array.size : 1, sizeof *e->top);
    if (!e->top) return lq_fail(err, "out of memory");
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        int has_lp;
        if (read_triple(&o->via.array.ptr[i], "top", &e->top[i].id, &has_lp, &e->top[i].logprob, &e->top[i].text, err))
            return -1;
        e->n_top++;
    }
    return 0;
}

static int read_prefill(const msgpack_object *o, lq_event *e, lq_error *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY) return lq_fail(err, "field 'prefill' must be an array");
    free_prefill(e); /* a repeated key replaces the earlier one */
    e->prefill = calloc(o->via.array.size ? o->via.array.size : 1, sizeof *e->prefill);
    if (!e->prefill) return lq_fail(err, "out of memory");
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        lq_prefill_token *t = &e->prefill[i];
        if (read_triple(&o->via.array.ptr[i], "prefill", &t->id, &t->has_logprob, &t->logprob, &t->text, err)) return -1;
        e->n_prefill++;
    }
    return 0;
}

static int read_type(const msgpack_object *v, lq_event *e, lq_error *err) {
    if (key_is(v, "token")) e->type = LQ_EVENT_TOKEN;
    else if (key_is(v, "end")) e->type = LQ_EVENT_END;
    else return lq_fail(err, "field 'type' must be \"token\" or \"end\"");
    return 0;
}

static int read_event_field(const msgpack_object *k, const msgpack_object *v, lq_event *e, lq_error *err) {
    int64_t i;
    if (key_is(k, "v")) return check_version(v, "event", err);
    if (key_is(k, "type")) return read_type(v, e, err);
    if (key_is(k, "job")) return read_str(v, "job", &e->job, NULL, err);
    if (key_is(k, "text")) return read_str(v, "text", &e->text, &e->text_len, err);
    if (key_is(k, "finish_reason")) return read_str(v, "finish_reason", &e->finish_reason, NULL, err);
    if (key_is(k, "error")) return read_str(v, "error", &e->error, NULL, err);
    if (key_is(k, "error_type")) return read_str(v, "error_type", &e->error_type, NULL, err);
    if (key_is(k, "worker")) return read_str(v, "worker", &e->worker, NULL, err);
    if (key_is(k, "special")) return read_bool(v, "special", &e->special, err);
    if (key_is(k, "last")) return read_bool(v, "last", &e->last, err);
    if (key_is(k, "top")) return read_top(v, e, err);
    if (key_is(k, "prefill")) return read_prefill(v, e, err);
    if (key_is(k, "seed")) {
        e->has_seed = 1;
        return read_u64(v, "seed", &e->seed, err);
    }
    if (key_is(k, "logprob")) return read_float(v, "logprob", &e->logprob, err);
    if (key_is(k, "queue_ms")) return read_int(v, "queue_ms", 0, INT64_MAX, &e->queue_ms, err);
    if (key_is(k, "run_ms")) return read_int(v, "run_ms", 0, INT64_MAX, &e->run_ms, err);
    int *dst = key_is(k, "index") ? &e->index
               : key_is(k, "token") ? &e->token
               : key_is(k, "generated_tokens") ? &e->generated_tokens
               : key_is(k, "prompt_tokens") ? &e->prompt_tokens
                                            : NULL;
    if (!dst) return 0;
    if (read_int(v, "index/token/count", 0, INT32_MAX, &i, err)) return -1;
    *dst = (int)i;
    return 0;
}

int lq_event_decode(const void *data, size_t len, lq_event *e, lq_error *err) {
    memset(e, 0, sizeof *e);
    e->queue_ms = e->run_ms = -1;
    e->last = -1;
    msgpack_unpacked u;
    int rc = unpack_map(data, len, &u, "event", err);
    for (uint32_t i = 0; rc == 0 && i < u.data.via.map.size; i++)
        rc = read_event_field(&u.data.via.map.ptr[i].key, &u.data.via.map.ptr[i].val, e, err);
    if (rc == 0 && !e->type) rc = lq_fail(err, "event lacks the field 'type'");
    if (rc == 0 && !e->job) rc = lq_fail(err, "event lacks the field 'job'");
    if (rc == 0 && e->type == LQ_EVENT_END && !e->finish_reason) rc = lq_fail(err, "end event lacks 'finish_reason'");
    if (rc == 0 && !e->text && !(e->text = strdup(""))) rc = lq_fail(err, "out of memory");
    msgpack_unpacked_destroy(&u);
    if (rc) lq_event_clear(e);
    return rc;
}

void lq_event_clear(lq_event *e) {
    free(e->job);
    free(e->text);
    free(e->finish_reason);
    free(e->error);
    free(e->error_type);
    free(e->worker);
    free_top(e);
    free_prefill(e);
    memset(e, 0, sizeof *e);
    e->queue_ms = e->run_ms = -1;
    e->last = -1;
}
