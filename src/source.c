/* Data sets read in row order for eval, predict and plot (source.h). */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "source.h"

/* In place: a file name that is HDF5, no separate labels, and an /X that is contiguous
 * little-endian floats; a file that cannot even be looked at is left to bp_dataset_load,
 * whose message it gets. */
static int in_place(const char *path, const char *labels_path)
{
    size_t n, d;
    int contiguous = 0;
    char err[256];
    return bp__is_h5_path(path) && !labels_path &&
           bp__h5_shape(path, &n, &d, &contiguous, err, sizeof(err)) == 0 && contiguous;
}

static int open_stream(bp__source *src, int inputs, int classes, size_t cap, char *err,
                       size_t errlen)
{
    int rc = bp__h5_stream_open(&src->stream, src->path, classes, err, errlen);
    if (rc < 0)
        return rc;
    bp__h5_stream_sequential(src->stream);
    bp__h5_stream_shape(src->stream, &src->ds);
    rc = bp_dataset_check(&src->ds, inputs, classes, src->path, err, errlen);
    if (rc < 0)
        return rc;
    src->cap = cap;
    src->X = bp__calloc(bp__mul(cap, src->ds.d), sizeof(bp_real));
    src->Y = bp__calloc(bp__mul(cap, src->ds.k), sizeof(bp_real));
    if (!src->X || !src->Y)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %zu rows", src->path, cap);
    return 0;
}

int bp__source_open(bp__source *src, const char *path, const char *labels_path, int inputs,
                    int classes, uint64_t seed, size_t cap, char *err, size_t errlen)
{
    memset(src, 0, sizeof(*src));
    snprintf(src->path, sizeof(src->path), "%s", path);
    int rc;
    if (in_place(path, labels_path)) {
        rc = open_stream(src, inputs, classes, cap, err, errlen);
    } else {
        rc = bp_dataset_load(&src->ds, path, labels_path, classes, seed, err, errlen);
        if (rc == 0)
            rc = bp_dataset_check(&src->ds, inputs, classes, path, err, errlen);
    }
    if (rc < 0)
        bp__source_close(src);
    return rc;
}

int bp__source_tail(bp__source *src, size_t limit, size_t count, char *err, size_t errlen)
{
    bp_dataset *ds = &src->ds;
    size_t n = limit > 0 && limit < ds->n ? limit : ds->n;
    if (count >= n)
        return bp__fail(err, errlen, BP_EINVAL,
                        "validation_split = %zu leaves no training examples (%s has %zu)", count,
                        src->path, n);
    if (src->stream) {
        src->base += n - count;
        if (ds->labels)
            ds->labels += n - count;
        ds->n = count;
        return 0;
    }
    bp_dataset tail;
    bp_dataset_limit(ds, n);
    int rc = bp_dataset_split(ds, n - count, &tail);
    if (rc < 0)
        return bp__fail(err, errlen, rc, "%s: out of memory for its last %zu rows", src->path,
                        count);
    bp_dataset_free(ds);
    *ds = tail;
    return 0;
}

int bp__source_rows(void *ctx, size_t first, size_t count, const bp_real **X, const bp_real **Y,
                    const int **labels, char *err, size_t errlen)
{
    bp__source *src = ctx;
    const bp_dataset *ds = &src->ds;
    *labels = ds->labels ? ds->labels + first : NULL;
    if (!src->stream) {
        *X = ds->X + first * ds->d;
        *Y = ds->Y + first * ds->k;
        return 0;
    }
    size_t row = src->base + first;
    /* The reader checks the rows it copies for NaN and infinity. */
    int rc = bp__h5_stream_rows(src->stream, NULL, count, row, src->X, src->Y, NULL, err, errlen);
    *X = src->X;
    *Y = src->Y;
    return rc;
}

void bp__source_close(bp__source *src)
{
    if (src->stream) {
        bp__h5_stream_close(src->stream); /* holds the labels */
        src->ds.labels = NULL;
    } else {
        bp_dataset_free(&src->ds);
    }
    bp__free(src->X);
    bp__free(src->Y);
    memset(src, 0, sizeof(*src));
}
