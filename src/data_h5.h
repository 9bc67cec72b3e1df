/* HDF5 data sets (data_h5.c): the reader data.c dispatches to, the header's shape, and a set
 * read a few rows at a time in place. */
#ifndef BACKPROP_DATA_H5_H
#define BACKPROP_DATA_H5_H

#include <stddef.h>

#include "backprop/data.h"
#include "data_common.h"

/* /X and /y of an HDF5 file. */
int bp__load_h5(bp_dataset *ds, const char *path, int classes, const bp__load_opts *o, char *err,
                size_t errlen);

/* /X's shape from the header, and whether it is stored contiguous (placement = stream). */
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
/* o: told how far the scan has come (its progress alone is used). */
int bp__h5_stream_check(bp__h5_stream *s, size_t lo, size_t hi, const bp__load_opts *o, char *err,
                        size_t errlen);
/* The rows will be read in order (eval, predict): the kernel reads ahead of the mapping's
 * faults, as it does for a file read whole, instead of a page a fault. */
void bp__h5_stream_sequential(bp__h5_stream *s);
/* Whether s reads through a mapping of the file (else with pread). For tests: unchecked
 * skips the length check before each batch, leaving a file cut short to the SIGBUS guard. */
int bp__h5_stream_mapped(bp__h5_stream *s, int unchecked);

#endif
