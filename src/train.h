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
#include "place.h"
#include "saver.h"
#include "source.h"

/* The slots after the gradients in the exchange's buffer: summed like them, so what every
 * rank must know about a step arrives with its gradient sum and costs no collective. */
enum {
    BP__SLOT_COST,    /* cost sum of the rank's shard */
    BP__SLOT_CORRECT, /* correctly classified examples in it */
    BP__SLOT_STOP,    /* 1 when this rank was asked to stop (bp_request_stop) */
    BP__SLOT_ORDERS,  /* rank 0's orders, BP__ORDER_* bits; 0 on the others */
    BP__SLOT_FAILED,  /* 1 when this rank could not read its rows (stream) */
    BP__EXTRAS
};
enum {
    BP__ORDER_CHECKPOINT = 1,  /* rank 0 took a checkpoint before the step (every_seconds) */
    BP__ORDER_WRITE_FAILED = 2 /* the background checkpoint write failed: stop */
};

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
    bp_real *grad; /* the exchange's buffer, nparams + BP__EXTRAS: all dW, db, then the slots
                    * below */
    double step_cost, step_correct; /* the last step's, summed over the ranks */
    int step_stop;                  /* the last step: ranks that were asked to stop */
    int step_orders;                /* the last step: rank 0's BP__ORDER_* bits */
    int step_failed;                /* the last step: some rank could not read its rows */
    int step_nonfinite;             /* the last step left weights that are not finite */
    int read_failed;                /* this rank could not read its rows of the last step */
    bp__optimizer *opt;
    int outcome;         /* the last step's BP__OPT_* */
    bp__batches batches; /* what batch_size means for the data, once it is in */
    bp_real *Xb, *Yb;    /* this rank's shard of the batch, gathered */
    int *Lb;
    size_t *perm;
    bp_train_state st;
    int threads;         /* BLAS threads per rank in effect */
    long last_ckpt_step; /* global step of the newest checkpoint written, -1 if none */
    bp__saver *saver;    /* rank 0's background writer */
    double last_ckpt_at; /* rank 0: when the newest snapshot was taken, or the run began */
    int told_checkpoint; /* rank 0 took one for every_seconds: the next step tells */
    int write_failed;    /* rank 0: starting a write found the previous one failed */
    int stopping;        /* a step said some rank was asked to stop */
    int stop_signal;     /* after a stop: the signal that asked for it, agreed */
    /* Rank 0: checkpoints taken this run, and the training time they cost (the replica
     * check, the copy, waits for a write still in flight) */
    long ckpts;
    double ckpt_pause_s;
    int resumed;
    /* resumed mid-epoch: the first data key that changed since the checkpoint, or "" */
    char resume_changed[160];
    double load_s; /* this rank's time reading and decoding the data sets */
    /* Rank 0: the run directory's owner lock and the metrics file's; held from setup to
     * bp_trainer_free. */
    bp__lock dir_lock, metrics_lock;
    /* This process's seconds in the steps of this run, by phase: gather + forward + backward,
     * the exchange that was not hidden (waiting for slower ranks included), the update; and
     * the time the exchange took in all, hidden behind the backward pass or not. */
    double compute_s, exchange_s, update_s, exchange_busy_s;
    double data_s; /* the steps' rows: copied into the batch, or read from the file */
    long timed_steps;
    double run_started, elapsed_base; /* wall clock of this process, and before it */
};

#endif
