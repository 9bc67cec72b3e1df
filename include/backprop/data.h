/* Data sets: HDF5 (/X, /y), IDX (MNIST, Fashion-MNIST; plain or gzip), CSV for conversion,
 * and the built-in toy sets of the seed experiments. */
#ifndef BACKPROP_DATA_H
#define BACKPROP_DATA_H

#include <stddef.h>

#include "backprop/backprop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t n;    /* examples */
    size_t d;    /* features per example */
    size_t k;    /* target columns: classes for labels, or target width */
    bp_real *X;  /* (n, d) */
    bp_real *Y;  /* (n, k): one-hot rows for labels, or the targets */
    int *labels; /* (n) class labels 0..k-1, or NULL when the targets are real-valued */
} bp_dataset;

/* Loads a data set.
 * - "builtin:xor": the four XOR examples, inputs 0/1, targets 0 1 1 0 (k = 1).
 * - "builtin:xor_signed": inputs +-1 as in seed 002, targets 1 0 0 1 (k = 1).
 * - "builtin:line": 1000 examples x ~ U[0,2), y = 4 + 3x + 0.3 N(0,1), from seed (k = 1).
 * - a path ending in .h5/.hdf5: datasets /X (n x d, float32/64) and /y (n integers, or
 *   n x k floats).
 * - anything else is read as IDX images (ubyte, scaled to [0,1]), with labels_path the IDX
 *   labels; gzip is detected from the content, not the name.
 * classes: the network's output width; integer labels become one-hot rows of that width
 * (0 = infer as max label + 1). seed only matters for builtin:line.
 * Validates: readable, right layout, equal row counts, labels in [0, classes), finite
 * values. On error returns BP_EIO / BP_EFORMAT / BP_EMISMATCH / BP_ENOMEM, writes a
 * one-line reason naming the file to err, and *ds is zeroed. */
int bp_dataset_load(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                    uint64_t seed, char *err, size_t errlen);

/* Checks the data against a network's input and output widths: d == inputs, k == outputs.
 * Returns 0 or BP_EMISMATCH with a reason naming `name` (e.g. the file). */
int bp_dataset_check(const bp_dataset *ds, int inputs, int outputs, const char *name, char *err,
                     size_t errlen);

/* Splits off rows [from, n) into *tail (copied), shrinking ds to `from` rows. */
int bp_dataset_split(bp_dataset *ds, size_t from, bp_dataset *tail);

/* Keeps only the first n rows (no-op if n == 0 or n >= ds->n). */
void bp_dataset_limit(bp_dataset *ds, size_t n);

void bp_dataset_free(bp_dataset *ds);

/* How far a read has come: the trainer's loads (bp_trainer_options.load_progress) call it
 * with the file, how much of it is done (pixels of IDX images, rows of an HDF5 /X) and the
 * total; often (every 64 KiB of pixels): throttle what it draws. */
typedef void (*bp_load_progress_fn)(void *ctx, const char *path, double done, double total);

/* bp_dataset_write_h5's flags. */
enum {
    BP_WRITE_REPLACE = 1,   /* an existing file at path is replaced */
    BP_WRITE_CONTIGUOUS = 2 /* /X stored contiguous and uncompressed, for placement = stream;
                             * else chunked and deflated */
};

/* Writes ds to an HDF5 file in the layout above (/X float32, /y int32 labels or float32
 * targets), atomically: built in memory, written to a temporary name beside path, fsync'ed
 * and renamed. An existing file at path is replaced only with BP_WRITE_REPLACE. On error
 * returns BP_EINVAL (nothing to write, path exists), BP_EIO (cannot write: the reason is in
 * err) or BP_ENOMEM, and path is left as it was. */
int bp_dataset_write_h5(const bp_dataset *ds, const char *path, int flags, char *err,
                        size_t errlen);

/* Reads a CSV file: one example per line, comma-separated numbers, an optional header
 * line (skipped when its first field is not a number). The last `targets` columns are
 * real-valued targets, or with targets == 0 the last column is an integer class label. */
int bp_dataset_load_csv(bp_dataset *ds, const char *path, int targets, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
