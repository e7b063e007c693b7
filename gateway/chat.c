/* chat.c — see chat.h.
 *
 * Requests are checked before the template sees them, so a malformed message
 * gets a message naming the field ("messages[1].content[0]: only text parts
 * are supported") instead of whatever the template would make of it. Content
 * given as a list of text parts is joined into one string (as TGI does), since
 * most templates concatenate content with `+` and would fail on a list. The
 * context is the one transformers builds: messages, tools (None when absent),
 * documents (None), add_generation_prompt and the tokenizer's special tokens. */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jinja.h"
#include "mapfile.h"

struct lq_chat_template {
    lq_template *tmpl;   /* NULL when the model has none */
    json_t *tokens;      /* special tokens by name: bos_token, eos_token, ... */
    char missing[300];   /* why there is no template, for the render error */
};

/* ---- loading ---- */

/* A special token is a string or an AddedToken object {"content": ...}. */
static const char *token_text(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static json_t *special_tokens(const json_t *config) {
    static const char *const names[] = {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                                        "mask_token"};
    json_t *tokens = json_object();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *text = token_text(json_object_get(config, names[i]));
        if (text) json_object_set_new(tokens, names[i], json_string(text));
    }
    return tokens;
}

/* The template text of a tokenizer_config: a string, or the "default" entry of
 * a list of named templates. NULL (err untouched) when there is none. */
static const char *config_template(const json_t *config, const char *origin, lq_error *err, bool *bad) {
    const json_t *t = json_object_get(config, "chat_template");
    *bad = false;
    if (!t || json_is_null(t)) return NULL;
    if (json_is_string(t)) return json_string_value(t);
    if (json_is_array(t)) {
        size_t i;
        const json_t *entry;
        json_array_foreach(t, i, entry) {
            const char *name = json_string_value(json_object_get(entry, "name"));
            const char *text = json_string_value(json_object_get(entry, "template"));
            if (name && text && strcmp(name, "default") == 0) return text;
        }
        lq_fail(err, "%s: chat_template lists named templates but none is named \"default\"", origin);
    } else lq_fail(err, "%s: chat_template must be a string or a list of {name, template}", origin);
    *bad = true;
    return NULL;
}

static json_t *sample_message(const char *role, const char *content) {
    return json_pack("{s:s, s:s}", "role", role, "content", content);
}

/* Renders sample conversations: with a system message first, then without one
 * (Gemma's and Mistral's templates refuse system messages, which is fine). */
static int check_renders(const lq_chat_template *ct, const char *origin, lq_error *err) {
    json_t *with_system = json_pack("[o, o, o, o]", sample_message("system", "You are a helpful assistant."),
                                    sample_message("user", "Hello!"), sample_message("assistant", "Hi! How can I help?"),
                                    sample_message("user", "Tell me a joke."));
    json_t *without = json_deep_copy(with_system);
    json_array_remove(without, 0);
    lq_error first;
    char *text = lq_chat_render(ct, with_system, NULL, true, NULL, &first);
    if (!text) text = lq_chat_render(ct, without, NULL, true, NULL, err);
    json_decref(with_system);
    json_decref(without);
    if (!text) {
        lq_error_prefix(err, "%s: the chat template cannot render a sample conversation", origin);
        return -1;
    }
    free(text);
    return 0;
}

lq_chat_template *lq_chat_from_config(const json_t *config, const char *template_file, const char *origin,
                                      lq_error *err) {
    if (!json_is_object(config)) {
        lq_fail(err, "%s: expected a JSON object", origin);
        return NULL;
    }
    bool bad;
    const char *src = config_template(config, origin, err, &bad);
    if (bad) return NULL;
    if (!src) src = template_file;
    lq_chat_template *ct = calloc(1, sizeof *ct);
    if (!ct) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    ct->tokens = special_tokens(config);
    if (!src) {
        snprintf(ct->missing, sizeof ct->missing,
                 "this model has no chat template (%s has no chat_template); send a prompt to /generate or "
                 "/v1/completions instead", origin);
        return ct;
    }
    ct->tmpl = lq_template_compile(src, err);
    if (!ct->tmpl) {
        lq_error_prefix(err, "%s: chat_template", origin);
        lq_chat_free(ct);
        return NULL;
    }
    if (check_renders(ct, origin, err) != 0) {
        lq_chat_free(ct);
        return NULL;
    }
    return ct;
}

lq_chat_template *lq_chat_load(const char *dir, lq_error *err) {
    char path[4096], file_path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    snprintf(file_path, sizeof file_path, "%s/chat_template.jinja", dir);
    json_t *config = NULL;
    if (access(path, F_OK) == 0) {
        json_error_t je;
        config = json_load_file(path, 0, &je);
        if (!config) {
            lq_fail(err, "%s: line %d: %s", path, je.line, je.text);
            return NULL;
        }
    } else config = json_object();
    char *file = NULL;
    if (!json_object_get(config, "chat_template") && access(file_path, F_OK) == 0) {
        file = lq_read_file(file_path, NULL, err);
        if (!file) {
            json_decref(config);
            return NULL;
        }
    }
    lq_chat_template *ct = lq_chat_from_config(config, file, file ? file_path : path, err);
    free(file);
    json_decref(config);
    return ct;
}

void lq_chat_free(lq_chat_template *ct) {
    if (!ct) return;
    lq_template_free(ct->tmpl);
    json_decref(ct->tokens);
    free(ct);
}

bool lq_chat_available(const lq_chat_template *ct) { return ct && ct->tmpl; }

const char *lq_chat_bos_token(const lq_chat_template *ct) {
    return json_string_value(json_object_get(ct->tokens, "bos_token"));
}

const char *lq_chat_eos_token(const lq_chat_template *ct) {
    return json_string_value(json_object_get(ct->tokens, "eos_token"));
}

/* ---- request checking ---- */

static bool known_role(const char *role) {
    return !strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant") || !strcmp(role, "tool");
}

/* Joins a list of text parts into one string; NULL with err on anything else. */
static json_t *join_text_parts(const json_t *parts, size_t index, lq_error *err) {
    size_t total = 0, i;
    const json_t *part;
    json_array_foreach(parts, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (!type) {
            lq_fail(err, "messages[%zu].content[%zu] must be an object with a \"type\"", index, i);
            return NULL;
        }
        if (strcmp(type, "text") != 0) {
            lq_fail(err, "messages[%zu].content[%zu]: only text parts are supported (got type '%s')", index, i, type);
            return NULL;
        }
        if (!json_is_string(text)) {
            lq_fail(err, "messages[%zu].content[%zu].text must be a string", index, i);
            return NULL;
        }
        total += json_string_length(text);
    }
    char *buf = malloc(total + 1);
    if (!buf) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    size_t at = 0;
    json_array_foreach(parts, i, part) {
        const json_t *text = json_object_get(part, "text");
        memcpy(buf + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    json_t *joined = json_stringn_nocheck(buf, at);
    free(buf);
    return joined;
}

/* A checked copy of one message, content normalized to a string (or null). */
static json_t *check_message(const json_t *m, size_t index, lq_error *err) {
    if (!json_is_object(m)) {
        lq_fail(err, "messages[%zu] must be an object", index);
        return NULL;
    }
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!role) {
        lq_fail(err, "messages[%zu].role must be a string", index);
        return NULL;
    }
    if (!known_role(role)) {
        lq_fail(err, "messages[%zu].role '%.64s' is not one of system, user, assistant, tool", index, role);
        return NULL;
    }
    const json_t *content = json_object_get(m, "content"), *calls = json_object_get(m, "tool_calls");
    if (calls && !json_is_null(calls) && !json_is_array(calls)) {
        lq_fail(err, "messages[%zu].tool_calls must be an array", index);
        return NULL;
    }
    bool has_calls = json_is_array(calls) && json_array_size(calls) > 0;
    json_t *copy = json_copy((json_t *)m);
    if (json_is_array(content)) {
        json_t *joined = join_text_parts(content, index, err);
        if (!joined) {
            json_decref(copy);
            return NULL;
        }
        json_object_set_new(copy, "content", joined);
    } else if (!json_is_string(content) && !((!content || json_is_null(content)) && has_calls)) {
        json_decref(copy);
        if (!content || json_is_null(content))
            lq_fail(err, "messages[%zu].content is missing (only an assistant message with tool_calls may omit it)", index);
        else lq_fail(err, "messages[%zu].content must be a string or a list of text parts", index);
        return NULL;
    } else if (!content) json_object_set_new(copy, "content", json_null());
    return copy;
}

static json_t *check_messages(const json_t *messages, lq_error *err) {
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        lq_fail(err, "messages must be a non-empty array");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    const json_t *m;
    json_array_foreach(messages, i, m) {
        json_t *checked = check_message(m, i, err);
        if (!checked) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, checked);
    }
    return out;
}

/* ---- rendering ---- */

char *lq_chat_render(const lq_chat_template *ct, const json_t *messages, const json_t *tools,
                     bool add_generation_prompt, size_t *len, lq_error *err) {
    if (!ct->tmpl) {
        lq_fail(err, "%s", ct->missing);
        return NULL;
    }
    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        lq_fail(err, "tools must be an array");
        return NULL;
    }
    json_t *checked = check_messages(messages, err);
    if (!checked) return NULL;
    json_t *context = json_deep_copy(ct->tokens);
    json_object_set_new(context, "messages", checked);
    json_object_set_new(context, "tools", tools && json_array_size(tools) ? json_incref((json_t *)tools) : json_null());
    json_object_set_new(context, "documents", json_null());
    json_object_set_new(context, "add_generation_prompt", json_boolean(add_generation_prompt));
    char *text = lq_template_render(ct->tmpl, context, len, err);
    json_decref(context);
    return text;
}
