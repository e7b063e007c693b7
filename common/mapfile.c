/* mapfile.c — see mapfile.h. */
#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char empty_region[1];

int lq_mapfile_open(lq_mapfile *m, const char *path, lq_error *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lq_fail(err, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lq_fail(err, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lq_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        m->data = empty_region;
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return lq_fail(err, "%s: mmap: %s", path, strerror(e));
    m->data = p;
    m->size = (size_t)st.st_size;
    return 0;
}

void lq_mapfile_close(lq_mapfile *m) {
    if (m->data && m->data != empty_region) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

char *lq_read_file(const char *path, size_t *len, lq_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lq_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) { free(buf); buf = NULL; }
        else buf = nb;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf) {
        lq_fail(err, "%s: out of memory", path);
        return NULL;
    }
    if (failed) {
        free(buf);
        lq_fail(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}
