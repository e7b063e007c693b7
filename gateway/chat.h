/* chat.h — a model's chat template: OpenAI-style messages to prompt text.
 *
 * The template comes from the model folder the way transformers finds it:
 * `chat_template` in tokenizer_config.json (a string, or a list of
 * {name, template} of which "default" is used), else a chat_template.jinja
 * file beside it. bos_token / eos_token (strings or AddedToken objects) and
 * the other special tokens are passed to the template as transformers does.
 *
 * Loading compiles the template and renders a sample conversation, so a
 * template this interpreter cannot run is an error at start-up rather than on
 * the first request. A model without a template loads fine; each render then
 * fails with a message that says so. */
#ifndef LORQ_CHAT_H
#define LORQ_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct lq_chat_template lq_chat_template;

/* Loads DIR/tokenizer_config.json (and DIR/chat_template.jinja). NULL with err
 * set when a file is unreadable or malformed, or the template is unusable. */
lq_chat_template *lq_chat_load(const char *dir, lq_error *err);

/* The same from a parsed tokenizer_config object; template_file is the text of
 * a chat_template.jinja, used when the config has no chat_template (may be
 * NULL). origin names the source in messages. */
lq_chat_template *lq_chat_from_config(const json_t *config, const char *template_file, const char *origin,
                                      lq_error *err);

void lq_chat_free(lq_chat_template *ct);

/* Whether the model has a chat template at all. */
bool lq_chat_available(const lq_chat_template *ct);

/* bos_token / eos_token as the template sees them, or NULL when unset. */
const char *lq_chat_bos_token(const lq_chat_template *ct);
const char *lq_chat_eos_token(const lq_chat_template *ct);

/* Renders an OpenAI `messages` array (roles system, user, assistant, tool;
 * content a string, null for an assistant turn with tool_calls, or a list of
 * {"type": "text", "text": ...} parts, which are joined) with tools (an array,
 * or NULL) to the prompt text. Returns malloc'd text (length in *len when len
 * is not NULL) or NULL with err set: an invalid message ("messages[2].role ...
 * "), the template's own raise_exception message, or a template error. */
char *lq_chat_render(const lq_chat_template *ct, const json_t *messages, const json_t *tools,
                     bool add_generation_prompt, size_t *len, lq_error *err);

#endif
