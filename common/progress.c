/* progress.c — see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double lq_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress_draw(lq_progress *p) {
    const int width = 30;
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    int filled = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%-24.24s [%s] %5.1f%% %6.1fs", p->label, bar, frac * 100.0, lq_now() - p->start);
    fflush(stderr);
}

void lq_progress_start(lq_progress *p, const char *label, uint64_t total) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->enabled = isatty(STDERR_FILENO);
    p->last_permille = -1;
    p->start = lq_now();
    if (p->enabled) progress_draw(p);
}

void lq_progress_add(lq_progress *p, uint64_t n) {
    p->done += n;
    if (!p->enabled) return;
    int permille = p->total ? (int)(p->done * 1000 / p->total) : 1000;
    if (permille == p->last_permille) return;
    p->last_permille = permille;
    progress_draw(p);
}

void lq_progress_finish(lq_progress *p) {
    if (!p->enabled) return;
    p->done = p->total;
    progress_draw(p);
    fputc('\n', stderr);
}
