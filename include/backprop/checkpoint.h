/* Checkpoints: everything needed to resume a run exactly, in one HDF5 file. */
#ifndef BACKPROP_CHECKPOINT_H
#define BACKPROP_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_CHECKPOINT_FORMAT "backprop-checkpoint"
#define BP_CHECKPOINT_VERSION 1

/* The fields of a metrics row, in the order of the metrics CSV's columns and of a
 * checkpoint's /train/metrics table. */
#define BP_METRIC_COLUMNS 10
extern const char *const bp_metric_columns[BP_METRIC_COLUMNS];

/* One row of the metrics CSV; NaN where a value does not apply. */
typedef struct {
    long epoch; /* 1-based epoch that ended */
    long step;  /* global step at its end */
    double train_cost, train_accuracy, val_cost, val_accuracy, test_cost, test_accuracy;
    double samples_per_s, elapsed_s;
} bp_metrics_row;

/* Where a run stands: what a resumed run needs besides the parameters. */
typedef struct {
    long epoch;          /* completed epochs */
    long batch_in_epoch; /* steps already taken in the current epoch */
    long global_step;    /* steps since the start of the run */
    uint64_t seed;
    bp_rng rng;
    int ranks; /* rank count that wrote it (informational: resuming on another works) */
    /* The training examples and [train] batch_size of the run (0: a file from before they
     * were stored). Which examples a step visits depends on both, so a resume mid-epoch
     * needs them unchanged. */
    long n_train, batch_size;
    double elapsed_s; /* training wall time so far */
    /* Running sums of the epoch in progress, so its metrics come out as uninterrupted. */
    double epoch_cost_sum, epoch_correct, epoch_seen, epoch_train_s;
    size_t nmetrics;
    bp_metrics_row *metrics; /* one per completed epoch */
    /* Early stopping ([train] early_stopping): the best validation cost so far and its
     * epoch (0: none yet), the epochs since it last improved, 1 once the run stopped
     * early; and that epoch's weights, params-shaped (NULL when early stopping is off). */
    double best_val_cost;
    long best_epoch, bad_epochs;
    int stopped_early;
    bp_real *best_params;
} bp_train_state;

/* Why an L-BFGS run converged (bp_trainer_info.converged; 0 while it has not). */
enum {
    BP_LBFGS_CONVERGED_GRADIENT = 1,   /* max |gradient| <= [train] lbfgs_tolerance */
    BP_LBFGS_CONVERGED_NO_DECREASE = 2 /* the line search found no lower cost */
};

/* The kinds of an optimizer's state item, and where a checkpoint keeps each under
 * /optimizer. */
enum {
    BP_STATE_PARAMS,  /* params-shaped: /optimizer/layer_<l>/<name>W and <name>b */
    BP_STATE_VECTORS, /* count x nparams (count 0: one vector of nparams): dataset <name> */
    BP_STATE_INTS,    /* count int32 values (count 0: a scalar): attribute, see below */
    BP_STATE_REALS    /* count float64 values (count 0: a scalar): attribute */
};

/* One named part of an optimizer's state. Names are paths under /optimizer: "v" (sgd's
 * velocity, stored as vW and vb), "lbfgs/x0" (a dataset), "lbfgs/pairs" (the attribute
 * "pairs" of /optimizer/lbfgs). data is bp_real, int or double as the kind says; NULL
 * stands for zeros (PARAMS and VECTORS only). */
typedef struct {
    const char *name;
    int kind;     /* BP_STATE_* */
    size_t count; /* as the kind says */
    void *data;
} bp_state_item;

/* An optimizer's state as a checkpoint stores it: its name ("sgd", "adam", "lbfgs",
 * "nesterov") and its items, in the order they are written. */
typedef struct {
    const char *name;
    size_t nitems;
    const bp_state_item *items;
} bp_optimizer_state;

typedef struct {
    bp_net net;
    char optimizer[16]; /* "sgd", "adam", "lbfgs" or "nesterov"; files without one are sgd */
    size_t nopt_state;
    bp_state_item *opt_state; /* the optimizer's items, each with its data (never NULL) */
    bp_train_state state;
    char *config_text; /* the effective config, INI */
    char scalar[8];    /* "float" or "double": the build that wrote it */
    int format_version;
} bp_checkpoint;

/* The item of ck's optimizer state called name, or NULL. */
const bp_state_item *bp_checkpoint_item(const bp_checkpoint *ck, const char *name);

/* One line on where ck's optimizer stands, into buf (e.g. "lbfgs (3 of 10 pairs held;
 * between iterations; objective 0.25)"), cut short to fit len. */
void bp_checkpoint_describe_optimizer(const bp_checkpoint *ck, char *buf, size_t len);

/* Writes path atomically: the file is built in memory, written to a temporary file in the
 * same directory, fsync'ed, renamed over path, then the directory fsync'ed. opt NULL is
 * sgd with zero velocity; opt's items must be those its optimizer keeps (BP_EINVAL
 * otherwise), and a NULL buffer stands for zeros (stored as datasets never
 * written, which read as zeros and take no space). Weights are
 * chunked datasets with the Fletcher32 checksum filter. On error (a full disk among them)
 * returns BP_EIO with a reason in err, removes the temporary file, and leaves any existing
 * file at path untouched. */
int bp_checkpoint_write(const char *path, const bp_net *net, const bp_optimizer_state *opt,
                        const bp_train_state *state, const char *config_text, char *err,
                        size_t errlen);

/* Reads and verifies a checkpoint (format name, version <= BP_CHECKPOINT_VERSION, layout,
 * checksums, every counter in range and consistent with the others; everything stored in
 * the file itself: no soft or external links, external storage or virtual datasets). Converts
 * float/double as needed. With bp_checkpoint_isolate_reads(1) the file is first read in a forked
 * child, so damage that would crash or hang libhdf5 is refused instead. On error returns BP_EIO
 * (unreadable), BP_EFORMAT (not a backprop checkpoint, newer version, corrupted) with a
 * reason in err, and *ck is zeroed. */
int bp_checkpoint_read(const char *path, bp_checkpoint *ck, char *err, size_t errlen);

void bp_checkpoint_free(bp_checkpoint *ck);

/* libhdf5 1.10 does not bounds-check its global heap: one damaged byte there can crash or
 * hang it (50 of 18728 single-byte flips of a checkpoint did). With on, bp_checkpoint_read
 * first reads the file in a forked child (with a 60 s alarm) and refuses the file if the
 * child dies. Off by default, as forking (an MPI rank, a threaded program) is the program's
 * decision; the backprop command turns it on. */
void bp_checkpoint_isolate_reads(int on);

/* Says why the checkpoint's network does not fit the given one (layers, hidden, output,
 * cost), or returns 0 when it does. BP_EMISMATCH with e.g. "checkpoint has layers
 * 784,30,10 but the config has 784,100,10". */
int bp_checkpoint_match(const bp_checkpoint *ck, const bp_net *net, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
