/* A data set that eval, predict and plot read in row order, a workspace of rows at a time.
 * An HDF5 file whose /X is stored contiguous is read in place, as [data] placement =
 * stream reads it: its rows are never all in memory, so a set larger than the memory can
 * be evaluated, and under mpirun each rank reads only its share. Any other file (chunked
 * or compressed HDF5, IDX, CSV) is loaded whole. The rows come out the same either way. */
#ifndef BACKPROP_SOURCE_H
#define BACKPROP_SOURCE_H

#include "backprop/data.h"
#include "data_internal.h"
#include "internal.h"

/* Rows [first, first + count) of a set: *X (count x d), *Y (count x k) and *labels (NULL
 * without labels) point at them until the next call. 0, or a code with a reason in err. */
typedef int (*bp_rows_fn)(void *ctx, size_t first, size_t count, const bp_real **X,
                          const bp_real **Y, const int **labels, char *err, size_t errlen);

typedef struct {
    bp_dataset ds;         /* n, d, k and labels; X and Y too when loaded whole */
    bp__h5_stream *stream; /* read in place, else NULL */
    size_t base;           /* stream: the file's row of row 0 */
    bp_real *X, *Y;        /* stream: the rows read last */
    size_t cap;            /* stream: their room, in rows */
    char path[BP__PATH_LEN];
} bp__source;

/* Opens path (labels_path for IDX images) and checks it against a network of `inputs`
 * inputs and `classes` outputs; seed for builtin:line (bp_dataset_load); cap: the most
 * rows one bp__source_rows call reads. Every
 * row of a file loaded whole is checked for NaN and infinity here, a file read in place
 * as its rows are read. 0, or a code with a reason in err (src is then closed). */
int bp__source_open(bp__source *src, const char *path, const char *labels_path, int inputs,
                    int classes, uint64_t seed, size_t cap, char *err, size_t errlen);

/* Keeps the last `count` of the first `limit` rows (0: all): [data] validation_split's
 * rows, after limit. BP_EINVAL when that leaves no training rows. */
int bp__source_tail(bp__source *src, size_t limit, size_t count, char *err, size_t errlen);

/* Rows [first, first + count), count <= cap: a bp_rows_fn, ctx a bp__source. */
int bp__source_rows(void *ctx, size_t first, size_t count, const bp_real **X, const bp_real **Y,
                    const int **labels, char *err, size_t errlen);

void bp__source_close(bp__source *src);

#endif
