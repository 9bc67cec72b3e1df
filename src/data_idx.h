/* IDX images and labels (data_idx.c): the reader data.c dispatches to, and the images'
 * shape from their header. */
#ifndef BACKPROP_DATA_IDX_H
#define BACKPROP_DATA_IDX_H

#include <stddef.h>

#include "backprop/data.h"
#include "data_common.h"

/* IDX images with their labels (plain or gzip); labels_path NULL is refused (the message
 * says none was given: which key or option names them is the caller's to say). */
int bp__load_idx(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                 const bp__load_opts *o, char *err, size_t errlen);
int bp__idx_shape(const char *path, size_t *n, size_t *d, char *err, size_t errlen);

#endif
