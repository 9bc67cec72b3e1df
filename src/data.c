/* Data sets: HDF5 (/X, /y), IDX images and labels (plain or gzip), CSV for conversion, and
 * the built-in toy sets of the seed experiments. Each loader fills a local bp_dataset and
 * hands it over only once every check has passed, so a caller never sees half a data set,
 * and each failure becomes one line naming the file and what is wrong with it. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <hdf5.h>
#include <zlib.h>

#include "backprop/data.h"
#include "fileio.h"
#include "h5util.h"
#include "internal.h"

#define BUILTIN_PREFIX "builtin:"
#define BUILTIN_NAMES "builtin:xor, builtin:xor_signed, builtin:line"

#define IDX_IMAGES 0x00000803u     /* ubyte, 3 dimensions */
#define IDX_LABELS 0x00000801u     /* ubyte, 1 dimension */
#define HDF5_MAGIC 0x89484446u     /* "\211HDF": what an IDX reader sees in an HDF5 file */
#define MAX_INFERRED_CLASSES 65536 /* when classes is 0; a network may still ask for more */

/* ---- shared checks and allocation ---- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int is_h5_path(const char *path)
{
    return path && (has_suffix(path, ".h5") || has_suffix(path, ".hdf5"));
}

/* NaN or infinity in the data would only show up later as a diverged run, far from its
 * cause; row and column are 0-based, as numpy and h5py index them. */
static int check_finite(const bp_real *A, size_t rows, size_t cols, const char *path,
                        const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < rows * cols; i++)
        if (!isfinite(A[i]))
            return bp__fail(err, errlen, BP_EFORMAT, "%s: %s row %zu column %zu is %s", path, name,
                            i / cols, i % cols, isnan(A[i]) ? "NaN" : "infinite");
    return 0;
}

/* Whether X (n, d), Y (n, k) and labels (n) when with_labels can be held: refused by their
 * size, before anything is allocated, when they exceed what the process may allocate. */
static int dataset_fits(size_t n, size_t d, size_t k, int with_labels, const char *path, char *err,
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
static int dataset_alloc(bp_dataset *ds, size_t n, size_t d, size_t k, int with_labels,
                         const char *path, char *err, size_t errlen)
{
    int rc = dataset_fits(n, d, k, with_labels, path, err, errlen);
    if (rc < 0)
        return rc;
    ds->n = n;
    ds->d = d;
    ds->k = k;
    ds->X = bp__calloc(n * d, sizeof(bp_real));
    ds->Y = k ? bp__calloc(n * k, sizeof(bp_real)) : NULL;
    ds->labels = with_labels ? bp__calloc(n, sizeof(int)) : NULL;
    if (!ds->X || (k && !ds->Y) || (with_labels && !ds->labels))
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %zu x %zu values", path, n,
                        d > k ? d : k);
    return 0;
}

/* Checks the labels against classes (0 = infer the largest label + 1) and builds the
 * one-hot Y. A label the network has no output for is a mismatch, not a bad file. */
static int labels_to_onehot(bp_dataset *ds, int classes, const char *path, char *err, size_t errlen)
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
    int rc = dataset_alloc(ds, 4, 2, 1, 0, name, err, errlen);
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
    int rc = dataset_alloc(ds, N, 1, 1, 0, name, err, errlen);
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

/* ---- HDF5 ---- */

/* What the checks need to know about one dataset before reading it. */
typedef struct {
    hid_t id;
    H5T_class_t cls;
    size_t size; /* bytes per element */
    int rank;
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK];
    int chunked, filtered;
    hsize_t chunk[H5S_MAX_RANK];
} h5_var;

static const char *h5_class_name(H5T_class_t cls)
{
    switch (cls) {
    case H5T_INTEGER:
        return "integer";
    case H5T_FLOAT:
        return "float";
    case H5T_STRING:
        return "string";
    case H5T_COMPOUND:
        return "compound";
    case H5T_ENUM:
        return "enum";
    case H5T_ARRAY:
        return "array";
    default:
        return "non-numeric";
    }
}

/* Numbers come in a few sizes only; HDF5 1.10 reads past its buffers on a damaged file
 * whose type claims some other size. Other classes are refused later by name. */
static int h5_type_valid(const h5_var *v)
{
    size_t s = v->size;
    if (v->cls == H5T_INTEGER)
        return s == 1 || s == 2 || s == 4 || s == 8;
    if (v->cls == H5T_FLOAT)
        return s == 2 || s == 4 || s == 8 || s == 16;
    return 1;
}

/* HDF5 1.10 trusts the shapes it reads and copies past its buffers when a damaged file
 * claims chunks larger than the dataset, or an extent past its maximum; no valid file has
 * either (H5Dcreate and H5Dset_extent refuse them), so such files are refused unread.
 * Fills v->chunked and v->chunk. */
static int h5_layout_valid(h5_var *v)
{
    hid_t dcpl = H5Dget_create_plist(v->id);
    int ok = dcpl >= 0;
    for (int i = 0; ok && i < v->rank; i++)
        ok = v->maxdims[i] == H5S_UNLIMITED || v->dims[i] <= v->maxdims[i];
    v->chunked = ok && v->rank > 0 && H5Pget_layout(dcpl) == H5D_CHUNKED;
    if (v->chunked) {
        v->filtered = H5Pget_nfilters(dcpl) != 0;
        ok = H5Pget_chunk(dcpl, v->rank, v->chunk) == v->rank;
        for (int i = 0; ok && i < v->rank; i++) {
            int unlimited = v->maxdims[i] == H5S_UNLIMITED;
            ok = v->chunk[i] > 0 && (unlimited || v->chunk[i] <= v->maxdims[i]);
        }
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return ok;
}

/* A dataset with unwritten parts reads as fill values: data that was never there. 1.10
 * calls compressed chunks "partly allocated", so chunks are counted instead; unfiltered
 * chunks must also be full-sized, or 1.10 reads past a short one. */
static int h5_fully_written(const h5_var *v)
{
    if (!v->chunked) {
        H5D_space_status_t status;
        return H5Dget_space_status(v->id, &status) >= 0 && status != H5D_SPACE_STATUS_NOT_ALLOCATED;
    }
    hsize_t want = 1, have = 0, chunk_bytes = v->size;
    for (int i = 0; i < v->rank; i++) {
        want *= (v->dims[i] + v->chunk[i] - 1) / v->chunk[i];
        chunk_bytes *= v->chunk[i];
    }
    hid_t space = H5Dget_space(v->id);
    herr_t st = space >= 0 ? H5Dget_num_chunks(v->id, space, &have) : -1;
    if (space >= 0)
        H5Sclose(space);
    if (st < 0 || have != want)
        return 0;
    return v->filtered || H5Dget_storage_size(v->id) == have * chunk_bytes;
}

/* Opens dataset name and reads its type class and shape; v->id must be closed by the
 * caller whenever it is valid, even on error. */
static int h5_open_var(hid_t file, const char *name, h5_var *v, const char *path, char *err,
                       size_t errlen)
{
    memset(v, 0, sizeof(*v));
    v->id = H5I_INVALID_HID;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: no dataset %s (expected /X: n x d and /y: n labels or n x k targets)",
                        path, name);
    v->id = H5Dopen2(file, name, H5P_DEFAULT);
    if (v->id < 0)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: %s is not a readable dataset", path, name);
    hid_t type = H5Dget_type(v->id), space = H5Dget_space(v->id);
    v->cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    v->size = type >= 0 ? H5Tget_size(type) : 0;
    v->rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (v->rank > 0 && H5Sget_simple_extent_dims(space, v->dims, v->maxdims) < 0)
        v->rank = -1;
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (v->rank < 0 || v->cls == H5T_NO_CLASS)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: cannot read the type and shape of %s", path,
                        name);
    if (!h5_type_valid(v))
        return bp__fail(err, errlen, BP_EFORMAT, "%s: %s is damaged (%zu-byte %s elements)", path,
                        name, v->size, h5_class_name(v->cls));
    return 0;
}

/* Values stored outside the file (a virtual dataset's source files, external raw files)
 * read as fill values wherever those files are missing, short or unmapped: data that was
 * never there, and nothing to tell it from real zeros. Only storage inside the file, whose
 * extent can be checked, is read. */
static const char *h5_foreign_storage(const h5_var *v)
{
    hid_t dcpl = H5Dget_create_plist(v->id);
    const char *kind = NULL;
    if (dcpl < 0)
        return "unreadable";
    if (H5Pget_layout(dcpl) == H5D_VIRTUAL)
        kind = "a virtual dataset (its values live in other files)";
    else if (H5Pget_external_count(dcpl) > 0)
        kind = "stored in external files";
    H5Pclose(dcpl);
    return kind;
}

/* After the shape checks: the dataset's storage is in the file, consistent and complete. */
static int h5_check_storage(h5_var *v, const char *name, const char *path, char *err, size_t errlen)
{
    const char *foreign = h5_foreign_storage(v);
    if (foreign)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: %s is %s; store the values in the file itself (h5py: "
                        "f2['%s'] = f['%s'][:])",
                        path, name, foreign, name + 1, name + 1);
    if (!h5_layout_valid(v))
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: %s is damaged (its shape and storage layout disagree)", path, name);
    if (!h5_fully_written(v))
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: %s is incomplete (never fully written, or damaged)", path, name);
    return 0;
}

static int h5_read_X(hid_t file, bp_dataset *ds, const char *path, char *err, size_t errlen)
{
    h5_var v;
    int rc = h5_open_var(file, "/X", &v, path, err, errlen);
    if (rc < 0)
        goto cleanup;
    /* Integers convert to bp_real exactly enough; strings and compounds have no meaning. */
    if (v.cls != H5T_FLOAT && v.cls != H5T_INTEGER) {
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: /X holds %s values; expected floats", path,
                      h5_class_name(v.cls));
        goto cleanup;
    }
    if (v.rank != 2) {
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: /X has rank %d; expected 2 (n examples x d features)", path, v.rank);
        goto cleanup;
    }
    if (v.dims[0] == 0 || v.dims[1] == 0) {
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: /X is empty (%llu x %llu): no examples to use",
                      path, (unsigned long long)v.dims[0], (unsigned long long)v.dims[1]);
        goto cleanup;
    }
    /* The size first: it needs no reading, and a small file can declare terabytes. */
    rc = dataset_fits((size_t)v.dims[0], (size_t)v.dims[1], 0, 0, path, err, errlen);
    if (rc == 0)
        rc = h5_check_storage(&v, "/X", path, err, errlen);
    if (rc == 0)
        rc = dataset_alloc(ds, (size_t)v.dims[0], (size_t)v.dims[1], 0, 0, path, err, errlen);
    if (rc < 0)
        goto cleanup;
    if (H5Dread(v.id, BP__H5_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->X) < 0)
        rc = bp__fail(err, errlen, BP_EIO, "%s: cannot read /X (damaged or truncated file?)", path);
cleanup:
    if (v.id >= 0)
        H5Dclose(v.id);
    return rc;
}

/* Integer labels, read as long long so a value too large for int is reported as it is
 * rather than as what HDF5's conversion clamps it to. */
static int h5_read_labels(hid_t id, bp_dataset *ds, int classes, const char *path, char *err,
                          size_t errlen)
{
    long long *raw = bp__calloc(ds->n, sizeof(long long));
    ds->labels = bp__calloc(ds->n, sizeof(int));
    int rc = 0;
    if (!raw || !ds->labels) {
        rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %zu labels", path, ds->n);
        goto cleanup;
    }
    if (H5Dread(id, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) {
        rc = bp__fail(err, errlen, BP_EIO, "%s: cannot read /y (damaged or truncated file?)", path);
        goto cleanup;
    }
    for (size_t i = 0; i < ds->n; i++) {
        if (raw[i] < INT_MIN || raw[i] > INT_MAX) {
            rc = bp__fail(err, errlen, BP_EFORMAT, "%s: label %lld at row %zu is out of range",
                          path, raw[i], i);
            goto cleanup;
        }
        ds->labels[i] = (int)raw[i];
    }
    rc = labels_to_onehot(ds, classes, path, err, errlen);
cleanup:
    bp__free(raw);
    return rc;
}

static int h5_read_targets(hid_t id, bp_dataset *ds, size_t k, const char *path, char *err,
                           size_t errlen)
{
    if (bp__mul(bp__mul(ds->n, k), sizeof(bp_real)) == SIZE_MAX)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: /y of %zu x %zu values is too large", path,
                        ds->n, k);
    ds->Y = bp__calloc(ds->n * k, sizeof(bp_real));
    if (!ds->Y)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for /y (%zu x %zu)", path, ds->n,
                        k);
    ds->k = k;
    if (H5Dread(id, BP__H5_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->Y) < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot read /y (damaged or truncated file?)",
                        path);
    return check_finite(ds->Y, ds->n, k, path, "/y", err, errlen);
}

/* /y decides the kind of data set: rank-1 integers are class labels, floats are targets
 * (rank 1: one column; rank 2: n x k). */
static int h5_read_y(hid_t file, bp_dataset *ds, int classes, const char *path, char *err,
                     size_t errlen)
{
    h5_var v;
    int rc = h5_open_var(file, "/y", &v, path, err, errlen);
    if (rc < 0)
        goto cleanup;
    int labels = v.cls == H5T_INTEGER && v.rank == 1;
    int targets = v.cls == H5T_FLOAT && (v.rank == 1 || v.rank == 2);
    if (v.cls != H5T_INTEGER && v.cls != H5T_FLOAT)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: /y holds %s values; expected integer labels or float targets", path,
                      h5_class_name(v.cls));
    else if (!labels && !targets)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: /y holds %s values of rank %d; expected n integer labels or n x k "
                      "float targets",
                      path, h5_class_name(v.cls), v.rank);
    else if (v.dims[0] != ds->n)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: /y has %llu rows but /X has %zu", path,
                      (unsigned long long)v.dims[0], ds->n);
    else if (targets && v.rank == 2 && v.dims[1] == 0)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: /y has no columns", path);
    else
        rc = h5_check_storage(&v, "/y", path, err, errlen);
    if (rc < 0)
        goto cleanup;
    if (labels)
        rc = h5_read_labels(v.id, ds, classes, path, err, errlen);
    else
        rc = h5_read_targets(v.id, ds, v.rank == 2 ? (size_t)v.dims[1] : 1, path, err, errlen);
cleanup:
    if (v.id >= 0)
        H5Dclose(v.id);
    return rc;
}

static int load_h5(bp_dataset *ds, const char *path, int classes, char *err, size_t errlen)
{
    int rc = bp__input_check(path, NULL, err, errlen);
    if (rc < 0)
        return rc;
    /* HDF5 would print its own error stack to stderr; our one line says it better. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: not an HDF5 file", path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: cannot open as HDF5 (damaged or truncated file?)", path);
    rc = h5_read_X(file, ds, path, err, errlen);
    if (rc == 0)
        rc = h5_read_y(file, ds, classes, path, err, errlen);
    if (rc == 0)
        rc = check_finite(ds->X, ds->n, ds->d, path, "/X", err, errlen);
    H5Fclose(file);
    return rc;
}

/* ---- IDX (MNIST, Fashion-MNIST) ---- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* zlib reads gzip and plain files alike, so the content decides, not the name. */
static int idx_open(gzFile *gz, const char *path, off_t *size, char *err, size_t errlen)
{
    int rc = bp__input_check(path, size, err, errlen);
    if (rc < 0)
        return rc;
    *gz = gzopen(path, "rb");
    if (!*gz)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(*gz, 1u << 17);
    return 0;
}

/* Reads up to len bytes into buf and sets *got; only a zlib error is a failure here, a
 * short read is for the caller to name. */
static int idx_read(gzFile gz, unsigned char *buf, size_t len, size_t *got, const char *path,
                    char *err, size_t errlen)
{
    *got = 0;
    while (*got < len) {
        size_t want = len - *got > (1u << 30) ? (1u << 30) : len - *got;
        int r = gzread(gz, buf + *got, (unsigned)want);
        if (r < 0) {
            int code = 0;
            const char *msg = gzerror(gz, &code);
            size_t plen = strlen(path);
            if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
                msg += plen + 2; /* zlib names the file too; once is enough */
            return bp__fail(err, errlen, BP_EFORMAT, "%s: truncated or damaged gzip data (%s)",
                            path, msg);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

/* The magic then ndims big-endian sizes; kind names the file in messages ("image"). */
static int idx_header(gzFile gz, uint32_t magic, int ndims, size_t *dims, const char *kind,
                      const char *path, char *err, size_t errlen)
{
    unsigned char h[4 * 4];
    size_t got = 0, len = 4 * (size_t)ndims;
    int rc = idx_read(gz, h, 4, &got, path, err, errlen);
    if (rc < 0)
        return rc;
    if (got < 4)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: not an IDX %s file (only %zu bytes)", path,
                        kind, got);
    uint32_t m = be32(h);
    if (m != magic)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: not an IDX %s file (magic 0x%08x)%s", path,
                        kind, (unsigned)m,
                        m == HDF5_MAGIC ? "; it is HDF5: give it a .h5 name" : "");
    rc = idx_read(gz, h, len, &got, path, err, errlen);
    if (rc < 0)
        return rc;
    if (got < len)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: truncated IDX header", path);
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(h + 4 * i);
    return 0;
}

/* A header can promise more data than the file holds; checking before allocating keeps a
 * damaged header from claiming gigabytes. Deflate expands at most 1032:1, which bounds
 * what a gzip file can hold. */
static int idx_check_size(gzFile gz, off_t size, size_t header, size_t need, const char *path,
                          char *err, size_t errlen)
{
    double body = (double)size - (double)header;
    double most = gzdirect(gz) ? body : body * 1032.0;
    if ((double)need > most)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: truncated: the header promises %zu bytes of data but the file holds "
                        "at most %.0f",
                        path, need, most < 0 ? 0.0 : most);
    return 0;
}

/* Pixels are read in chunks and scaled to [0, 1] on the way, so the bytes never need a
 * second full-size buffer. */
static int idx_read_pixels(gzFile gz, bp_dataset *ds, const char *path, char *err, size_t errlen)
{
    enum { CHUNK = 1 << 16 };
    size_t total = ds->n * ds->d, got = 0;
    unsigned char *buf = bp__calloc(CHUNK, 1);
    if (!buf)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    int rc = 0;
    for (size_t off = 0; off < total && rc == 0; off += got) {
        size_t len = total - off < CHUNK ? total - off : CHUNK;
        rc = idx_read(gz, buf, len, &got, path, err, errlen);
        if (rc == 0 && got < len)
            rc = bp__fail(err, errlen, BP_EFORMAT,
                          "%s: truncated: only %zu of the %zu pixel bytes its header promises",
                          path, off + got, total);
        for (size_t j = 0; rc == 0 && j < len; j++)
            ds->X[off + j] = (bp_real)(buf[j] / 255.0);
    }
    bp__free(buf);
    return rc;
}

/* zlib checks a gzip member's CRC and length only when asked for the bytes past its end;
 * without this a damaged stored block would load as wrong pixels. A stream cut short,
 * trailer included, is only a soft error to gzread (it serves files still being written):
 * Z_BUF_ERROR, which is asked for here. Trailing bytes are allowed. */
static int idx_check_end(gzFile gz, const char *path, char *err, size_t errlen)
{
    unsigned char extra;
    size_t got = 0;
    int rc = idx_read(gz, &extra, 1, &got, path, err, errlen), code = Z_OK;
    gzerror(gz, &code);
    if (rc == 0 && code != Z_OK)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: truncated gzip data (the stream ends before its CRC and length)", path);
    return rc;
}

static int idx_load_images(bp_dataset *ds, const char *path, char *err, size_t errlen)
{
    gzFile gz = NULL;
    off_t size = 0;
    size_t dims[3] = {0};
    int rc = idx_open(&gz, path, &size, err, errlen);
    if (rc == 0)
        rc = idx_header(gz, IDX_IMAGES, 3, dims, "image", path, err, errlen);
    if (rc < 0)
        goto cleanup;
    size_t d = bp__mul(dims[1], dims[2]), total = bp__mul(dims[0], d);
    if (dims[0] == 0 || d == 0)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: no images (%zu of %zu x %zu pixels)", path,
                      dims[0], dims[1], dims[2]);
    else if (total == SIZE_MAX)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: %zu images of %zu x %zu pixels are too many",
                      path, dims[0], dims[1], dims[2]);
    else
        rc = idx_check_size(gz, size, 16, total, path, err, errlen);
    if (rc == 0)
        rc = dataset_alloc(ds, dims[0], d, 0, 1, path, err, errlen);
    if (rc == 0)
        rc = idx_read_pixels(gz, ds, path, err, errlen);
    if (rc == 0)
        rc = idx_check_end(gz, path, err, errlen);
cleanup:
    if (gz)
        gzclose(gz);
    return rc;
}

/* Labels go into ds->labels, which idx_load_images allocated for the same n rows. */
static int idx_load_labels(bp_dataset *ds, const char *path, const char *images, int classes,
                           char *err, size_t errlen)
{
    gzFile gz = NULL;
    unsigned char *buf = NULL;
    off_t size = 0;
    size_t n = 0, got = 0;
    int rc = idx_open(&gz, path, &size, err, errlen);
    if (rc == 0)
        rc = idx_header(gz, IDX_LABELS, 1, &n, "label", path, err, errlen);
    if (rc == 0 && n != ds->n)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s has %zu labels but %s has %zu images", path, n,
                      images, ds->n);
    if (rc == 0 && !(buf = bp__calloc(n, 1)))
        rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    if (rc == 0)
        rc = idx_read(gz, buf, n, &got, path, err, errlen);
    if (rc == 0 && got < n)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: truncated: only %zu of the %zu labels", path,
                      got, n);
    if (rc == 0)
        rc = idx_check_end(gz, path, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++)
        ds->labels[i] = buf[i];
    if (rc == 0)
        rc = labels_to_onehot(ds, classes, path, err, errlen);
    bp__free(buf);
    if (gz)
        gzclose(gz);
    return rc;
}

static int load_idx(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                    char *err, size_t errlen)
{
    if (!labels_path)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s: IDX images need labels: set train_labels (or --labels)", path);
    int rc = idx_load_images(ds, path, err, errlen);
    if (rc == 0)
        rc = idx_load_labels(ds, labels_path, path, classes, err, errlen);
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
    if (labels_path && (builtin || is_h5_path(path)))
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s: a labels file (%s) only goes with IDX images; this data set has "
                        "its own targets",
                        path, labels_path);
    if (builtin)
        rc = load_builtin(&tmp, path, seed, err, errlen);
    else if (is_h5_path(path))
        rc = load_h5(&tmp, path, classes, err, errlen);
    else
        rc = load_idx(&tmp, path, labels_path, classes, err, errlen);
    if (rc < 0) {
        bp_dataset_free(&tmp);
        return rc;
    }
    *ds = tmp;
    return 0;
}

int bp_dataset_check(const bp_dataset *ds, int inputs, int outputs, const char *name, char *err,
                     size_t errlen)
{
    int h5 = is_h5_path(name);
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
    int rc = dataset_alloc(&t, rows, ds->d, ds->k, ds->labels != NULL, "", NULL, 0);
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

/* ---- writing HDF5 ---- */

/* Chunked and deflated when the filter is there: Fashion-MNIST's mostly-zero pixels shrink
 * several times over, and chunks of about 1 MiB keep reads streaming. */
static hid_t h5_create_props(int rank, const hsize_t *dims, size_t elem)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0 || H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0)
        return dcpl;
    hsize_t chunk[2] = {1, 1};
    size_t row_bytes = elem;
    if (rank == 2) {
        chunk[1] = dims[1] < (1u << 18) ? dims[1] : (1u << 18);
        row_bytes = bp__mul(elem, (size_t)chunk[1]);
    }
    chunk[0] = (hsize_t)((1u << 20) / row_bytes);
    if (chunk[0] == 0)
        chunk[0] = 1;
    if (chunk[0] > dims[0])
        chunk[0] = dims[0];
    if (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
        H5Pset_deflate(dcpl, 1) < 0) {
        H5Pclose(dcpl);
        return H5I_INVALID_HID;
    }
    return dcpl;
}

/* Writes one (rows) or (rows, cols) dataset, converting mtype in memory to ftype on disk. */
static int h5_write_var(hid_t file, const char *name, hid_t ftype, hid_t mtype, int rank,
                        size_t rows, size_t cols, const void *data)
{
    hsize_t dims[2] = {rows, cols};
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = h5_create_props(rank, dims, H5Tget_size(ftype));
    hid_t dset = H5I_INVALID_HID;
    herr_t status = -1;
    if (space >= 0 && dcpl >= 0)
        dset = H5Dcreate2(file, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset >= 0)
        status = H5Dwrite(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (dset >= 0 && H5Dclose(dset) < 0)
        status = -1;
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return status < 0 ? -1 : 0;
}

int bp_dataset_write_h5(const bp_dataset *ds, const char *path, int replace, char *err,
                        size_t errlen)
{
    if (!path || !*path)
        return bp__fail(err, errlen, BP_EINVAL, "no output file given");
    if (ds->n == 0 || ds->d == 0 || ds->k == 0 || !ds->X || (!ds->labels && !ds->Y))
        return bp__fail(err, errlen, BP_EINVAL, "%s: nothing to write (the data set is empty)",
                        path);
    hid_t file = bp__h5_create(0);
    int bad = file < 0 ||
              h5_write_var(file, "/X", H5T_IEEE_F32LE, BP__H5_REAL, 2, ds->n, ds->d, ds->X) < 0;
    if (!bad && ds->labels)
        bad = h5_write_var(file, "/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, ds->n, 1, ds->labels);
    else if (!bad)
        bad = h5_write_var(file, "/y", H5T_IEEE_F32LE, BP__H5_REAL, 2, ds->n, ds->k, ds->Y);
    if (bad) {
        bp__h5_close(file);
        return bp__fail(err, errlen, BP_ENOMEM, "%s: cannot build the HDF5 file (out of memory?)",
                        path);
    }
    return bp__h5_publish(file, path, replace ? BP__OUT_REPLACE : 0, err, errlen);
}

/* ---- CSV ---- */

/* Walks the lines of an in-memory file; line numbers are 1-based, as editors show them. */
typedef struct {
    const char *p, *end;
    size_t lineno;
} csv_cursor;

typedef struct {
    size_t rows, cols;
    size_t header; /* line number of the skipped header, 0 when there is none */
    size_t first;  /* line number of the first data row, to name in ragged-row messages */
} csv_shape;

/* A cursor at the first line; a UTF-8 byte-order mark (spreadsheet exports write one) is
 * not part of it. */
static csv_cursor csv_begin(const char *buf, size_t size)
{
    size_t bom = size >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    return (csv_cursor){buf + bom, buf + size, 0};
}

/* The next line without its \n or \r\n, and its length; NULL at the end. */
static const char *csv_next(csv_cursor *c, size_t *len)
{
    if (c->p >= c->end)
        return NULL;
    const char *line = c->p;
    const char *nl = memchr(line, '\n', (size_t)(c->end - line));
    const char *stop = nl ? nl : c->end;
    c->p = nl ? nl + 1 : c->end;
    c->lineno++;
    if (stop > line && stop[-1] == '\r')
        stop--;
    *len = (size_t)(stop - line);
    return line;
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

static const char *field_end(const char *s, const char *end)
{
    const char *comma = memchr(s, ',', (size_t)(end - s));
    return comma ? comma : end;
}

/* Parses [s, e) as one number with optional spaces around it. strtod cannot run past e:
 * the byte there is a comma, a line end, a space or the buffer's final NUL. */
static int parse_number(const char *s, const char *e, double *v)
{
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    if (s == e)
        return -1;
    char *stop = NULL;
    *v = strtod(s, &stop);
    return stop == e ? 0 : -1;
}

/* The whole file in one zeroed buffer with a NUL after it, so both passes read memory. */
static int read_text_file(const char *path, char **buf, size_t *size, char *err, size_t errlen)
{
    off_t fsize = 0;
    int rc = bp__input_check(path, &fsize, err, errlen);
    if (rc < 0)
        return rc;
    FILE *f = fopen(path, "rb");
    if (!f)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    *buf = bp__calloc((size_t)fsize + 1, 1);
    *size = *buf ? fread(*buf, 1, (size_t)fsize, f) : 0;
    fclose(f);
    if (!*buf)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory for %lld bytes", path,
                        (long long)fsize);
    if (*size != (size_t)fsize)
        rc = bp__fail(err, errlen, BP_EIO, "%s: read error", path);
    else if (memchr(*buf, '\0', *size))
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: contains NUL bytes; not a CSV text file", path);
    if (rc < 0) {
        bp__free(*buf);
        *buf = NULL;
    }
    return rc;
}

/* First pass: the header, the row count, and the field count every row must share. */
static int csv_scan(const char *buf, size_t size, csv_shape *sh, const char *path, char *err,
                    size_t errlen)
{
    csv_cursor c = csv_begin(buf, size);
    const char *line;
    size_t len;
    memset(sh, 0, sizeof(*sh));
    while ((line = csv_next(&c, &len))) {
        if (is_blank(line, len))
            continue;
        size_t fields = 1;
        for (size_t i = 0; i < len; i++)
            fields += line[i] == ',';
        double v;
        if (sh->rows == 0 && !sh->header && parse_number(line, field_end(line, line + len), &v)) {
            sh->header = c.lineno;
            continue;
        }
        if (sh->rows == 0) {
            sh->cols = fields;
            sh->first = c.lineno;
        } else if (fields != sh->cols) {
            return bp__fail(err, errlen, BP_EFORMAT,
                            "%s: line %zu has %zu fields but line %zu has %zu", path, c.lineno,
                            fields, sh->first, sh->cols);
        }
        sh->rows++;
    }
    if (sh->rows == 0)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: no data rows", path);
    return 0;
}

/* One line's fields into vals; the field count was checked by csv_scan. */
static int csv_parse_row(const char *line, size_t len, size_t lineno, double *vals, size_t cols,
                         const char *path, char *err, size_t errlen)
{
    const char *s = line, *end = line + len;
    for (size_t j = 0; j < cols; j++, s++) {
        const char *e = field_end(s, end);
        if (is_blank(s, (size_t)(e - s)))
            return bp__fail(err, errlen, BP_EFORMAT, "%s: line %zu column %zu is empty", path,
                            lineno, j + 1);
        if (parse_number(s, e, &vals[j]) < 0)
            return bp__fail(err, errlen, BP_EFORMAT,
                            "%s: line %zu column %zu: '%.*s' is not a number", path, lineno, j + 1,
                            (int)(e - s < 40 ? e - s : 40), s);
        /* Finite as a double can still overflow float. */
        if (!isfinite((bp_real)vals[j]))
            return bp__fail(err, errlen, BP_EFORMAT, "%s: line %zu column %zu is %s", path, lineno,
                            j + 1, isnan(vals[j]) ? "NaN" : "infinite or out of range");
        s = e;
    }
    return 0;
}

static int csv_store_row(bp_dataset *ds, size_t row, const double *vals, size_t lineno,
                         const char *path, char *err, size_t errlen)
{
    for (size_t j = 0; j < ds->d; j++)
        ds->X[row * ds->d + j] = (bp_real)vals[j];
    if (!ds->labels) {
        for (size_t j = 0; j < ds->k; j++)
            ds->Y[row * ds->k + j] = (bp_real)vals[ds->d + j];
        return 0;
    }
    double l = vals[ds->d];
    if (l < 0 || l != floor(l) || l > INT_MAX)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: line %zu: label %g is not a class number (an integer >= 0)", path,
                        lineno, l);
    ds->labels[row] = (int)l;
    return 0;
}

/* Second pass: the same lines as csv_scan, now parsed into the data set. */
static int csv_fill(bp_dataset *ds, const char *buf, size_t size, const csv_shape *sh, double *vals,
                    const char *path, char *err, size_t errlen)
{
    csv_cursor c = csv_begin(buf, size);
    const char *line;
    size_t len, row = 0;
    while ((line = csv_next(&c, &len))) {
        if (is_blank(line, len) || c.lineno == sh->header)
            continue;
        int rc = csv_parse_row(line, len, c.lineno, vals, sh->cols, path, err, errlen);
        if (rc == 0)
            rc = csv_store_row(ds, row++, vals, c.lineno, path, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int bp_dataset_load_csv(bp_dataset *ds, const char *path, int targets, char *err, size_t errlen)
{
    bp_dataset tmp = {0};
    char *buf = NULL;
    double *vals = NULL;
    size_t size = 0, ycols = targets > 0 ? (size_t)targets : 1;
    csv_shape sh;
    memset(ds, 0, sizeof(*ds));
    if (!path || targets < 0)
        return bp__fail(err, errlen, BP_EINVAL, "%s: %d target columns requested",
                        path ? path : "CSV", targets);
    int rc = read_text_file(path, &buf, &size, err, errlen);
    if (rc == 0)
        rc = csv_scan(buf, size, &sh, path, err, errlen);
    if (rc == 0 && sh.cols <= ycols)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: %zu columns leave no features besides the %zu %s column(s)", path,
                      sh.cols, ycols, targets ? "target" : "label");
    if (rc == 0)
        rc = dataset_alloc(&tmp, sh.rows, sh.cols - ycols, (size_t)targets, targets == 0, path, err,
                           errlen);
    if (rc == 0 && !(vals = bp__calloc(sh.cols, sizeof(double))))
        rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    if (rc == 0)
        rc = csv_fill(&tmp, buf, size, &sh, vals, path, err, errlen);
    if (rc == 0 && targets == 0)
        rc = labels_to_onehot(&tmp, 0, path, err, errlen);
    if (rc == 0) {
        *ds = tmp;
        memset(&tmp, 0, sizeof(tmp));
    }
    bp_dataset_free(&tmp);
    bp__free(vals);
    bp__free(buf);
    return rc;
}
