/* generate.c — sampling, streaming text and stop conditions for one sequence (see generate.h). */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

const char *lq_finish_name(lq_finish f) {
    switch (f) {
    case LQ_FINISH_LENGTH: return "length";
    case LQ_FINISH_EOS: return "eos_token";
    case LQ_FINISH_STOP_SEQUENCE: return "stop_sequence";
    default: return "none";
    }
}

lq_generation *lq_generation_new(const lq_model *m, const lq_tokenizer *tok, const int32_t *prompt, int n_prompt,
                                 const lq_gen_params *p, lq_error *err) {
    const char *bad = lq_sampling_check(&p->sampling);
    if (bad) {
        lq_fail(err, "%s", bad);
        return NULL;
    }
    if (n_prompt <= 0) {
        lq_fail(err, "the prompt is empty");
        return NULL;
    }
    if (p->max_new_tokens <= 0) {
        lq_fail(err, "max_new_tokens must be strictly positive");
        return NULL;
    }
    if (n_prompt + p->max_new_tokens > m->cfg.max_position) {
        lq_fail(err, "prompt (%d tokens) + max_new_tokens (%d) exceeds the model's %d positions", n_prompt,
                p->max_new_tokens, m->cfg.max_position);
        return NULL;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->cfg.vocab_size) {
            lq_fail(err, "prompt token id %d is out of the vocabulary", prompt[i]);
            return NULL;
        }
    lq_generation *g = calloc(1, sizeof *g);
    if (!g) goto oom;
    g->model = m;
    g->params = *p;
    g->cap = n_prompt + p->max_new_tokens;
    g->tokens = malloc((size_t)g->cap * sizeof *g->tokens);
    g->sampler = lq_sampler_new(&p->sampling, m->cfg.vocab_size, prompt, n_prompt);
    g->stream = tok_stream_new(tok, 1);
    if (!g->tokens || !g->sampler || !g->stream) goto oom;
    memcpy(g->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    g->n_prompt = g->n_tokens = n_prompt;
    return g;
oom:
    lq_generation_free(g, NULL);
    lq_fail(err, "out of memory");
    return NULL;
}

void lq_generation_free(lq_generation *g, lq_kvcache *kv) {
    if (!g) return;
    if (kv) lq_kv_release(kv, &g->kv);
    else free(g->kv.table);
    free(g->tokens);
    lq_sampler_free(g->sampler);
    tok_stream_free(g->stream);
    free(g->text);
    free(g);
}

int lq_generation_pending(const lq_generation *g) { return g->n_tokens - g->n_in_cache; }

static int is_eos(const lq_generation *g, int32_t id) {
    const lq_model_config *c = &g->model->cfg;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return 1;
    return 0;
}

static int append_text(lq_generation *g, const char *s, size_t n) {
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = g->text_cap ? g->text_cap : 256;
        while (cap < g->text_len + n + 1) cap *= 2;
        char *t = realloc(g->text, cap);
        if (!t) return -1;
        g->text = t;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, s, n);
    g->text_len += n;
    g->text[g->text_len] = '\0';
    return 0;
}

/* A stop sequence that ends inside the newly added text (it may start earlier). */
static int stop_matched(const lq_generation *g, size_t added) {
    for (int i = 0; i < g->params.n_stop; i++) {
        size_t sl = strlen(g->params.stop[i]);
        if (sl == 0 || sl > g->text_len) continue;
        size_t from = g->text_len - added >= sl - 1 ? g->text_len - added - (sl - 1) : 0;
        if (memmem(g->text + from, g->text_len - from, g->params.stop[i], sl)) return 1;
    }
    return 0;
}

/* Appends a chosen token: text stream, stop sequence, EOS and length checks. */
static int accept_token(lq_generation *g, int32_t id, const char **piece, size_t *piece_len, lq_error *err) {
    g->tokens[g->n_tokens++] = id;
    size_t start = g->text_len, n;
    const char *t;
    if (tok_stream_push(g->stream, id, &t, &n, err) != 0 || append_text(g, t, n) != 0)
        return lq_fail(err, "out of memory");
    int generated = g->n_tokens - g->n_prompt;
    if (stop_matched(g, g->text_len - start)) g->finish = LQ_FINISH_STOP_SEQUENCE;
    else if (!g->params.ignore_eos && is_eos(g, id)) g->finish = LQ_FINISH_EOS;
    else if (generated >= g->params.max_new_tokens) g->finish = LQ_FINISH_LENGTH;
    if (g->finish != LQ_FINISH_NONE) {
        if (tok_stream_flush(g->stream, &t, &n, err) != 0 || append_text(g, t, n) != 0)
            return lq_fail(err, "out of memory");
    }
    *piece = g->text + start;
    *piece_len = g->text_len - start;
    return 0;
}

int lq_generation_next(lq_generation *g, float *logits, lq_token_choice *choice, const char **piece,
                       size_t *piece_len, lq_error *err) {
    lq_sampler_next(g->sampler, logits, choice);
    return accept_token(g, choice->id, piece, piece_len, err);
}

int lq_generation_force(lq_generation *g, int32_t id, const char **piece, size_t *piece_len, lq_error *err) {
    if (g->finish != LQ_FINISH_NONE || g->n_tokens >= g->cap)
        return lq_fail(err, "the generation is already over; token %d cannot be appended", id);
    if (id < 0 || id >= g->model->cfg.vocab_size) return lq_fail(err, "token id %d is out of the vocabulary", id);
    lq_sampler_force(g->sampler, id);
    return accept_token(g, id, piece, piece_len, err);
}
