/* tokpool.h — tokenizing long prompts off the event loop.
 *
 * Tokenizing a prompt of a few hundred bytes takes microseconds and is done
 * inline; one of megabytes can take a second, and on the event loop that
 * second would stall every open stream. Long texts therefore go to a few
 * threads (TGI's router has "validation workers" for the same reason); the
 * result comes back on the loop through a pipe, so callbacks run on the loop
 * thread like everything else. The tokenizer is immutable and safe to share
 * between threads (tokenizer.h). */
#ifndef LORQ_GW_TOKPOOL_H
#define LORQ_GW_TOKPOOL_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

/* Texts at least this long are tokenized by the pool. */
#define LQ_TOKPOOL_MIN_BYTES 16384

typedef struct lq_tokpool lq_tokpool;

/* Runs on the loop thread. ids (malloc'd, the callee's) or error (NULL when fine). */
typedef void (*lq_tokpool_fn)(void *arg, int32_t *ids, size_t n, const char *error);

lq_tokpool *lq_tokpool_new(struct event_base *base, const lq_tokenizer *tok, int threads, lq_error *err);
/* Stops the threads; callbacks of unfinished work are not called. */
void lq_tokpool_free(lq_tokpool *p);

/* Copies text and tokenizes it on a pool thread. -1 when out of memory. */
int lq_tokpool_encode(lq_tokpool *p, const char *text, size_t len, int add_special, lq_tokpool_fn fn, void *arg);

#endif
