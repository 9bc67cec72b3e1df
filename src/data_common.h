/* What the data set readers share: one file per format (data_h5.c, data_idx.c, data_csv.c)
 * depends on this header alone, and data.c, the loader, dispatches to them (data_h5.h,
 * data_idx.h). Each reader fills the bp_dataset it is given; the loader hands it to the
 * caller only once every check has passed. Every failure is one line naming the file and
 * what is wrong with it. */
#ifndef BACKPROP_DATA_COMMON_H
#define BACKPROP_DATA_COMMON_H

#include <stddef.h>

#include "backprop/data.h"

/* How one load goes; a NULL pointer in its place means none of it:
 * - X, X_len: /X decoded straight into X when the file holds exactly X_len values (node
 *   placement's shared window); then ds->X == X, the caller's, not for bp_dataset_free;
 * - ceiling: bytes the data may take ([data] max_memory_mb, carried by the placement),
 *   below what the node and the process's limits leave; 0: no ceiling;
 * - progress: told how far the read has come (the trainer's bp_trainer_options). */
typedef struct {
    bp_real *X;
    size_t X_len;
    double ceiling;
    bp_load_progress_fn progress;
    void *progress_ctx;
} bp__load_opts;

/* Tells o's progress function, if any, how far the read of path has come. */
void bp__load_progress(const bp__load_opts *o, const char *path, double done, double total);

/* Whether path names an HDF5 file (.h5 or .hdf5, any case). */
int bp__is_h5_path(const char *path);

/* NaN or infinity in rows x cols values of A: BP_EFORMAT naming the row and column (0-based,
 * as numpy and h5py index them) and name ("/X"). */
int bp__check_finite(const bp_real *A, size_t rows, size_t cols, const char *path, const char *name,
                     char *err, size_t errlen);

/* The same for rows numbered from first. */
int bp__check_finite_at(const bp_real *A, size_t rows, size_t cols, size_t first, const char *path,
                        const char *name, char *err, size_t errlen);

/* Whether X (n, d), Y (n, k) and labels (n) when with_labels can be held: refused by their
 * size, before anything is allocated, when they exceed what the process may allocate (under
 * o's ceiling). */
int bp__dataset_fits(size_t n, size_t d, size_t k, int with_labels, const bp__load_opts *o,
                     const char *path, char *err, size_t errlen);

/* Allocates X (n, d) (or takes o's), Y (n, k) when k > 0, and labels (n) when with_labels. */
int bp__dataset_alloc(bp_dataset *ds, size_t n, size_t d, size_t k, int with_labels,
                      const bp__load_opts *o, const char *path, char *err, size_t errlen);

/* Checks ds->labels against classes (0 = infer the largest label + 1) and builds the
 * one-hot Y. */
int bp__labels_to_onehot(bp_dataset *ds, int classes, const bp__load_opts *o, const char *path,
                         char *err, size_t errlen);

#endif
