/* Data sets: the public loader and row operations, the checks every format shares, and the
 * built-in toy sets of the seed experiments. The formats have a file each: HDF5 (data_h5.c),
 * IDX (data_idx.c), CSV (data_csv.c). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backprop/data.h"
#include "data_internal.h"
#include "fileio.h"
#include "internal.h"

#define BUILTIN_PREFIX "builtin:"
#define BUILTIN_NAMES "builtin:xor, builtin:xor_signed, builtin:line"
#define MAX_INFERRED_CLASSES 65536 /* when classes is 0; a network may still ask for more */

/* ---- shared checks and allocation ---- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int bp__is_h5_path(const char *path)
{
    return path && (has_suffix(path, ".h5") || has_suffix(path, ".hdf5"));
}

/* NaN or infinity in the data would only show up later as a diverged run, far from its
 * cause; row and column are 0-based, as numpy and h5py index them. */
static bp_load_progress_fn progress_fn;
static void *progress_ctx;

void bp_set_load_progress(bp_load_progress_fn fn, void *ctx)
{
    progress_fn = fn;
    progress_ctx = ctx;
}

void bp__load_progress(const char *path, double done, double total)
{
    if (progress_fn)
        progress_fn(progress_ctx, path, done, total);
}

/* Tested without an early exit, the loop vectorises: the check of rows just copied costs
 * little beside the copy. */
BP__VECTORIZE static int any_nonfinite(const bp_real *A, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad |= bp__not_finite(A[i]);
    return bad;
}

int bp__check_finite_at(const bp_real *A, size_t rows, size_t cols, size_t first, const char *path,
                        const char *name, char *err, size_t errlen)
{
    if (!any_nonfinite(A, rows * cols))
        return 0;
    for (size_t i = 0; i < rows * cols; i++)
        if (!isfinite(A[i]))
            return bp__fail(err, errlen, BP_EFORMAT, "%s: %s row %zu column %zu is %s", path, name,
                            first + i / cols, i % cols, isnan(A[i]) ? "NaN" : "infinite");
    return 0;
}

int bp__check_finite(const bp_real *A, size_t rows, size_t cols, const char *path, const char *name,
                     char *err, size_t errlen)
{
    return bp__check_finite_at(A, rows, cols, 0, path, name, err, errlen);
}

/* Whether X (n, d), Y (n, k) and labels (n) when with_labels can be held: refused by their
 * size, before anything is allocated, when they exceed what the process may allocate. */
int bp__dataset_fits(size_t n, size_t d, size_t k, int with_labels, const char *path, char *err,
                     size_t errlen)
{
    size_t widest = d > k ? d : k;
    if (bp__mul(bp__mul(n, widest), sizeof(bp_real)) == SIZE_MAX)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: %zu x %zu values are too many to hold", path,
                        n, widest);
    char what[BP__PATH_LEN];
    snprintf(what, sizeof(what), "%s: %zu examples of %zu features", path, n, d);
    double row = (double)(d + k) * sizeof(bp_real) + (with_labels ? sizeof(int) : 0);
    return bp__memory_check((double)n * row, what, err, errlen);
}

/* Allocates X (n, d), Y (n, k) when k > 0, and labels (n) when with_labels. The one-hot Y
 * of a labelled set waits for the labels: its width may be inferred from them. */
/* bp__dataset_load_into's memory for /X, while it loads. */
static bp_real *x_into;
static size_t x_into_len;

int bp__dataset_alloc(bp_dataset *ds, size_t n, size_t d, size_t k, int with_labels,
                      const char *path, char *err, size_t errlen)
{
    int rc = bp__dataset_fits(n, d, k, with_labels, path, err, errlen);
    if (rc < 0)
        return rc;
    ds->n = n;
    ds->d = d;
    ds->k = k;
    ds->X = x_into && n * d == x_into_len ? x_into : bp__calloc(n * d, sizeof(bp_real));
    ds->Y = k ? bp__calloc(n * k, sizeof(bp_real)) : NULL;
    ds->labels = with_labels ? bp__calloc(n, sizeof(int)) : NULL;
    if (!ds->X || (k && !ds->Y) || (with_labels && !ds->labels))
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %zu x %zu values", path, n,
                        d > k ? d : k);
    return 0;
}

/* Checks the labels against classes (0 = infer the largest label + 1) and builds the
 * one-hot Y. A label the network has no output for is a mismatch, not a bad file. */
int bp__labels_to_onehot(bp_dataset *ds, int classes, const char *path, char *err, size_t errlen)
{
    int max = -1;
    for (size_t i = 0; i < ds->n; i++) {
        int l = ds->labels[i];
        if (l < 0)
            return bp__fail(err, errlen, BP_EFORMAT, "%s: label %d at row %zu is negative", path, l,
                            i);
        if (classes > 0 && l >= classes)
            return bp__fail(err, errlen, BP_EMISMATCH, "%s: label %d at row %zu is outside 0..%d",
                            path, l, i, classes - 1);
        if (l > max)
            max = l;
    }
    /* An inferred width comes from the file alone: one damaged label must not turn into a
     * one-hot matrix of many gigabytes. */
    if (classes == 0 && max >= MAX_INFERRED_CLASSES)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: label %d would mean more than %d classes; is this a label file?", path,
                        max, MAX_INFERRED_CLASSES);
    size_t k = classes > 0 ? (size_t)classes : (size_t)max + 1;
    if (bp__mul(bp__mul(ds->n, k), sizeof(bp_real)) == SIZE_MAX)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: %zu one-hot rows of %zu classes are too many",
                        path, ds->n, k);
    char what[BP__PATH_LEN];
    snprintf(what, sizeof(what), "%s: one-hot targets for %zu examples of %zu classes", path, ds->n,
             k);
    int rc = bp__memory_check((double)ds->n * (double)k * sizeof(bp_real), what, err, errlen);
    if (rc < 0)
        return rc;
    ds->Y = bp__calloc(ds->n * k, sizeof(bp_real));
    if (!ds->Y)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %zu x %zu one-hot targets",
                        path, ds->n, k);
    ds->k = k;
    for (size_t i = 0; i < ds->n; i++)
        ds->Y[i * k + (size_t)ds->labels[i]] = 1;
    return 0;
}

/* ---- built-in data sets ---- */

/* The four XOR corners of seeds 001 and 002: inputs 0/1 with targets 0 1 1 0, or inputs
 * +-1 with targets 1 0 0 1. */
static int load_xor(bp_dataset *ds, int is_signed, const char *name, char *err, size_t errlen)
{
    static const bp_real X01[] = {0, 0, 0, 1, 1, 0, 1, 1}, Y01[] = {0, 1, 1, 0};
    static const bp_real Xpm[] = {1, 1, -1, 1, 1, -1, -1, -1}, Ypm[] = {1, 0, 0, 1};
    int rc = bp__dataset_alloc(ds, 4, 2, 1, 0, name, err, errlen);
    if (rc < 0)
        return rc;
    memcpy(ds->X, is_signed ? Xpm : X01, sizeof(X01));
    memcpy(ds->Y, is_signed ? Ypm : Y01, sizeof(Y01));
    return 0;
}

/* Seed 004: x ~ U[0, 2), y = 4 + 3x + 0.3 N(0, 1), drawn in that order per example, so
 * one seed always gives the same 1000 points. */
static int load_line(bp_dataset *ds, uint64_t seed, const char *name, char *err, size_t errlen)
{
    enum { N = 1000 };
    int rc = bp__dataset_alloc(ds, N, 1, 1, 0, name, err, errlen);
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

static int load_builtin(bp_dataset *ds, const char *name, uint64_t seed, char *err, size_t errlen)
{
    if (strcmp(name, "builtin:xor") == 0)
        return load_xor(ds, 0, name, err, errlen);
    if (strcmp(name, "builtin:xor_signed") == 0)
        return load_xor(ds, 1, name, err, errlen);
    if (strcmp(name, "builtin:line") == 0)
        return load_line(ds, seed, name, err, errlen);
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

int bp_dataset_load(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                    uint64_t seed, char *err, size_t errlen)
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
        rc = load_builtin(&tmp, path, seed, err, errlen);
    else if (bp__is_h5_path(path))
        rc = bp__load_h5(&tmp, path, classes, err, errlen);
    else
        rc = bp__load_idx(&tmp, path, labels_path, classes, err, errlen);
    if (rc < 0) {
        if (tmp.X == x_into)
            tmp.X = NULL; /* the caller's */
        bp_dataset_free(&tmp);
        return rc;
    }
    *ds = tmp;
    return 0;
}

int bp__dataset_load_into(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                          uint64_t seed, bp_real *X, size_t len, char *err, size_t errlen)
{
    x_into = X, x_into_len = len;
    int rc = bp_dataset_load(ds, path, labels_path, classes, seed, err, errlen);
    x_into = NULL, x_into_len = 0;
    return rc;
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
    int rc = bp__dataset_alloc(&t, rows, ds->d, ds->k, ds->labels != NULL, "", NULL, 0);
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

void bp_dataset_free(bp_dataset *ds)
{
    bp__free(ds->X);
    bp__free(ds->Y);
    bp__free(ds->labels);
    memset(ds, 0, sizeof(*ds));
}
