/* tokpool.c — a work queue of tokenizations and its way back to the loop
 * (see tokpool.h).
 *
 * Two lists under one mutex: `todo` (threads wait on a condition variable
 * for it) and `done`. A thread that finishes a task appends it to `done`
 * and writes one byte to a pipe whose read end the loop watches; the loop
 * drains the pipe, takes the whole `done` list and runs the callbacks. A
 * full pipe is harmless: the loop takes every finished task each time. */
#include "tokpool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct task {
    struct task *next;
    char *text;
    size_t len;
    int add_special;
    lq_tokpool_fn fn;
    void *arg;
    int32_t *ids;
    size_t n;
    lq_error err;
    int failed;
} task;

struct lq_tokpool {
    const lq_tokenizer *tok;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    task *todo, **todo_tail, *done;
    int stop;
    pthread_t *threads;
    int n_threads;
    int pipe_rd, pipe_wr;
    struct event *ready;
};

static void task_free(task *t) {
    free(t->text);
    free(t->ids);
    free(t);
}

static task *pop_todo(lq_tokpool *p) {
    pthread_mutex_lock(&p->mu);
    while (!p->todo && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    task *t = p->stop ? NULL : p->todo;
    if (t && !(p->todo = t->next)) p->todo_tail = &p->todo;
    pthread_mutex_unlock(&p->mu);
    return t;
}

static void *thread_main(void *arg) {
    lq_tokpool *p = arg;
    task *t;
    while ((t = pop_todo(p))) {
        t->failed = tok_encode(p->tok, t->text, t->len, t->add_special, &t->ids, &t->n, &t->err) != 0;
        pthread_mutex_lock(&p->mu);
        t->next = p->done;
        p->done = t;
        pthread_mutex_unlock(&p->mu);
        char one = 1;
        if (write(p->pipe_wr, &one, 1) < 0 && errno != EAGAIN) { /* the loop will still find it next time */
        }
    }
    return NULL;
}

/* On the loop: run the callbacks of every finished task, oldest first. */
static void on_ready(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    lq_tokpool *p = arg;
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&p->mu);
    task *list = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    task *rev = NULL;
    while (list) {
        task *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        task *t = rev;
        rev = t->next;
        int32_t *ids = t->ids;
        t->ids = NULL; /* the callee's now */
        t->fn(t->arg, t->failed ? NULL : ids, t->failed ? 0 : t->n, t->failed ? t->err.msg : NULL);
        if (t->failed) free(ids);
        task_free(t);
    }
}

lq_tokpool *lq_tokpool_new(struct event_base *base, const lq_tokenizer *tok, int threads, lq_error *err) {
    lq_tokpool *p = calloc(1, sizeof *p);
    int fds[2] = {-1, -1};
    if (!p || pipe2(fds, O_NONBLOCK | O_CLOEXEC)) {
        free(p);
        lq_fail(err, "cannot create the tokenizer pool's pipe");
        return NULL;
    }
    p->tok = tok;
    p->pipe_rd = fds[0];
    p->pipe_wr = fds[1];
    p->todo_tail = &p->todo;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->ready = event_new(base, p->pipe_rd, EV_READ | EV_PERSIST, on_ready, p);
    p->threads = calloc((size_t)threads, sizeof *p->threads);
    if (!p->ready || !p->threads || event_add(p->ready, NULL)) {
        lq_tokpool_free(p);
        lq_fail(err, "out of memory");
        return NULL;
    }
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, thread_main, p)) break;
        p->n_threads++;
    }
    if (!p->n_threads) {
        lq_tokpool_free(p);
        lq_fail(err, "cannot start tokenizer threads");
        return NULL;
    }
    return p;
}

void lq_tokpool_free(lq_tokpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    task *lists[2] = {p->todo, p->done};
    for (int k = 0; k < 2; k++) {
        for (task *t = lists[k], *next; t; t = next) {
            next = t->next;
            task_free(t);
        }
    }
    if (p->ready) event_free(p->ready);
    close(p->pipe_rd);
    close(p->pipe_wr);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int lq_tokpool_encode(lq_tokpool *p, const char *text, size_t len, int add_special, lq_tokpool_fn fn, void *arg) {
    task *t = calloc(1, sizeof *t);
    if (!t || !(t->text = malloc(len ? len : 1))) {
        free(t);
        return -1;
    }
    memcpy(t->text, text, len);
    t->len = len;
    t->add_special = add_special;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&p->mu);
    *p->todo_tail = t;
    p->todo_tail = &t->next;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}
