/* cmd_generate.c — `lorq generate`: run one prompt through the engine and
 * stream the completion to stdout as it is produced.
 *
 * This is the engine without the queue: load the model folder and its
 * tokenizer, prefill the prompt in chunks, then decode one token per step
 * until EOS, a stop sequence or --max-new-tokens. Sampling flags carry TGI's
 * names and meaning: any of temperature/top-k/top-p/typical-p turns sampling
 * on, as TGI does. --json prints one object at the end instead (ids, text,
 * finish reason, logprobs, and with --top-logits N the N highest raw logits at
 * the last prompt position, which the parity tests compare).
 *
 * --device picks the backend (kernels/select.c); --load-format dummy runs a
 * config.json with random weights (speed only: the text is noise), with the
 * tokenizer of --tokenizer DIR, and --dummy-adapter-rank R adds a random adapter
 * on --lora-targets. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "generate.h"
#include "kvcache.h"
#include "lora.h"
#include "model.h"
#include "progress.h"
#include "tokenizer.h"

enum { PREFILL_CHUNK = 512, KV_BLOCK = 16 };

typedef struct gen_opts {
    const char *model, *prompt, *prompt_ids, *adapter, *device, *tokenizer;
    lq_gen_params gp;
    int json, top_logits, threads, quiet, dummy, dummy_rank;
    unsigned lora_targets;
} gen_opts;

static void usage(void) {
    fprintf(stderr,
            "usage: lorq generate --model DIR (--prompt TEXT | --prompt-ids ID,ID,...) [options]\n"
            "  --adapter DIR             a PEFT LoRA adapter folder to apply\n"
            "  --max-new-tokens N        (default 64)\n"
            "  --do-sample --temperature T --top-k K --top-p P --typical-p P --seed S\n"
            "  --repetition-penalty R --frequency-penalty F --presence-penalty P\n"
            "  --stop TEXT (repeatable)  --ignore-eos  --top-n-tokens N\n"
            "  --json                    print one JSON object at the end instead of streaming\n"
            "  --top-logits N            (with --json) the N highest logits at the last prompt position\n"
            "  --threads N               CPU threads (default: all cores)\n"
            "  --device cpu|cuda|auto    compute backend (default: LORQ_DEVICE, else auto: the GPU when one is visible)\n"
            "  --load-format auto|dummy  dummy: random weights for --model's config.json (a folder or the file)\n"
            "  --tokenizer DIR           folder with tokenizer.json (default: --model)\n"
            "  --dummy-adapter-rank R    a random rank-R adapter (bf16) on --lora-targets (default all)\n");
}

static int parse_opts(int argc, char **argv, gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->gp.sampling = lq_sampling_default();
    o->gp.max_new_tokens = 64;
    int warpers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE()                                                                                                        \
    do {                                                                                                               \
        if (!v) {                                                                                                      \
            fprintf(stderr, "lorq generate: %s needs a value\n", a);                                                   \
            return -1;                                                                                                 \
        }                                                                                                              \
        i++;                                                                                                           \
    } while (0)
        if (!strcmp(a, "--model")) { VALUE(); o->model = v; }
        else if (!strcmp(a, "--adapter")) { VALUE(); o->adapter = v; }
        else if (!strcmp(a, "--prompt")) { VALUE(); o->prompt = v; }
        else if (!strcmp(a, "--prompt-ids")) { VALUE(); o->prompt_ids = v; }
        else if (!strcmp(a, "--max-new-tokens")) { VALUE(); o->gp.max_new_tokens = atoi(v); }
        else if (!strcmp(a, "--do-sample")) o->gp.sampling.do_sample = 1;
        else if (!strcmp(a, "--temperature")) { VALUE(); o->gp.sampling.temperature = strtof(v, NULL); warpers = 1; }
        else if (!strcmp(a, "--top-k")) { VALUE(); o->gp.sampling.top_k = atoi(v); warpers = 1; }
        else if (!strcmp(a, "--top-p")) { VALUE(); o->gp.sampling.top_p = strtof(v, NULL); warpers = 1; }
        else if (!strcmp(a, "--typical-p")) { VALUE(); o->gp.sampling.typical_p = strtof(v, NULL); warpers = 1; }
        else if (!strcmp(a, "--seed")) { VALUE(); o->gp.sampling.seed = strtoull(v, NULL, 10); }
        else if (!strcmp(a, "--repetition-penalty")) { VALUE(); o->gp.sampling.repetition_penalty = strtof(v, NULL); }
        else if (!strcmp(a, "--frequency-penalty")) { VALUE(); o->gp.sampling.frequency_penalty = strtof(v, NULL); }
        else if (!strcmp(a, "--presence-penalty")) { VALUE(); o->gp.sampling.presence_penalty = strtof(v, NULL); }
        else if (!strcmp(a, "--top-n-tokens")) { VALUE(); o->gp.sampling.top_n_tokens = atoi(v); }
        else if (!strcmp(a, "--stop")) {
            VALUE();
            if (o->gp.n_stop == LQ_MAX_STOP) {
                fprintf(stderr, "lorq generate: at most %d stop sequences\n", LQ_MAX_STOP);
                return -1;
            }
            o->gp.stop[o->gp.n_stop++] = v;
        } else if (!strcmp(a, "--ignore-eos")) o->gp.ignore_eos = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--top-logits")) { VALUE(); o->top_logits = atoi(v); }
        else if (!strcmp(a, "--threads")) { VALUE(); o->threads = atoi(v); }
        else if (!strcmp(a, "--device")) { VALUE(); o->device = v; }
        else if (!strcmp(a, "--tokenizer")) { VALUE(); o->tokenizer = v; }
        else if (!strcmp(a, "--dummy-adapter-rank")) { VALUE(); o->dummy_rank = atoi(v); }
        else if (!strcmp(a, "--lora-targets")) {
            VALUE();
            lq_error e;
            if (lq_proj_mask_parse(v, &o->lora_targets, &e) != 0) {
                fprintf(stderr, "lorq generate: %s\n", e.msg);
                return -1;
            }
        } else if (!strcmp(a, "--load-format")) {
            VALUE();
            if (strcmp(v, "dummy") != 0 && strcmp(v, "auto") != 0 && strcmp(v, "safetensors") != 0) {
                fprintf(stderr, "lorq generate: --load-format is auto, safetensors or dummy, not '%s'\n", v);
                return -1;
            }
            o->dummy = !strcmp(v, "dummy");
        } else {
            fprintf(stderr, "lorq generate: unknown option '%s'\n", a);
            return -1;
        }
#undef VALUE
    }
    if (warpers) o->gp.sampling.do_sample = 1;
    if (!o->model || (!o->prompt == !o->prompt_ids)) {
        fprintf(stderr, "lorq generate: need --model and exactly one of --prompt / --prompt-ids\n");
        return -1;
    }
    if (o->dummy_rank < 0 || o->dummy_rank > 4096 || (o->dummy_rank && o->adapter)) {
        fprintf(stderr, "lorq generate: --dummy-adapter-rank is 1 to 4096, and not with --adapter\n");
        return -1;
    }
    if (!o->lora_targets) o->lora_targets = (1u << LQ_PROJ_COUNT) - 1;
    if (o->top_logits < 0 || o->top_logits > 1000) {
        fprintf(stderr, "lorq generate: --top-logits must be between 0 and 1000\n");
        return -1;
    }
    return 0;
}

static int parse_ids(const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16;
    *ids = malloc(cap * sizeof **ids);
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX) return -1;
        if (*n == cap) *ids = realloc(*ids, (cap *= 2) * sizeof **ids);
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return *n ? 0 : -1;
}

static json_t *top_logits_json(const float *logits, int vocab, int n) {
    json_t *ids = json_array(), *vals = json_array();
    char *taken = calloc((size_t)vocab, 1);
    for (int k = 0; k < n && k < vocab; k++) {
        int best = -1;
        for (int v = 0; v < vocab; v++)
            if (!taken[v] && (best < 0 || logits[v] > logits[best])) best = v;
        taken[best] = 1;
        json_array_append_new(ids, json_integer(best));
        json_array_append_new(vals, json_real(logits[best]));
    }
    free(taken);
    return json_pack("{s:o, s:o}", "ids", ids, "logits", vals);
}

static json_t *choice_json(const lq_token_choice *c) {
    json_t *top = json_array();
    for (int i = 0; i < c->n_top; i++)
        json_array_append_new(top, json_pack("{s:i, s:f}", "id", c->top_ids[i], "logprob", c->top_logprobs[i]));
    return json_pack("{s:i, s:f, s:o}", "id", c->id, "logprob", c->logprob, "top", top);
}

/* Runs the prompt's prefill chunks, then decode steps, until the generation finishes. */
static int run(gen_opts *o, lq_model *m, const lq_tokenizer *tok, const int32_t *prompt, int n_prompt, lq_error *err) {
    int vocab = m->cfg.vocab_size;
    lq_generation *g = lq_generation_new(m, tok, prompt, n_prompt, &o->gp, err);
    if (!g) return -1;
    int n_blocks = (n_prompt + o->gp.max_new_tokens + KV_BLOCK - 1) / KV_BLOCK;
    lq_kvcache *kv = lq_kvcache_new(m->backend, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, n_blocks,
                                    KV_BLOCK, err);
    lq_run_state *rs = kv ? lq_run_state_new(m, PREFILL_CHUNK, 1, err) : NULL;
    float *logits = malloc((size_t)vocab * sizeof *logits);
    json_t *choices = json_array(), *top = NULL;
    int rc = -1;
    double t0 = lq_now(), t_first = 0.0;
    if (!rs || !logits) goto out;
    while (g->finish == LQ_FINISH_NONE) {
        int n = lq_generation_pending(g);
        if (n > PREFILL_CHUNK) n = PREFILL_CHUNK;
        if (lq_kv_reserve(kv, &g->kv, g->n_in_cache + n) != 0) {
            lq_fail(err, "out of KV cache space");
            goto out;
        }
        lq_step_seq s = {g->tokens + g->n_in_cache, n, g->n_in_cache, g->kv.table, 0, g->params.adapter};
        if (lq_model_step(m, rs, &kv->pool, &s, 1, logits, err) < 0) goto out;
        g->n_in_cache += n;
        if (lq_generation_pending(g) > 0) continue; /* more prompt to prefill */
        if (g->n_tokens == g->n_prompt) {
            t_first = lq_now();
            if (o->top_logits) top = top_logits_json(logits, vocab, o->top_logits);
        }
        lq_token_choice c;
        const char *piece;
        size_t len;
        if (lq_generation_next(g, logits, &c, &piece, &len, err) != 0) goto out;
        json_array_append_new(choices, choice_json(&c));
        if (!o->json) {
            fwrite(piece, 1, len, stdout);
            fflush(stdout);
        }
    }
    double t_end = lq_now();
    int n_gen = g->n_tokens - g->n_prompt;
    if (o->json) {
        json_t *ids = json_array();
        for (int i = g->n_prompt; i < g->n_tokens; i++) json_array_append_new(ids, json_integer(g->tokens[i]));
        json_t *out = json_pack("{s:s, s:o, s:s, s:i, s:o}", "text", g->text ? g->text : "", "ids", ids,
                                "finish_reason", lq_finish_name(g->finish), "prompt_tokens", n_prompt, "tokens",
                                choices);
        choices = NULL;
        if (top) json_object_set_new(out, "top_logits", top), top = NULL;
        json_dumpf(out, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(out);
    }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "[%d prompt tokens, %d generated, finish: %s; prefill %.1f tok/s, decode %.1f tok/s]\n", n_prompt,
            n_gen, lq_finish_name(g->finish), n_prompt / (t_first - t0),
            n_gen > 1 ? (n_gen - 1) / (t_end - t_first) : 0.0);
    rc = 0;
out:
    json_decref(choices);
    json_decref(top);
    free(logits);
    lq_run_state_free(m, rs);
    lq_generation_free(g, kv);
    lq_kvcache_free(kv);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    if (parse_opts(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    lq_error err;
    int rc = 1;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    lq_tokenizer *tok = tok_load(o.tokenizer ? o.tokenizer : o.model, &err);
    lq_backend *b = tok ? lq_backend_open(o.device, o.threads, &err) : NULL;
    lq_model *m = !b ? NULL : o.dummy ? lq_model_load_dummy(o.model, b, LQ_DTYPE_BF16, 1, &err)
                                      : lq_model_load(o.model, b, &err);
    lq_lora *adapter = NULL;
    if (!m) goto out;
    if (o.adapter || o.dummy_rank) {
        adapter = o.adapter ? lq_lora_load(o.adapter, o.adapter, m, &err)
                            : lq_lora_random(m, "dummy", o.dummy_rank, o.lora_targets, 1, &err);
        if (!adapter) goto out;
        o.gp.adapter = adapter;
        fprintf(stderr, "[adapter %s: max rank %d, %.1f MB, %.2f%% of the base weights]\n", adapter->name, adapter->max_rank,
                adapter->bytes / 1e6, 100.0 * (double)adapter->bytes / (double)lq_model_weight_bytes(m));
    }
    if (o.prompt_ids) {
        if (parse_ids(o.prompt_ids, &prompt, &n_prompt) != 0) {
            lq_fail(&err, "--prompt-ids: expected comma-separated token ids");
            goto out;
        }
    } else if (tok_encode(tok, o.prompt, strlen(o.prompt), 1, &prompt, &n_prompt, &err) != 0) {
        goto out;
    }
    rc = run(&o, m, tok, prompt, (int)n_prompt, &err) == 0 ? 0 : 1;
out:
    if (rc != 0) fprintf(stderr, "lorq generate: %s\n", err.msg);
    free(prompt);
    lq_lora_free(adapter);
    lq_model_free(m);
    if (b) b->destroy(b);
    tok_free(tok);
    return rc;
}
