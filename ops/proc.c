/* proc.c — child processes for the launchers (see proc.h).
 *
 * Everything the child needs (its environment, its argv) is built before
 * fork, so the child only calls async-signal-safe functions between fork and
 * exec even when the parent has threads (libcurl's resolver). */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

extern char **environ;

/* Length of the "NAME=" part of an environment entry (0 if it has no '='). */
static size_t env_name_len(const char *entry) {
    const char *eq = strchr(entry, '=');
    return eq ? (size_t)(eq - entry) + 1 : 0;
}

static int env_overridden(const char *entry, char *const env[]) {
    size_t n = env_name_len(entry);
    if (!n || !env) return 0;
    for (size_t i = 0; env[i]; i++)
        if (env_name_len(env[i]) == n && !strncmp(entry, env[i], n)) return 1;
    return 0;
}

/* The current environment with env's entries replacing (or, when empty,
 * removing) variables of the same name. The strings are borrowed. */
static char **build_envp(char *const env[]) {
    size_t n_base = 0, n_env = 0;
    while (environ[n_base]) n_base++;
    while (env && env[n_env]) n_env++;
    char **envp = calloc(n_base + n_env + 1, sizeof *envp);
    if (!envp) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n_base; i++)
        if (!env_overridden(environ[i], env)) envp[k++] = environ[i];
    for (size_t i = 0; i < n_env; i++)
        if (env[i][env_name_len(env[i])] != '\0') envp[k++] = env[i];
    envp[k] = NULL;
    return envp;
}

/* In the child: own process group, SIGTERM when the parent dies, default
 * signal handling, output to the log file. Only async-signal-safe calls. */
static void child_prepare(pid_t parent, int log_fd) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(0); /* the parent died before prctl */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (log_fd >= 0) {
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
    }
}

int lq_proc_spawn(lq_proc *p, const char *name, char *const argv[], char *const env[], const char *log_path,
                  lq_error *err) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    int log_fd = -1;
    if (log_path && (log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
        return lq_fail(err, "%s: cannot open log %s: %s", name, log_path, strerror(errno));
    int pipefd[2];
    char **envp = build_envp(env);
    if (!envp || pipe2(pipefd, O_CLOEXEC)) {
        free(envp);
        if (log_fd >= 0) close(log_fd);
        return lq_fail(err, "%s: cannot prepare to start: %s", name, strerror(errno));
    }
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        child_prepare(parent, log_fd);
        execvpe(argv[0], argv, envp);
        int e = errno;
        if (write(pipefd[1], &e, sizeof e) < 0) _exit(127);
        _exit(127);
    }
    int fork_errno = errno;
    free(envp);
    close(pipefd[1]);
    if (log_fd >= 0) close(log_fd);
    if (pid < 0) {
        close(pipefd[0]);
        return lq_fail(err, "%s: fork failed: %s", name, strerror(fork_errno));
    }
    /* The pipe closes at exec (success) or carries exec's errno (failure). */
    int child_errno = 0;
    ssize_t got;
    do got = read(pipefd[0], &child_errno, sizeof child_errno);
    while (got < 0 && errno == EINTR);
    close(pipefd[0]);
    if (got == (ssize_t)sizeof child_errno) {
        waitpid(pid, NULL, 0);
        return lq_fail(err, "%s: cannot run %s: %s", name, argv[0], strerror(child_errno));
    }
    p->pid = pid;
    p->started = lq_now();
    return 0;
}

void lq_proc_signal(lq_proc *p, int sig) {
    if (p->pid <= 0) return;
    kill(p->pid, sig);
    if (sig == SIGTERM && !p->term_sent) p->term_sent = lq_now();
}

int lq_proc_reap(lq_proc *p) {
    if (p->pid <= 0) return 1;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == 0) return 0;
    if (r < 0 && errno == EINTR) return 0;
    p->status = r == p->pid ? st : 0;
    p->pid = 0;
    return 1;
}

void lq_nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* EINTR: a signal arrived; the caller looks at its flags */
}

int lq_proc_stop(lq_proc *p, int sig, double timeout_s) {
    if (lq_proc_reap(p)) return 0;
    lq_proc_signal(p, sig);
    double deadline = lq_now() + timeout_s;
    while (lq_now() < deadline) {
        if (lq_proc_reap(p)) return 0;
        lq_nap_ms(50);
    }
    lq_proc_signal(p, SIGKILL);
    while (!lq_proc_reap(p)) lq_nap_ms(20);
    return 1;
}

const char *lq_proc_status_text(int status, char *buf, size_t size) {
    if (WIFEXITED(status)) snprintf(buf, size, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(buf, size, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(buf, size, "status %d", status);
    return buf;
}

int lq_exe_dir(char *buf, size_t size, lq_error *err) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) return lq_fail(err, "cannot find the running executable: %s", strerror(errno));
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (slash) *slash = '\0';
    if (strlen(path) + 1 > size) return lq_fail(err, "executable path too long");
    memcpy(buf, path, strlen(path) + 1);
    return 0;
}
