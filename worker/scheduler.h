/* scheduler.h — continuous batching: many jobs, one model, one step at a time.
 *
 * The queue layer (worker/queue.c) hands in decoded jobs; the scheduler runs
 * them and hands back protocol events (common/job.h), and knows nothing of
 * Redis. At every step, jobs join (when their KV blocks and the token budget
 * allow) and leave (finished, cancelled, failed); one lq_model_step runs the
 * prefill chunks of new jobs and the decode tokens of running ones together,
 * whatever adapters they use.
 *
 * Budgets, as TGI names them: a step prefills at most max_batch_prefill_tokens
 * prompt tokens; the KV pool holds max_batch_total_tokens tokens, and a job is
 * admitted only when blocks for its prompt plus max_new_tokens are free, so a
 * running job never has to be preempted. A job that could never fit ends at
 * once with a validation error.
 *
 * Everything about a job that can go wrong (unknown adapter, an adapter that
 * fails to load, a prompt too long, a deadline passed, bad parameters) comes
 * back as that job's end event with finish_reason "error"; lq_scheduler_step
 * fails only when the engine itself does. */
#ifndef LORQ_SCHEDULER_H
#define LORQ_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job.h"
#include "model.h"
#include "tokenizer.h"

typedef struct lq_sched_config {
    int max_batch_prefill_tokens; /* prompt tokens per step */
    int max_batch_total_tokens;   /* KV pool size, in tokens */
    int max_running;              /* most jobs at once */
    int block_size;               /* KV block size, tokens */
    size_t adapter_budget_bytes;  /* resident adapters' memory; 0: unlimited */
} lq_sched_config;

/* Defaults for a CPU worker on the bundled model. */
lq_sched_config lq_sched_config_default(void);

typedef struct lq_scheduler lq_scheduler;

lq_scheduler *lq_scheduler_new(lq_model *m, const lq_tokenizer *tok, const lq_sched_config *c, lq_error *err);
void lq_scheduler_free(lq_scheduler *s);

/* Declares an adapter jobs may name (LORA_ADAPTERS' name=path). It is loaded
 * on first use (or now, with preload) and may be evicted when unused. */
int lq_scheduler_add_adapter(lq_scheduler *s, const char *name, const char *dir, int preload, lq_error *err);
int lq_scheduler_has_adapter(const lq_scheduler *s, const char *name);
int lq_scheduler_is_resident(const lq_scheduler *s, const char *name);
/* Comma-separated resident adapters (for heartbeats); owned by s, valid until the next call. */
const char *lq_scheduler_resident_list(lq_scheduler *s);

/* Takes a job (copied): it waits until it fits, then runs. `resume` are the
 * tokens already delivered by an earlier attempt (docs/protocol.md): they are
 * replayed, not re-sent, and generation continues at index n_resume. `user`
 * comes back in every event of this job. Returns 0, or -1 on out-of-memory. */
int lq_scheduler_submit(lq_scheduler *s, const lq_job *job, const int32_t *resume, int n_resume, void *user,
                        lq_error *err);

/* Forgets a job now (cancelled, or fenced out): no more events for it. */
void lq_scheduler_drop(lq_scheduler *s, void *user);

int lq_scheduler_running(const lq_scheduler *s); /* jobs submitted and not yet ended */
int lq_scheduler_free_slots(const lq_scheduler *s); /* jobs it would take now without waiting */

typedef struct lq_sched_event {
    void *user;
    lq_event ev; /* token or end event, strings owned by the scheduler */
} lq_sched_event;

/* Runs one step (admissions, one forward pass, sampling) if there is work.
 * Returns the number of events it produced (tokens, and end events of jobs
 * that finished or failed), 0 when idle, or -1 with err set if the engine
 * failed. The events stay valid until the next call. */
int lq_scheduler_step(lq_scheduler *s, const lq_sched_event **events, lq_error *err);

#endif
