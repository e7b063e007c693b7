/* mapfile.h — read-only memory maps of whole files.
 *
 * Model weights, GGUF files and tokenizer.json are mapped rather than read so
 * that loading costs page-table setup, not copies, and a second load of the
 * same model is served from the page cache. An empty file maps to a non-NULL
 * zero-length region so callers need no special case. */
#ifndef LORQ_MAPFILE_H
#define LORQ_MAPFILE_H

#include <stddef.h>
#include "error.h"

typedef struct lq_mapfile {
    const unsigned char *data;
    size_t size;
} lq_mapfile;

int lq_mapfile_open(lq_mapfile *m, const char *path, lq_error *err);
void lq_mapfile_close(lq_mapfile *m);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer. */
char *lq_read_file(const char *path, size_t *len, lq_error *err);

#endif
