/* The trainer's inside (include/backprop/train.h is its outside): the state a run carries. */
#ifndef BACKPROP_TRAIN_INTERNAL_H
#define BACKPROP_TRAIN_INTERNAL_H

#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "backprop/train.h"
#include "comm.h"
#include "eval.h"
#include "exchange.h"
#include "fileio.h"
#include "internal.h"
#include "optimizer.h"
#include "ckpt_plan.h"
#include "place.h"
#include "resume.h"
#include "saver.h"
#include "source.h"
#include "step.h"
#include "straggler.h"

/* What [train] batch_size means for a run's data and ranks (derive_batches). */
typedef struct {
    size_t rows;        /* examples a step takes: batch_size, at most the training set */
    size_t shard;       /* the most of them on one rank */
    size_t epoch_steps; /* steps of an epoch (one under lbfgs, whose epochs are iterations) */
    long total_steps;   /* of the run as configured: what lr_schedule = cosine spans */
} bp__batches;

struct bp_trainer {
    const bp_config *cfg;
    char *config_text; /* effective config, stored in checkpoints */
    bp_comm comm;
    bp_dataset train, val, test; /* shapes, and the rows when they are in memory */
    bp_dataset *sets[BP__SETS];  /* &train, &val, &test */
    bp__place place;             /* where the rows are */
    bp_trainer_options in;       /* bp_trainer_create_with's: its sets and load progress are the
                                  * caller's, read during setup only */
    bp_net net;
    bp_workspace ws;
    bp__exchange *exchange;
    bp_real *grad;        /* the exchange's buffer, nparams + nslots: all dW, db, then the slots
                           * (src/step.h) */
    size_t nslots;        /* BP__EXTRAS, then one per rank: its last step's work (BP__SLOT_WORK) */
    bp__step_result step; /* what the last step said */
    struct {
        int64_t *sum;          /* the exchange's buffer (nparams + nslots): the gradients'
                                * and slots' fixed point */
        bp_real *block;        /* one row block of a weight gradient (bp__fixed_block_reals) */
        double *bound, *scale; /* per tensor, and one more for the micro-shards' costs */
        double agree_s;        /* the last step's wait in the bounds' maximum */
    } fixed; /* reproducible = any_scale (src/fixed.h), where grad is NULL (the exchange
              * hands back the sums converted); NULLs otherwise */
    bp__optimizer *opt;
    bp__batches batches; /* what batch_size means for the data, once it is in */
    struct {
        bp_real *X, *Y;
        int *labels;
    } shard; /* this rank's shard of the batch, gathered */
    size_t *perm;
    bp_train_state st;
    int threads;        /* BLAS threads per rank in effect */
    bp__ckpt_plan ckpt; /* the checkpoint schedule and rank 0's writer */
    struct {
        int asked;  /* a step said some rank was asked to stop */
        int signal; /* after a stop: the signal that asked for it, agreed */
    } stop;
    bp__resume resume; /* whether the run resumed, and what changed since */
    double load_s;     /* this rank's time reading and decoding the data sets */
    /* Rank 0: the run directory's owner lock and the metrics file's; held from setup to
     * bp_trainer_free. */
    bp__lock dir_lock, metrics_lock;
    bp__step_clock clock; /* this process's seconds in the steps, by phase */
    struct {
        bp__rec *ring;   /* this rank's flight recorder (src/recorder.h); NULL when off */
        int owned;       /* ring is this process's memory, not the node's */
        double work_s;   /* this rank's last step's rows, forward and backward */
        double *work;    /* rank 0: every rank's, from the slots */
        double last_end; /* when the last step ended, for the steps' wall time */
        int changed;     /* rank 0: the slow set changed at the last step, not yet reported */
        bp__straggler straggler; /* rank 0 */
    } obs;
    double run_started, elapsed_base; /* wall clock of this process, and before it */
};

/* Setup on every rank, from bp_trainer_create: everything a run needs before its first
 * step, ending in agreements (src/setup.c). resume: what --resume names, or NULL. */
int bp__trainer_setup(bp_trainer *t, const char *resume, char *err, size_t errlen);

/* stream: a workspace of set s's rows, read into the trainer's buffers (bp_rows_fn). */
typedef struct {
    bp_trainer *t;
    int s;
    bp_real *X, *Y;
    int *labels;
} bp__trainer_rows;

int bp__trainer_read_rows(void *ctx, size_t first, size_t count, const bp_real **X,
                          const bp_real **Y, const int **labels, char *err, size_t errlen);

/* The first non-finite value of everything the run goes on from and a checkpoint holds
 * (the weights and the optimizer's state), described into msg; 0 when all are finite. */
int bp__trainer_nonfinite(const bp_trainer *t, char *msg, size_t len);

#endif
