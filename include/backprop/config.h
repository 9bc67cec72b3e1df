/* The INI config: every key of SPEC's [data], [network], [train], [checkpoint], [log],
 * validated with the file and line of each problem. */
#ifndef BACKPROP_CONFIG_H
#define BACKPROP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_MAX_LAYERS 64
#define BP_PATH_MAX 1024

typedef enum { BP_PROGRESS_AUTO, BP_PROGRESS_ON, BP_PROGRESS_OFF } bp_progress;
/* How the learning rate moves over a run (bp_learning_rate in backprop.h says exactly). */
typedef enum { BP_LR_CONSTANT, BP_LR_STEP, BP_LR_COSINE, BP_LR_INVERSE_SCALING } bp_lr_schedule;
extern const char *const bp_lr_schedule_names[4]; /* "constant", ... as configs spell them */
typedef enum { BP_OPT_SGD, BP_OPT_ADAM, BP_OPT_LBFGS, BP_OPT_NESTEROV } bp_optimizer;
extern const char *const bp_optimizer_names[4]; /* "sgd", "adam", "lbfgs", "nesterov" */
/* Where a rank's data lives: chosen by the trainer (auto), every rank its own copy, one copy
 * per node shared by its ranks, or rows read from the HDF5 file as each step needs them. */
typedef enum { BP_PLACE_AUTO, BP_PLACE_REPLICATED, BP_PLACE_NODE, BP_PLACE_STREAM } bp_placement;
extern const char *const bp_placement_names[4]; /* "auto", "replicated", "node", "stream" */

typedef struct {
    /* [data]; empty string = not set */
    char train[BP_PATH_MAX], train_labels[BP_PATH_MAX];
    char validation[BP_PATH_MAX], validation_labels[BP_PATH_MAX];
    char test[BP_PATH_MAX], test_labels[BP_PATH_MAX];
    long validation_split, limit;
    bp_placement placement;
    double max_memory_mb; /* the memory a rank's data may take; 0 = what the node has */
    /* [network] */
    int nsizes;
    int sizes[BP_MAX_LAYERS];
    bp_activation hidden, output;
    bp_cost cost;
    bp_init init;
    double init_epsilon;
    /* [train] */
    long epochs, batch_size;
    double learning_rate, lambda, momentum;
    bp_optimizer optimizer;
    double beta1, beta2, adam_epsilon; /* adam */
    int decoupled;                     /* adam: weight_decay = decoupled (AdamW) */
    int bf16;               /* [train] precision = bf16: products in bf16, all else float */
    long lbfgs_history;     /* lbfgs: (s, y) pairs kept */
    double lbfgs_tolerance; /* lbfgs: converged when max |gradient| <= this */
    bp_lr_schedule lr_schedule;
    long lr_step_epochs; /* step: every this many epochs, */
    double lr_gamma;     /* the rate is multiplied by this */
    double lr_min;       /* cosine: the rate at the end of the run */
    double lr_power;     /* inverse_scaling: eta / (examples seen + 1)^power */
    long early_stopping; /* patience in epochs without a better validation cost; 0 = off */
    uint64_t seed;
    int threads;      /* 0 = auto */
    int any_scale;    /* reproducible = any_scale: same bits for any ranks, threads, hosts */
    long micro_batch; /* any_scale: rows of each micro-shard (docs/reproducibility.md) */
    /* [checkpoint] */
    char checkpoint_dir[BP_PATH_MAX];
    long every_epochs, every_steps, keep;
    double every_seconds; /* a checkpoint once this much time passed since the last; 0 = off */
    /* [comm] */
    double comm_timeout; /* seconds any collective may wait; 0 = no limit */
    int overlap;         /* exchange buckets during the backward pass (else one, after it) */
    int comm_bf16;       /* dtype = bf16: gradient sums between nodes travel in bf16 */
    double bucket_mb;    /* bucket size, megabytes (10^6 bytes) */
    /* [log] */
    char metrics[BP_PATH_MAX];
    bp_progress progress;
    char trace[BP_PATH_MAX]; /* the flight recorder's trace file; "" = none */
    long trace_steps;        /* steps the flight recorder keeps; 0 = off */
    double straggler_factor; /* warn when a rank's step work is this many times the
                                others'; 0 = off */
} bp_config;

/* Reads path, then applies each "section.key=value" of sets in order, with the same
 * checks. Unset optional keys get their defaults; checkpoint.dir defaults to
 * runs/<config file name without .ini>, log.metrics to <checkpoint.dir>/metrics.csv.
 * On error returns BP_EINVAL (BP_EIO if unreadable) with "FILE:LINE: what is wrong" (or
 * "override SECTION.KEY=VALUE: what is wrong", or "override: what is wrong" for a rule
 * between keys that an override broke) in err. */
int bp_config_load(bp_config *cfg, const char *path, const char *const *sets, int nsets, char *err,
                   size_t errlen);

/* Parses config text already in memory; `name` is used in messages in place of a path. */
int bp_config_parse(bp_config *cfg, const char *name, const char *text, const char *const *sets,
                    int nsets, char *err, size_t errlen);

/* The effective config as INI text (every key, defaults included), written into buf.
 * Returns the length it needed (like snprintf). */
size_t bp_config_format(const bp_config *cfg, char *buf, size_t len);

/* One config key as --help and docs/config.md describe it. */
typedef struct {
    const char *section; /* "train" */
    const char *key;     /* "momentum" */
    char type[128];      /* the values it takes: "number ≥ 0, < 1", "sgd | adam | lbfgs | ..." */
    char fallback[64];   /* its default: "0", "required", "runs/<config name>", "—" (none) */
    const char *help;    /* what it does, in one line */
} bp_config_key;

/* The number of config keys, in the order the effective config lists them. */
size_t bp_config_key_count(void);

/* Describes key i (0 <= i < bp_config_key_count()); BP_EINVAL past the end. */
int bp_config_describe(size_t i, bp_config_key *out);

#ifdef __cplusplus
}
#endif

#endif
