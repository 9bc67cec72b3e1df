/* What the data set readers share: one file per format (data_h5.c, data_idx.c,
 * data_csv.c) behind the public loader in data.c. Each reader fills the bp_dataset it is
 * given; bp_dataset_load hands it to the caller only once every check has passed. Every
 * failure is one line naming the file and what is wrong with it. */
#ifndef BACKPROP_DATA_INTERNAL_H
#define BACKPROP_DATA_INTERNAL_H

#include <stddef.h>

#include "backprop/data.h"

/* Tells bp_set_load_progress's function, if any, how far the read of path has come. */
void bp__load_progress(const char *path, double done, double total);

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

/* bp_dataset_load, with /X decoded straight into X (len values) when the file holds exactly
 * that many: then ds->X == X, the caller's to keep (not for bp_dataset_free), else ds->X is
 * allocated as usual. */
int bp__dataset_load_into(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                          uint64_t seed, bp_real *X, size_t len, char *err, size_t errlen);

/* The examples, features, and bytes a set will take in memory, read from its header (HDF5
 * /X's shape, the IDX images' header; built-in sets are small) without reading the data;
 * classes as in bp_dataset_load (0: counted as one target column). On error a reason. */
int bp__dataset_shape(const char *path, const char *labels_path, int classes, size_t *n, size_t *d,
                      double *bytes, char *err, size_t errlen);
int bp__idx_shape(const char *path, size_t *n, size_t *d, char *err, size_t errlen);
int bp__h5_shape(const char *path, size_t *n, size_t *d, int *contiguous, char *err, size_t errlen);

/* An HDF5 set read a few rows at a time, in place ([data] placement = stream): /X stays in
 * the file, /y is held. Opening checks the file and /y (labels against classes, targets
 * finite); bp__h5_stream_check scans rows [lo, hi) of /X for NaN and infinity. */
typedef struct bp__h5_stream bp__h5_stream;
int bp__h5_stream_open(bp__h5_stream **out, const char *path, int classes, char *err,
                       size_t errlen);
void bp__h5_stream_close(bp__h5_stream *s);
/* n, d, k and the labels (held by s, or NULL for targets); X and Y are NULL. */
void bp__h5_stream_shape(const bp__h5_stream *s, bp_dataset *shape);
/* count rows into X (count x d), Y (count x k) and labels (when not NULL): rows[i] when rows
 * is not NULL, else first + i. BP_EIO when the file cannot be read. */
int bp__h5_stream_rows(bp__h5_stream *s, const size_t *rows, size_t count, size_t first, bp_real *X,
                       bp_real *Y, int *labels, char *err, size_t errlen);
/* The same rows with pread, whatever the mapping: for the thread that reads ahead when the
 * rows come from the disk (pread waits for them in the kernel; a fault on the mapping
 * would read them a page at a time). */
int bp__h5_stream_pread(bp__h5_stream *s, const size_t *rows, size_t count, bp_real *X, bp_real *Y,
                        int *labels);
/* Whether reading rows costs more than copying them: read with pread, or the last batch
 * faulted to the disk. */
int bp__h5_stream_cold(const bp__h5_stream *s);
/* Asks the kernel to start reading these rows (the next step's), when s is cold. */
void bp__h5_stream_ahead(bp__h5_stream *s, const size_t *rows, size_t count);
int bp__h5_stream_check(bp__h5_stream *s, size_t lo, size_t hi, char *err, size_t errlen);
/* The rows will be read in order (eval, predict): the kernel reads ahead of the mapping's
 * faults, as it does for a file read whole, instead of a page a fault. */
void bp__h5_stream_sequential(bp__h5_stream *s);
/* Whether s reads through a mapping of the file (else with pread). For tests: unchecked
 * skips the length check before each batch, leaving a file cut short to the SIGBUS guard. */
int bp__h5_stream_mapped(bp__h5_stream *s, int unchecked);

#endif
