/* The data-parallel trainer, in-process: every rank of an MPI job (or a lone process) holds a
 * full replica, computes the gradient of its shard of each global mini-batch, the shards
 * are summed across ranks, and every rank applies the same update. Rank 0 alone writes
 * checkpoints and the metrics CSV.
 *
 *     bp_comm comm;
 *     bp_comm_init(&argc, &argv, &comm);
 *     bp_config cfg;                      // bp_config_load or bp_config_parse
 *     bp_trainer *t = NULL;
 *     char err[1024] = "";
 *     int rc = bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err));
 *     if (rc == 0)
 *         rc = bp_trainer_run(t, &callbacks, err, sizeof(err));
 *     if (rc < 0 && err[0])               // one rank holds the reason
 *         fprintf(stderr, "%s\n", err);
 *     else if (rc == 0)                   // the trained network, on every rank
 *         use(bp_trainer_net(t));
 *     bp_trainer_free(t);
 *     bp_comm_finalize(&comm);
 *
 * Data from memory instead of the config's files: bp_trainer_create_with with
 * bp_trainer_options.train (and validation, test) set.
 *
 * Every function taking a trainer is collective: all ranks call it, in the same order, and
 * all return the same status. When it is an error, err holds the reason on exactly one rank
 * (the lowest that failed) and is empty on the others, so that a job reports it once. The
 * library prints nothing; what a run has to say comes through bp_callbacks. */
#ifndef BACKPROP_TRAIN_H
#define BACKPROP_TRAIN_H

#include <stddef.h>

#include "backprop/backprop.h"
#include "backprop/checkpoint.h"
#include "backprop/comm.h"
#include "backprop/config.h"
#include "backprop/data.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_trainer bp_trainer;

/* Ranks whose step work keeps the others waiting, as straggler detection sees them after a
 * window of steps. */
typedef struct bp_straggler_report {
    long from_step, to_step; /* the window of global steps (1-based) that showed it */
    int nslow;               /* ranks slow now; 0: none any more */
    char who[512];           /* "rank 2 (host a)", "ranks 2, 5 (host a)"; "" when none */
    int rank;                /* the slowest of them (or the last one that was), */
    double work_ms;          /* its mean step work (rows, forward, backward) in the window, */
    double others_ms;        /* and the median of the other ranks' */
} bp_straggler_report;

/* What a run reports as it goes, on rank 0 only; any member may be NULL. */
typedef struct {
    /* An epoch ended: its metrics row, as the metrics CSV gets it; epochs = the configured
     * total. */
    void (*epoch)(void *ctx, const bp_metrics_row *row, long epochs);
    /* A step ended: step of steps in epoch (1-based) of epochs, and the epoch's training
     * throughput so far. Called after every step: throttle what it draws. */
    void (*progress)(void *ctx, long epoch, long epochs, size_t step, size_t steps,
                     double samples_per_s);
    void *ctx;
    /* The set of slow ranks changed ([log] straggler_factor; docs/running.md). */
    void (*straggler)(void *ctx, const bp_straggler_report *report);
} bp_callbacks;

/* What a trainer holds and where its run stands. */
typedef struct {
    size_t nparams;                /* weights and biases */
    size_t n_train, n_val, n_test; /* examples */
    int ranks, threads;            /* ranks in the job, BLAS threads per rank */
    int resumed;                   /* 1 when set up from a checkpoint */
    double load_s;                 /* seconds this rank spent reading and decoding the data */
    char placement[192];           /* [data] placement in effect, and why, in words */
    long epoch, batch_in_epoch;    /* completed epochs, steps into the next */
    long global_step;              /* steps since the start of the run */
    char exchange[160];            /* how the gradient sum travels, in words */
    int stop_signal;               /* after bp_trainer_run returned BP_ESTOPPED: the signal
                                    * bp_request_stop was given (on some rank) */
    int stopped_early;             /* [train] early_stopping ended the run: the weights are */
    long best_epoch;               /* those of this epoch, whose validation cost */
    double best_val_cost;          /* was this */
    int bf16;                      /* [train] precision = bf16 in effect */
    int converged;                 /* optimizer = lbfgs converged: BP_LBFGS_CONVERGED_* (why),
                                    * the run ends there; else 0 */
    char resume_note[200];         /* resumed with another [train] reproducible, or another
                                    * micro_batch under any_scale: that, in words; else "" */
    int any_scale_floats;          /* reproducible = any_scale, and a full batch leaves each
                                    * rank one micro-shard at most, which it sends as floats
                                    * (docs/reproducibility.md) */
} bp_trainer_info;

/* Where a step's time went, means over the steps this process ran, in milliseconds. */
typedef struct {
    long steps;
    double data_ms;            /* the step's rows: copied from memory, or read from the file */
    double compute_ms;         /* forward, backward on this rank */
    double slowest_compute_ms; /* the largest compute_ms of any rank */
    double exchange_ms;        /* the gradient sum across ranks that the step waited for,
                                * waiting for slower ranks included */
    double hidden_ms;          /* more exchange time, overlapped with the backward pass */
    double update_ms;          /* the L2-regularised update */
    /* Rank 0 (zeros elsewhere): checkpoints taken, the training time each cost on average
     * (the replica check, the copy of the state, a wait for the previous write), and the
     * time each write took on average in the background. */
    long checkpoints;
    double checkpoint_pause_ms, checkpoint_write_ms;
    /* Rank 0: the rank straggler detection found slowest while it was slow, and its step
     * work against the other ranks' median then; -1 and 0 when no rank was. */
    int slow_rank;
    double slow_factor;
} bp_step_times;

/* One rank's means per step, in milliseconds (bp_step_times's words): its rows, its
 * forward and backward passes, the exchange it waited for (slower ranks included), the
 * update. */
typedef struct {
    double data_ms, compute_ms, wait_ms, update_ms;
} bp_rank_times;

/* Builds a trainer for cfg. On rank 0 it first takes the run directory's lock (so a second
 * run there fails here, before any work), checks the directory and that a fresh run would
 * not overwrite another run. Then every rank loads the data and builds the network:
 * initialised from cfg->seed, or with resume ("latest" = DIR/latest.h5, or a checkpoint
 * path) loaded from the checkpoint. config_text is stored in checkpoints (NULL: the
 * effective config, formatted from cfg). cfg must outlive the trainer; comm need not (the trainer
 * holds its own reference to comm's communicators).
 * Returns 0, or the agreed BP_E* code with *t NULL: BP_EINVAL/BP_EFORMAT/BP_EMISMATCH/BP_EIO
 * for bad input found before any work (BP_EEXIST: the directory already holds a run, which
 * a fresh run would overwrite; BP_ENOENT: resume "latest" and it holds no checkpoint),
 * BP_ENOMEM or BP_ECOMM otherwise. */
int bp_trainer_create(bp_trainer **t, const bp_config *cfg, const char *config_text,
                      const bp_comm *comm, const char *resume, char *err, size_t errlen);

/* What bp_trainer_create_with takes besides the config; zeros mean bp_trainer_create's
 * defaults. */
typedef struct {
    const char *config_text; /* stored in checkpoints; NULL: the effective config */
    const char *resume;      /* NULL: a fresh start; "latest" or a checkpoint path */
    /* Data from memory instead of the config's files: when train is not NULL, the trainer
     * reads no [data] file (train, validation, test and their labels are not read) and
     * copies these sets (NULL: none) during bp_trainer_create_with; the caller keeps its own.
     * [data] limit and validation_split apply to train as to a file's rows; placement =
     * stream is refused (there is no file to read rows from). Every rank passes its copy,
     * and they must agree, as files must: setup compares their contents. A set's Y holds
     * its targets (one-hot rows where labels, 0..k-1, are given). */
    const bp_dataset *train, *validation, *test;
    /* Told how far each file's read has come (rank by rank; may be NULL). */
    bp_load_progress_fn load_progress;
    void *load_ctx;
} bp_trainer_options;

/* bp_trainer_create with options (NULL: all zeros): data from memory, a load progress
 * callback. The same rules and returns; BP_EINVAL for a validation or test set given
 * without a training set. */
int bp_trainer_create_with(bp_trainer **t, const bp_config *cfg, const bp_comm *comm,
                           const bp_trainer_options *opts, char *err, size_t errlen);

/* The network the trainer holds, on every rank: after bp_trainer_run, the trained one (with
 * [train] early_stopping, the best epoch's weights, as the last checkpoint holds them). The
 * trainer's, valid until bp_trainer_free (copy its params into a bp_net_create of the same
 * shape to keep it). Local. */
const bp_net *bp_trainer_net(const bp_trainer *t);

/* Trains to cfg->epochs from where the trainer stands: evaluates after each epoch, appends
 * the metrics row, checkpoints as configured and at the end. Checkpoints are written by a
 * thread of rank 0 from a copy of the state while training goes on; the run returns after
 * the last write ended. cb may be NULL. Returns 0 or the agreed code (BP_EDIVERGED, BP_EIO,
 * BP_ECOMM, BP_ENOMEM), or BP_ESTOPPED after a stop (bp_request_stop) and its checkpoint. */
int bp_trainer_run(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen);

/* Asks this process's trainer to stop: at the end of the step in progress (of the next
 * step when the request comes during the backward pass; of the epoch, when that step ends
 * one) every rank knows, as the request rides in the step's gradient exchange; rank 0 writes a
 * checkpoint of the step reached, and bp_trainer_run returns BP_ESTOPPED on every rank. A request
 * on any one rank stops the job. signo (a signal number) is reported in
 * bp_trainer_info.stop_signal; requests after the first change nothing until the stop acts on it
 * (and consumes it), and 0 withdraws one not yet acted on. Async-signal-safe: made to be called
 * from the program's handler of SIGTERM, SIGINT or SIGUSR1. */
void bp_request_stop(int signo);

/* Writes DIR/ckpt-<global step>.h5 and latest.h5 now (rank 0) and waits for the write,
 * after checking that the replicas are bit-identical; prunes to [checkpoint] keep. Returns
 * 0 or the agreed code. */
int bp_trainer_checkpoint(bp_trainer *t, char *err, size_t errlen);

/* Local; fills info. */
void bp_trainer_get_info(const bp_trainer *t, bp_trainer_info *info);

/* Collective (the slowest rank's compute is a maximum over ranks); fills times. */
int bp_trainer_step_times(const bp_trainer *t, bp_step_times *times);

/* Collective: every rank's times on rank 0, into out[0 .. ranks) (bp_trainer_info's ranks;
 * out is not touched elsewhere, and may be NULL there). 0, or BP_ECOMM. */
int bp_trainer_rank_times(const bp_trainer *t, bp_rank_times *out);

/* The host rank runs on ("" when unknown). */
const char *bp_trainer_rank_host(const bp_trainer *t, int rank);

/* Collective: [log] trace, when set: the flight recorder's last [log] trace_steps steps of
 * every rank as a Chrome trace-event JSON, written by rank 0 (atomically). why: "end",
 * "stop", ... as the file says. 0 (also when no trace is set), or a BP_E* code with the
 * reason in err on rank 0 (nothing was written; the run itself is not affected). */
int bp_trainer_write_trace(bp_trainer *t, const char *why, char *err, size_t errlen);

/* Releases everything, the run directory's lock included; NULL is fine. Local. */
void bp_trainer_free(bp_trainer *t);

#ifdef __cplusplus
}
#endif

#endif
