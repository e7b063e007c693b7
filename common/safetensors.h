/* safetensors.h — reading and writing Hugging Face safetensors checkpoints.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {dtype, shape, data_offsets: [begin, end)} (plus an optional
 * "__metadata__" string map), then the data section. Offsets are relative to
 * the data section.
 *
 * Reading maps the file and validates the whole header before handing out a
 * single pointer: header length within the file and a sane bound, valid JSON
 * object, known dtype, shape product × element size == end − begin, every
 * span inside the data section and no two spans overlapping. After st_open
 * succeeds, every st_tensor.data .. data+nbytes is readable memory.
 *
 * A "set" is one file or a sharded folder: st_open on a directory reads
 * model.safetensors.index.json (weight_map: name → shard file) and opens each
 * shard once, or falls back to a lone model.safetensors. Tensor names are
 * unique across the set.
 *
 * Writing declares every tensor first (so the header and offsets are known),
 * then streams each tensor's bytes in declaration order; the file appears
 * under its name only when complete (written to PATH.tmp, then renamed). */
#ifndef LORQ_SAFETENSORS_H
#define LORQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

#define ST_MAX_DIMS 8
/* Headers above this are refused: real checkpoints stay far below it. */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef struct st_tensor {
    char *name;
    lq_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    const void *data; /* into the mapped file */
    size_t nbytes;
} st_tensor;

typedef struct st_set {
    st_tensor *tensors;
    size_t n_tensors;
    /* Mapped shards (lq_mapfile), owned. */
    void *maps;
    size_t n_maps;
    /* __metadata__ of the first shard as "key\0value\0" pairs; may be NULL. */
    char **meta_keys, **meta_values;
    size_t n_meta;
} st_set;

/* Opens a .safetensors file, or a folder holding model.safetensors or a
 * sharded model.safetensors.index.json. */
int st_open(st_set *s, const char *path, lq_error *err);

/* Parses an in-memory safetensors image (not copied: it must outlive s).
 * Used for fuzzing and by st_open for each shard. */
int st_parse(st_set *s, const void *data, size_t len, lq_error *err);

const st_tensor *st_find(const st_set *s, const char *name);
const char *st_meta(const st_set *s, const char *key);
void st_close(st_set *s);

typedef struct st_writer st_writer;

st_writer *st_writer_new(const char *path);
int st_writer_meta(st_writer *w, const char *key, const char *value, lq_error *err);
int st_writer_declare(st_writer *w, const char *name, lq_dtype dtype, int ndim, const int64_t *shape,
                      lq_error *err);
/* Writes the tensor's bytes; tensors must be written in declaration order and
 * each exactly once, with nbytes equal to its declared size. */
int st_writer_write(st_writer *w, const char *name, const void *data, size_t nbytes, lq_error *err);
/* Checks every tensor was written, flushes, renames into place and frees w. */
int st_writer_finish(st_writer *w, lq_error *err);
/* Discards a partial file and frees w. */
void st_writer_abort(st_writer *w);

#endif
