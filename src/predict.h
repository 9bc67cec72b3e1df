#ifndef BACKPROP_PREDICT_H
#define BACKPROP_PREDICT_H

#include "backprop/data.h"
#include "source.h"

/* Writes /outputs (n x k, float32) and, when k > 1, /predicted (n, int32 argmax) for every
 * row of a set of ds->n rows to path, published by bp__publish with its flags (fileio.h).
 * The rows are read by read(ctx, ...) a workspace at most at a time, or are ds's own when
 * read is NULL. Returns 0, or the reader's code, BP_EIO, BP_EINVAL or BP_ENOMEM with a
 * reason, leaving path as it was. */
int bp__predict_write(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                      void *ctx, const char *path, int flags, char *err, size_t errlen);

#endif
