#ifndef BACKPROP_PREDICT_H
#define BACKPROP_PREDICT_H

#include "backprop/data.h"

/* Writes /outputs (n x k, float32) and, when k > 1, /predicted (n, int32 argmax) for every
 * row of ds to path, published by bp__publish with its flags (fileio.h). Returns 0, or
 * BP_EIO, BP_EINVAL or BP_ENOMEM with a reason, leaving path as it was. */
int bp_predict_write(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, const char *path,
                     int flags, char *err, size_t errlen);

#endif
