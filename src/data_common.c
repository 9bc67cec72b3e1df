/* What every data set reader shares: the options of a load (where /X goes, the memory the
 * data may take, whom to tell how far it has come), allocation, and the checks every
 * format makes. The readers (data_h5.c, data_idx.c, data_csv.c) depend on this file alone;
 * data.c, the loader, dispatches to them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "backprop/data.h"
#include "data_common.h"
#include "internal.h"

#define MAX_INFERRED_CLASSES 65536 /* when classes is 0; a network may still ask for more */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int bp__is_h5_path(const char *path)
{
    return path && (has_suffix(path, ".h5") || has_suffix(path, ".hdf5"));
}

void bp__load_progress(const bp__load_opts *o, const char *path, double done, double total)
{
    if (o && o->progress)
        o->progress(o->progress_ctx, path, done, total);
}

/* NaN or infinity in the data would only show up later as a diverged run, far from its
 * cause; row and column are 0-based, as numpy and h5py index them. Tested without an early
 * exit, the loop vectorises: the check of rows just copied costs little beside the copy. */
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

static double ceiling_of(const bp__load_opts *o)
{
    return o ? o->ceiling : 0;
}

int bp__dataset_fits(size_t n, size_t d, size_t k, int with_labels, const bp__load_opts *o,
                     const char *path, char *err, size_t errlen)
{
    size_t widest = d > k ? d : k;
    if (bp__mul(bp__mul(n, widest), sizeof(bp_real)) == SIZE_MAX)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: %zu x %zu values are too many to hold", path,
                        n, widest);
    char what[BP__PATH_LEN];
    snprintf(what, sizeof(what), "%s: %zu examples of %zu features", path, n, d);
    double row = (double)(d + k) * sizeof(bp_real) + (with_labels ? sizeof(int) : 0);
    return bp__memory_check_under((double)n * row, ceiling_of(o), what, err, errlen);
}

/* The one-hot Y of a labelled set waits for the labels: its width may be inferred from
 * them. */
int bp__dataset_alloc(bp_dataset *ds, size_t n, size_t d, size_t k, int with_labels,
                      const bp__load_opts *o, const char *path, char *err, size_t errlen)
{
    int rc = bp__dataset_fits(n, d, k, with_labels, o, path, err, errlen);
    if (rc < 0)
        return rc;
    ds->n = n;
    ds->d = d;
    ds->k = k;
    int into = o && o->X && n * d == o->X_len;
    ds->X = into ? o->X : bp__calloc(n * d, sizeof(bp_real));
    ds->Y = k ? bp__calloc(n * k, sizeof(bp_real)) : NULL;
    ds->labels = with_labels ? bp__calloc(n, sizeof(int)) : NULL;
    if (!ds->X || (k && !ds->Y) || (with_labels && !ds->labels))
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %zu x %zu values", path, n,
                        d > k ? d : k);
    return 0;
}

/* A label the network has no output for is a mismatch, not a bad file. */
int bp__labels_to_onehot(bp_dataset *ds, int classes, const bp__load_opts *o, const char *path,
                         char *err, size_t errlen)
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
    int rc = bp__memory_check_under((double)ds->n * (double)k * sizeof(bp_real), ceiling_of(o),
                                    what, err, errlen);
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

void bp_dataset_free(bp_dataset *ds)
{
    bp__free(ds->X);
    bp__free(ds->Y);
    bp__free(ds->labels);
    memset(ds, 0, sizeof(*ds));
}
