/* Data sets: the public loader, which dispatches to the readers of the formats (HDF5 in
 * data_h5.c, IDX in data_idx.c; CSV, for convert, in data_csv.c), row operations, and the
 * built-in toy sets of the seed experiments. What the readers share is data_common.c. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backprop/data.h"
#include "data_idx.h"
#include "data_internal.h"
#include "fileio.h"
#include "internal.h"

#define BUILTIN_PREFIX "builtin:"
#define BUILTIN_NAMES "builtin:xor, builtin:xor_signed, builtin:line"

/* ---- built-in data sets ---- */

/* The four XOR corners of seeds 001 and 002: inputs 0/1 with targets 0 1 1 0, or inputs
 * +-1 with targets 1 0 0 1. */
static int load_xor(bp_dataset *ds, int is_signed, const bp__load_opts *o, const char *name,
                    char *err, size_t errlen)
{
    static const bp_real X01[] = {0, 0, 0, 1, 1, 0, 1, 1}, Y01[] = {0, 1, 1, 0};
    static const bp_real Xpm[] = {1, 1, -1, 1, 1, -1, -1, -1}, Ypm[] = {1, 0, 0, 1};
    int rc = bp__dataset_alloc(ds, 4, 2, 1, 0, o, name, err, errlen);
    if (rc < 0)
        return rc;
    memcpy(ds->X, is_signed ? Xpm : X01, sizeof(X01));
    memcpy(ds->Y, is_signed ? Ypm : Y01, sizeof(Y01));
    return 0;
}

/* Seed 004: x ~ U[0, 2), y = 4 + 3x + 0.3 N(0, 1), drawn in that order per example, so
 * one seed always gives the same 1000 points. */
static int load_line(bp_dataset *ds, uint64_t seed, const bp__load_opts *o, const char *name,
                     char *err, size_t errlen)
{
    enum { N = 1000 };
    int rc = bp__dataset_alloc(ds, N, 1, 1, 0, o, name, err, errlen);
    if (rc < 0)
        return rc;
    bp_rng rng;
    bp_rng_seed(&rng, seed);
    for (size_t i = 0; i < N; i++) {
        double x = 2 * bp_rng_uniform(&rng);
        ds->X[i] = (bp_real)x;
        ds->Y[i] = (bp_real)(4 + 3 * x + 0.3 * bp_rng_gaussian(&rng));
    }
    return 0;
}

static int load_builtin(bp_dataset *ds, const char *name, uint64_t seed, const bp__load_opts *o,
                        char *err, size_t errlen)
{
    if (strcmp(name, "builtin:xor") == 0)
        return load_xor(ds, 0, o, name, err, errlen);
    if (strcmp(name, "builtin:xor_signed") == 0)
        return load_xor(ds, 1, o, name, err, errlen);
    if (strcmp(name, "builtin:line") == 0)
        return load_line(ds, seed, o, name, err, errlen);
    return bp__fail(err, errlen, BP_EINVAL, "%s: unknown built-in data set (known: %s)", name,
                    BUILTIN_NAMES);
}

int bp__dataset_shape(const char *path, const char *labels_path, int classes, size_t *n, size_t *d,
                      double *bytes, char *err, size_t errlen)
{
    (void)labels_path; /* the images' header says how many: the labels are checked on loading */
    int contiguous, rc = 0;
    if (strncmp(path, BUILTIN_PREFIX, strlen(BUILTIN_PREFIX)) == 0)
        *n = 1000, *d = 2; /* builtin:line is the largest */
    else if (bp__is_h5_path(path))
        rc = bp__h5_shape(path, n, d, &contiguous, err, errlen);
    else
        rc = bp__idx_shape(path, n, d, err, errlen);
    if (rc == 0) {
        size_t k = classes > 0 ? (size_t)classes : 1;
        *bytes = (double)*n * ((double)(*d + k) * sizeof(bp_real) + sizeof(int));
    }
    return rc;
}

/* ---- the public loader and row operations ---- */

int bp__dataset_load_with(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                          uint64_t seed, const bp__load_opts *o, char *err, size_t errlen)
{
    bp_dataset tmp = {0};
    int builtin = path && strncmp(path, BUILTIN_PREFIX, strlen(BUILTIN_PREFIX)) == 0;
    int rc;
    memset(ds, 0, sizeof(*ds));
    if (labels_path && !*labels_path)
        labels_path = NULL;
    if (!path || !*path)
        return bp__fail(err, errlen, BP_EINVAL, "no data file given");
    if (classes < 0)
        return bp__fail(err, errlen, BP_EINVAL, "%s: %d classes requested", path, classes);
    /* Silently ignoring a labels file the user named would hide a mix-up of files. */
    if (labels_path && (builtin || bp__is_h5_path(path)))
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s: a labels file (%s) only goes with IDX images; this data set has "
                        "its own targets",
                        path, labels_path);
    if (builtin)
        rc = load_builtin(&tmp, path, seed, o, err, errlen);
    else if (bp__is_h5_path(path))
        rc = bp__load_h5(&tmp, path, classes, o, err, errlen);
    else
        rc = bp__load_idx(&tmp, path, labels_path, classes, o, err, errlen);
    if (rc < 0) {
        if (o && tmp.X == o->X)
            tmp.X = NULL; /* the caller's */
        bp_dataset_free(&tmp);
        return rc;
    }
    *ds = tmp;
    return 0;
}

int bp_dataset_load(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                    uint64_t seed, char *err, size_t errlen)
{
    return bp__dataset_load_with(ds, path, labels_path, classes, seed, NULL, err, errlen);
}

int bp_dataset_check(const bp_dataset *ds, int inputs, int outputs, const char *name, char *err,
                     size_t errlen)
{
    int h5 = bp__is_h5_path(name);
    if (!name)
        name = "data";
    if (inputs < 0 || ds->d != (size_t)inputs) {
        if (h5)
            return bp__fail(err, errlen, BP_EMISMATCH,
                            "%s: /X has %zu columns but the network has %d inputs", name, ds->d,
                            inputs);
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "%s: examples have %zu features but the network has %d inputs", name, ds->d,
                        inputs);
    }
    if (outputs < 0 || ds->k != (size_t)outputs) {
        if (ds->labels)
            return bp__fail(err, errlen, BP_EMISMATCH,
                            "%s: labels span %zu classes but the network has %d outputs", name,
                            ds->k, outputs);
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "%s: %s has %zu columns but the network has %d outputs", name,
                        h5 ? "/y" : "the target", ds->k, outputs);
    }
    return 0;
}

int bp_dataset_split(bp_dataset *ds, size_t from, bp_dataset *tail)
{
    bp_dataset t = {0};
    memset(tail, 0, sizeof(*tail));
    if (from > ds->n)
        return BP_EINVAL;
    size_t rows = ds->n - from;
    int rc = bp__dataset_alloc(&t, rows, ds->d, ds->k, ds->labels != NULL, NULL, "", NULL, 0);
    if (rc < 0) {
        bp_dataset_free(&t);
        return rc;
    }
    memcpy(t.X, ds->X + from * ds->d, rows * ds->d * sizeof(bp_real));
    memcpy(t.Y, ds->Y + from * ds->k, rows * ds->k * sizeof(bp_real));
    if (ds->labels)
        memcpy(t.labels, ds->labels + from, rows * sizeof(int));
    /* The head keeps its buffers: the rows past n are simply no longer used. */
    ds->n = from;
    *tail = t;
    return 0;
}

void bp_dataset_limit(bp_dataset *ds, size_t n)
{
    if (n > 0 && n < ds->n)
        ds->n = n;
}
