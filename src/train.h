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

struct bp_trainer {
    const bp_config *cfg;
    char *config_text; /* effective config, stored in checkpoints */
    bp_comm comm;
    bp_dataset train, val, test;
    bp_net net;
    bp_workspace ws;
    bp_sgd opt;
    bp__exchange *exchange;
    bp_real *grad; /* the exchange's buffer, nparams + 2: all dW, db, then cost sum and
                    * correct count */
    double step_cost, step_correct; /* the last step's, summed over the ranks */
    bp_real *velocity;              /* params-shaped, momentum */
    bp_real *Xb, *Yb;               /* this rank's shard of the batch, gathered */
    int *Lb;
    size_t *perm;
    bp_train_state st;
    int threads;         /* BLAS threads per rank in effect */
    long last_ckpt_step; /* global step of the newest checkpoint written, -1 if none */
    int resumed;
    /* Rank 0: the run directory's owner lock and the metrics file's; held from setup to
     * bp_trainer_free. */
    bp__lock dir_lock, metrics_lock;
    /* This process's seconds in the steps of this run, by phase: gather + forward + backward,
     * the exchange that was not hidden (waiting for slower ranks included), the update; and
     * the time the exchange took in all, hidden behind the backward pass or not. */
    double compute_s, exchange_s, update_s, exchange_busy_s;
    long timed_steps;
    double run_started, elapsed_base; /* wall clock of this process, and before it */
};

/* Sums over this rank's shard of ds: out[0] cost, out[1] correct, out[2] examples, then
 * k*k confusion counts (true class row, predicted column) when confusion is set; then
 * reduced across ranks. out has 3 + k*k entries when confusion, else 3. */
int bp_evaluate(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, const bp_comm *comm,
                int confusion, double *out);

/* Cores on this node divided by the ranks on it, at least 1. */
int bp_auto_threads(const bp_comm *comm);

#endif
