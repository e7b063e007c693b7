/* threads.h — a fixed pool of worker threads running parallel-for loops.
 *
 * The CPU backend splits each op into independent tasks (rows of a matmul,
 * heads of attention); lq_pool_run hands task indices out through an atomic
 * counter so uneven tasks balance themselves, and the calling thread works
 * too, so a pool of N threads uses N cores. One loop runs at a time. */
#ifndef LORQ_THREADS_H
#define LORQ_THREADS_H

typedef struct lq_pool lq_pool;
typedef void (*lq_task_fn)(void *ctx, int task, int thread);

lq_pool *lq_pool_new(int n_threads);
int lq_pool_size(const lq_pool *p);
/* Runs fn(ctx, t, thread) for t in [0, n_tasks) across the pool and returns when all are done. */
void lq_pool_run(lq_pool *p, int n_tasks, lq_task_fn fn, void *ctx);
void lq_pool_free(lq_pool *p);

#endif
