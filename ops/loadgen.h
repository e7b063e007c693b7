/* loadgen.h — what `lorq loadgen` measured, and how it is reported.
 *
 * cli/cmd_loadgen.c drives the traffic and fills an lg_run: one lg_record
 * per scheduled request, inter-token gaps per adapter, and samples of the
 * queue and the worker pool over time. ops/loadgen_report.c turns that into
 * report.json, requests.jsonl and the gnuplot PNGs. */
#ifndef LORQ_OPS_LOADGEN_H
#define LORQ_OPS_LOADGEN_H

#include <stddef.h>

#include <jansson.h>

#include "error.h"

typedef enum lg_kind { LG_GENERATE, LG_STREAM, LG_ASYNC, LG_KIND_COUNT } lg_kind;

const char *lg_kind_name(lg_kind k); /* "generate", "stream", "async" */

#define LG_ERROR_MAX 64

/* One request as planned and as it went. Times are seconds since the run
 * started; t_first and t_end are negative until they happen. */
typedef struct lg_record {
    int adapter; /* index into lg_run.adapter_names */
    lg_kind kind;
    int prompt_words, max_new_tokens;
    double t_sched, t_send, t_first, t_end;
    int tokens;            /* generated tokens the server reported (or streamed) */
    long http_status;      /* of the last HTTP exchange (0: none) */
    char error[LG_ERROR_MAX]; /* "" when it succeeded, else its kind: timeout, http_422_validation, ... */
    char job_id[72];       /* async jobs */
} lg_record;

/* A growable array of floats (inter-token gaps, in seconds). */
typedef struct lg_floats {
    float *v;
    size_t n, cap;
} lg_floats;

int lg_floats_push(lg_floats *f, float x);

/* The pool at one moment (from Redis): queued = consumer-group lag,
 * running = pending entries, workers = live heartbeats. */
typedef struct lg_sample {
    double t;
    long long queued, running;
    int workers, workers_draining;
} lg_sample;

#define LG_MAX_ADAPTERS 64

typedef struct lg_run {
    lg_record *rec;
    size_t n_rec, cap_rec;
    const char *adapter_names[LG_MAX_ADAPTERS]; /* "@base" for the base model */
    int n_adapters;
    lg_floats itl[LG_MAX_ADAPTERS];
    lg_sample *samples;
    size_t n_samples, cap_samples;
    const char *sample_source; /* "redis ..." or NULL when not sampled */
    double wall_s;             /* from the first arrival to the last answer */
    double bin_s;              /* width of a rate-plot bin */
    json_t *config;            /* the effective configuration, echoed into the report (borrowed) */
} lg_run;

lg_record *lg_run_add(lg_run *r);
int lg_run_add_sample(lg_run *r, const lg_sample *s);
void lg_run_free(lg_run *r);

/* Percentile q in [0, 1] of sorted values (linear interpolation). */
double lg_percentile(const double *sorted, size_t n, double q);

/* Writes out_dir/report.json and out_dir/requests.jsonl. */
int lg_write_report(const lg_run *r, const char *out_dir, int with_plots, lq_error *err);

/* Writes the .dat files and runs gnuplot for out_dir/rate.png and, when the
 * run was sampled, out_dir/queue.png. */
int lg_write_plots(const lg_run *r, const char *out_dir, lq_error *err);

/* A short table on out: requests, errors, latency and tokens/s per adapter. */
void lg_print_summary(const lg_run *r, FILE *out);

#endif
