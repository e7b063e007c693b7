/* tgi.h — TGI's response shapes, shared by the TGI routes and the jobs API.
 *
 * /generate answers {"generated_text", "details"?}; a stream sends one
 * `data:{...}` event per token ({"index", "token", "top_tokens",
 * "generated_text", "details"}) where the last token's event also carries
 * generated_text and, when asked, details.
 *
 * A worker's end event follows its last token event, so the token event
 * says whether it is the last (`last`, docs/protocol.md): a last token waits
 * for the end event, however long it takes, and goes out with it; every
 * other token goes out at once. Token events that do not say (`last` absent,
 * from an older worker) are held back only when they may be the last:
 *
 *   - a token that must be the last (index max_new_tokens - 1, or a special
 *     token such as EOS) waits for the next event, however long it takes;
 *   - with stop sequences, any token may be the last: it waits for the next
 *     event or HOLD_MS, whichever comes first;
 *   - every other token goes out at once.
 *
 * When the end comes after a token was let go, the closing event carries an
 * empty special token (id of the last token, text "") so that no text is
 * sent twice. */
#ifndef LORQ_GW_TGI_H
#define LORQ_GW_TGI_H

#include <event2/event.h>
#include <jansson.h>

#include "job.h"
#include "tokenizer.h"

/* How a request wants its answer shaped. */
typedef struct lq_tgi_opts {
    int details, decoder_input_details, return_full_text;
    const char *inputs; /* for return_full_text */
    size_t inputs_len;
    int n_input;        /* prompt tokens (stream details' input_length) */
    int max_new_tokens; /* 0: unknown */
    int may_stop;       /* stop sequences (or who knows) may end the job at any token */
} lq_tgi_opts;

/* {"id", "text", "logprob", "special"} */
json_t *lq_tgi_token_json(const lq_tokenizer *tok, const lq_event *t);
/* The /generate body from the token events (needed only with details) and the end event. */
json_t *lq_tgi_response(const lq_tokenizer *tok, const lq_tgi_opts *o, const lq_event *tokens, int n_tokens,
                        const lq_event *end);

/* A token stream with the hold-back described above. send writes one event. */
typedef struct lq_tgi_stream {
    const lq_tokenizer *tok;
    lq_tgi_opts opts;
    void (*send)(void *arg, const json_t *ev);
    void *arg;
    lq_event held;
    int has_held;
    int32_t last_id; /* of the last token sent */
    struct event *timer;
} lq_tgi_stream;

int lq_tgi_stream_init(lq_tgi_stream *st, struct event_base *base, const lq_tokenizer *tok, const lq_tgi_opts *o,
                       void (*send)(void *arg, const json_t *ev), void *arg);
/* Takes the token (moves it out of ev). */
void lq_tgi_stream_token(lq_tgi_stream *st, lq_event *ev);
/* A normal end (length, eos_token, stop_sequence): the final event. */
void lq_tgi_stream_end(lq_tgi_stream *st, const lq_event *end);
/* Sends whatever is held as an ordinary event (before an error event). */
void lq_tgi_stream_flush(lq_tgi_stream *st);
void lq_tgi_stream_clear(lq_tgi_stream *st);

/* An end event that is an error or a cancellation rather than an answer. */
int lq_tgi_end_failed(const lq_event *end);

#endif
