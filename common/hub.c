/* hub.c — a Hugging Face-compatible hub client on libcurl (see hub.h).
 *
 * A snapshot is fetched in three moves, as huggingface_hub does them:
 *   1. GET /api/models/<repo>/revision/<rev>: the commit sha and the file list;
 *   2. for each wanted file missing from snapshots/<sha>/, HEAD
 *      /<repo>/resolve/<sha>/<file> without following redirects: its ETag
 *      (X-Linked-Etag for LFS files, the sha256 of the contents) and size;
 *   3. GET with redirects into blobs/<etag>.incomplete, resumed with Range
 *      after a broken transfer, checked, renamed, and linked from the snapshot.
 * Every request runs under the same retry loop: transient failures back off
 * and try again, permanent ones (401, 403, 404, a bad checksum) stop at once
 * with a message that names the cause. */
#include "hub.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration ---- */

static int env_long(const char *name, long def, long lo, long *out, lq_error *err) {
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo) return lq_fail(err, "%s must be an integer >= %ld (got '%s')", name, lo, v);
    *out = x;
    return 0;
}

static int copy_str(char *dst, size_t n, const char *src, const char *what, lq_error *err) {
    if (strlen(src) >= n) return lq_fail(err, "%s is too long", what);
    strcpy(dst, src);
    return 0;
}

int lq_hub_config_from_env(lq_hub_config *c, lq_error *err) {
    memset(c, 0, sizeof *c);
    const char *endpoint = getenv("HF_ENDPOINT");
    if (copy_str(c->endpoint, sizeof c->endpoint, endpoint && *endpoint ? endpoint : "https://huggingface.co",
                 "HF_ENDPOINT", err))
        return -1;
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/') c->endpoint[--n] = 0;
    if (strncmp(c->endpoint, "http://", 7) && strncmp(c->endpoint, "https://", 8))
        return lq_fail(err, "HF_ENDPOINT must start with http:// or https:// (got '%s')", c->endpoint);
    const char *token = getenv("HF_TOKEN");
    if (token && copy_str(c->token, sizeof c->token, token, "HF_TOKEN", err)) return -1;

    const char *cache = getenv("HF_HUB_CACHE"), *home = getenv("HF_HOME"), *user = getenv("HOME");
    int w;
    if (cache && *cache) w = snprintf(c->cache_dir, sizeof c->cache_dir, "%s", cache);
    else if (home && *home) w = snprintf(c->cache_dir, sizeof c->cache_dir, "%s/hub", home);
    else w = snprintf(c->cache_dir, sizeof c->cache_dir, "%s/.cache/huggingface/hub", user && *user ? user : ".");
    if (w < 0 || (size_t)w >= sizeof c->cache_dir) return lq_fail(err, "the hub cache path is too long");

    long retries, offline, max_mb;
    if (env_long("LORQ_HUB_CONNECT_TIMEOUT", 10, 1, &c->connect_timeout_s, err) ||
        env_long("LORQ_HUB_STALL_TIMEOUT", 30, 1, &c->stall_timeout_s, err) ||
        env_long("LORQ_HUB_RETRIES", 4, 0, &retries, err) || env_long("LORQ_HUB_RETRY_MS", 250, 0, &c->retry_base_ms, err) ||
        env_long("LORQ_HUB_MAX_MB", 0, 0, &max_mb, err))
        return -1;
    const char *off = getenv("HF_HUB_OFFLINE");
    offline = off && (!strcmp(off, "1") || !strcasecmp(off, "true") || !strcasecmp(off, "yes"));
    c->max_retries = (int)retries;
    c->offline = (int)offline;
    c->max_bytes = (long long)max_mb << 20;
    return 0;
}

/* ---- ids ---- */

static int id_char(char ch) { return isalnum((unsigned char)ch) || ch == '-' || ch == '_' || ch == '.'; }

int lq_hub_parse_id(const char *id, char *repo, size_t repo_len, char *revision, size_t rev_len, lq_error *err) {
    const char *at = strchr(id, '@');
    size_t n = at ? (size_t)(at - id) : strlen(id);
    const char *slash = memchr(id, '/', n);
    if (!slash || slash == id || slash == id + n - 1 || memchr(slash + 1, '/', n - (size_t)(slash + 1 - id)))
        return lq_fail(err, "'%s' is not a hub repository id (owner/name[@revision])", id);
    for (size_t i = 0; i < n; i++)
        if (id + i != slash && !id_char(id[i]))
            return lq_fail(err, "'%s' is not a hub repository id: character '%c' is not allowed", id, id[i]);
    if (id[0] == '.' || slash[1] == '.' || strstr(id, ".."))
        return lq_fail(err, "'%s' is not a hub repository id", id);
    const char *rev = at ? at + 1 : "main";
    if (!*rev) return lq_fail(err, "'%s': empty revision after '@'", id);
    for (const char *p = rev; *p; p++)
        if (!id_char(*p) && *p != '/') return lq_fail(err, "'%s': revision has a bad character '%c'", id, *p);
    if (strstr(rev, "..")) return lq_fail(err, "'%s': bad revision", id);
    if (n >= repo_len || strlen(rev) >= rev_len) return lq_fail(err, "'%s' is too long", id);
    memcpy(repo, id, n);
    repo[n] = 0;
    strcpy(revision, rev);
    return 0;
}

int lq_hub_looks_like_id(const char *s) {
    if (!s || !*s || s[0] == '/' || s[0] == '.' || s[0] == '~') return 0;
    char repo[256], rev[256];
    lq_error e;
    struct stat st;
    if (stat(s, &st) == 0) return 0; /* an existing local path wins */
    return lq_hub_parse_id(s, repo, sizeof repo, rev, sizeof rev, &e) == 0;
}

/* ---- HTTP ---- */

typedef struct http_reply {
    long status;
    char etag[160], linked_etag[160], commit[80];
    long long linked_size, content_length;
    /* sink: a growing buffer, or a file */
    char *body;
    size_t body_len, body_cap, body_max;
    FILE *file;
    long long written;
} http_reply;

typedef enum { HTTP_OK, HTTP_RETRY, HTTP_FAIL } http_outcome;

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t on_body(char *data, size_t size, size_t n, void *user) {
    http_reply *r = user;
    size_t len = size * n;
    if (r->status >= 300 && r->status < 400) return len; /* a redirect's body is not the file */
    if (r->file) {
        if (r->status >= 200 && r->status < 300) {
            if (fwrite(data, 1, len, r->file) != len) return 0;
            r->written += (long long)len;
        }
        return len;
    }
    if (r->body_len + len > r->body_max) return 0;
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 4096;
        while (cap < r->body_len + len + 1) cap *= 2;
        char *p = realloc(r->body, cap);
        if (!p) return 0;
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = 0;
    return len;
}

/* Copies a header's value (trimmed) if `line` is that header. */
static int header_value(const char *line, size_t len, const char *name, char *out, size_t out_len) {
    size_t n = strlen(name);
    if (len <= n + 1 || strncasecmp(line, name, n) || line[n] != ':') return 0;
    const char *v = line + n + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t m = (size_t)(end - v) < out_len - 1 ? (size_t)(end - v) : out_len - 1;
    memcpy(out, v, m);
    out[m] = 0;
    return 1;
}

static size_t on_header(char *data, size_t size, size_t n, void *user) {
    http_reply *r = user;
    size_t len = size * n;
    char num[40];
    if (len > 5 && !strncmp(data, "HTTP/", 5)) {
        /* A new response (after a redirect): its status governs the body. */
        const char *sp = memchr(data, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    /* Hub headers come on the first response; keep the first value seen. */
    if (!r->linked_etag[0]) header_value(data, len, "X-Linked-Etag", r->linked_etag, sizeof r->linked_etag);
    if (!r->commit[0]) header_value(data, len, "X-Repo-Commit", r->commit, sizeof r->commit);
    if (!r->etag[0]) header_value(data, len, "ETag", r->etag, sizeof r->etag);
    if (r->linked_size < 0 && header_value(data, len, "X-Linked-Size", num, sizeof num))
        r->linked_size = strtoll(num, NULL, 10);
    if (header_value(data, len, "Content-Length", num, sizeof num)) r->content_length = strtoll(num, NULL, 10);
    return len;
}

/* One request. method "GET" or "HEAD"; follow redirects for downloads only. */
static http_outcome http_request(const lq_hub_config *c, const char *method, const char *url, int follow,
                                 long long range_from, http_reply *r, lq_error *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    CURL *h = curl_easy_init();
    if (!h) {
        lq_fail(err, "cannot start an HTTP client");
        return HTTP_FAIL;
    }
    r->status = 0;
    r->etag[0] = r->linked_etag[0] = r->commit[0] = 0;
    r->linked_size = r->content_length = -1;
    struct curl_slist *hdrs = NULL;
    char auth[600], range[64];
    if (c->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity"); /* sizes and sha256 are of the raw bytes */
    if (range_from > 0) {
        snprintf(range, sizeof range, "Range: bytes=%lld-", range_from);
        hdrs = curl_slist_append(hdrs, range);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "lorq/0.1; hub-client");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout_s);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->stall_timeout_s);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    /* The token must not travel to a CDN on another host after a redirect (curl's default). */
    curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) {
        lq_fail(err, "%s %s: %s", method, url, curl_easy_strerror(rc));
        /* Broken or slow transfers, refused connections: worth another try. */
        return rc == CURLE_WRITE_ERROR ? HTTP_FAIL : HTTP_RETRY;
    }
    if (r->status == 429 || r->status >= 500) {
        lq_fail(err, "%s %s: HTTP %ld", method, url, r->status);
        return HTTP_RETRY;
    }
    return HTTP_OK;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- paths ---- */

typedef struct repo_paths {
    char repo[256], revision[256];
    char root[1400]; /* cache/models--owner--name */
} repo_paths;

static int make_dirs(const char *path, lq_error *err) {
    char tmp[2048];
    if (strlen(path) >= sizeof tmp) return lq_fail(err, "path too long: %s", path);
    strcpy(tmp, path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return lq_fail(err, "cannot create %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) && errno != EEXIST) return lq_fail(err, "cannot create %s: %s", tmp, strerror(errno));
    return 0;
}

static int repo_paths_init(repo_paths *p, const lq_hub_config *c, const char *id, lq_error *err) {
    if (lq_hub_parse_id(id, p->repo, sizeof p->repo, p->revision, sizeof p->revision, err)) return -1;
    char folder[300];
    snprintf(folder, sizeof folder, "models--%s", p->repo);
    char *slash = strchr(folder, '/');
    memmove(slash + 2, slash + 1, strlen(slash + 1) + 1); /* owner/name → owner--name */
    slash[0] = slash[1] = '-';
    if ((size_t)snprintf(p->root, sizeof p->root, "%s/%s", c->cache_dir, folder) >= sizeof p->root)
        return lq_fail(err, "the hub cache path is too long");
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int is_sha1_hex(const char *s) {
    size_t n = strlen(s);
    if (n != 40) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

/* ---- which files ---- */

static const char *adapter_files[] = {"adapter_config.json", "adapter_model.safetensors", "README.md", NULL};
static const char *model_files[] = {"config.json",       "generation_config.json", "tokenizer.json",
                                    "tokenizer_config.json", "special_tokens_map.json", "*.safetensors",
                                    "model.safetensors.index.json", NULL};

static int wanted(lq_hub_kind kind, const char *name) {
    if (strchr(name, '/')) return 0; /* top-level files only */
    for (const char **p = kind == LQ_HUB_ADAPTER ? adapter_files : model_files; *p; p++)
        if (fnmatch(*p, name, 0) == 0) return 1;
    return 0;
}

/* What a usable snapshot must hold; a message naming what lacks. */
static const char *missing_essentials(lq_hub_kind kind, json_t *names) {
    int has_cfg = 0, has_weights = 0, has_bin = 0, has_tok = 0;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v) {
        const char *n = json_string_value(v);
        if (!n) continue;
        if (kind == LQ_HUB_ADAPTER) {
            has_cfg |= !strcmp(n, "adapter_config.json");
            has_weights |= !strcmp(n, "adapter_model.safetensors");
            has_bin |= !strcmp(n, "adapter_model.bin");
        } else {
            has_cfg |= !strcmp(n, "config.json");
            has_tok |= !strcmp(n, "tokenizer.json");
            has_weights |= !strchr(n, '/') && fnmatch("*.safetensors", n, 0) == 0;
            has_bin |= fnmatch("*.bin", n, 0) == 0;
        }
    }
    if (kind == LQ_HUB_ADAPTER) {
        if (!has_cfg) return "it has no adapter_config.json (not a PEFT adapter repository)";
        if (!has_weights && has_bin) return "its weights are pickled (adapter_model.bin); lorq reads only safetensors";
        if (!has_weights) return "it has no adapter_model.safetensors";
        return NULL;
    }
    if (!has_cfg) return "it has no config.json (not a model repository)";
    if (!has_weights && has_bin) return "its weights are pickled (.bin); lorq reads only safetensors";
    if (!has_weights) return "it has no .safetensors weights";
    if (!has_tok) return "it has no tokenizer.json";
    return NULL;
}

/* ---- the revision: commit sha and file list ---- */

static int http_fail_status(long status, const char *what, const char *repo, const lq_hub_config *c, lq_error *err) {
    if (status == 401 || status == 403)
        return lq_fail(err, "%s: HTTP %ld: repository '%s' is private, gated or does not exist%s", what, status, repo,
                       c->token[0] ? " (HF_TOKEN was sent but gives no access)" : "; set HF_TOKEN to a token with access");
    if (status == 404) return lq_fail(err, "%s: HTTP 404: repository '%s' or its revision was not found", what, repo);
    return lq_fail(err, "%s: unexpected HTTP %ld", what, status);
}

/* Runs a request under the retry policy. */
static int request_with_retries(const lq_hub_config *c, const char *method, const char *url, int follow, http_reply *r,
                                lq_error *err) {
    long delay = c->retry_base_ms;
    for (int attempt = 0;; attempt++) {
        r->body_len = 0;
        http_outcome o = http_request(c, method, url, follow, 0, r, err);
        if (o == HTTP_OK) return 0;
        if (o == HTTP_FAIL || attempt >= c->max_retries) return -1;
        sleep_ms(delay);
        delay = delay * 2 > 8000 ? 8000 : delay * 2;
    }
}

typedef struct revision_info {
    char sha[80];
    json_t *files; /* array of file names */
} revision_info;

static int fetch_revision(const lq_hub_config *c, const repo_paths *p, revision_info *info, lq_error *err) {
    char url[2048];
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s", c->endpoint, p->repo, p->revision);
    http_reply r = {.body_max = 64u << 20};
    int rc = request_with_retries(c, "GET", url, 1, &r, err);
    if (rc == 0 && r.status != 200) rc = http_fail_status(r.status, "hub", p->repo, c, err);
    json_t *doc = NULL;
    if (rc == 0) {
        json_error_t je;
        doc = json_loadb(r.body ? r.body : "", r.body_len, 0, &je);
        if (!doc) rc = lq_fail(err, "hub: the revision listing of '%s' is not JSON: %s", p->repo, je.text);
    }
    const char *sha = doc ? json_string_value(json_object_get(doc, "sha")) : NULL;
    json_t *siblings = doc ? json_object_get(doc, "siblings") : NULL;
    if (rc == 0 && (!sha || !is_sha1_hex(sha) || !json_is_array(siblings)))
        rc = lq_fail(err, "hub: the revision listing of '%s' lacks a commit sha or a file list", p->repo);
    if (rc == 0) {
        snprintf(info->sha, sizeof info->sha, "%s", sha);
        info->files = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(siblings, i, s) {
            json_t *name = json_object_get(s, "rfilename");
            if (json_is_string(name)) json_array_append(info->files, name);
        }
    }
    json_decref(doc);
    free(r.body);
    return rc;
}

/* ---- one file ---- */

static void normalize_etag(const char *in, char *out, size_t n) {
    if (!strncmp(in, "W/", 2)) in += 2;
    while (*in == '"') in++;
    size_t len = strlen(in);
    while (len > 0 && in[len - 1] == '"') len--;
    if (len >= n) len = n - 1;
    memcpy(out, in, len);
    out[len] = 0;
}

static int is_sha256_hex(const char *s) {
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

static int sha256_file(const char *path, char hex[65], lq_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return lq_fail(err, "cannot read %s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[1 << 16], md[32];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    int bad = ferror(f);
    fclose(f);
    if (bad) return lq_fail(err, "cannot read %s", path);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    return 0;
}

static void restart_file(http_reply *r) {
    fflush(r->file);
    if (ftruncate(fileno(r->file), 0) == 0) r->written = 0;
    fseek(r->file, 0, SEEK_SET);
}

/* One GET of the rest of the file: HTTP_OK when the file is complete. */
static http_outcome download_step(const lq_hub_config *c, const char *url, long long size, http_reply *r,
                                  lq_error *err) {
    if (size >= 0 && r->written > size) restart_file(r); /* longer than announced: start over */
    if (size >= 0 && r->written == size) return HTTP_OK;  /* complete, perhaps from an earlier run */
    fflush(r->file);
    long long from = r->written;
    http_outcome o = http_request(c, "GET", url, 1, from, r, err);
    if (o != HTTP_OK) return o;
    if (r->status == 200 && from > 0) {
        /* The server ignored Range and sent it all after our partial copy. */
        restart_file(r);
        lq_fail(err, "GET %s: the server ignored the Range request", url);
        return HTTP_RETRY;
    }
    if (r->status == 416) {
        restart_file(r);
        lq_fail(err, "GET %s: HTTP 416 for a resumed download", url);
        return HTTP_RETRY;
    }
    if (r->status != 200 && r->status != 206) {
        lq_fail(err, "GET %s: HTTP %ld", url, r->status);
        return HTTP_FAIL;
    }
    if (size >= 0 && r->written != size) {
        lq_fail(err, "GET %s: the body ended after %lld of %lld bytes", url, r->written, size);
        return HTTP_RETRY;
    }
    return HTTP_OK;
}

/* Downloads url into blob via blob.incomplete, resuming a partial file, and checks it. */
static int download_blob(const lq_hub_config *c, const char *url, const char *blob, const char *etag,
                         long long size, lq_error *err) {
    char part[2200];
    snprintf(part, sizeof part, "%s.incomplete", blob);
    FILE *f = fopen(part, "ab");
    if (!f) return lq_fail(err, "cannot write %s: %s", part, strerror(errno));
    struct stat st;
    fstat(fileno(f), &st);
    http_reply r = {.file = f, .written = st.st_size};
    long delay = c->retry_base_ms;
    http_outcome o;
    for (int attempt = 0;; attempt++) {
        o = download_step(c, url, size, &r, err);
        if (o != HTTP_RETRY || attempt >= c->max_retries) break;
        sleep_ms(delay);
        delay = delay * 2 > 8000 ? 8000 : delay * 2;
    }
    if (fclose(f) && o == HTTP_OK) return lq_fail(err, "cannot write %s", part);
    if (o != HTTP_OK) return -1;
    if (is_sha256_hex(etag)) {
        char hex[65];
        if (sha256_file(part, hex, err)) return -1;
        if (strcasecmp(hex, etag)) {
            unlink(part); /* a corrupt copy must not be resumed */
            return lq_fail(err, "GET %s: sha256 %s does not match the hub's %s (corrupt download)", url, hex, etag);
        }
    }
    if (rename(part, blob)) return lq_fail(err, "cannot rename %s: %s", part, strerror(errno));
    return 0;
}

/* Links snapshots/<sha>/<name> to ../../blobs/<etag>: made under a temporary
 * name and renamed into place, so concurrent fetchers never see it missing. */
static int link_snapshot(const char *snap_dir, const char *name, const char *etag, lq_error *err) {
    char link[2400], tmp[2500], target[400];
    snprintf(link, sizeof link, "%s/%s", snap_dir, name);
    snprintf(tmp, sizeof tmp, "%s.%d.lnk", link, (int)getpid());
    snprintf(target, sizeof target, "../../blobs/%s", etag);
    unlink(tmp);
    if (symlink(target, tmp) || rename(tmp, link)) {
        unlink(tmp);
        return lq_fail(err, "cannot link %s: %s", link, strerror(errno));
    }
    return 0;
}

/* Takes an exclusive lock on path (created); returns the fd or -1. */
static int lock_file(const char *path, lq_error *err) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return lq_fail(err, "cannot open %s: %s", path, strerror(errno));
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return lq_fail(err, "cannot lock %s: %s", path, strerror(errno));
        }
    }
    return fd;
}

typedef struct file_meta {
    char etag[160];
    long long size;
} file_meta;

static int head_file(const lq_hub_config *c, const repo_paths *p, const char *sha, const char *name, file_meta *m,
                     lq_error *err) {
    char url[2400];
    snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", c->endpoint, p->repo, sha, name);
    http_reply r = {0};
    if (request_with_retries(c, "HEAD", url, 0, &r, err)) return -1;
    if (r.status >= 400) {
        if (r.status == 404) return lq_fail(err, "hub: '%s' has no file '%s' at %s", p->repo, name, sha);
        return http_fail_status(r.status, name, p->repo, c, err);
    }
    normalize_etag(r.linked_etag[0] ? r.linked_etag : r.etag, m->etag, sizeof m->etag);
    if (!m->etag[0] || strchr(m->etag, '/') || strstr(m->etag, ".."))
        return lq_fail(err, "hub: no usable ETag for '%s' in '%s'", name, p->repo);
    m->size = r.linked_size >= 0 ? r.linked_size : (r.status < 300 ? r.content_length : -1);
    return 0;
}

static int fetch_file(const lq_hub_config *c, const repo_paths *p, const char *sha, const char *name,
                      const file_meta *m, const char *snap_dir, lq_error *err) {
    char blobs[1500], blob[1800], lock[1900], url[2400];
    snprintf(blobs, sizeof blobs, "%s/blobs", p->root);
    if (make_dirs(blobs, err)) return -1;
    snprintf(blob, sizeof blob, "%s/%s", blobs, m->etag);
    snprintf(lock, sizeof lock, "%s.lock", blob);
    snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", c->endpoint, p->repo, sha, name);
    int fd = lock_file(lock, err);
    if (fd < 0) return -1;
    /* Whoever held the lock before us may have fetched it already. */
    int rc = file_exists(blob) ? 0 : download_blob(c, url, blob, m->etag, m->size, err);
    flock(fd, LOCK_UN);
    close(fd);
    if (rc) return rc;
    return link_snapshot(snap_dir, name, m->etag, err);
}

/* ---- the cache alone ---- */

static int read_ref(const repo_paths *p, char *sha, size_t n) {
    if (is_sha1_hex(p->revision)) { /* 40 characters, checked */
        if (n <= 40) return -1;
        memcpy(sha, p->revision, 41);
        return 0;
    }
    char path[1800];
    snprintf(path, sizeof path, "%s/refs/%s", p->root, p->revision);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = fgets(sha, (int)n, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    sha[strcspn(sha, "\r\n")] = 0;
    return is_sha1_hex(sha) ? 0 : -1;
}

/* A cached snapshot with its essentials, used when the hub is unreachable. */
static int cached_snapshot(const repo_paths *p, lq_hub_kind kind, char *dir, size_t dir_len) {
    char sha[80];
    if (read_ref(p, sha, sizeof sha)) return -1;
    char snap[1900];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", p->root, sha);
    const char *need[3] = {kind == LQ_HUB_ADAPTER ? "adapter_config.json" : "config.json",
                           kind == LQ_HUB_ADAPTER ? "adapter_model.safetensors" : "tokenizer.json", NULL};
    for (int i = 0; need[i]; i++) {
        char f[2100];
        snprintf(f, sizeof f, "%s/%s", snap, need[i]);
        if (!file_exists(f)) return -1;
    }
    if ((size_t)snprintf(dir, dir_len, "%s", snap) >= dir_len) return -1;
    return 0;
}

static int write_ref(const repo_paths *p, const char *sha, lq_error *err) {
    if (!strcmp(p->revision, sha)) return 0;
    char refs[1600], path[1900], tmp[2000];
    snprintf(refs, sizeof refs, "%s/refs", p->root);
    snprintf(path, sizeof path, "%s/%s", refs, p->revision);
    char *slash = strrchr(path, '/');
    *slash = 0;
    if (make_dirs(path, err)) return -1;
    *slash = '/';
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return lq_fail(err, "cannot write %s: %s", tmp, strerror(errno));
    fputs(sha, f);
    if (fclose(f) || rename(tmp, path)) return lq_fail(err, "cannot write %s", path);
    return 0;
}

/* ---- the snapshot ---- */

static int fetch_snapshot_files(const lq_hub_config *c, const repo_paths *p, const revision_info *info,
                                lq_hub_kind kind, const char *snap, lq_error *err) {
    size_t i;
    json_t *v;
    size_t n = json_array_size(info->files);
    file_meta *metas = calloc(n ? n : 1, sizeof *metas);
    if (!metas) return lq_fail(err, "out of memory");
    long long total = 0;
    int rc = 0;
    /* First every file's size, so that an oversized repository is refused before any transfer. */
    json_array_foreach(info->files, i, v) {
        const char *name = json_string_value(v);
        char path[2400];
        snprintf(path, sizeof path, "%s/%s", snap, name);
        metas[i].size = -2; /* not needed */
        if (!wanted(kind, name) || file_exists(path)) continue;
        if ((rc = head_file(c, p, info->sha, name, &metas[i], err))) break;
        if (metas[i].size > 0) total += metas[i].size;
    }
    if (rc == 0 && c->max_bytes > 0 && total > c->max_bytes)
        rc = lq_fail(err, "hub: '%s' is %lld MB, over the limit of %lld MB", p->repo, total >> 20, c->max_bytes >> 20);
    json_array_foreach(info->files, i, v) {
        if (rc) break;
        if (metas[i].size == -2) continue;
        rc = fetch_file(c, p, info->sha, json_string_value(v), &metas[i], snap, err);
    }
    free(metas);
    return rc;
}

int lq_hub_snapshot(const lq_hub_config *c, const char *id, lq_hub_kind kind, char *dir, size_t dir_len,
                    lq_error *err) {
    repo_paths p;
    if (repo_paths_init(&p, c, id, err)) return -1;
    if (c->offline) {
        if (cached_snapshot(&p, kind, dir, dir_len) == 0) return 0;
        return lq_fail(err, "'%s' is not in the hub cache %s and HF_HUB_OFFLINE is set", id, c->cache_dir);
    }
    revision_info info = {0};
    lq_error net;
    if (fetch_revision(c, &p, &info, &net)) {
        /* Unreachable hub: a cached copy of the same revision serves. Refusals (401/404) do not fall back. */
        int refused = strstr(net.msg, "HTTP 4") != NULL;
        if (!refused && cached_snapshot(&p, kind, dir, dir_len) == 0) return 0;
        *err = net;
        return -1;
    }
    const char *missing = missing_essentials(kind, info.files);
    int rc = 0;
    if (missing) rc = lq_fail(err, "hub: '%s' cannot be used as %s: %s", id, kind == LQ_HUB_ADAPTER ? "an adapter" : "a model", missing);
    char snap[1900];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", p.root, info.sha);
    if (rc == 0) rc = make_dirs(snap, err);
    if (rc == 0) rc = fetch_snapshot_files(c, &p, &info, kind, snap, err);
    if (rc == 0) rc = write_ref(&p, info.sha, err);
    if (rc == 0 && (size_t)snprintf(dir, dir_len, "%s", snap) >= dir_len) rc = lq_fail(err, "snapshot path too long");
    json_decref(info.files);
    return rc;
}

int lq_adapter_id_safe(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > 128) return 0;
    const char *seg = id;
    for (const char *p = id;; p++) {
        if (*p == '/' || !*p) {
            size_t len = (size_t)(p - seg);
            if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.')) return 0;
            if (!*p) return 1;
            seg = p + 1;
        } else if (!id_char(*p)) {
            return 0;
        }
    }
}

int lq_adapter_allowed(const char *patterns, const char *id) {
    if (!patterns || !*patterns || !lq_adapter_id_safe(id)) return 0;
    char pat[256];
    for (const char *p = patterns; *p;) {
        size_t n = strcspn(p, ",");
        const char *b = p, *e = p + n;
        while (b < e && (*b == ' ' || *b == '\t')) b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (e > b && (size_t)(e - b) < sizeof pat) {
            memcpy(pat, b, (size_t)(e - b));
            pat[e - b] = 0;
            if (fnmatch(pat, id, FNM_PATHNAME) == 0) return 1;
        }
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

int lq_resolve_source(const char *src, lq_hub_kind kind, char *dir, size_t dir_len, lq_error *err) {
    struct stat st;
    if (stat(src, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return lq_fail(err, "'%s' is not a folder", src);
        if ((size_t)snprintf(dir, dir_len, "%s", src) >= dir_len) return lq_fail(err, "path too long: %s", src);
        return 0;
    }
    if (!lq_hub_looks_like_id(src))
        return lq_fail(err, "'%s' is neither an existing folder nor a hub id (owner/name[@revision])", src);
    lq_hub_config c;
    if (lq_hub_config_from_env(&c, err)) return -1;
    return lq_hub_snapshot(&c, src, kind, dir, dir_len, err);
}
