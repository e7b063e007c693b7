/* config.h — the gateway's configuration: TGI launcher names, env or flag.
 *
 * Every setting is read from an environment variable and may be overridden
 * by a flag of the same name in kebab case (`MAX_TOTAL_TOKENS` and
 * `--max-total-tokens N` or `--max-total-tokens=N`), as TGI's launcher does.
 * A malformed or out-of-range value is an error that names the setting and
 * what it accepts; main.c prints it and exits 2. */
#ifndef LORQ_GW_CONFIG_H
#define LORQ_GW_CONFIG_H

#include <limits.h>
#include <stdint.h>

#include "error.h"
#include "redis.h"

#define LQ_GW_VERSION "0.1.0"
#define LQ_GW_MAX_ADAPTERS 4096

typedef struct lq_gw_config {
    char hostname[256];
    int port;
    char model_id[1024];  /* MODEL_ID as given: a folder or a hub id */
    char model_dir[PATH_MAX]; /* the resolved folder (filled by main.c) */
    char **adapters;      /* adapter ids (the names of LORA_ADAPTERS entries) */
    int n_adapters;
    int max_input_tokens, max_total_tokens; /* 0 until lq_gw_config_finish */
    int max_stop_sequences, max_top_n_tokens, max_concurrent_requests, max_queue_length;
    long long payload_limit;  /* bytes of a request body */
    char redis_url[1024];
    char prefix[LQ_PREFIX_MAX + 1];
    int64_t result_ttl_ms;    /* RESULT_TTL (seconds) */
    int request_timeout_s;    /* REQUEST_TIMEOUT: a job's deadline after it is accepted */
    char allow_adapters[1024]; /* LORQ_ALLOW_ADAPTERS: globs of ids accepted beyond LORA_ADAPTERS ("" none) */
    char admin_token[256];     /* LORQ_ADMIN_TOKEN: bearer token of /admin; "" disables it */
    int help;                 /* --help was given */
} lq_gw_config;

/* Reads the environment, then argv (argv[0] is skipped). Fills defaults for
 * everything but the token limits, which depend on the model
 * (lq_gw_config_finish). Returns 0, or -1 with err. */
int lq_gw_config_parse(lq_gw_config *c, int argc, char **argv, lq_error *err);

/* Fills MAX_TOTAL_TOKENS / MAX_INPUT_TOKENS defaults from the model's
 * max_position_embeddings (0 when unknown) the way TGI does, and checks that
 * they fit together. */
int lq_gw_config_finish(lq_gw_config *c, int max_position_embeddings, lq_error *err);

/* Splits LORA_ADAPTERS ("a=path,org/b,...") into adapter ids: the name before
 * '=' or the whole entry (a hub id). Duplicates and invalid ids are errors. */
int lq_gw_parse_adapters(const char *list, char ***out, int *n, lq_error *err);

void lq_gw_config_free(lq_gw_config *c);

/* The usage text for --help. */
const char *lq_gw_usage(void);

#endif
