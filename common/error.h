/* error.h — one way to report a failure across lorq's C code.
 *
 * Parsers and loaders never print and never abort: they fill an lq_error with
 * a sentence a user can act on ("model.safetensors: tensor 'x' data offsets
 * [0, 10) exceed the 8-byte data section") and return failure. The caller
 * decides whether to log it, send it over HTTP, or put it in a job result. */
#ifndef LORQ_ERROR_H
#define LORQ_ERROR_H

#include <stddef.h>

typedef struct lq_error {
    char msg[512];
} lq_error;

/* Sets the message (printf-style). Safe to call with err == NULL. Returns -1 so
 * that "return lq_fail(err, ...)" reads naturally in functions returning int. */
int lq_fail(lq_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "context: " to an existing message, e.g. the file name. */
void lq_error_prefix(lq_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
