/* progress.h — a one-line progress bar for long commands, only on a terminal.
 *
 * When stderr is not a TTY (CI logs, pipes) nothing is drawn, so logs stay
 * clean; the command's own summary line says what happened. */
#ifndef LORQ_PROGRESS_H
#define LORQ_PROGRESS_H

#include <stdint.h>

typedef struct lq_progress {
    const char *label;
    uint64_t total, done;
    int enabled;
    int last_permille;
    double start;
} lq_progress;

void lq_progress_start(lq_progress *p, const char *label, uint64_t total);
void lq_progress_add(lq_progress *p, uint64_t n);
void lq_progress_finish(lq_progress *p);

/* Seconds on a monotonic clock. */
double lq_now(void);

#endif
