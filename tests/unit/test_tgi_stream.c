/* test_tgi_stream.c — when a TGI stream sends each token (gateway/tgi.h):
 * a token its worker marks as not the last goes out at once, even with stop
 * sequences; one marked last waits for the end event and goes out with
 * generated_text; a token that does not say is held while it may be the last
 * (stop sequences: until the next event or the hold timer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <event2/event.h>

#include "tgi.h"

typedef struct sent {
    int n;
    int index[16];
    int has_text[16]; /* the event carried generated_text */
} sent;

static void collect(void *arg, const json_t *ev) {
    sent *s = arg;
    if (s->n == 16) return;
    s->index[s->n] = (int)json_integer_value(json_object_get(ev, "index"));
    s->has_text[s->n] = json_is_string(json_object_get(ev, "generated_text"));
    s->n++;
}

static void token(lq_tgi_stream *st, int index, int last) {
    lq_event e;
    memset(&e, 0, sizeof e);
    e.type = LQ_EVENT_TOKEN;
    e.job = strdup("j");
    e.index = index;
    e.token = 100 + index;
    e.text = strdup("x");
    e.text_len = 1;
    e.last = last;
    e.queue_ms = e.run_ms = -1;
    lq_tgi_stream_token(st, &e); /* takes the event's strings */
    lq_event_clear(&e);
}

static lq_event end_event(int n) {
    lq_event e;
    memset(&e, 0, sizeof e);
    e.type = LQ_EVENT_END;
    e.index = e.generated_tokens = n;
    e.text = "xxx";
    e.text_len = 3;
    e.finish_reason = "stop_sequence";
    e.queue_ms = e.run_ms = -1;
    return e;
}

static void start(lq_tgi_stream *st, struct event_base *base, sent *s) {
    lq_tgi_opts o;
    memset(&o, 0, sizeof o);
    o.max_new_tokens = 8;
    o.may_stop = 1;
    memset(s, 0, sizeof *s);
    assert_int_equal(lq_tgi_stream_init(st, base, NULL, &o, collect, s), 0);
}

static void test_tokens_that_say_are_not_held(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
    lq_tgi_stream st;
    sent s;
    start(&st, base, &s);
    token(&st, 0, 0);
    assert_int_equal(s.n, 1); /* at once, although stop sequences could end the job anywhere */
    token(&st, 1, 0);
    assert_int_equal(s.n, 2);
    token(&st, 2, 1);
    assert_int_equal(s.n, 2); /* the last one waits for the end */
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(s.n, 2);
    lq_event end = end_event(3);
    lq_tgi_stream_end(&st, &end);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.index[2], 3);
    assert_true(!s.has_text[0] && !s.has_text[1] && s.has_text[2]);
    lq_tgi_stream_clear(&st);
    event_base_free(base);
}

static void test_tokens_that_do_not_say_are_held_while_they_may_be_last(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
    lq_tgi_stream st;
    sent s;
    start(&st, base, &s);
    token(&st, 0, -1);
    assert_int_equal(s.n, 0); /* held: a stop sequence may have ended the job */
    token(&st, 1, -1);
    assert_int_equal(s.n, 1); /* the next event lets the first go */
    event_base_dispatch(base); /* the hold timer fires */
    assert_int_equal(s.n, 2);
    lq_event end = end_event(2);
    lq_tgi_stream_end(&st, &end); /* no token held: an empty closing token carries the text */
    assert_int_equal(s.n, 3);
    assert_true(s.has_text[2]);
    lq_tgi_stream_clear(&st);
    event_base_free(base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_that_say_are_not_held),
        cmocka_unit_test(test_tokens_that_do_not_say_are_held_while_they_may_be_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
