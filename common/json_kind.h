/* json_kind.h — the type of a JSON value as error messages name it ("an
 * object", "a string", ...): one wording for the files lorq reads (tokenizer
 * and model configs) and the request bodies the gateway validates. */
#ifndef LORQ_JSON_KIND_H
#define LORQ_JSON_KIND_H

#include <jansson.h>

static inline const char *lq_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

#endif
