/* The trainer's inside (include/backprop/train.h is its outside): the state a run carries,
 * and the evaluation that eval shares. */
#ifndef BACKPROP_TRAIN_INTERNAL_H
#define BACKPROP_TRAIN_INTERNAL_H

#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "backprop/train.h"
#include "comm.h"
#include "exchange.h"
#include "fileio.h"
#include "internal.h"
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

struct bp_trainer {
    const bp_config *cfg;
    char *config_text; /* effective config, stored in checkpoints */
    bp_comm comm;
    bp_dataset train, val, test; /* shapes, and the rows when they are in memory */
    bp_dataset *sets[BP__SETS];  /* &train, &val, &test */
    bp__place place;             /* where the rows are */
    bp_net net;
    bp_workspace ws;
    bp_sgd opt;
    bp__exchange *exchange;
    bp_real *grad; /* the exchange's buffer, nparams + BP__EXTRAS: all dW, db, then the slots
                    * below */
    double step_cost, step_correct; /* the last step's, summed over the ranks */
    int step_stop;                  /* the last step: ranks that were asked to stop */
    int step_orders;                /* the last step: rank 0's BP__ORDER_* bits */
    int step_failed;                /* the last step: some rank could not read its rows */
    int step_nonfinite;             /* the last step left weights that are not finite */
    int read_failed;                /* this rank could not read its rows of the last step */
    bp__adam adam;
    long total_steps;     /* of the run as configured: what lr_schedule = cosine spans */
    bp_real *velocity;    /* params-shaped: sgd's momentum, or adam's first moment */
    bp_real *moment2;     /* adam's second moment; NULL for sgd */
    bp_lbfgs_state lbfgs; /* lbfgs's state (buffers NULL for the others) */
    bp_real *lbfgs_g;     /* lbfgs: scratch, the objective's gradient at the weights */
    bp__lbfgs_setup lbfgs_setup;
    int lbfgs_outcome; /* lbfgs: the last step's BP__LBFGS_* */
    int velocity_zero; /* momentum 0 and no velocity resumed: it stays zeros,
                        * and checkpoints neither hash nor copy nor write it */
    bp_real *Xb, *Yb;  /* this rank's shard of the batch, gathered */
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

/* Collective: sums over this rank's shard of a set of ds->n rows, read a workspace of rows
 * at a time (ws->max_rows) by read(ctx, ...), or from ds's own rows when read is NULL:
 * out[0] cost, out[1] correct, out[2] examples, out[3] ranks that could not read their
 * rows, then k*k confusion counts (true class row, predicted column) when confusion is
 * set; summed across ranks. out has BP_EVAL_OUT + k*k entries when confusion, else
 * BP_EVAL_OUT. Returns 0, BP_ECOMM, or the code of this rank's failed read (with err); a
 * rank that could not read still joins the sum, so out[3] > 0 tells every rank. */
enum { BP_EVAL_OUT = 4 };
int bp_evaluate(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, bp_rows_fn read,
                void *ctx, const bp_comm *comm, int confusion, double *out, char *err,
                size_t errlen);

/* Collective, before any collective that depends on the config: every rank's effective
 * config is rank 0's, but for the keys that may differ between ranks (file paths, whose
 * files are compared by their contents instead; threads; progress). 0, or BP_EMISMATCH on
 * every rank, with err on the lowest rank that differs naming its first differing key and
 * both values. */
int bp__config_agree(const bp_comm *comm, const bp_config *cfg, char *err, size_t errlen);

/* Collective: the same for any text of "KEY = VALUE\n" lines, mine (NULL: out of memory), a
 * command's own options: `what` names them in the message ("command line"), `hint` says
 * what to check. 0, or BP_EMISMATCH (BP_ENOMEM) on every rank, err on the one that
 * reports. */
int bp__lines_agree(const bp_comm *comm, const char *mine, const char *what, const char *hint,
                    char *err, size_t errlen);

/* Collective: every rank's ds has rank 0's shape and values, whatever its file (path) is
 * called: every value when they are in memory, else the labels and 64 rows spread over the
 * set, read through read(ctx, ...). name says which set ("[data] train"). 0, or
 * BP_EMISMATCH (or a failed read's code) on every rank, err on the one that reports. */
int bp__data_agree(const bp_comm *comm, const bp_dataset *ds, bp_rows_fn read, void *ctx,
                   const char *name, const char *path, char *err, size_t errlen);

/* Collective: every rank's net has rank 0's layers and weights (one checkpoint read under
 * different names, path on this rank). 0, or BP_EMISMATCH on every rank. */
int bp__weights_agree(const bp_comm *comm, const bp_net *net, const char *path, char *err,
                      size_t errlen);

/* Cores on this node divided by the ranks on it, at least 1. */
int bp_auto_threads(const bp_comm *comm);

#endif
