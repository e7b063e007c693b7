/* jinja.h — the Jinja subset that chat templates are written in.
 *
 * A model's tokenizer_config.json carries a Jinja2 template that turns a list
 * of chat messages into the prompt text. transformers renders it with
 * jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
 * plus the loopcontrols extension, a `raise_exception(msg)` global and a
 * json.dumps-based `tojson` filter; this interpreter reproduces that output
 * byte for byte for the constructs real templates use (see
 * tests/golden/chat_templates.json for the cases checked against jinja2).
 *
 * Compiling parses the whole template up front, so syntax errors, unknown
 * filters and unknown tests are reported at load time with a line and column.
 * Rendering is bounded: loop iterations and expression steps, recursion depth,
 * output size and memory all have ceilings, so a hostile template or request
 * ends in an error, never a hang or a crash. A compiled template is read-only
 * while rendering, so several threads may render the same one at once. */
#ifndef LORQ_JINJA_H
#define LORQ_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct lq_template lq_template;

/* Ceilings for one render. Zero fields take the defaults below. */
typedef struct lq_template_limits {
    uint64_t max_steps;  /* expression evaluations + loop iterations + bytes scanned / 64 */
    size_t max_output;   /* bytes of rendered text (also of any captured block) */
    size_t max_memory;   /* bytes of scratch memory for values made while rendering */
    int max_depth;       /* nested macro calls and value nesting */
} lq_template_limits;

#define LQ_TEMPLATE_DEFAULT_STEPS 20000000u
#define LQ_TEMPLATE_DEFAULT_OUTPUT (16u << 20)
#define LQ_TEMPLATE_DEFAULT_MEMORY (256u << 20)
#define LQ_TEMPLATE_DEFAULT_DEPTH 200

/* Parses src (UTF-8, NUL-terminated). NULL with err set ("line 3, column 7:
 * unexpected 'endif'") when the template is not valid. */
lq_template *lq_template_compile(const char *src, lq_error *err);

/* Like lq_template_compile for a source of known length (may hold NULs). */
lq_template *lq_template_compile_n(const char *src, size_t len, lq_error *err);

void lq_template_free(lq_template *t);

/* Replaces the render ceilings of t (NULL restores the defaults). */
void lq_template_set_limits(lq_template *t, const lq_template_limits *limits);

/* Renders t with the variables of context (a JSON object: messages,
 * add_generation_prompt, bos_token, eos_token, tools, ...). Returns malloc'd
 * UTF-8 text (the caller frees it) and its length in *len when len is not
 * NULL, or NULL with err set: the message passed to raise_exception exactly as
 * written, or "line N: ..." for a type error, an undefined value used where it
 * cannot be, or a ceiling reached. */
char *lq_template_render(const lq_template *t, const json_t *context, size_t *len, lq_error *err);

#endif
