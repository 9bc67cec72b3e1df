/* HDF5 data sets: /X (n x d) and /y (n labels or n x k targets), read with every check a
 * damaged or foreign file needs, and written in the same layout by convert. */
#define _GNU_SOURCE /* posix_fadvise, pread, RUSAGE_THREAD */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "backprop/data.h"
#include "data_h5.h"
#include "fileio.h"
#include "h5util.h"
#include "internal.h"

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
    /* The link itself, before anything follows it: an external link opens another file
     * (a FIFO there blocks the open for good, a checkpoint there would be read as data
     * and later pruned), a soft link another object, neither of them the file's own. */
    H5L_info_t link;
    if (H5Lget_info(file, name, &link, H5P_DEFAULT) < 0)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: cannot read the link %s", path, name);
    if (link.type != H5L_TYPE_HARD)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: %s is %s; store the values in the file itself (h5py: "
                        "f2['%s'] = f['%s'][:])",
                        path, name,
                        link.type == H5L_TYPE_SOFT       ? "a soft link"
                        : link.type == H5L_TYPE_EXTERNAL ? "an external link to another file"
                                                         : "a user-defined link",
                        name + 1, name + 1);
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

/* Every filter of a compressed dataset must be one this HDF5 can decode: otherwise the
 * read fails with nothing to say why, and a damaged file is suspected wrongly. The name is
 * the file's (h5py writes "lzf"); the id says which filter it is where that is empty. */
static int h5_check_filters(const h5_var *v, const char *name, const char *path, char *err,
                            size_t errlen)
{
    hid_t dcpl = H5Dget_create_plist(v->id);
    int n = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1, rc = 0;
    if (n < 0)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: cannot read how %s is stored", path, name);
    for (int i = 0; i < n && rc == 0; i++) {
        unsigned flags = 0, config = 0, info = 0, values[8];
        size_t nvalues = 8;
        char filter[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nvalues, values,
                                         sizeof(filter), filter, &config);
        if (id < 0) {
            rc = bp__fail(err, errlen, BP_EFORMAT, "%s: cannot read the filters of %s", path, name);
        } else if (H5Zfilter_avail(id) <= 0 || H5Zget_filter_info(id, &info) < 0 ||
                   !(info & H5Z_FILTER_CONFIG_DECODE_ENABLED)) {
            filter[sizeof(filter) - 1] = 0;
            rc = bp__fail(err, errlen, BP_EFORMAT,
                          "%s: %s is compressed with filter %s (id %d), which this HDF5 build "
                          "cannot decode; store it uncompressed or with gzip (h5py: "
                          "compression='gzip')",
                          path, name, filter[0] ? filter : "(unnamed)", (int)id);
        }
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rc;
}

/* After the shape checks: the dataset's storage is in the file, consistent and complete,
 * and decodable. */
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
    if (v->filtered && h5_check_filters(v, name, path, err, errlen) < 0)
        return BP_EFORMAT;
    if (!h5_fully_written(v))
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: %s is incomplete (never fully written, or damaged)", path, name);
    return 0;
}

/* /X a block of rows at a time (whole chunks of what convert writes), so that a long
 * read can say how far it has come. */
static int h5_read_rows(const h5_var *v, bp_dataset *ds, const bp__load_opts *o, const char *path,
                        char *err, size_t errlen)
{
    hid_t id = v->id;
    /* Whole chunks only: a chunk split between two blocks would be decompressed twice. */
    size_t block = ((size_t)16 << 20) / (ds->d * sizeof(bp_real)) + 1;
    if (v->chunked) {
        size_t chunk = (size_t)v->chunk[0];
        block = block < chunk ? chunk : block / chunk * chunk;
    }
    hid_t file_space = H5Dget_space(id);
    int rc = file_space < 0 ? BP_EIO : 0;
    for (size_t r = 0; r < ds->n && rc == 0; r += block) {
        hsize_t start[2] = {r, 0}, count[2] = {ds->n - r < block ? ds->n - r : block, ds->d};
        hid_t mem = H5Screate_simple(2, count, NULL);
        if (mem < 0 ||
            H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Dread(id, BP__H5_REAL, mem, file_space, H5P_DEFAULT, ds->X + r * ds->d) < 0)
            rc = BP_EIO;
        if (mem >= 0)
            H5Sclose(mem);
        bp__load_progress(o, path, (double)(r + count[0]), (double)ds->n);
    }
    if (file_space >= 0)
        H5Sclose(file_space);
    return rc < 0 ? bp__fail(err, errlen, BP_EIO, "%s: cannot read /X (damaged or truncated file?)",
                             path)
                  : 0;
}

static int h5_read_X(hid_t file, bp_dataset *ds, const bp__load_opts *o, const char *path,
                     char *err, size_t errlen)
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
    rc = bp__dataset_fits((size_t)v.dims[0], (size_t)v.dims[1], 0, 0, o, path, err, errlen);
    if (rc == 0)
        rc = h5_check_storage(&v, "/X", path, err, errlen);
    if (rc == 0)
        rc =
            bp__dataset_alloc(ds, (size_t)v.dims[0], (size_t)v.dims[1], 0, 0, o, path, err, errlen);
    if (rc < 0)
        goto cleanup;
    rc = h5_read_rows(&v, ds, o, path, err, errlen);
cleanup:
    if (v.id >= 0)
        H5Dclose(v.id);
    return rc;
}

/* Integer labels, read as long long so a value too large for int is reported as it is
 * rather than as what HDF5's conversion clamps it to. */
static int h5_read_labels(hid_t id, bp_dataset *ds, int classes, const bp__load_opts *o,
                          const char *path, char *err, size_t errlen)
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
    rc = bp__labels_to_onehot(ds, classes, o, path, err, errlen);
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
    return bp__check_finite(ds->Y, ds->n, k, path, "/y", err, errlen);
}

/* /y decides the kind of data set: rank-1 integers are class labels, floats are targets
 * (rank 1: one column; rank 2: n x k). */
static int h5_read_y(hid_t file, bp_dataset *ds, int classes, const bp__load_opts *o,
                     const char *path, char *err, size_t errlen)
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
        rc = h5_read_labels(v.id, ds, classes, o, path, err, errlen);
    else
        rc = h5_read_targets(v.id, ds, v.rank == 2 ? (size_t)v.dims[1] : 1, path, err, errlen);
cleanup:
    if (v.id >= 0)
        H5Dclose(v.id);
    return rc;
}

/* Opens path read-only as HDF5 (*size: its bytes, when size is not NULL), or says why not. */
static int h5_open_file(const char *path, off_t *size, hid_t *file, char *err, size_t errlen)
{
    int rc = bp__input_check(path, size, err, errlen);
    if (rc < 0)
        return rc;
    if (H5Fis_hdf5(path) <= 0)
        return bp__fail(err, errlen, BP_EFORMAT, "%s: not an HDF5 file", path);
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0)
        return bp__fail(err, errlen, BP_EFORMAT,
                        "%s: cannot open as HDF5 (damaged or truncated file?)", path);
    return 0;
}

static int load_file(bp_dataset *ds, const char *path, int classes, const bp__load_opts *o,
                     char *err, size_t errlen)
{
    hid_t file = H5I_INVALID_HID;
    int rc = h5_open_file(path, NULL, &file, err, errlen);
    if (rc < 0)
        return rc;
    rc = h5_read_X(file, ds, o, path, err, errlen);
    if (rc == 0)
        rc = h5_read_y(file, ds, classes, o, path, err, errlen);
    if (rc == 0)
        rc = bp__check_finite(ds->X, ds->n, ds->d, path, "/X", err, errlen);
    H5Fclose(file);
    return rc;
}

int bp__load_h5(bp_dataset *ds, const char *path, int classes, const bp__load_opts *o, char *err,
                size_t errlen)
{
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = load_file(ds, path, classes, o, err, errlen);
    bp__h5_quiet_end(&q);
    return rc;
}

static int h5_shape(const char *path, size_t *n, size_t *d, int *contiguous, char *err,
                    size_t errlen)
{
    hid_t file = H5I_INVALID_HID;
    int rc = h5_open_file(path, NULL, &file, err, errlen);
    if (rc < 0)
        return rc;
    h5_var v;
    rc = h5_open_var(file, "/X", &v, path, err, errlen);
    if (rc == 0 && v.rank != 2)
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s: /X has rank %d; expected 2 (n examples x d features)", path, v.rank);
    if (rc == 0) {
        hid_t dcpl = H5Dget_create_plist(v.id), type = H5Dget_type(v.id);
        *n = (size_t)v.dims[0], *d = (size_t)v.dims[1];
        *contiguous = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS &&
                      H5Dget_offset(v.id) != HADDR_UNDEF && type >= 0 &&
                      (H5Tequal(type, H5T_IEEE_F32LE) > 0 || H5Tequal(type, H5T_IEEE_F64LE) > 0);
        if (dcpl >= 0)
            H5Pclose(dcpl);
        if (type >= 0)
            H5Tclose(type);
    }
    if (v.id >= 0)
        H5Dclose(v.id);
    H5Fclose(file);
    return rc;
}

int bp__h5_shape(const char *path, size_t *n, size_t *d, int *contiguous, char *err, size_t errlen)
{
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = h5_shape(path, n, d, contiguous, err, errlen);
    bp__h5_quiet_end(&q);
    return rc;
}

/* ---- rows read in place: [data] placement = stream ----
 * /X stays in the file. Each step copies the rows it needs out of a read-only mapping of
 * it (from the page cache, as fast as rows in memory); once rows come from the disk, it
 * reads them with pread instead, the kernel asked ahead for the next step's
 * (posix_fadvise) and place.c's thread reading them meanwhile. HDF5 reads chunked or
 * compressed data a chunk at a time, which random rows would decode over and over; a
 * contiguous /X is plain rows at a known offset, so HDF5 only checks the file and tells
 * where /X starts. /y is small (a label or k targets a row) and is read whole. */

/* The SIGBUS guard. A mapped file that shrinks under a reader (cut short, or its network
 * file system gone) raises SIGBUS at the first whole page past its end: an error to report,
 * not a reason to die. A thread copying rows sets bus_jump and the mapping's range; the
 * handler jumps back only for a fault (BUS_ADRERR) inside that range. Any other SIGBUS goes
 * to the handler that was there before: put back, it gets the repeated fault from the kernel
 * with its own flags, or a sent signal raised again (Open MPI's, or the default, which ends
 * the process as before). */
static _Thread_local sigjmp_buf *volatile bus_jump;
static _Thread_local const unsigned char *volatile bus_lo, *volatile bus_hi;
static struct sigaction bus_previous;
static int bus_saved; /* bus_previous holds the handler before ours */
static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_bus(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    sigjmp_buf *jump = bus_jump;
    const unsigned char *at = info ? (const unsigned char *)info->si_addr : NULL;
    if (jump && info && info->si_code == BUS_ADRERR && at >= bus_lo && at < bus_hi)
        siglongjmp(*jump, 1);
    sigaction(sig, &bus_previous, NULL);
    if (!info || info->si_code <= 0) /* sent (kill, raise), not a fault: it would not recur */
        raise(sig);
}

static int same_handler(const struct sigaction *a, const struct sigaction *b)
{
    if ((a->sa_flags & SA_SIGINFO) != (b->sa_flags & SA_SIGINFO))
        return 0;
    return (a->sa_flags & SA_SIGINFO) ? a->sa_sigaction == b->sa_sigaction
                                      : a->sa_handler == b->sa_handler;
}

static int is_ours(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_bus;
}

/* Whether the guard is in place: checked before each batch of rows. Installed the first
 * time, and again where the handler it replaced was put back (a test harness restores its
 * own between tests); a handler another library installed since is left alone, and rows
 * are read with pread (0). */
static int bus_guard(void)
{
    pthread_mutex_lock(&bus_lock);
    struct sigaction now;
    int ok = sigaction(SIGBUS, NULL, &now) == 0;
    if (ok && !is_ours(&now)) {
        ok = !bus_saved || same_handler(&now, &bus_previous);
        if (ok) {
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_sigaction = on_bus;
            sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* jumped out of: SIGBUS must not stay blocked */
            sigemptyset(&sa.sa_mask);
            ok = sigaction(SIGBUS, &sa, &bus_previous) == 0;
            bus_saved |= ok;
        }
    }
    pthread_mutex_unlock(&bus_lock);
    return ok;
}

struct bp__h5_stream {
    int fd;
    const unsigned char *map; /* the file, mapped (NULL: read with pread) */
    size_t map_len;
    int unchecked;      /* tests: the length not checked first, so that the guard must act */
    int cold;           /* rows come from the disk: pread, and the next step's asked ahead */
    off_t offset;       /* /X's first byte */
    size_t n, d, elem;  /* elem: 4 (float32) or 8 (float64), little-endian */
    bp_dataset y;       /* /y: labels and one-hot Y, or targets; X unused */
    unsigned char *row; /* one row in the file's type, when it is not bp_real */
    char path[BP__PATH_LEN];
};

static int stream_open_X(bp__h5_stream *s, hid_t file, const char *path, char *err, size_t errlen)
{
    h5_var v;
    int rc = h5_open_var(file, "/X", &v, path, err, errlen);
    hid_t type = rc == 0 ? H5Dget_type(v.id) : H5I_INVALID_HID;
    if (rc < 0)
        goto cleanup;
    if (v.rank != 2 || v.dims[0] == 0 || v.dims[1] == 0) {
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: /X must be n examples x d features, not empty",
                      path);
        goto cleanup;
    }
    rc = h5_check_storage(&v, "/X", path, err, errlen);
    if (rc < 0)
        goto cleanup;
    int f32 = type >= 0 && H5Tequal(type, H5T_IEEE_F32LE) > 0;
    int f64 = type >= 0 && H5Tequal(type, H5T_IEEE_F64LE) > 0;
    haddr_t at = H5Dget_offset(v.id);
    if (v.chunked || at == HADDR_UNDEF || (!f32 && !f64)) {
        rc = bp__fail(
            err, errlen, BP_EFORMAT,
            "%s: [data] placement = stream reads rows of /X in place, so /X must be "
            "stored contiguous and uncompressed as little-endian float32 or float64 (this "
            "one is %s); write it contiguous, as backprop convert can (bp_dataset_write_h5 "
            "with BP_WRITE_CONTIGUOUS), or with h5py's create_dataset without chunks",
            path,
            v.chunked        ? "chunked"
            : (!f32 && !f64) ? "another type"
                             : "not stored");
        goto cleanup;
    }
    s->offset = (off_t)at;
    s->n = (size_t)v.dims[0], s->d = (size_t)v.dims[1], s->elem = f32 ? 4 : 8;
cleanup:
    if (type >= 0)
        H5Tclose(type);
    if (v.id >= 0)
        H5Dclose(v.id);
    return rc;
}

static int stream_open(bp__h5_stream *s, const char *path, int classes, char *err, size_t errlen)
{
    off_t size;
    hid_t file = H5I_INVALID_HID;
    int rc = h5_open_file(path, &size, &file, err, errlen);
    if (rc < 0)
        return rc;
    rc = stream_open_X(s, file, path, err, errlen);
    if (rc == 0 && (double)s->offset + (double)s->n * (double)(s->d * s->elem) > (double)size)
        rc = bp__fail(err, errlen, BP_EFORMAT, "%s: truncated: /X runs past the end of the file",
                      path);
    s->y.n = s->n;
    if (rc == 0)
        rc = h5_read_y(file, &s->y, classes, NULL, path, err, errlen);
    H5Fclose(file);
    if (rc < 0)
        return rc;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot open: %s", path, strerror(errno));
    /* Rows are copied out of a mapping of the file, under the SIGBUS guard; where either
     * cannot be had, they are read with pread (3x the time a row here: docs/data.md). */
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, s->fd, 0);
    if (map != MAP_FAILED) {
        s->map = map, s->map_len = (size_t)size;
        /* Rows are asked for in random order: a fault reads its page, not the 128 KiB
         * around it (which, in a cgroup smaller than the file, pushes out rows still to be
         * read). */
        madvise(map, (size_t)size, MADV_RANDOM);
    }
    if (s->elem != sizeof(bp_real) && !(s->row = bp__calloc(s->d, s->elem)))
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    return 0;
}

int bp__h5_stream_open(bp__h5_stream **out, const char *path, int classes, char *err, size_t errlen)
{
    *out = NULL;
    bp__h5_stream *s = bp__calloc(1, sizeof(*s));
    if (!s)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
    s->fd = -1;
    snprintf(s->path, sizeof(s->path), "%s", path);
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = stream_open(s, path, classes, err, errlen);
    bp__h5_quiet_end(&q);
    if (rc < 0) {
        bp__h5_stream_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int bp__h5_stream_cold(const bp__h5_stream *s)
{
    return !s->map || s->cold;
}

void bp__h5_stream_sequential(bp__h5_stream *s)
{
    if (s->map)
        madvise((void *)s->map, s->map_len, MADV_SEQUENTIAL);
}

int bp__h5_stream_mapped(bp__h5_stream *s, int unchecked)
{
    s->unchecked = unchecked;
    return s->map != NULL && bus_guard();
}

void bp__h5_stream_close(bp__h5_stream *s)
{
    if (!s)
        return;
    if (s->map)
        munmap((void *)s->map, s->map_len);
    if (s->fd >= 0)
        close(s->fd);
    bp_dataset_free(&s->y);
    bp__free(s->row);
    bp__free(s);
}

void bp__h5_stream_shape(const bp__h5_stream *s, bp_dataset *shape)
{
    *shape = (bp_dataset){.n = s->n, .d = s->d, .k = s->y.k, .labels = s->y.labels};
}

/* count rows from the file's row `row` into X: bp_real rows, widened or narrowed from the
 * file's type. */
/* Row j of a block in the file's type into X's row (float32 or float64 to bp_real). */
static void widen_row(const bp__h5_stream *s, const unsigned char *src, bp_real *X)
{
    for (size_t j = 0; j < s->d; j++) {
        if (s->elem == 4) {
            float v;
            memcpy(&v, src + 4 * j, 4);
            X[j] = (bp_real)v;
        } else {
            double v;
            memcpy(&v, src + 8 * j, 8);
            X[j] = (bp_real)v;
        }
    }
}

/* The rows a mapped file still holds whole. The last page of a file cut short still maps,
 * its part past the end as zeros: the length is checked before each batch (a file cut
 * between this check and the copy faults on whole pages only, which the guard catches). */
static size_t map_rows(const bp__h5_stream *s)
{
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return s->n; /* the reads fault if it is gone */
    size_t width = s->d * s->elem;
    return st.st_size > s->offset ? (size_t)(st.st_size - s->offset) / width : 0;
}

static int cut_short(const bp__h5_stream *s, size_t row, char *err, size_t errlen)
{
    return bp__fail(err, errlen, BP_EIO,
                    "%s: cannot read row %zu of /X: the file is shorter than when it was opened",
                    s->path, row);
}

/* count rows from the mapping: a page past the file's end (cut short since it was opened)
 * raises SIGBUS, which the guard turns into this read's error. */
static int map_read(bp__h5_stream *s, size_t row, size_t count, bp_real *X, char *err,
                    size_t errlen)
{
    size_t width = s->d * s->elem;
    volatile size_t r = 0;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0)) {
        bus_jump = NULL;
        sigset_t bus;
        sigemptyset(&bus);
        sigaddset(&bus, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &bus, NULL); /* whatever path the handler came by */
        return cut_short(s, row + r, err, errlen);
    }
    bus_lo = s->map, bus_hi = s->map + s->map_len;
    bus_jump = &jump;
    atomic_signal_fence(memory_order_seq_cst);
    for (r = 0; r < count; r++) {
        const unsigned char *src = s->map + s->offset + (row + r) * width;
        if (s->elem == sizeof(bp_real))
            memcpy(X + r * s->d, src, width);
        else
            widen_row(s, src, X + r * s->d);
    }
    atomic_signal_fence(memory_order_seq_cst);
    bus_jump = NULL;
    return 0;
}

static int stream_read(bp__h5_stream *s, size_t row, size_t count, bp_real *X, int guarded,
                       char *err, size_t errlen)
{
    if (guarded)
        return map_read(s, row, count, X, err, errlen);
    size_t width = s->d * s->elem;
    for (size_t r = 0; r < count; r++) {
        unsigned char *dst = s->row ? s->row : (unsigned char *)(X + r * s->d);
        off_t at = s->offset + (off_t)((row + r) * width);
        for (size_t got = 0; got < width;) {
            ssize_t n = pread(s->fd, dst + got, width - got, at + (off_t)got);
            if (n <= 0 && !(n < 0 && errno == EINTR))
                return bp__fail(
                    err, errlen, BP_EIO, "%s: cannot read row %zu of /X: %s", s->path, row + r,
                    n == 0 ? "the file is shorter than when it was opened" : strerror(errno));
            got += n > 0 ? (size_t)n : 0;
        }
        if (s->row)
            widen_row(s, s->row, X + r * s->d);
    }
    return 0;
}

/* The rows come from the disk (a batch's copy took major faults): from now on pread, and a thread
 * that reads the next step's rows ahead (place.c). A fault on the mapping would read a page at a
 * time and, in a memory cgroup smaller than the file, evict mapped rows still to be read: 2 ranks
 * in 256 MiB cgroups trained at 70000 samples/s mapped, at 93000 with pread. */
static void to_disk(bp__h5_stream *s)
{
    if (s->map)
        munmap((void *)s->map, s->map_len);
    s->map = NULL;
    s->cold = 1;
}

/* mapped: copy out of the mapping when there is one (else pread). */
static int read_rows(bp__h5_stream *s, const size_t *rows, size_t count, size_t first, bp_real *X,
                     bp_real *Y, int *labels, int mapped, char *err, size_t errlen)
{
    size_t k = s->y.k;
    int guarded = mapped && s->map && bus_guard();
    if (guarded && !s->unchecked) {
        size_t whole = map_rows(s);
        for (size_t r = 0; r < count; r++)
            if ((rows ? rows[r] : first + r) >= whole)
                return cut_short(s, rows ? rows[r] : first + r, err, errlen);
    }
    struct rusage before, after;
    int timed = guarded && getrusage(RUSAGE_THREAD, &before) == 0;
    for (size_t r = 0; r < count; r++) {
        size_t row = rows ? rows[r] : first + r;
        /* Consecutive rows are one read. */
        size_t run = 1;
        while (r + run < count && (rows ? rows[r + run] == row + run : 1))
            run++;
        int rc = stream_read(s, row, run, X + r * s->d, guarded, err, errlen);
        /* The scan at setup saw the file then: a value written since would train (or be
         * scored) silently. The rows just copied are checked while they are in the cache. */
        if (rc == 0)
            rc = bp__check_finite_at(X + r * s->d, run, s->d, row, s->path, "/X", err, errlen);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < run; i++) {
            memcpy(Y + (r + i) * k, s->y.Y + (row + i) * k, k * sizeof(bp_real));
            if (labels && s->y.labels)
                labels[r + i] = s->y.labels[row + i];
        }
        r += run - 1;
    }
    if (guarded && !s->unchecked) {
        /* Cut inside the last page during the copy: those rows read as zeros, and the
         * length says so now (truncate shortens the file before it clears the page). */
        size_t whole = map_rows(s);
        for (size_t r = 0; r < count; r++)
            if ((rows ? rows[r] : first + r) >= whole)
                return cut_short(s, rows ? rows[r] : first + r, err, errlen);
    }
    /* From the disk: a major fault for a quarter of the rows or more (from the page cache,
     * none). */
    if (timed && !s->unchecked && getrusage(RUSAGE_THREAD, &after) == 0 &&
        (size_t)(after.ru_majflt - before.ru_majflt) * 4 > count)
        to_disk(s);
    return 0;
}

int bp__h5_stream_rows(bp__h5_stream *s, const size_t *rows, size_t count, size_t first, bp_real *X,
                       bp_real *Y, int *labels, char *err, size_t errlen)
{
    return read_rows(s, rows, count, first, X, Y, labels, 1, err, errlen);
}

int bp__h5_stream_pread(bp__h5_stream *s, const size_t *rows, size_t count, bp_real *X, bp_real *Y,
                        int *labels)
{
    return read_rows(s, rows, count, 0, X, Y, labels, 0, NULL, 0);
}

void bp__h5_stream_ahead(bp__h5_stream *s, const size_t *rows, size_t count)
{
    if (s->map && !s->cold)
        return; /* the rows come from the page cache: asking costs a call a row, for nothing */
    size_t width = s->d * s->elem;
    for (size_t r = 0; r < count; r++)
        posix_fadvise(s->fd, s->offset + (off_t)(rows[r] * width), (off_t)width,
                      POSIX_FADV_WILLNEED);
}

int bp__h5_stream_check(bp__h5_stream *s, size_t lo, size_t hi, const bp__load_opts *o, char *err,
                        size_t errlen)
{
    enum { BLOCK = 256 };
    bp_real *X = bp__calloc(bp__mul(BLOCK, s->d), sizeof(bp_real));
    if (!X)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", s->path);
    int rc = 0;
    /* With pread, whatever the mapping: a scan through the mapping would leave its pages
     * active in the page cache, ahead of the rows the steps read. */
    for (size_t r = lo; r < hi && rc == 0; r += BLOCK) {
        size_t count = hi - r < BLOCK ? hi - r : BLOCK;
        rc = stream_read(s, r, count, X, 0, err, errlen);
        if (rc == 0)
            rc = bp__check_finite_at(X, count, s->d, r, s->path, "/X", err, errlen);
        bp__load_progress(o, s->path, (double)(r + count - lo), (double)(hi - lo));
    }
    bp__free(X);
    return rc;
}

/* Chunked and deflated when the filter is there: Fashion-MNIST's mostly-zero pixels shrink
 * several times over, and chunks of about 1 MiB keep reads streaming. */
static hid_t h5_create_props(int rank, const hsize_t *dims, size_t elem, int contiguous)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0 || contiguous || H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0)
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
                        size_t rows, size_t cols, const void *data, int contiguous)
{
    hsize_t dims[2] = {rows, cols};
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = h5_create_props(rank, dims, H5Tget_size(ftype), contiguous);
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

static int write_file(const bp_dataset *ds, const char *path, int flags, char *err, size_t errlen)
{
    if (!path || !*path)
        return bp__fail(err, errlen, BP_EINVAL, "no output file given");
    if (ds->n == 0 || ds->d == 0 || ds->k == 0 || !ds->X || (!ds->labels && !ds->Y))
        return bp__fail(err, errlen, BP_EINVAL, "%s: nothing to write (the data set is empty)",
                        path);
    hid_t file = bp__h5_create(0);
    int bad = file < 0 || h5_write_var(file, "/X", H5T_IEEE_F32LE, BP__H5_REAL, 2, ds->n, ds->d,
                                       ds->X, flags & BP_WRITE_CONTIGUOUS) < 0;
    if (!bad && ds->labels)
        bad = h5_write_var(file, "/y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, ds->n, 1, ds->labels, 0);
    else if (!bad)
        bad = h5_write_var(file, "/y", H5T_IEEE_F32LE, BP__H5_REAL, 2, ds->n, ds->k, ds->Y, 0);
    if (bad) {
        bp__h5_close(file);
        return bp__fail(err, errlen, BP_ENOMEM, "%s: cannot build the HDF5 file (out of memory?)",
                        path);
    }
    return bp__h5_publish(file, path, flags & BP_WRITE_REPLACE ? BP__OUT_REPLACE : 0, err, errlen);
}

int bp_dataset_write_h5(const bp_dataset *ds, const char *path, int flags, char *err, size_t errlen)
{
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = write_file(ds, path, flags, err, errlen);
    bp__h5_quiet_end(&q);
    return rc;
}
