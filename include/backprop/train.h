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
 *     bp_trainer_free(t);
 *     bp_comm_finalize();
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
#include "backprop/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* This process's place in the job. */
typedef struct {
    int rank, size; /* in the job */
    int local_size; /* ranks on this node */
} bp_comm;

/* MPI_Init (or nothing when the program already initialised MPI); a lone process started
 * without mpirun is a job of one. The library then works on its own duplicate of
 * MPI_COMM_WORLD, whose errors return as codes; the program's communicators are untouched.
 * Errors return instead of aborting. */
int bp_comm_init(int *argc, char ***argv, bp_comm *comm);

/* Frees the duplicate, and calls MPI_Finalize when bp_comm_init called MPI_Init. */
void bp_comm_finalize(void);

/* When a collective has waited longer than [comm] timeout (the watchdog; see
 * bp_trainer_create), this is called from the watchdog's own thread with this rank and a
 * one-line reason ("timed out after 10 s in the gradient allreduce at step 1234: rank 1 did
 * not arrive ..."); then the process ends with exit status 1, and mpirun ends the job. */
typedef void (*bp_timeout_fn)(void *ctx, int rank, const char *reason);

/* The watchdog: from now on no collective of this process waits more than seconds. When
 * one does, expired (if not NULL; otherwise the one set before) is called as above and
 * the process ends with exit status 1. seconds <= 0 turns it off; a job of one rank needs
 * none. bp_trainer_create sets seconds from [comm] timeout. Returns 0, or BP_ENOMEM when
 * its thread cannot be started. */
int bp_comm_watch(const bp_comm *comm, double seconds, bp_timeout_fn expired, void *ctx);

typedef struct bp_trainer bp_trainer;

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
} bp_step_times;

/* Builds a trainer for cfg. On rank 0 it first takes the run directory's lock (so a second
 * run there fails here, before any work), checks the directory and that a fresh run would
 * not overwrite another run. Then every rank loads the data and builds the network:
 * initialised from cfg->seed, or with resume ("latest" = DIR/latest.h5, or a checkpoint
 * path) loaded from the checkpoint. config_text is stored in checkpoints (NULL: the
 * effective config, formatted from cfg). cfg must outlive the trainer.
 * Returns 0, or the agreed BP_E* code with *t NULL: BP_EINVAL/BP_EFORMAT/BP_EMISMATCH/BP_EIO
 * for bad input found before any work, BP_ENOMEM or BP_ECOMM otherwise. */
int bp_trainer_create(bp_trainer **t, const bp_config *cfg, const char *config_text,
                      const bp_comm *comm, const char *resume, char *err, size_t errlen);

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

/* Releases everything, the run directory's lock included; NULL is fine. Local. */
void bp_trainer_free(bp_trainer *t);

#ifdef __cplusplus
}
#endif

#endif
