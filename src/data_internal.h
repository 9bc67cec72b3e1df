/* What the data loader (data.c) offers the rest of the library beyond the public
 * bp_dataset_load: a load with options, a set's size read from its header, and (through
 * data_h5.h) HDF5 sets read in place. The format readers never include this header: they
 * depend on data_common.h alone, and data.c dispatches to them. */
#ifndef BACKPROP_DATA_INTERNAL_H
#define BACKPROP_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/data.h"
#include "data_common.h"
#include "data_h5.h"

/* bp_dataset_load with o's options (bp__load_opts; NULL: none). */
int bp__dataset_load_with(bp_dataset *ds, const char *path, const char *labels_path, int classes,
                          uint64_t seed, const bp__load_opts *o, char *err, size_t errlen);

/* The examples, features, and bytes a set will take in memory, read from its header (HDF5
 * /X's shape, the IDX images' header; built-in sets are small) without reading the data;
 * classes as in bp_dataset_load (0: counted as one target column). On error a reason. */
int bp__dataset_shape(const char *path, const char *labels_path, int classes, size_t *n, size_t *d,
                      double *bytes, char *err, size_t errlen);
#endif
