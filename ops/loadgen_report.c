/* loadgen_report.c — `lorq loadgen`'s results: statistics, report.json,
 * requests.jsonl and the gnuplot PNGs (see loadgen.h).
 *
 * Latency is measured from a request's scheduled arrival, not from when it
 * was sent: an open-loop generator that fell behind must show it, not hide
 * it (coordinated omission). Time to first token and inter-token latency
 * come from streaming requests only: a blocking or async request has no
 * first token to time. Percentiles interpolate linearly between ranks (as
 * numpy's default does), so small runs are not rounded to one sample. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "loadgen.h"
#include "proc.h"
#include "progress.h"

const char *lg_kind_name(lg_kind k) {
    static const char *names[] = {"generate", "stream", "async"};
    return k < LG_KIND_COUNT ? names[k] : "?";
}

int lg_floats_push(lg_floats *f, float x) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 1024;
        float *v = realloc(f->v, cap * sizeof *v);
        if (!v) return -1;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return 0;
}

lg_record *lg_run_add(lg_run *r) {
    if (r->n_rec == r->cap_rec) {
        size_t cap = r->cap_rec ? r->cap_rec * 2 : 1024;
        lg_record *v = realloc(r->rec, cap * sizeof *v);
        if (!v) return NULL;
        r->rec = v;
        r->cap_rec = cap;
    }
    lg_record *rec = &r->rec[r->n_rec++];
    memset(rec, 0, sizeof *rec);
    rec->t_send = rec->t_first = rec->t_end = -1;
    return rec;
}

int lg_run_add_sample(lg_run *r, const lg_sample *s) {
    if (r->n_samples == r->cap_samples) {
        size_t cap = r->cap_samples ? r->cap_samples * 2 : 256;
        lg_sample *v = realloc(r->samples, cap * sizeof *v);
        if (!v) return -1;
        r->samples = v;
        r->cap_samples = cap;
    }
    r->samples[r->n_samples++] = *s;
    return 0;
}

void lg_run_free(lg_run *r) {
    free(r->rec);
    free(r->samples);
    for (int i = 0; i < LG_MAX_ADAPTERS; i++) free(r->itl[i].v);
    memset(r, 0, sizeof *r);
}

double lg_percentile(const double *sorted, size_t n, double q) {
    if (n == 0) return NAN;
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n) return sorted[n - 1];
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (pos - (double)lo);
}

/* ---- statistics ---- */

typedef struct lg_values {
    double *v;
    size_t n;
} lg_values;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* {"n", "mean", "p50", "p95", "p99", "max"} in milliseconds; nulls when empty. */
static json_t *dist_json(lg_values *d) {
    qsort(d->v, d->n, sizeof *d->v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < d->n; i++) sum += d->v[i];
    json_t *o = json_object();
    json_object_set_new(o, "n", json_integer((json_int_t)d->n));
#define MS(x) (d->n ? json_real(round((x) * 1e6) / 1e3) : json_null())
    json_object_set_new(o, "mean", MS(sum / (double)(d->n ? d->n : 1)));
    json_object_set_new(o, "p50", MS(lg_percentile(d->v, d->n, 0.50)));
    json_object_set_new(o, "p95", MS(lg_percentile(d->v, d->n, 0.95)));
    json_object_set_new(o, "p99", MS(lg_percentile(d->v, d->n, 0.99)));
    json_object_set_new(o, "max", MS(d->n ? d->v[d->n - 1] : 0));
#undef MS
    return o;
}

/* Requests matching adapter (-1: any) and kind (-1: any). */
static int matches(const lg_record *rec, int adapter, int kind) {
    return (adapter < 0 || rec->adapter == adapter) && (kind < 0 || (int)rec->kind == kind);
}

/* The inter-token gaps of one adapter, or of all (adapter -1). */
static lg_values itl_values(const lg_run *r, int adapter) {
    size_t n = 0;
    for (int a = 0; a < r->n_adapters; a++)
        if (adapter < 0 || a == adapter) n += r->itl[a].n;
    lg_values d = {malloc((n + 1) * sizeof(double)), 0};
    for (int a = 0; a < r->n_adapters && d.v; a++)
        if (adapter < 0 || a == adapter)
            for (size_t i = 0; i < r->itl[a].n; i++) d.v[d.n++] = r->itl[a].v[i];
    return d;
}

static double rate(double count, double seconds) { return seconds > 0 ? round(count / seconds * 1000) / 1000 : 0; }

/* The statistics of one slice of the run (an adapter, a kind, or all). */
static json_t *stats_json(const lg_run *r, int adapter, int kind) {
    lg_values lat = {malloc((r->n_rec + 1) * sizeof(double)), 0}, ttft = {malloc((r->n_rec + 1) * sizeof(double)), 0};
    long long requests = 0, ok = 0, tokens = 0, by_kind[LG_KIND_COUNT] = {0};
    json_t *errors = json_object();
    for (size_t i = 0; i < r->n_rec && lat.v && ttft.v; i++) {
        const lg_record *rec = &r->rec[i];
        if (!matches(rec, adapter, kind)) continue;
        requests++;
        by_kind[rec->kind]++;
        if (rec->error[0]) {
            json_t *c = json_object_get(errors, rec->error);
            json_object_set_new(errors, rec->error, json_integer(c ? json_integer_value(c) + 1 : 1));
            continue;
        }
        ok++;
        tokens += rec->tokens;
        lat.v[lat.n++] = rec->t_end - rec->t_sched;
        if (rec->t_first >= 0) ttft.v[ttft.n++] = rec->t_first - rec->t_sched;
    }
    json_t *o = json_object(), *kinds = json_object();
    for (int k = 0; k < LG_KIND_COUNT; k++) json_object_set_new(kinds, lg_kind_name((lg_kind)k), json_integer(by_kind[k]));
    json_object_set_new(o, "requests", json_integer(requests));
    json_object_set_new(o, "ok", json_integer(ok));
    json_object_set_new(o, "errors_total", json_integer(requests - ok));
    json_object_set_new(o, "errors", errors);
    json_object_set_new(o, "by_kind", kinds);
    json_object_set_new(o, "tokens", json_integer(tokens));
    json_object_set_new(o, "tokens_per_s", json_real(rate((double)tokens, r->wall_s)));
    json_object_set_new(o, "requests_per_s", json_real(rate((double)requests, r->wall_s)));
    json_object_set_new(o, "latency_ms", dist_json(&lat));
    json_object_set_new(o, "ttft_ms", dist_json(&ttft));
    if (kind < 0 || kind == LG_STREAM) {
        lg_values itl = itl_values(r, adapter);
        json_object_set_new(o, "itl_ms", itl.v ? dist_json(&itl) : json_null());
        free(itl.v);
    } else {
        json_object_set_new(o, "itl_ms", json_null());
    }
    free(lat.v);
    free(ttft.v);
    return o;
}

static json_t *samples_json(const lg_run *r) {
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_samples; i++) {
        const lg_sample *s = &r->samples[i];
        json_array_append_new(a, json_pack("{s:f, s:I, s:I, s:i, s:i}", "t", round(s->t * 1000) / 1000, "queued",
                                           (json_int_t)s->queued, "running", (json_int_t)s->running, "workers", s->workers,
                                           "workers_draining", s->workers_draining));
    }
    return a;
}

static json_t *report_json(const lg_run *r, int with_plots) {
    json_t *o = json_object(), *adapters = json_object(), *kinds = json_object();
    json_object_set(o, "config", r->config ? r->config : json_null());
    json_object_set_new(o, "wall_s", json_real(round(r->wall_s * 1000) / 1000));
    json_object_set_new(o, "overall", stats_json(r, -1, -1));
    for (int a = 0; a < r->n_adapters; a++) json_object_set_new(adapters, r->adapter_names[a], stats_json(r, a, -1));
    for (int k = 0; k < LG_KIND_COUNT; k++) json_object_set_new(kinds, lg_kind_name((lg_kind)k), stats_json(r, -1, k));
    json_object_set_new(o, "adapters", adapters);
    json_object_set_new(o, "kinds", kinds);
    json_object_set_new(o, "sample_source", r->sample_source ? json_string(r->sample_source) : json_null());
    json_object_set_new(o, "samples", samples_json(r));
    json_t *files = json_pack("{s:s}", "requests", "requests.jsonl");
    if (with_plots) {
        json_object_set_new(files, "rate_plot", json_string("rate.png"));
        if (r->n_samples) json_object_set_new(files, "queue_plot", json_string("queue.png"));
    }
    json_object_set_new(o, "files", files);
    return o;
}

static json_t *record_json(const lg_run *r, size_t i) {
    const lg_record *rec = &r->rec[i];
#define T(x) ((x) >= 0 ? json_real(round((x) * 1e6) / 1e6) : json_null())
    json_t *o = json_pack("{s:I, s:s, s:s, s:i, s:i, s:o, s:o, s:o, s:o, s:i, s:I, s:o, s:o}", "i", (json_int_t)i, "adapter",
                          r->adapter_names[rec->adapter], "kind", lg_kind_name(rec->kind), "prompt_words", rec->prompt_words,
                          "max_new_tokens", rec->max_new_tokens, "t_sched", T(rec->t_sched), "t_send", T(rec->t_send),
                          "t_first", T(rec->t_first), "t_end", T(rec->t_end), "tokens", rec->tokens, "http_status",
                          (json_int_t)rec->http_status, "error", rec->error[0] ? json_string(rec->error) : json_null(),
                          "job_id", rec->job_id[0] ? json_string(rec->job_id) : json_null());
#undef T
    return o;
}

/* Writes path via a temporary file renamed into place, so a reader never
 * sees half a report. */
static int write_json_file(const char *path, json_t *doc, lq_error *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) || rename(tmp, path))
        return lq_fail(err, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

static int write_requests(const lg_run *r, const char *out_dir, lq_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/requests.jsonl", out_dir);
    FILE *f = fopen(path, "w");
    if (!f) return lq_fail(err, "cannot write %s: %s", path, strerror(errno));
    for (size_t i = 0; i < r->n_rec; i++) {
        json_t *o = record_json(r, i);
        char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
        if (line) fprintf(f, "%s\n", line);
        free(line);
        json_decref(o);
    }
    if (fclose(f)) return lq_fail(err, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

int lg_write_report(const lg_run *r, const char *out_dir, int with_plots, lq_error *err) {
    if (write_requests(r, out_dir, err)) return -1;
    json_t *doc = report_json(r, with_plots);
    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", out_dir);
    int rc = write_json_file(path, doc, err);
    json_decref(doc);
    return rc;
}

/* ---- plots ---- */

/* Requests per second per adapter and in total, binned by arrival time. */
static int write_rate_dat(const lg_run *r, const char *path, lq_error *err) {
    double end = 0;
    for (size_t i = 0; i < r->n_rec; i++) end = fmax(end, r->rec[i].t_sched);
    size_t n_bins = (size_t)(end / r->bin_s) + 1;
    long *counts = calloc(n_bins * (size_t)(r->n_adapters + 1), sizeof *counts);
    FILE *f = fopen(path, "w");
    if (!counts || !f) {
        free(counts);
        if (f) fclose(f);
        return lq_fail(err, "cannot write %s: %s", path, strerror(errno));
    }
    for (size_t i = 0; i < r->n_rec; i++) {
        size_t b = (size_t)(r->rec[i].t_sched / r->bin_s);
        counts[b * (size_t)(r->n_adapters + 1)]++;
        counts[b * (size_t)(r->n_adapters + 1) + 1 + (size_t)r->rec[i].adapter]++;
    }
    fprintf(f, "t \"total\"");
    for (int a = 0; a < r->n_adapters; a++) fprintf(f, " \"%s\"", r->adapter_names[a]);
    fputc('\n', f);
    /* The last bin is written twice (at its start and its end) so that
     * gnuplot's steps draw it too. */
    for (size_t b = 0; b <= n_bins; b++) {
        size_t row = b < n_bins ? b : n_bins - 1;
        fprintf(f, "%.3f", (double)b * r->bin_s);
        for (int c = 0; c <= r->n_adapters; c++)
            fprintf(f, " %.3f", (double)counts[row * (size_t)(r->n_adapters + 1) + (size_t)c] / r->bin_s);
        fputc('\n', f);
    }
    free(counts);
    return fclose(f) ? lq_fail(err, "cannot write %s", path) : 0;
}

static int write_queue_dat(const lg_run *r, const char *path, lq_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return lq_fail(err, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "t queued running workers draining\n");
    for (size_t i = 0; i < r->n_samples; i++) {
        const lg_sample *s = &r->samples[i];
        fprintf(f, "%.3f %lld %lld %d %d\n", s->t, s->queued, s->running, s->workers, s->workers_draining);
    }
    return fclose(f) ? lq_fail(err, "cannot write %s", path) : 0;
}

static void write_plot_script(const lg_run *r, FILE *f, const char *dir) {
    fprintf(f, "set terminal pngcairo size 1100,520 font ',10' noenhanced\nset grid\nset key outside right top\n"
               "set xlabel 'time since start (s)'\n");
    fprintf(f, "set output '%s/rate.png'\nset title 'lorq loadgen: arrivals per adapter (%.3g s bins)'\n"
               "set ylabel 'requests/s'\n"
               "plot for [i=2:%d] '%s/rate.dat' using 1:i with steps lw (i==2 ? 3 : 1.5) title columnheader(i)\n",
            dir, r->bin_s, r->n_adapters + 2, dir);
    if (!r->n_samples) return;
    int most = 1;
    for (size_t i = 0; i < r->n_samples; i++)
        if (r->samples[i].workers + r->samples[i].workers_draining > most) most = r->samples[i].workers + r->samples[i].workers_draining;
    fprintf(f, "set output '%s/queue.png'\nset title 'lorq loadgen: queue and workers (sampled from %s)'\n"
               "set ylabel 'jobs'\nset y2label 'workers'\nset ytics nomirror\nset y2tics 1\nset yrange [0:*]\n"
               "set y2range [0:%d]\n"
               "plot '%s/queue.dat' using 1:2 with lines lw 2 title 'queued (group lag)', "
               "'' using 1:3 with lines lw 2 title 'running (pending entries)', "
               "'' using 1:($4+$5) axes x1y2 with steps lw 3 title 'live workers (serving + draining)'\n",
            dir, r->sample_source ? r->sample_source : "", most + 1, dir);
}

/* Runs gnuplot on the script, at most a minute. */
static int run_gnuplot(const char *script, const char *log_path, lq_error *err) {
    char *argv[] = {"gnuplot", (char *)script, NULL};
    lq_proc p;
    if (lq_proc_spawn(&p, "gnuplot", argv, NULL, log_path, err)) {
        lq_error_prefix(err, "plots (make setup installs gnuplot-nox)");
        return -1;
    }
    if (lq_proc_stop(&p, 0, 60)) return lq_fail(err, "gnuplot did not finish within 60 s; killed it");
    char st[64];
    if (!WIFEXITED(p.status) || WEXITSTATUS(p.status))
        return lq_fail(err, "gnuplot failed (%s); see %s", lq_proc_status_text(p.status, st, sizeof st), log_path);
    return 0;
}

int lg_write_plots(const lg_run *r, const char *out_dir, lq_error *err) {
    if (strchr(out_dir, '\'')) return lq_fail(err, "plots: the output folder name must not contain a quote");
    char path[4096], script[4096], log_path[4096];
    snprintf(path, sizeof path, "%s/rate.dat", out_dir);
    if (write_rate_dat(r, path, err)) return -1;
    snprintf(path, sizeof path, "%s/queue.dat", out_dir);
    if (r->n_samples && write_queue_dat(r, path, err)) return -1;
    snprintf(script, sizeof script, "%s/plots.gp", out_dir);
    snprintf(log_path, sizeof log_path, "%s/gnuplot.log", out_dir);
    FILE *f = fopen(script, "w");
    if (!f) return lq_fail(err, "cannot write %s: %s", script, strerror(errno));
    write_plot_script(r, f, out_dir);
    if (fclose(f)) return lq_fail(err, "cannot write %s", script);
    return run_gnuplot(script, log_path, err);
}

/* ---- summary ---- */

static double num(json_t *o, const char *a, const char *b) {
    json_t *v = json_object_get(o, a);
    if (b) v = json_object_get(v, b);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A number for the table, "-" when there is none. */
static const char *cell(double v, int decimals, char *buf, size_t size) {
    if (isnan(v)) snprintf(buf, size, "-");
    else snprintf(buf, size, "%.*f", decimals, v);
    return buf;
}

static void summary_row(FILE *out, const char *name, json_t *s) {
    char c[9][32];
    fprintf(out, "  %-22s %8s %7s %7s  %9s %9s %9s  %9s %8s  %9s\n", name, cell(num(s, "requests", NULL), 0, c[0], 32),
            cell(num(s, "ok", NULL), 0, c[1], 32), cell(num(s, "errors_total", NULL), 0, c[2], 32),
            cell(num(s, "latency_ms", "p50"), 1, c[3], 32), cell(num(s, "latency_ms", "p95"), 1, c[4], 32),
            cell(num(s, "latency_ms", "p99"), 1, c[5], 32), cell(num(s, "ttft_ms", "p50"), 1, c[6], 32),
            cell(num(s, "itl_ms", "p50"), 1, c[7], 32), cell(num(s, "tokens_per_s", NULL), 1, c[8], 32));
}

void lg_print_summary(const lg_run *r, FILE *out) {
    fprintf(out, "  %-22s %8s %7s %7s  %9s %9s %9s  %9s %8s  %9s\n", "adapter", "requests", "ok", "errors", "lat p50",
            "lat p95", "lat p99", "ttft p50", "itl p50", "tokens/s");
    for (int a = 0; a < r->n_adapters; a++) {
        json_t *s = stats_json(r, a, -1);
        summary_row(out, r->adapter_names[a], s);
        json_decref(s);
    }
    json_t *all = stats_json(r, -1, -1);
    summary_row(out, "all", all);
    json_t *errors = json_object_get(all, "errors");
    const char *k;
    json_t *v;
    json_object_foreach(errors, k, v) fprintf(out, "  error %-30s %lld\n", k, (long long)json_integer_value(v));
    fprintf(out, "  (times in ms from the scheduled arrival; %.1f s wall)\n", r->wall_s);
    json_decref(all);
}
