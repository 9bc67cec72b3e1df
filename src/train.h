/* The data-parallel trainer: every rank holds a full replica, computes the gradient of
 * its shard of each global mini-batch, and one allreduce sums the shards. */
#ifndef BACKPROP_TRAIN_H
#define BACKPROP_TRAIN_H

#include <stdio.h>

#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "comm.h"
#include "fileio.h"

typedef struct {
    const bp_config *cfg;
    const char *config_text; /* effective config, stored in checkpoints */
    bp_comm comm;
    bp_dataset train, val, test;
    bp_net net;
    bp_workspace ws;
    bp_sgd opt;
    bp_real *grad;     /* nparams + 2: all dW, db, then cost sum and correct count */
    bp_real *velocity; /* params-shaped, momentum */
    bp_real *Xb, *Yb;  /* this rank's shard of the batch, gathered */
    int *Lb;
    size_t *perm;
    bp_train_state st;
    int threads;         /* BLAS threads per rank in effect */
    int progress;        /* draw a progress bar (rank 0 only) */
    long last_ckpt_step; /* global step of the newest checkpoint written, -1 if none */
    FILE *log;           /* where rank 0 prints epoch lines (stdout) */
    int resumed;
    /* Rank 0: the run directory's owner lock, and the metrics file's when it lives
     * elsewhere; held from setup to bp_trainer_free. */
    bp__lock dir_lock, metrics_lock;
    /* This process's seconds in the steps of this run, by phase: gather + forward + backward,
     * the allreduce (waiting for slower ranks included), the update. */
    double compute_s, allreduce_s, update_s;
    long timed_steps;
    double run_started, elapsed_base; /* wall clock of this process, and before it */
} bp_trainer;

/* Prepares the checkpoint directory (rank 0 takes its lock, so that no other run works in
 * it at the same time, checks it is writable, and that a fresh run would not overwrite
 * another run's checkpoints), then loads data and builds (or resumes) the network. resume: NULL, a
 * checkpoint path, or "latest". Returns 0 or a BP_E* code with the reason in err; the caller agrees
 * on the outcome across ranks. */
int bp_trainer_setup(bp_trainer *t, const bp_config *cfg, const char *config_text,
                     const bp_comm *comm, const char *resume, char *err, size_t errlen);

/* Trains to cfg->epochs, logging, evaluating and checkpointing as configured. Every
 * collective is entered by every rank; an error is the same on all ranks except where
 * noted in err (I/O on rank 0 is agreed before returning). */
int bp_trainer_run(bp_trainer *t, char *err, size_t errlen);

void bp_trainer_free(bp_trainer *t);

/* Seconds of the run so far, earlier runs it resumed included. */
double bp_trainer_elapsed(const bp_trainer *t);

/* Sums over this rank's shard of ds: out[0] cost, out[1] correct, out[2] examples, then
 * k*k confusion counts (true class row, predicted column) when confusion is set; then
 * reduced across ranks. out has 3 + k*k entries when confusion, else 3. */
int bp_evaluate(const bp_net *net, bp_workspace *ws, const bp_dataset *ds, const bp_comm *comm,
                int confusion, double *out);

/* Cores on this node divided by the ranks on it, at least 1. */
int bp_auto_threads(const bp_comm *comm);

#endif
