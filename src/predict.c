/* Predictions to HDF5: the forward pass over a data set, chunk by chunk. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "h5util.h"
#include "internal.h"
#include "predict.h"

static hid_t create_2d(hid_t file, const char *name, hid_t type, hsize_t rows, hsize_t cols)
{
    hsize_t dims[2] = {rows, cols};
    hid_t space = H5Screate_simple(cols ? 2 : 1, dims, NULL);
    hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    return d;
}

/* Writes rows [r, r + rows) of a dataset from buf. */
static herr_t write_rows(hid_t d, hid_t memtype, const void *buf, hsize_t r, hsize_t rows,
                         hsize_t cols)
{
    hsize_t start[2] = {r, 0}, count[2] = {rows, cols};
    int rank = cols ? 2 : 1;
    hid_t fspace = H5Dget_space(d), mspace = H5Screate_simple(rank, count, NULL);
    herr_t e = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0)
        e = H5Dwrite(d, memtype, mspace, fspace, H5P_DEFAULT, buf);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return e;
}

/* Finite rows can still overflow the forward pass (relu passes 3e38 on to inf, and
 * inf - inf is NaN): such outputs are no prediction, and argmax would call them class 0.
 * A is (rows, k), row `first` of the data its first. */
static int finite_outputs(const bp_real *A, size_t rows, size_t k, size_t first, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < rows * k; i++)
        if (!isfinite(A[i]))
            return bp__fail(err, errlen, BP_EDIVERGED,
                            "row %zu: the network's output is %s: the row's values are finite "
                            "but overflow the model's forward pass",
                            first + i / k, isnan(A[i]) ? "NaN" : "infinite");
    return 0;
}

/* The outputs of every row into the file's datasets. A row that cannot be read (the
 * file cut short, NaN in it) is its reader's code with its reason; anything else HDF5
 * fails at, in a file in memory, is memory. */
static int write_all(hid_t file, const bp_net *net, bp_workspace *ws, const bp_dataset *ds,
                     bp_rows_fn read, void *ctx, const char *path, char *err, size_t errlen)
{
    size_t k = (size_t)net->sizes[net->nlayers];
    int classes[256];
    hid_t out = create_2d(file, "outputs", H5T_IEEE_F32LE, ds->n, k);
    hid_t pred = k > 1 ? create_2d(file, "predicted", H5T_STD_I32LE, ds->n, 0) : H5I_INVALID_HID;
    int rc = out < 0 || (k > 1 && pred < 0) ? BP_ENOMEM : 0;
    size_t step = ws->max_rows < 256 ? ws->max_rows : 256;
    for (size_t r = 0; rc == 0 && r < ds->n; r += step) {
        size_t rows = ds->n - r < step ? ds->n - r : step;
        const bp_real *X = NULL, *Y;
        const int *labels;
        if (read)
            rc = read(ctx, r, rows, &X, &Y, &labels, err, errlen);
        else
            X = ds->X + r * ds->d;
        if (rc < 0)
            break;
        const bp_real *A = bp_forward(net, ws, X, rows);
        rc = finite_outputs(A, rows, k, r, err, errlen);
        if (rc == 0)
            rc = write_rows(out, BP__H5_REAL, A, r, rows, k) < 0 ? BP_ENOMEM : 0;
        if (rc < 0 || k < 2)
            continue;
        for (size_t i = 0; i < rows; i++)
            classes[i] = (int)bp__argmax(A + i * k, k);
        rc = write_rows(pred, H5T_NATIVE_INT, classes, r, rows, 0) < 0 ? BP_ENOMEM : 0;
    }
    if (out >= 0)
        H5Dclose(out);
    if (pred >= 0)
        H5Dclose(pred);
    if (rc == BP_ENOMEM)
        bp__fail(err, errlen, rc, "%s: cannot build the predictions (out of memory)", path);
    return rc;
}

static int write_file(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                      void *ctx, const char *path, int flags, char *err, size_t errlen)
{
    hid_t file = bp__h5_create(0);
    if (file < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "%s: cannot create the HDF5 file", path);
    int rc = write_all(file, net, ws, ds, read, ctx, path, err, errlen);
    if (rc < 0) {
        bp__h5_close(file);
        return rc;
    }
    return bp__h5_publish(file, path, flags, err, errlen);
}

int bp__predict_write(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                      void *ctx, const char *path, int flags, char *err, size_t errlen)
{
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = write_file(net, ws, ds, read, ctx, path, flags, err, errlen);
    bp__h5_quiet_end(&q);
    return rc;
}
