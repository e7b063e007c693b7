/* test_safetensors.c — writer round trip, sharded folders, and every way a
 * header can lie: each must be an error with a useful message, never a crash
 * (these tests run under ASan/UBSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "safetensors.h"

static char tmpdir[256];

static int make_tmpdir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lorq-st-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Builds a safetensors image from a header string and data bytes. */
static unsigned char *image(const char *header, const void *data, size_t dlen, size_t *len) {
    size_t h = strlen(header);
    *len = 8 + h + dlen;
    unsigned char *p = malloc(*len);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(p + 8, header, h);
    if (dlen) memcpy(p + 8 + h, data, dlen);
    return p;
}

static void expect_error(const char *header, size_t dlen, const char *needle) {
    unsigned char data[64] = {0};
    size_t len;
    unsigned char *img = image(header, data, dlen, &len);
    st_set s;
    lq_error err = {{0}};
    int rc = st_parse(&s, img, len, &err);
    if (rc == 0 || !strstr(err.msg, needle)) fail_msg("header %s: rc=%d, message '%s' lacks '%s'", header, rc, err.msg, needle);
    free(img);
}

static void test_parse_valid(void **state) {
    (void)state;
    float vals[3] = {1, 2, 3};
    size_t len;
    unsigned char *img = image("{\"__metadata__\":{\"format\":\"pt\"},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                               "\"a\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[12,12]}}",
                               vals, sizeof vals, &len);
    st_set s;
    lq_error err;
    assert_int_equal(st_parse(&s, img, len, &err), 0);
    assert_int_equal(s.n_tensors, 2);
    const st_tensor *b = st_find(&s, "b");
    assert_non_null(b);
    assert_int_equal(b->numel, 3);
    assert_memory_equal(b->data, vals, sizeof vals);
    assert_non_null(st_find(&s, "a"));
    assert_null(st_find(&s, "c"));
    assert_string_equal(st_meta(&s, "format"), "pt");
    st_close(&s);
    free(img);
}

static void test_parse_errors(void **state) {
    (void)state;
    expect_error("[1,2]", 0, "not a JSON object");
    expect_error("{\"a\":", 0, "not valid JSON");
    expect_error("{\"a\":1}", 0, "not an object");
    expect_error("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "I64 is not supported");
    expect_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "span 4 bytes");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4, "exceed");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "reversed");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "dimensions");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4,
                 "overflow");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 8, "overlap");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 8, "not valid JSON"); /* duplicate key */
    expect_error("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
}

static void test_header_length_bounds(void **state) {
    (void)state;
    unsigned char small[4] = {0};
    st_set s;
    lq_error err;
    assert_int_equal(st_parse(&s, small, sizeof small, &err), -1);
    assert_non_null(strstr(err.msg, "too small"));
    unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    assert_int_equal(st_parse(&s, huge, sizeof huge, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
    unsigned char past[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_int_equal(st_parse(&s, past, sizeof past, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
}

static void write_file(const char *name, const int64_t *shape, const float *vals, size_t n, const char *tensor) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    lq_error err;
    st_writer *w = st_writer_new(path);
    assert_non_null(w);
    assert_int_equal(st_writer_meta(w, "format", "pt", &err), 0);
    assert_int_equal(st_writer_declare(w, tensor, LQ_DTYPE_F32, 1, shape, &err), 0);
    assert_int_equal(st_writer_write(w, tensor, vals, n * 4, &err), 0);
    assert_int_equal(st_writer_finish(w, &err), 0);
}

static void test_writer_roundtrip_and_truncation(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    lq_error err;
    st_writer *w = st_writer_new(path);
    int64_t s1[2] = {2, 3}, s2[1] = {5};
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[5] = {1, 2, 3, 4, 5};
    assert_int_equal(st_writer_declare(w, "w.a", LQ_DTYPE_F32, 2, s1, &err), 0);
    assert_int_equal(st_writer_declare(w, "w.b", LQ_DTYPE_BF16, 1, s2, &err), 0);
    assert_int_equal(st_writer_declare(w, "w.a", LQ_DTYPE_F32, 2, s1, &err), -1);
    assert_int_equal(st_writer_write(w, "w.b", b, sizeof b, &err), -1); /* out of order */
    assert_int_equal(st_writer_write(w, "w.a", a, sizeof a, &err), 0);
    assert_int_equal(st_writer_write(w, "w.b", b, 4, &err), -1); /* wrong size */
    assert_int_equal(st_writer_write(w, "w.b", b, sizeof b, &err), 0);
    assert_int_equal(st_writer_finish(w, &err), 0);

    st_set s;
    assert_int_equal(st_open(&s, path, &err), 0);
    const st_tensor *ta = st_find(&s, "w.a"), *tb = st_find(&s, "w.b");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_int_equal(ta->shape[1], 3);
    assert_memory_equal(ta->data, a, sizeof a);
    assert_memory_equal(tb->data, b, sizeof b);
    assert_int_equal(((uintptr_t)ta->data) % 8, 0); /* header padded to 8 */
    st_close(&s);

    /* Every truncation of the file is an error, never a crash. */
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t cut = 0; cut < len; cut++) {
        st_set t;
        assert_int_equal(st_parse(&t, buf, cut, &err), -1);
    }
    /* Every single-byte corruption either still parses or is a clean error. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c[4096];
        memcpy(c, buf, len);
        c[i] ^= 0x5a;
        st_set t;
        if (st_parse(&t, c, len, &err) == 0) st_close(&t);
    }
}

static void test_unfinished_writer_leaves_nothing(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/partial.safetensors", tmpdir);
    lq_error err;
    st_writer *w = st_writer_new(path);
    int64_t shape[1] = {4};
    float v[4] = {0};
    assert_int_equal(st_writer_declare(w, "x", LQ_DTYPE_F32, 1, shape, &err), 0);
    assert_int_equal(st_writer_declare(w, "y", LQ_DTYPE_F32, 1, shape, &err), 0);
    assert_int_equal(st_writer_write(w, "x", v, sizeof v, &err), 0);
    assert_int_equal(st_writer_finish(w, &err), -1);
    assert_non_null(strstr(err.msg, "1 of 2"));
    assert_int_equal(access(path, F_OK), -1);
    char tmp[520];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
}

static void write_index(const char *body) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(body, f);
    fclose(f);
}

static void test_sharded_folder(void **state) {
    (void)state;
    int64_t shape[1] = {2};
    float x[2] = {1, 2}, y[2] = {3, 4};
    write_file("model-00001-of-00002.safetensors", shape, x, 2, "x");
    write_file("model-00002-of-00002.safetensors", shape, y, 2, "y");
    write_index("{\"metadata\":{},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
                "\"y\":\"model-00002-of-00002.safetensors\"}}");
    st_set s;
    lq_error err;
    assert_int_equal(st_open(&s, tmpdir, &err), 0);
    assert_int_equal(s.n_tensors, 2);
    assert_memory_equal(st_find(&s, "y")->data, y, sizeof y);
    st_close(&s);

    write_index("{\"weight_map\":{\"x\":\"../etc/passwd\"}}");
    assert_int_equal(st_open(&s, tmpdir, &err), -1);
    assert_non_null(strstr(err.msg, "plain file name"));
    write_index("{\"weight_map\":{\"z\":\"model-00001-of-00002.safetensors\"}}");
    assert_int_equal(st_open(&s, tmpdir, &err), -1);
    assert_non_null(strstr(err.msg, "'z'"));
    write_index("{\"weight_map\":{\"x\":\"missing.safetensors\"}}");
    assert_int_equal(st_open(&s, tmpdir, &err), -1);
    assert_non_null(strstr(err.msg, "missing.safetensors"));
    write_index("{\"weight_map\":");
    assert_int_equal(st_open(&s, tmpdir, &err), -1);
    /* Same tensor name in two shards. */
    write_file("model-00002-of-00002.safetensors", shape, y, 2, "x");
    write_index("{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\",\"y\":\"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(st_open(&s, tmpdir, &err), -1);
    assert_non_null(strstr(err.msg, "twice"));
}

static void test_missing_files(void **state) {
    (void)state;
    st_set s;
    lq_error err;
    assert_int_equal(st_open(&s, "/nonexistent/model.safetensors", &err), -1);
    assert_non_null(strstr(err.msg, "No such file"));
    char empty[300];
    snprintf(empty, sizeof empty, "%s/empty", tmpdir);
    mkdir(empty, 0700);
    assert_int_equal(st_open(&s, empty, &err), -1);
    assert_non_null(strstr(err.msg, "no model.safetensors"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_header_length_bounds),
        cmocka_unit_test(test_writer_roundtrip_and_truncation),
        cmocka_unit_test(test_unfinished_writer_leaves_nothing),
        cmocka_unit_test(test_sharded_folder),
        cmocka_unit_test(test_missing_files),
    };
    return cmocka_run_group_tests_name("safetensors", tests, make_tmpdir, remove_tmpdir);
}
