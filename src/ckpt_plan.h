/* The checkpoint schedule of a run: which step boundaries take a checkpoint
 * ([checkpoint] every_steps, every_epochs, every_seconds), the replica check before each,
 * rank 0's snapshot for its writer thread (src/saver.c), and what rank 0 tells the other
 * ranks in a step's orders (BP__ORDER_*, src/step.h). Every function that takes the
 * trainer is called on every rank, in the same order, unless it says otherwise. */
#ifndef BACKPROP_CKPT_PLAN_H
#define BACKPROP_CKPT_PLAN_H

#include <stddef.h>

#include "backprop/train.h"
#include "saver.h"

typedef struct {
    long last_step;   /* global step of the newest checkpoint written, -1 if none */
    bp__saver *saver; /* rank 0's background writer */
    double last_at;   /* rank 0: when the newest snapshot was taken, or the run began */
    int told;         /* rank 0 took one for every_seconds: the next step tells */
    int write_failed; /* rank 0: starting a write found the previous one failed */
    /* Rank 0: checkpoints taken this run, and the training time they cost (the replica
     * check, the copy, waits for a write still in flight) */
    long taken;
    double pause_s;
} bp__ckpt_plan;

/* A checkpoint of where t stands: the replica check, rank 0's snapshot and, with wait, its
 * write. Agreed; on success last_step is the current step. */
int bp__ckpt_take(bp_trainer *t, int wait, char *err, size_t errlen);

/* At a step boundary (epoch_ended: the end of an epoch), the checkpoint that is due. Under
 * every_seconds rank 0 alone snapshots, and the next step's orders tell the others. */
int bp__ckpt_at_boundary(bp_trainer *t, int epoch_ended, char *err, size_t errlen);

/* The end of a run or a stop: a checkpoint of where t stands, written and waited for,
 * unless the newest checkpoint is of this step already and force is 0 (then the write in
 * flight is waited for). Agreed. */
int bp__ckpt_last(bp_trainer *t, int force, char *err, size_t errlen);

/* Rank 0: the BP__ORDER_* bits the next step carries. */
int bp__ckpt_orders(const bp__ckpt_plan *p);

/* A step's orders said rank 0's write failed: BP_EIO on every rank, with why on rank 0. */
int bp__ckpt_write_failed(bp_trainer *t, char *err, size_t errlen);

/* A step's orders said rank 0 took a checkpoint before the step: every rank checks the
 * replicas of that step. Agreed. */
int bp__ckpt_confirm(bp_trainer *t, char *err, size_t errlen);

/* Rank 0: the checkpoints' part of bp_trainer_step_times (untouched when none was taken). */
void bp__ckpt_times(const bp__ckpt_plan *p, bp_step_times *times);

#endif
