/* fuzz_jinja.c — libFuzzer target for the Jinja interpreter.
 *
 * The input is a template source; if it holds a NUL byte, what follows the
 * first NUL is a JSON context (used when it parses to an object), otherwise a
 * fixed chat context is used: messages with every role, tools, special tokens.
 * Compiling must fail cleanly or give a template; rendering runs under small
 * ceilings (steps, output, memory, depth) so that every input finishes fast.
 * Invariants checked, aborting so libFuzzer reports them like crashes:
 * an error always has a message, and rendered text is valid UTF-8 of the
 * reported length. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jinja.h"
#include "utf8.h"

static const char CONTEXT[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi \\u00e9\\ud83d\\ude00 \\\"q\\\" {{ x }}\\n\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call12345\", \"type\": \"function\","
    " \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"22C\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part\"}]}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}],"
    " \"documents\": null, \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    " \"n\": 3, \"f\": 2.5, \"big\": 9223372036854775807, \"neg\": -9223372036854775807}";

static json_t *fixed_context;

static void check_error(const lq_error *err) {
    if (err->msg[0] == '\0' || memchr(err->msg, '\0', sizeof err->msg) == NULL) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 64 * 1024) return 0;
    if (!fixed_context) {
        json_error_t je;
        fixed_context = json_loads(CONTEXT, 0, &je);
        if (!fixed_context) abort();
    }
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t src_len = nul ? (size_t)(nul - data) : size;
    json_t *context = NULL;
    if (nul) {
        json_error_t je;
        context = json_loadb((const char *)nul + 1, size - src_len - 1, 0, &je);
        if (context && !json_is_object(context)) {
            json_decref(context);
            context = NULL;
        }
    }
    lq_error err = {{0}};
    lq_template *t = lq_template_compile_n(src, src_len, &err);
    if (!t) {
        check_error(&err);
        json_decref(context);
        return 0;
    }
    lq_template_limits limits = {.max_steps = 200000, .max_output = 1 << 20, .max_memory = 64 << 20, .max_depth = 40};
    lq_template_set_limits(t, &limits);
    size_t len = 0;
    char *out = lq_template_render(t, context ? context : fixed_context, &len, &err);
    if (out) {
        if (strlen(out) > len || out[len] != '\0') abort(); /* NULs from "\x00" escapes may shorten strlen */
        if (lq_utf8_valid_prefix(out, len) != len) abort();
        free(out);
    } else check_error(&err);
    lq_template_free(t);
    json_decref(context);
    return 0;
}
