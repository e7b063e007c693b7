/* proc.h — child processes for the launchers: `lorq serve` and
 * `lorq-autoscaler` both start redis-server, gateways and workers, watch
 * them and stop them in order.
 *
 * A child runs in its own process group, so the Ctrl-C a terminal sends to
 * the foreground group reaches only the launcher, which then stops the
 * children in the right order (workers drain while Redis is still up). The
 * child also gets SIGTERM if the launcher dies without stopping it
 * (PR_SET_PDEATHSIG), so nothing is left running behind a crashed launcher.
 * An exec failure (missing binary) comes back to the caller as an error
 * through a close-on-exec pipe instead of a child that exits 127 later. */
#ifndef LORQ_OPS_PROC_H
#define LORQ_OPS_PROC_H

#include <stddef.h>
#include <sys/types.h>

#include "error.h"

typedef struct lq_proc {
    pid_t pid;        /* 0: not running */
    char name[64];    /* for logs: "worker 2", "gateway" */
    double started;   /* lq_now() at spawn */
    double term_sent; /* lq_now() when SIGTERM was sent; 0: not yet */
    int status;       /* wait status once it exited */
} lq_proc;

/* Starts argv[0] (a path, or a name looked up in PATH) with argv. env is a
 * NULL-terminated list of "NAME=value" set on top of the current
 * environment ("NAME=" with nothing after unsets NAME); it may be NULL.
 * log_path, when not NULL, receives the child's stdout and stderr (appended);
 * otherwise they are the launcher's. */
int lq_proc_spawn(lq_proc *p, const char *name, char *const argv[], char *const env[], const char *log_path,
                  lq_error *err);

/* Sends sig if the child runs; SIGTERM also records term_sent. */
void lq_proc_signal(lq_proc *p, int sig);

/* Reaps the child if it exited, without blocking: 1 when it is gone (pid
 * becomes 0, status is set), 0 while it runs. */
int lq_proc_reap(lq_proc *p);

/* Sends sig, waits up to timeout_s for the child to exit, then SIGKILLs it
 * and waits for that. Returns 0 when it exited within the timeout, 1 when it
 * had to be killed. */
int lq_proc_stop(lq_proc *p, int sig, double timeout_s);

/* "exit 0", "exit 3", "signal 9 (Killed)" for a wait status. */
const char *lq_proc_status_text(int status, char *buf, size_t size);

/* The folder holding the running executable, so that a launcher finds its
 * sibling binaries (bin/lorq-worker next to bin/lorq) wherever bin/ is. */
int lq_exe_dir(char *buf, size_t size, lq_error *err);

/* Sleeps up to ms, returning early when a signal arrives. */
void lq_nap_ms(int ms);

#endif
