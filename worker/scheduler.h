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
 * fails only when the engine itself does.
 *
 * Fairness: waiting jobs are admitted round-robin over the adapters that have
 * some (one job per adapter per turn, FIFO within an adapter), so a flood for
 * one adapter cannot starve a quiet one. Running jobs' prefill chunks come
 * first (oldest first), then admissions, out of one prefill budget.
 *
 * Determinism: on the CPU backend a job's tokens do not depend on what shares
 * its steps, and with the default max_batch_prefill_tokens (512) they equal
 * `lorq generate`'s for the same request bit for bit. Matmuls of fewer than
 * 128 rows run a batch-invariant kernel and larger ones OpenBLAS, so a prompt
 * chunk of 128+ tokens (min(prompt left, max_batch_prefill_tokens), the chunk
 * `lorq generate` runs) gets a forward pass of its own, at most one per step,
 * and everything else (decodes, short chunks, resumed tokens) is packed,
 * grouped by adapter, into passes of at most 127 rows. With
 * decoder_input_details, a 128+-token chunk also computes its lm_head through
 * BLAS, which may move that job's logits by f32 rounding.
 *
 * Sampling without a seed: the seed is drawn from the job id (random, as the
 * gateway makes ids, and the same on every attempt, so a resumed attempt
 * continues the crashed one's sample) and reported in the end event.
 *
 * Events: token events carry the streamed text piece; a special token carries
 * its content (after any text the end of the stream released with it).
 * Every string of an event belongs to the scheduler and is freed at the next
 * lq_scheduler_step or lq_scheduler_free; copy the lq_event struct to change a
 * field (e.g. worker, left NULL here). queue_ms is admission − created_ms and
 * run_ms the time since admission (only queue_ms for a job that never ran).
 * Not thread-safe: one thread drives a scheduler. */
#ifndef LORQ_SCHEDULER_H
#define LORQ_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job.h"
#include "lora.h"
#include "model.h"
#include "tokenizer.h"

typedef struct lq_sched_config {
    int max_batch_prefill_tokens; /* prompt tokens per step */
    int max_batch_total_tokens;   /* KV pool size, in tokens */
    int max_running;              /* most jobs at once */
    int block_size;               /* KV block size, tokens */
    size_t adapter_budget_bytes;  /* resident adapters' memory; 0: unlimited */
    int max_resident_adapters;    /* most adapters resident (MAX_HOST_ADAPTERS); 0: no limit */
} lq_sched_config;

/* Defaults for a CPU worker on the bundled model: 512 prefill tokens per step,
 * a KV pool of 16384 tokens, 32 jobs at once, blocks of 16, 2 GiB of adapters. */
lq_sched_config lq_sched_config_default(void);

typedef struct lq_scheduler lq_scheduler;

lq_scheduler *lq_scheduler_new(lq_model *m, const lq_tokenizer *tok, const lq_sched_config *c, lq_error *err);
void lq_scheduler_free(lq_scheduler *s);

/* Declares an adapter jobs may name (LORA_ADAPTERS' name=path). It is loaded
 * on first use (or now, with preload) and may be evicted when unused. When a
 * preload fails the adapter stays declared (its jobs end with the load error). */
int lq_scheduler_add_adapter(lq_scheduler *s, const char *name, const char *dir, int preload, lq_error *err);
int lq_scheduler_has_adapter(const lq_scheduler *s, const char *name);
int lq_scheduler_is_resident(const lq_scheduler *s, const char *name);
/* Just-in-time loading (worker/adapters.c loads off the stepping thread):
 * install declares `name` (folder `dir`) if needed and makes `lora`, loaded
 * elsewhere, resident. 0: resident (the scheduler owns lora); 1: no room now
 * (every adapter that could be evicted is pinned; the caller keeps lora and
 * tries again later); -1 with err: it can never fit (the caller frees lora). */
int lq_scheduler_install_adapter(lq_scheduler *s, const char *name, const char *dir, lq_lora *lora, lq_error *err);
/* Pins a resident adapter for jobs not yet submitted (0, or -1 if it is not
 * resident), so that it is not evicted before they run; unpin undoes one pin. */
int lq_scheduler_pin_adapter(lq_scheduler *s, const char *name);
void lq_scheduler_unpin_adapter(lq_scheduler *s, const char *name);
/* Evicts a resident adapter no job pins: 0, or -1 (absent, or in use). */
int lq_scheduler_unload_adapter(lq_scheduler *s, const char *name);

/* Comma-separated resident adapters (for heartbeats); owned by s, valid until the next call. */
const char *lq_scheduler_resident_list(lq_scheduler *s);

/* Takes a job (copied): it waits until it fits, then runs. `resume` are the
 * tokens already delivered by an earlier attempt (docs/protocol.md): they are
 * replayed, not re-sent, and generation continues at index n_resume. `user`
 * comes back in every event of this job. Returns 0, or -1 on out-of-memory. */
int lq_scheduler_submit(lq_scheduler *s, const lq_job *job, const int32_t *resume, int n_resume, void *user,
                        lq_error *err);

/* Forgets a job now (cancelled, or fenced out): no more events for it; its
 * KV blocks and adapter pin come back at once. Every job with this `user` is
 * dropped. Events already returned by the last step stay valid. */
void lq_scheduler_drop(lq_scheduler *s, void *user);

int lq_scheduler_running(const lq_scheduler *s); /* jobs submitted and not yet ended */
/* Jobs it would take now without waiting: max_running − running − waiting,
 * bounded by how many typical jobs fit in the KV blocks the waiting ones leave
 * free (typical: the mean KV need of the last 32 jobs submitted; before any,
 * max_batch_prefill_tokens + 256 tokens). An idle scheduler always says at
 * least 1, so a worker never stops reading because its estimate is too big. */
int lq_scheduler_free_slots(const lq_scheduler *s);

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
