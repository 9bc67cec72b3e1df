/* Resuming a run from a checkpoint: its state loaded into the trainer, and the checks that
 * the rest of the run continues the checkpoint's exactly (a mid-epoch resume needs the
 * epoch's batches and examples of the run that wrote it). */
#ifndef BACKPROP_RESUME_H
#define BACKPROP_RESUME_H

#include <stddef.h>

#include "backprop/train.h"

/* What the trainer keeps of the checkpoint it resumed from. */
typedef struct {
    int resumed;
    /* resumed mid-epoch: the first data key that changed since the checkpoint, or "" */
    char changed[160];
    char note[200]; /* what changed in the keys that decide the bits (bp_trainer_info) */
} bp__resume;

/* Every rank: loads the checkpoint at path into t (parameters, the optimizer's state, the
 * run's) after checking it fits the configured network and optimizer, and that a mid-epoch
 * checkpoint's run took batches of this run's size. 0 or BP_E* with err. */
int bp__resume_from(bp_trainer *t, const char *path, char *err, size_t errlen);

/* Every rank, once the data is in and the batches derived: a mid-epoch resume needs the
 * examples of the checkpoint's epoch. Then t's state records this run's examples and batch
 * size, resumed or not. 0 or BP_EMISMATCH with err. */
int bp__resume_check_examples(bp_trainer *t, const char *path, char *err, size_t errlen);

#endif
