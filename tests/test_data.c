/* Unit tests of the data sources: HDF5 round trips and hand-written files, IDX (the real
 * Fashion-MNIST, and small files written plain and gzipped), CSV, the built-in sets, row
 * operations, and one clear error, naming the file and the problem, for each way a file
 * can be wrong. Every file lives in a per-test temporary directory. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <zlib.h>

#include "backprop/data.h"
#include "data_internal.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"

typedef struct {
    char dir[64];
    char path[4][512]; /* scratch for file names, see tmp_path */
} fixture;

static int make_tmpdir(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    strcpy(f->dir, "/tmp/test_data.XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int remove_tmpdir(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char p[600];
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* The name `name` inside the test's directory, in scratch slot `slot`. */
static const char *tmp_path(void **state, int slot, const char *name)
{
    fixture *f = *state;
    snprintf(f->path[slot], sizeof(f->path[slot]), "%s/%s", f->dir, name);
    return f->path[slot];
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void write_gzip(const char *path, const void *data, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX file in memory: magic, ndims big-endian sizes, then body. Caller frees. */
static unsigned char *idx_bytes(uint32_t magic, int ndims, const uint32_t *dims,
                                const unsigned char *body, size_t body_len, size_t *len)
{
    *len = 4 + 4 * (size_t)ndims + body_len;
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    put_be32(buf, magic);
    for (int i = 0; i < ndims; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    if (body_len)
        memcpy(buf + 4 + 4 * ndims, body, body_len);
    return buf;
}

static void write_idx(const char *path, int gzip, uint32_t magic, int ndims, const uint32_t *dims,
                      const unsigned char *body, size_t body_len)
{
    size_t len;
    unsigned char *buf = idx_bytes(magic, ndims, dims, body, body_len, &len);
    if (gzip)
        write_gzip(path, buf, len);
    else
        write_bytes(path, buf, len);
    free(buf);
}

/* One dataset of any type and shape, for hand-made (and malformed) HDF5 files. */
static void h5_put(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                   const void *data)
{
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(dset >= 0);
    assert_true(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(dset);
    H5Sclose(space);
}

/* A file with /X (n x d float64, value r + c/8 at row r, column c, or NaN at nan_at) and
 * /y (n int64 labels, label i % 3, or bad_label at row 3). ny rows of /y; ny 0: no /y. */
static void h5_file(const char *path, hsize_t n, hsize_t d, hsize_t ny, long long bad_label,
                    long nan_at)
{
    double *X = calloc(n * d, sizeof(double));
    long long *y = calloc(ny ? ny : 1, sizeof(long long));
    assert_true(X && y);
    for (hsize_t i = 0; i < n * d; i++)
        X[i] = (long)i == nan_at ? NAN : (double)(i / d) + (double)(i % d) / 8;
    for (hsize_t i = 0; i < ny; i++)
        y[i] = i == 3 && bad_label ? bad_label : (long long)(i % 3);
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(file >= 0);
    hsize_t xdims[2] = {n, d};
    h5_put(file, "/X", H5T_NATIVE_DOUBLE, 2, xdims, X);
    if (ny)
        h5_put(file, "/y", H5T_NATIVE_LLONG, 1, &ny, y);
    H5Fclose(file);
    free(X);
    free(y);
}

/* Loading must fail with code, zero *ds, and say what is wrong and with which file (who;
 * NULL: path). */
static void expect_load_error(const char *path, const char *labels, int classes, int code,
                              const char *who, const char *what)
{
    bp_dataset ds;
    char err[512] = "";
    memset(&ds, 0x5a, sizeof(ds));
    int rc = bp_dataset_load(&ds, path, labels, classes, 1, err, sizeof(err));
    if (!who)
        who = path;
    if (rc != code || !strstr(err, what) || !strstr(err, who))
        fail_msg("%s: got %d '%s', wanted %d with '%s' and '%s'", path, rc, err, code, what, who);
    assert_null(ds.X);
    assert_null(ds.Y);
    assert_null(ds.labels);
    assert_int_equal(ds.n, 0);
}

static void expect_csv_error(const char *path, int targets, int code, const char *what)
{
    bp_dataset ds;
    char err[512] = "";
    int rc = bp_dataset_load_csv(&ds, path, targets, err, sizeof(err));
    if (rc != code || !strstr(err, what) || !strstr(err, path))
        fail_msg("%s: got %d '%s', wanted %d with '%s'", path, rc, err, code, what);
    assert_null(ds.X);
}

/* A small labelled set whose values float32 holds exactly, so round trips compare equal. */
static void make_labelled(bp_dataset *ds, size_t n, size_t d, int classes)
{
    memset(ds, 0, sizeof(*ds));
    ds->n = n;
    ds->d = d;
    ds->k = (size_t)classes;
    ds->X = calloc(n * d, sizeof(bp_real));
    ds->Y = calloc(n * (size_t)classes, sizeof(bp_real));
    ds->labels = calloc(n, sizeof(int));
    assert_true(ds->X && ds->Y && ds->labels);
    for (size_t i = 0; i < n * d; i++)
        ds->X[i] = (bp_real)((double)i / 8 - 3);
    for (size_t i = 0; i < n; i++) {
        ds->labels[i] = (int)((i * 7) % (size_t)classes);
        ds->Y[i * (size_t)classes + (size_t)ds->labels[i]] = 1;
    }
}

static void free_made(bp_dataset *ds)
{
    free(ds->X);
    free(ds->Y);
    free(ds->labels);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* ---- HDF5 ---- */

static void test_h5_roundtrip_labels(void **state)
{
    bp_dataset src, ds;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "labels.h5");
    make_labelled(&src, 13, 5, 4);
    write_text(path, "an older file that the write must replace");
    assert_int_equal(bp_dataset_write_h5(&src, path, 1, err, sizeof(err)), 0);
    assert_int_equal(count_files(((fixture *)*state)->dir), 1); /* no temporary file left */
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 4, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 13);
    assert_int_equal(ds.d, 5);
    assert_int_equal(ds.k, 4);
    assert_non_null(ds.labels);
    assert_memory_equal(ds.X, src.X, 13 * 5 * sizeof(bp_real));
    assert_memory_equal(ds.Y, src.Y, 13 * 4 * sizeof(bp_real));
    assert_memory_equal(ds.labels, src.labels, 13 * sizeof(int));
    bp_dataset_free(&ds);
    /* classes 0 infers the largest label + 1; a wider network pads the one-hot rows. */
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 0, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.k, 4);
    bp_dataset_free(&ds);
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 6, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.k, 6);
    assert_true(ds.Y[1 * 6 + 3] == 1); /* row 1: label 7 % 4 = 3 */
    bp_dataset_free(&ds);
    free_made(&src);
}

static void test_h5_roundtrip_targets(void **state)
{
    bp_dataset src = {0}, ds;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "targets.h5");
    bp_real X[] = {0.5, -1.25, 2, 3, 4.75, -0.125, 1e-3f, 7};
    bp_real Y[] = {1, 2, 3, -4, 5.5, 6, 0.25, 0, -1, 9, 10, 11};
    src.n = 4, src.d = 2, src.k = 3, src.X = X, src.Y = Y;
    assert_int_equal(bp_dataset_write_h5(&src, path, 1, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 3, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 4);
    assert_int_equal(ds.d, 2);
    assert_int_equal(ds.k, 3);
    assert_null(ds.labels);
    assert_memory_equal(ds.X, X, sizeof(X));
    assert_memory_equal(ds.Y, Y, sizeof(Y));
    bp_dataset_free(&ds);
}

static void test_h5_float64_and_rank1_targets(void **state)
{
    bp_dataset ds;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "f64.h5");
    h5_file(path, 6, 3, 6, 0, -1);
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 3, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 6);
    assert_int_equal(ds.d, 3);
    assert_true(ds.X[4 * 3 + 2] == (bp_real)(4 + 2.0 / 8));
    assert_int_equal(ds.labels[5], 2);
    bp_dataset_free(&ds);

    /* Float /y of rank 1: one target column. */
    const char *p2 = tmp_path(state, 1, "rank1.h5");
    double X[] = {0.1, 0.2, 0.3}, y[] = {1.5, -2.5, 3.25};
    hsize_t xd[2] = {3, 1}, yd = 3;
    hid_t file = H5Fcreate(p2, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    h5_put(file, "/X", H5T_NATIVE_DOUBLE, 2, xd, X);
    h5_put(file, "/y", H5T_NATIVE_DOUBLE, 1, &yd, y);
    H5Fclose(file);
    assert_int_equal(bp_dataset_load(&ds, p2, NULL, 0, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.k, 1);
    assert_null(ds.labels);
    assert_true(ds.X[0] == (bp_real)0.1);
    assert_true(ds.Y[2] == (bp_real)3.25);
    bp_dataset_free(&ds);
}

static void test_h5_errors(void **state)
{
    const char *p = tmp_path(state, 0, "bad.h5");
    expect_load_error(p, NULL, 3, BP_EIO, NULL, "no such file");
    write_text(p, "not hdf5 at all\n");
    expect_load_error(p, NULL, 3, BP_EFORMAT, NULL, "not an HDF5 file");
    h5_file(p, 6, 2, 0, 0, -1);
    expect_load_error(p, NULL, 3, BP_EFORMAT, NULL, "no dataset /y");
    h5_file(p, 6, 2, 5, 0, -1);
    expect_load_error(p, NULL, 3, BP_EFORMAT, NULL, "/y has 5 rows but /X has 6");
    h5_file(p, 6, 2, 6, 12, -1);
    expect_load_error(p, NULL, 10, BP_EMISMATCH, NULL, "label 12 at row 3 is outside 0..9");
    h5_file(p, 6, 2, 6, -1, -1);
    expect_load_error(p, NULL, 10, BP_EFORMAT, NULL, "label -1 at row 3 is negative");
    h5_file(p, 6, 2, 6, 5000000000LL, -1);
    expect_load_error(p, NULL, 0, BP_EFORMAT, NULL, "label 5000000000 at row 3 is out of range");
    h5_file(p, 6, 2, 6, 70000, -1);
    expect_load_error(p, NULL, 0, BP_EFORMAT, NULL, "label 70000 would mean more than 65536");
    h5_file(p, 6, 5, 6, 0, 5 * 3 + 4);
    expect_load_error(p, NULL, 3, BP_EFORMAT, NULL, "/X row 3 column 4 is NaN");
    expect_load_error(p, "labels.idx", 3, BP_EINVAL, NULL, "only goes with IDX images");
}

/* Files that are HDF5 but not our layout: no /X, string /y, 3-d /X, 2-d integer /y,
 * infinite targets, and a file cut in half. */
static void test_h5_malformed(void **state)
{
    const char *p = tmp_path(state, 0, "odd.h5");
    char strs[2][4] = {"abc", "def"};
    double X[8] = {0}, Y[2] = {1, INFINITY};
    int lab[2] = {0, 1};
    hsize_t d2[2] = {2, 4}, d3[3] = {2, 2, 2}, n = 2, l2[2] = {2, 1};
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 4);
    struct {
        const char *what;
        int code;
    } cases[] = {{"no dataset /X", BP_EFORMAT},
                 {"/y holds string values", BP_EFORMAT},
                 {"/X has rank 3", BP_EFORMAT},
                 {"/y holds integer values of rank 2", BP_EFORMAT},
                 {"/y row 1 column 0 is infinite", BP_EFORMAT}};
    for (int c = 0; c < 5; c++) {
        hid_t file = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        if (c != 0)
            h5_put(file, "/X", H5T_NATIVE_DOUBLE, c == 2 ? 3 : 2, c == 2 ? d3 : d2, X);
        if (c == 1)
            h5_put(file, "/y", str, 1, &n, strs);
        else if (c == 3)
            h5_put(file, "/y", H5T_NATIVE_INT, 2, l2, lab);
        else
            h5_put(file, "/y", H5T_NATIVE_DOUBLE, 1, &n, Y);
        H5Fclose(file);
        expect_load_error(p, NULL, 2, cases[c].code, NULL, cases[c].what);
    }
    H5Tclose(str);

    bp_dataset big;
    char err[512];
    make_labelled(&big, 2000, 30, 3);
    assert_int_equal(bp_dataset_write_h5(&big, p, 1, err, sizeof(err)), 0);
    free_made(&big);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(truncate(p, st.st_size / 2), 0);
    bp_dataset ds;
    int rc = bp_dataset_load(&ds, p, NULL, 3, 0, err, sizeof(err));
    assert_true(rc == BP_EFORMAT || rc == BP_EIO);
    assert_non_null(strstr(err, p));
    assert_non_null(strstr(err, "truncated"));
}

/* Datasets created but not (fully) written would read as fill values: refused. */
static void test_h5_unwritten(void **state)
{
    const char *p = tmp_path(state, 0, "unwritten.h5");
    double X[4] = {1, 2, 3, 4};
    hsize_t dims[2] = {4, 1}, chunk[2] = {2, 1}, start[2] = {0, 0}, n = 4;
    for (int chunked = 0; chunked < 2; chunked++) {
        hid_t file = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        if (chunked)
            H5Pset_chunk(dcpl, 2, chunk);
        hid_t dset =
            H5Dcreate2(file, "/X", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (chunked) { /* the first of two chunks only */
            hid_t mem = H5Screate_simple(2, chunk, NULL);
            H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, chunk, NULL);
            assert_true(H5Dwrite(dset, H5T_NATIVE_DOUBLE, mem, space, H5P_DEFAULT, X) >= 0);
            H5Sclose(mem);
        }
        H5Dclose(dset);
        H5Pclose(dcpl);
        H5Sclose(space);
        h5_put(file, "/y", H5T_NATIVE_DOUBLE, 1, &n, X);
        H5Fclose(file);
        expect_load_error(p, NULL, 1, BP_EFORMAT, NULL, "/X is incomplete");
    }
}

static void test_write_errors(void **state)
{
    bp_dataset src, empty = {0};
    char err[512] = "";
    make_labelled(&src, 3, 2, 2);
    const char *p = tmp_path(state, 0, "no-such-dir/out.h5");
    assert_int_equal(bp_dataset_write_h5(&src, p, 1, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, p));
    assert_non_null(strstr(err, "No such file or directory"));
    const char *q = tmp_path(state, 1, "empty.h5");
    assert_int_equal(bp_dataset_write_h5(&empty, q, 1, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(count_files(((fixture *)*state)->dir), 0);
    free_made(&src);
}

/* ---- IDX ---- */

/* Expected values were read independently once with python3's gzip module:
 *   lb = gzip.open('train-labels-idx1-ubyte.gz').read()[8:]
 *   im = gzip.open('train-images-idx3-ubyte.gz').read()[16:]
 *   list(lb[:10]) -> [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]; lb.count(c) -> 6000 for each c
 *   sum(im[:784]) -> 76247; list(im[300:305]) -> [210, 211, 213, 223, 220]
 *   sum(im[-784:]) -> 16684 (the last image) */
static void test_idx_fashion_mnist(void **state)
{
    (void)state;
    struct stat st;
    if (stat(FMNIST "train-images-idx3-ubyte.gz", &st) != 0)
        skip(); /* package dataset-fashion-mnist not installed */
    bp_dataset ds;
    char err[512] = "";
    int rc = bp_dataset_load(&ds, FMNIST "train-images-idx3-ubyte.gz",
                             FMNIST "train-labels-idx1-ubyte.gz", 10, 0, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s", err);
    assert_int_equal(ds.n, 60000);
    assert_int_equal(ds.d, 784);
    assert_int_equal(ds.k, 10);
    const int first[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    assert_memory_equal(ds.labels, first, sizeof(first));
    size_t count[10] = {0};
    for (size_t i = 0; i < ds.n; i++) {
        assert_in_range(ds.labels[i], 0, 9);
        assert_true(ds.Y[i * 10 + (size_t)ds.labels[i]] == 1);
        count[ds.labels[i]]++;
    }
    for (int c = 0; c < 10; c++)
        assert_int_equal(count[c], 6000);
    const int px[5] = {210, 211, 213, 223, 220};
    for (int j = 0; j < 5; j++)
        assert_true(ds.X[300 + j] == (bp_real)(px[j] / 255.0));
    double first_sum = 0, last_sum = 0, lo = 1, hi = 0;
    for (size_t j = 0; j < 784; j++) {
        first_sum += ds.X[j] * 255.0;
        last_sum += ds.X[(ds.n - 1) * 784 + j] * 255.0;
    }
    for (size_t i = 0; i < ds.n * ds.d; i++) {
        lo = ds.X[i] < lo ? ds.X[i] : lo;
        hi = ds.X[i] > hi ? ds.X[i] : hi;
    }
    assert_float_equal(first_sum, 76247, 0.01);
    assert_float_equal(last_sum, 16684, 0.01);
    assert_true(lo == 0 && hi == 1);
    bp_dataset_free(&ds);
}

static void test_idx_gzip_equals_plain(void **state)
{
    const unsigned char pixels[3 * 2 * 3] = {0,   1,  2,  3, 4, 5, 255, 254, 128,
                                             127, 64, 32, 9, 8, 7, 6,   5,   250};
    const unsigned char labels[3] = {2, 0, 1};
    const uint32_t idims[3] = {3, 2, 3}, ldims[1] = {3};
    const char *img[2] = {tmp_path(state, 0, "img"), tmp_path(state, 1, "img.gz")};
    const char *lab[2] = {tmp_path(state, 2, "lab"), tmp_path(state, 3, "lab.gz")};
    bp_dataset ds[2];
    char err[512] = "";
    for (int gz = 0; gz < 2; gz++) {
        write_idx(img[gz], gz, 0x803, 3, idims, pixels, sizeof(pixels));
        write_idx(lab[gz], gz, 0x801, 1, ldims, labels, sizeof(labels));
    }
    /* The gzip file really is compressed, not a copy of the plain one. */
    struct stat a, b;
    assert_int_equal(stat(img[0], &a), 0);
    assert_int_equal(stat(img[1], &b), 0);
    assert_true(a.st_size != b.st_size);
    /* gzip pixels with plain labels and the other way round: the content decides. */
    assert_int_equal(bp_dataset_load(&ds[0], img[0], lab[1], 0, 0, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&ds[1], img[1], lab[0], 0, 0, err, sizeof(err)), 0);
    assert_int_equal(ds[0].n, 3);
    assert_int_equal(ds[0].d, 6);
    assert_int_equal(ds[0].k, 3);
    for (size_t i = 0; i < sizeof(pixels); i++)
        assert_true(ds[0].X[i] == (bp_real)(pixels[i] / 255.0));
    assert_memory_equal(ds[0].X, ds[1].X, sizeof(pixels) * sizeof(bp_real));
    assert_memory_equal(ds[0].Y, ds[1].Y, 9 * sizeof(bp_real));
    assert_memory_equal(ds[0].labels, ds[1].labels, 3 * sizeof(int));
    assert_int_equal(ds[1].labels[0], 2);
    bp_dataset_free(&ds[0]);
    bp_dataset_free(&ds[1]);
}

static void test_idx_errors(void **state)
{
    unsigned char body[50 * 28 * 28];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(i * 2654435761u >> 13); /* poorly compressible */
    const uint32_t idims[3] = {50, 28, 28}, short_dims[3] = {60, 28, 28}, ldims[1] = {50};
    const uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu}, none[3] = {0, 28, 28};
    const char *img = tmp_path(state, 0, "images.gz");
    const char *lab = tmp_path(state, 1, "labels");
    const char *bad = tmp_path(state, 2, "bad");
    write_idx(img, 1, 0x803, 3, idims, body, sizeof(body));
    write_idx(lab, 0, 0x801, 1, ldims, body, 50); /* labels up to 255 */

    /* Without labels, what the file is comes first; the message names no option or key
     * (which one gives the labels is the caller's to say). */
    expect_load_error(img, NULL, 10, BP_EINVAL, NULL,
                      "images.gz: IDX images need their labels (an IDX labels file), and none "
                      "was given");
    expect_load_error(bad, NULL, 10, BP_EIO, NULL, "no such file");
    expect_load_error(((fixture *)*state)->dir, NULL, 10, BP_EIO, NULL,
                      "is a directory, not a file");
    write_text(bad, "x1,x2,label\n1,2,0\n");
    expect_load_error(bad, NULL, 10, BP_EFORMAT, NULL,
                      "not an IDX image file (magic 0x78312c78); it begins with text");
    unlink(bad);
    expect_load_error(bad, lab, 10, BP_EIO, NULL, "no such file");
    expect_load_error(img, bad, 10, BP_EIO, bad, "no such file");
    expect_load_error(lab, lab, 10, BP_EFORMAT, NULL, "not an IDX image file (magic 0x00000801)");
    expect_load_error(img, img, 10, BP_EFORMAT, img, "not an IDX label file (magic 0x00000803)");
    expect_load_error(img, lab, 10, BP_EMISMATCH, lab, "is outside 0..9");
    write_idx(bad, 0, 0x803, 3, short_dims, body, sizeof(body)); /* plain, 10 images short */
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "truncated");
    write_idx(bad, 1, 0x803, 3, short_dims, body, sizeof(body)); /* gzip, 10 images short */
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL,
                      "truncated: only 39200 of the 47040 pixel bytes");
    write_idx(bad, 0, 0x803, 3, huge, body, 16);
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "too many");
    write_idx(bad, 0, 0x803, 3, none, NULL, 0);
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "no images");
    write_idx(bad, 0, 0x801, 1, (const uint32_t[]){49}, body, 49);
    expect_load_error(img, bad, 0, BP_EFORMAT, bad, "has 49 labels but");
    write_text(bad, "ab");
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "not an IDX image file (only 2 bytes)");

    /* A gzip stream cut short, then damaged in the middle. */
    FILE *fp = fopen(img, "rb");
    unsigned char gz[60000];
    size_t len = fread(gz, 1, sizeof(gz), fp);
    fclose(fp);
    write_bytes(bad, gz, len / 2);
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "truncated");
    memset(gz + 100, 0xff, 64);
    write_bytes(bad, gz, len);
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "damaged gzip data");
    /* Uncompressed (stored) gzip: a flipped byte decodes fine and only the CRC catches it. */
    gzFile g = gzopen(bad, "wb0");
    size_t raw_len;
    unsigned char *raw = idx_bytes(0x803, 3, idims, body, sizeof(body), &raw_len);
    assert_int_equal(gzwrite(g, raw, (unsigned)raw_len), (int)raw_len);
    assert_int_equal(gzclose(g), Z_OK);
    free(raw);
    fp = fopen(bad, "r+b");
    assert_int_equal(fseek(fp, 1000, SEEK_SET), 0);
    int byte = fgetc(fp);
    assert_int_equal(fseek(fp, 1000, SEEK_SET), 0);
    assert_int_equal(fputc(byte ^ 0xff, fp), byte ^ 0xff);
    fclose(fp);
    expect_load_error(bad, lab, 0, BP_EFORMAT, NULL, "incorrect data check");
}

/* An HDF5 file under a name without .h5 is read as IDX; the message says what it is. */
static void test_idx_hint_for_hdf5(void **state)
{
    const char *p = tmp_path(state, 0, "data.bin");
    h5_file(p, 2, 2, 2, 0, -1);
    expect_load_error(p, p, 0, BP_EFORMAT, NULL, "give it a .h5 name");
}

/* ---- built-in sets ---- */

static void test_builtin_xor(void **state)
{
    (void)state;
    bp_dataset ds;
    char err[512] = "";
    const bp_real X01[] = {0, 0, 0, 1, 1, 0, 1, 1}, Y01[] = {0, 1, 1, 0};
    const bp_real Xpm[] = {1, 1, -1, 1, 1, -1, -1, -1}, Ypm[] = {1, 0, 0, 1};
    assert_int_equal(bp_dataset_load(&ds, "builtin:xor", NULL, 1, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 4);
    assert_int_equal(ds.d, 2);
    assert_int_equal(ds.k, 1);
    assert_null(ds.labels);
    assert_memory_equal(ds.X, X01, sizeof(X01));
    assert_memory_equal(ds.Y, Y01, sizeof(Y01));
    bp_dataset_free(&ds);
    assert_int_equal(bp_dataset_load(&ds, "builtin:xor_signed", "", 1, 0, err, sizeof(err)), 0);
    assert_memory_equal(ds.X, Xpm, sizeof(Xpm));
    assert_memory_equal(ds.Y, Ypm, sizeof(Ypm));
    bp_dataset_free(&ds);
    expect_load_error("builtin:foo", NULL, 1, BP_EINVAL, NULL,
                      "known: builtin:xor, builtin:xor_signed, builtin:line");
    expect_load_error("builtin:xor", "labels", 1, BP_EINVAL, NULL, "only goes with IDX images");
}

static void test_builtin_line(void **state)
{
    (void)state;
    bp_dataset a, b, c;
    char err[512] = "";
    assert_int_equal(bp_dataset_load(&a, "builtin:line", NULL, 1, 7, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&b, "builtin:line", NULL, 1, 7, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&c, "builtin:line", NULL, 1, 8, err, sizeof(err)), 0);
    assert_int_equal(a.n, 1000);
    assert_int_equal(a.d, 1);
    assert_int_equal(a.k, 1);
    assert_memory_equal(a.X, b.X, 1000 * sizeof(bp_real));
    assert_memory_equal(a.Y, b.Y, 1000 * sizeof(bp_real));
    assert_memory_not_equal(a.X, c.X, 1000 * sizeof(bp_real));
    /* Least squares through the points recovers y = 4 + 3x within a few standard errors
     * (0.3 / sqrt(1000 / 3) ~ 0.016 for the slope). */
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < a.n; i++) {
        assert_true(a.X[i] >= 0 && a.X[i] < 2);
        sx += a.X[i], sy += a.Y[i], sxx += a.X[i] * a.X[i], sxy += a.X[i] * a.Y[i];
    }
    double slope = (sxy - sx * sy / 1000) / (sxx - sx * sx / 1000);
    double icept = (sy - slope * sx) / 1000;
    assert_float_equal(slope, 3.0, 0.08);
    assert_float_equal(icept, 4.0, 0.1);
    bp_dataset_free(&a);
    bp_dataset_free(&b);
    bp_dataset_free(&c);
}

/* ---- row operations and checks ---- */

static void test_split_and_limit(void **state)
{
    (void)state;
    bp_dataset ds, tail, made;
    char err[512] = "";
    make_labelled(&made, 10, 3, 4);
    const char *p = tmp_path(state, 0, "split.h5");
    assert_int_equal(bp_dataset_write_h5(&made, p, 1, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&ds, p, NULL, 4, 0, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_split(&ds, 11, &tail), BP_EINVAL);
    assert_int_equal(ds.n, 10);
    assert_null(tail.X);
    assert_int_equal(bp_dataset_split(&ds, 7, &tail), 0);
    assert_int_equal(ds.n, 7);
    assert_int_equal(tail.n, 3);
    assert_int_equal(tail.d, 3);
    assert_int_equal(tail.k, 4);
    assert_memory_equal(ds.X, made.X, 7 * 3 * sizeof(bp_real));
    assert_memory_equal(tail.X, made.X + 7 * 3, 3 * 3 * sizeof(bp_real));
    assert_memory_equal(tail.Y, made.Y + 7 * 4, 3 * 4 * sizeof(bp_real));
    assert_memory_equal(tail.labels, made.labels + 7, 3 * sizeof(int));
    bp_dataset_limit(&ds, 0);
    assert_int_equal(ds.n, 7);
    bp_dataset_limit(&ds, 100);
    assert_int_equal(ds.n, 7);
    bp_dataset_limit(&ds, 5);
    assert_int_equal(ds.n, 5);
    assert_memory_equal(ds.labels, made.labels, 5 * sizeof(int));
    bp_dataset_free(&tail);
    /* Targets, no labels: the tail has none either. */
    bp_dataset line;
    assert_int_equal(bp_dataset_load(&line, "builtin:line", NULL, 1, 3, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_split(&line, 900, &tail), 0);
    assert_int_equal(tail.n, 100);
    assert_null(tail.labels);
    assert_true(tail.Y[0] == line.Y[900]);
    bp_dataset_free(&tail);
    bp_dataset_free(&line);
    bp_dataset_free(&ds);
    free_made(&made);
}

static void test_check(void **state)
{
    (void)state;
    bp_dataset ds = {0};
    char err[512] = "";
    int labels[1] = {0};
    ds.n = 1, ds.d = 784, ds.k = 10, ds.labels = labels;
    assert_int_equal(bp_dataset_check(&ds, 784, 10, "data/x.h5", err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_check(&ds, 100, 10, "data/x.h5", err, sizeof(err)), BP_EMISMATCH);
    assert_string_equal(err, "data/x.h5: /X has 784 columns but the network has 100 inputs");
    assert_int_equal(bp_dataset_check(&ds, 784, 5, "t10k-images.gz", err, sizeof(err)),
                     BP_EMISMATCH);
    assert_string_equal(err, "t10k-images.gz: labels span 10 classes but the network has 5 "
                             "outputs");
    ds.labels = NULL, ds.k = 2;
    assert_int_equal(bp_dataset_check(&ds, 784, 1, "y.h5", err, sizeof(err)), BP_EMISMATCH);
    assert_string_equal(err, "y.h5: /y has 2 columns but the network has 1 outputs");
    assert_int_equal(bp_dataset_check(&ds, 3, 2, "builtin:line", err, sizeof(err)), BP_EMISMATCH);
    assert_non_null(strstr(err, "builtin:line: examples have 784 features"));
}

/* ---- CSV ---- */

static void test_csv_labels_and_targets(void **state)
{
    bp_dataset ds;
    char err[512] = "";
    const char *p = tmp_path(state, 0, "a.csv");
    write_text(p, "x1,x2,label\r\n0.5, -1 ,2\r\n\r\n3,4e-1,0\r\n7,8,1");
    assert_int_equal(bp_dataset_load_csv(&ds, p, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.d, 2);
    assert_int_equal(ds.k, 3);
    const bp_real X[] = {0.5, -1, 3, (bp_real)0.4, 7, 8};
    const int labels[] = {2, 0, 1};
    const bp_real Y[] = {0, 0, 1, 1, 0, 0, 0, 1, 0};
    assert_memory_equal(ds.X, X, sizeof(X));
    assert_memory_equal(ds.labels, labels, sizeof(labels));
    assert_memory_equal(ds.Y, Y, sizeof(Y));
    bp_dataset_free(&ds);
    /* No header, two target columns. */
    write_text(p, "1,2,3,4\n5,6,7,8\n");
    assert_int_equal(bp_dataset_load_csv(&ds, p, 2, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.d, 2);
    assert_int_equal(ds.k, 2);
    assert_null(ds.labels);
    assert_true(ds.X[2] == 5 && ds.Y[0] == 3 && ds.Y[3] == 8);
    bp_dataset_free(&ds);
}

static void test_csv_errors(void **state)
{
    const char *p = tmp_path(state, 0, "bad.csv");
    expect_csv_error(p, 0, BP_EIO, "no such file");
    write_text(p, "a,b,c\n1,2,3\n4,5\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 3 has 2 fields but line 2 has 3");
    write_text(p, "1,2,3\n4,abc,5\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 2 column 2: 'abc' is not a number");
    write_text(p, "1,2,3\n4,,5\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 2 column 2 is empty");
    write_text(p, "1,2,3\n4,5,2.5\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 2: label 2.5 is not a class number");
    write_text(p, "1,2,-1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1: label -1 is not a class number");
    write_text(p, "1,2,3\n4,nan,5\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 2 column 2 is NaN");
    write_text(p, "1,2,3\n4,1e999,5\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 2 column 2 is infinite");
    write_text(p, "x,y\n\n");
    expect_csv_error(p, 0, BP_EFORMAT, "no data rows");
    write_text(p, "1,2\n");
    expect_csv_error(p, 2, BP_EFORMAT, "leave no features");
}

/* The header rule (data_csv.c, docs/data.md): the first line is a header only when none
 * of its fields is a number and one is a name. A first row with a quoted number, or of
 * empty or NA fields alone, is data, loaded or refused with its reason, never dropped; a
 * header is as wide as the rows; lines may end in a lone \r. */
static void test_csv_header_rule(void **state)
{
    bp_dataset ds;
    char err[512] = "";
    const char *p = tmp_path(state, 0, "h.csv");
    write_text(p, "\"1\",2,3,0\n4,5,6,1\n");
    assert_int_equal(bp_dataset_load_csv(&ds, p, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 2);
    const bp_real X[] = {1, 2, 3, 4, 5, 6};
    assert_memory_equal(ds.X, X, sizeof(X));
    bp_dataset_free(&ds);
    /* Quoted names are a header; the quoted numbers under them are data. */
    write_text(p, "\"a\", \"b\",\"c\",\"label\"\r\"1\",\" 2 \",3,\"0\"\r4,5,6,1\r");
    assert_int_equal(bp_dataset_load_csv(&ds, p, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 2);
    assert_memory_equal(ds.X, X, sizeof(X));
    assert_true(ds.labels[0] == 0 && ds.labels[1] == 1);
    bp_dataset_free(&ds);
    /* A lone \r ends a line (old Mac exports), and \r\n is still one line end. */
    write_text(p, "1,2,3,0\r4,5,6,1\r\n\r\n");
    assert_int_equal(bp_dataset_load_csv(&ds, p, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 2);
    assert_memory_equal(ds.X, X, sizeof(X));
    bp_dataset_free(&ds);
    write_text(p, ",2,3,0\n4,5,6,1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1 column 1 is empty");
    write_text(p, "NA,2,3,0\n4,5,6,1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1 column 1: 'NA' is not a number");
    write_text(p, "1 2,3,4,0\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1 column 1: '1 2' is not a number");
    /* Missing values alone name no column: data, not a header. */
    write_text(p, "NA,NA,NA,NA\n4,5,6,1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1 column 1: 'NA' is not a number");
    write_text(p, ",,,\n4,5,6,1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1 column 1 is empty");
    write_text(p, "n/a,\"NULL\", none ,?\n4,5,6,1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 1 column 1: 'n/a' is not a number");
    /* One name among them makes a header (pandas writes an empty one over its index). */
    write_text(p, ",x2,NA,label\n1,2,3,0\n");
    assert_int_equal(bp_dataset_load_csv(&ds, p, 0, err, sizeof(err)), 0);
    assert_int_equal(ds.n, 1);
    assert_memory_equal(ds.X, X, 3 * sizeof(bp_real));
    bp_dataset_free(&ds);
    /* A header as wide as its rows, or refused with both lines. */
    write_text(p, "x1,x2,label\n\n1,2,3,0\n4,5,6,1\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 3 has 4 fields but the header, line 1, has 3");
    write_text(p, "x1,x2,label\n");
    expect_csv_error(p, 0, BP_EFORMAT,
                     "no data rows (line 1 has no number in it: it is the header)");
    /* Only the first line can be a header. */
    write_text(p, "x1,x2,label\n1,2,0\ny1,y2,label\n");
    expect_csv_error(p, 0, BP_EFORMAT, "line 3 column 1: 'y1' is not a number");
}

/* ---- rows read in place ([data] placement = stream) ---- */

static void test_stream_rows(void **state)
{
    bp_dataset src, ds, shape;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "plain.h5"), *chunked = tmp_path(state, 1, "c.h5");
    make_labelled(&src, 40, 3, 5);
    assert_int_equal(bp_dataset_write_h5(&src, path, BP_WRITE_CONTIGUOUS, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 5, 0, err, sizeof(err)), 0);
    bp__h5_stream *s;
    assert_int_equal(bp__h5_stream_open(&s, path, 5, err, sizeof(err)), 0);
    bp__h5_stream_shape(s, &shape);
    assert_int_equal(shape.n, 40);
    assert_int_equal(shape.d, 3);
    assert_int_equal(shape.k, 5);
    assert_null(shape.X);
    assert_memory_equal(shape.labels, ds.labels, 40 * sizeof(int));
    /* Scattered rows (with a run of two, read at once), then a range: as loaded. */
    size_t rows[] = {31, 2, 3, 39, 0};
    bp_real X[5 * 3], Y[5 * 5];
    int L[5];
    assert_int_equal(bp__h5_stream_rows(s, rows, 5, 0, X, Y, L, err, sizeof(err)), 0);
    for (int i = 0; i < 5; i++) {
        assert_memory_equal(X + 3 * i, ds.X + 3 * rows[i], 3 * sizeof(bp_real));
        assert_memory_equal(Y + 5 * i, ds.Y + 5 * rows[i], 5 * sizeof(bp_real));
        assert_int_equal(L[i], ds.labels[rows[i]]);
    }
    assert_int_equal(bp__h5_stream_rows(s, NULL, 4, 17, X, Y, NULL, err, sizeof(err)), 0);
    assert_memory_equal(X, ds.X + 3 * 17, 4 * 3 * sizeof(bp_real));
    assert_int_equal(bp__h5_stream_check(s, 0, 40, NULL, err, sizeof(err)), 0);
    /* Cut short after opening: the read says which row and why. */
    assert_int_equal(truncate(path, 300), 0);
    assert_int_equal(bp__h5_stream_rows(s, rows, 5, 0, X, Y, L, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "plain.h5: cannot read row 31 of /X: the file is shorter than "
                                "when it was opened"));
    bp__h5_stream_close(s);
    /* Cut short before: refused on opening. */
    assert_int_equal(bp__h5_stream_open(&s, path, 5, err, sizeof(err)), BP_EFORMAT);
    assert_null(s);
    /* Chunked and compressed: refused, with the way out. */
    assert_int_equal(bp_dataset_write_h5(&src, chunked, 0, err, sizeof(err)), 0);
    assert_int_equal(bp__h5_stream_open(&s, chunked, 5, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "must be stored contiguous and uncompressed"));
    assert_non_null(strstr(err, "(this one is chunked)"));
    /* A NaN past the first block names its row in the file. */
    free_made(&src);
    make_labelled(&src, 600, 2, 3);
    src.X[2 * 517 + 1] = NAN;
    assert_int_equal(
        bp_dataset_write_h5(&src, path, BP_WRITE_REPLACE | BP_WRITE_CONTIGUOUS, err, sizeof(err)),
        0);
    assert_int_equal(bp__h5_stream_open(&s, path, 3, err, sizeof(err)), 0);
    assert_int_equal(bp__h5_stream_check(s, 0, 500, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp__h5_stream_check(s, 500, 600, NULL, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "/X row 517 column 1 is NaN"));
    bp__h5_stream_close(s);
    bp_dataset_free(&ds);
    free_made(&src);
}

/* A mapped file cut short by whole pages: the read that faults (SIGBUS) is an error, and the
 * process goes on. */
static void test_stream_sigbus(void **state)
{
    bp_dataset src;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "bus.h5");
    make_labelled(&src, 3000, 4, 3); /* /X: 48000 bytes, 12 pages */
    assert_int_equal(bp_dataset_write_h5(&src, path, BP_WRITE_CONTIGUOUS, err, sizeof(err)), 0);
    bp__h5_stream *s;
    assert_int_equal(bp__h5_stream_open(&s, path, 3, err, sizeof(err)), 0);
    assert_true(bp__h5_stream_mapped(s, 1));
    bp_real X[4 * 2], Y[3 * 2];
    size_t rows[] = {3, 2900};
    assert_int_equal(bp__h5_stream_rows(s, rows, 2, 0, X, Y, NULL, err, sizeof(err)), 0);
    assert_memory_equal(X + 4, src.X + 4 * 2900, 4 * sizeof(bp_real));
    assert_int_equal(truncate(path, 8192), 0); /* row 2900 is pages past the end now */
    assert_true(bp__h5_stream_mapped(s, 1));   /* still mapped: the guard, not pread, acts */
    assert_int_equal(bp__h5_stream_rows(s, rows, 2, 0, X, Y, NULL, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "bus.h5: cannot read row 2900 of /X: the file is shorter"));
    /* the rows before the cut still read, through the mapping */
    assert_true(bp__h5_stream_mapped(s, 1));
    assert_int_equal(bp__h5_stream_rows(s, rows, 1, 0, X, Y, NULL, err, sizeof(err)), 0);
    assert_memory_equal(X, src.X + 4 * 3, 4 * sizeof(bp_real));
    /* and again, checked before the copy this time */
    assert_true(bp__h5_stream_mapped(s, 0));
    assert_int_equal(bp__h5_stream_rows(s, rows, 2, 0, X, Y, NULL, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "cannot read row 2900 of /X"));
    bp__h5_stream_close(s);
    free_made(&src);
}

/* node placement decodes /X straight into the shared window: bp__load_opts.X. */
static void test_load_into(void **state)
{
    bp_dataset src, ds, own;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "into.h5"), *bad = tmp_path(state, 1, "bad.h5");
    make_labelled(&src, 30, 4, 3);
    assert_int_equal(bp_dataset_write_h5(&src, path, 0, err, sizeof(err)), 0);
    assert_int_equal(bp_dataset_load(&own, path, NULL, 3, 0, err, sizeof(err)), 0);
    bp_real *X = calloc(30 * 4, sizeof(bp_real));
    assert_non_null(X);
    bp__load_opts into = {.X = X, .X_len = 30 * 4}, other = {.X = X, .X_len = 29 * 4};
    assert_int_equal(bp__dataset_load_with(&ds, path, NULL, 3, 0, &into, err, sizeof(err)), 0);
    assert_ptr_equal(ds.X, X);
    assert_memory_equal(X, own.X, 30 * 4 * sizeof(bp_real));
    assert_memory_equal(ds.labels, own.labels, 30 * sizeof(int));
    ds.X = NULL; /* ours */
    bp_dataset_free(&ds);
    /* Another size: memory of its own. */
    assert_int_equal(bp__dataset_load_with(&ds, path, NULL, 3, 0, &other, err, sizeof(err)), 0);
    assert_true(ds.X != X);
    assert_memory_equal(ds.X, own.X, 30 * 4 * sizeof(bp_real));
    bp_dataset_free(&ds);
    /* A file refused after /X was read into X: X stays the caller's (ASan checks the free). */
    src.labels[5] = 9;
    assert_int_equal(bp_dataset_write_h5(&src, bad, 0, err, sizeof(err)), 0);
    assert_int_equal(bp__dataset_load_with(&ds, bad, NULL, 3, 0, &into, err, sizeof(err)),
                     BP_EMISMATCH);
    assert_null(ds.X);
    free(X);
    bp_dataset_free(&own);
    free_made(&src);
}

static void count_calls(void *ctx, const char *path, double done, double total)
{
    (void)path;
    double *seen = ctx;
    seen[0]++;
    seen[1] = done / total;
}

/* Progress and the memory ceiling are options of one load: nothing of one load reaches the
 * next (they were process-wide settings, which a second trainer inherited). */
static void test_load_progress(void **state)
{
    bp_dataset src, ds;
    char err[512] = "";
    const char *path = tmp_path(state, 0, "p.h5");
    make_labelled(&src, 20, 3, 2);
    assert_int_equal(bp_dataset_write_h5(&src, path, 0, err, sizeof(err)), 0);
    double seen[2] = {0, 0};
    bp__load_opts o = {.progress = count_calls, .progress_ctx = seen};
    assert_int_equal(bp__dataset_load_with(&ds, path, NULL, 2, 0, &o, err, sizeof(err)), 0);
    bp_dataset_free(&ds);
    assert_true(seen[0] >= 1);
    assert_true(seen[1] == 1); /* the last call says all of it */
    seen[0] = 0;
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 2, 0, err, sizeof(err)), 0);
    assert_true(seen[0] == 0);
    bp_dataset_free(&ds);
    /* Each allocation is checked against the ceiling: /X, 20 rows of 3 features, is the
     * largest. */
    double bytes = 20 * 3 * sizeof(bp_real);
    bp__load_opts tight = {.ceiling = bytes - 1}, enough = {.ceiling = bytes};
    assert_int_equal(bp__dataset_load_with(&ds, path, NULL, 2, 0, &tight, err, sizeof(err)),
                     BP_EINVAL);
    assert_non_null(strstr(err, "p.h5: 20 examples of 3 features need"));
    assert_null(ds.X);
    assert_int_equal(bp__dataset_load_with(&ds, path, NULL, 2, 0, &enough, err, sizeof(err)), 0);
    bp_dataset_free(&ds);
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 2, 0, err, sizeof(err)), 0);
    bp_dataset_free(&ds);
    free_made(&src);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, make_tmpdir, remove_tmpdir)
    const struct CMUnitTest tests[] = {
        T(test_h5_roundtrip_labels),
        T(test_h5_roundtrip_targets),
        T(test_h5_float64_and_rank1_targets),
        T(test_h5_errors),
        T(test_h5_malformed),
        T(test_h5_unwritten),
        T(test_write_errors),
        T(test_idx_fashion_mnist),
        T(test_idx_gzip_equals_plain),
        T(test_idx_errors),
        T(test_idx_hint_for_hdf5),
        T(test_builtin_xor),
        T(test_builtin_line),
        T(test_split_and_limit),
        T(test_check),
        T(test_csv_labels_and_targets),
        T(test_csv_errors),
        T(test_csv_header_rule),
        T(test_stream_rows),
        T(test_stream_sigbus),
        T(test_load_progress),
        T(test_load_into),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
