/* What the data set readers share: one file per format (data_h5.c, data_idx.c,
 * data_csv.c) behind the public loader in data.c. Each reader fills the bp_dataset it is
 * given; bp_dataset_load hands it to the caller only once every check has passed. Every
 * failure is one line naming the file and what is wrong with it. */
#ifndef BACKPROP_DATA_INTERNAL_H
#define BACKPROP_DATA_INTERNAL_H

#include <stddef.h>

#include "backprop/data.h"

/* Whether path names an HDF5 file (.h5 or .hdf5, any case). */
int bp__is_h5_path(const char *path);

/* NaN or infinity in rows x cols values of A: BP_EFORMAT naming the row and column (0-based,
 * as numpy and h5py index them) and name ("/X"). */
int bp__check_finite(const bp_real *A, size_t rows, size_t cols, const char *path, const char *name,
                     char *err, size_t errlen);

/* Whether X (n, d), Y (n, k) and labels (n) when with_labels can be held: refused by their
 * size, before anything is allocated, when they exceed what the process may allocate. */
int bp__dataset_fits(size_t n, size_t d, size_t k, int with_labels, const char *path, char *err,
                     size_t errlen);

/* Allocates X (n, d), Y (n, k) when k > 0, and labels (n) when with_labels. */
int bp__dataset_alloc(bp_dataset *ds, size_t n, size_t d, size_t k, int with_labels,
                      const char *path, char *err, size_t errlen);

/* Checks ds->labels against classes (0 = infer the largest label + 1) and builds the
 * one-hot Y. */
int bp__labels_to_onehot(bp_dataset *ds, int classes, const char *path, char *err, size_t errlen);

/* The readers: /X and /y of an HDF5 file; IDX images with their labels (plain or gzip). */
int bp__load_h5(bp_dataset *ds, const char *path, int classes, char *err, size_t errlen);
int bp__load_idx(bp_dataset *ds, const char *path, const char *labels_path, int classes, char *err,
                 size_t errlen);

#endif
