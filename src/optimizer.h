/* The optimizer behind one interface: the trainer orchestrates a step (begin, the summed
 * gradient applied range by range as the exchange hands it back, the decision after the
 * sum) and never asks which optimizer runs; checkpoints and the writer loop over the
 * optimizer's state items. One backend per file (opt_*.c), registered in optimizer.c's
 * table by its bp_optimizer value. */
#ifndef BACKPROP_OPTIMIZER_H
#define BACKPROP_OPTIMIZER_H

#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "internal.h"

/* The most items a backend's state has (lbfgs: 19). */
#define BP__OPT_MAX_ITEMS 24
/* A spec's count for an item whose size the file says (lbfgs's pairs: its history). */
#define BP__AS_STORED ((size_t)-1)

/* After a step's sum (bp__optimizer_evaluated). */
enum {
    BP__OPT_GO_ON,    /* the run goes on: the epoch ends at its last batch */
    BP__OPT_ITERATED, /* an iteration ended (whole_set): the epoch ends */
    BP__OPT_DONE,     /* converged (bp__optimizer_converged says why): the run ends */
    BP__OPT_DIVERGED  /* the sum cannot be used (lbfgs: the first cost is not finite) */
};

typedef struct bp__optimizer bp__optimizer;

typedef struct {
    const char *name;       /* bp_optimizer_names' */
    int whole_set;          /* a step takes the whole training set in its order, and an
                             * epoch is one iteration (ended by BP__OPT_ITERATED) */
    const char *state_what; /* its state, in a memory message */
    /* Values per parameter a run holds: weights, gradient, the state (and rank 0's copy of
     * what is larger than the weights). */
    double (*per_param)(const bp_config *c);
    /* The items a checkpoint holds, in the order written (data NULL); a count of
     * BP__AS_STORED is read as the file has it, and check says whether the whole is
     * consistent (NULL: nothing to check). */
    const bp_state_item *spec;
    size_t nspec;
    int (*check)(const bp_state_item *items, size_t n, size_t nparams, char *why, size_t len);
    /* o->cfg and o->net are set: allocates o->s. 0 or BP_ENOMEM. */
    int (*create)(bp__optimizer *o);
    void (*destroy)(bp__optimizer *o);
    /* Once the data is in (o->n_train set), resumed or not: checks and derives. */
    int (*prepare)(bp__optimizer *o, int resumed, char *err, size_t errlen);
    /* Before a checkpoint's items are copied in: whether they fit this run's (path names
     * the file in the message). NULL: they always do. */
    int (*fits)(const bp__optimizer *o, const bp_checkpoint *ck, const char *path, char *err,
                size_t errlen);
    void (*loaded)(bp__optimizer *o);             /* after they were; NULL: nothing */
    void (*begin)(bp__optimizer *o, bp_net *net); /* NULL: nothing */
    /* The update of [from, to) from the summed gradient of m examples: 1 when a value it
     * stored is not finite. NULL: evaluated takes the whole sum. */
    int (*apply)(bp__optimizer *o, bp_net *net, const bp_real *sum, double m, size_t from,
                 size_t to);
    /* After the whole sum (BP__OPT_*); NULL: BP__OPT_GO_ON. */
    int (*evaluated)(bp__optimizer *o, bp_net *net, const bp_real *sum, double cost,
                     double correct);
    size_t (*items)(bp__optimizer *o, bp_state_item *out); /* the state now */
    /* The first non-finite value of the state, into msg (bp__nonfinite_params). */
    int (*nonfinite)(const bp__optimizer *o, const bp_net *net, char *msg, size_t len);
    /* whole_set: the cost and correct count the epoch's metrics report. */
    void (*point)(const bp__optimizer *o, double *cost, double *correct);
    int (*converged)(const bp__optimizer *o); /* BP_LBFGS_CONVERGED_* or 0; NULL: 0 */
    /* After the name in bp_checkpoint_describe_optimizer; NULL: nothing. */
    void (*describe)(const bp_checkpoint *ck, char *buf, size_t len);
} bp__opt_backend;

struct bp__optimizer {
    const bp__opt_backend *be;
    const bp_config *cfg;
    const bp_net *net; /* the shapes; its weights are the caller's */
    double n_train;
    double learning_rate; /* of the step being applied */
    long t;               /* that update's number, 1-based */
    void *s;              /* the backend's */
};

const bp__opt_backend *bp__opt_backend_of(bp_optimizer kind);
const bp__opt_backend *bp__opt_backend_named(const char *name); /* NULL: unknown */

/* The configured optimizer for net's shape, zeroed. 0 or BP_ENOMEM with err. */
int bp__optimizer_create(bp__optimizer **o, const bp_config *cfg, const bp_net *net, char *err,
                         size_t errlen);
void bp__optimizer_free(bp__optimizer *o);
int bp__optimizer_prepare(bp__optimizer *o, double n_train, int resumed, char *err, size_t errlen);
/* ck's optimizer state into o: BP_EMISMATCH when it is another optimizer's or does not fit. */
int bp__optimizer_load(bp__optimizer *o, const bp_checkpoint *ck, const char *path, char *err,
                       size_t errlen);

void bp__optimizer_begin(bp__optimizer *o, bp_net *net);
void bp__optimizer_set_step(bp__optimizer *o, double learning_rate, long t);
int bp__optimizer_applies(const bp__optimizer *o); /* apply per range, or all in evaluated */
int bp__optimizer_apply(bp__optimizer *o, bp_net *net, const bp_real *sum, double m, size_t from,
                        size_t to);
int bp__optimizer_evaluated(bp__optimizer *o, bp_net *net, const bp_real *sum, double cost,
                            double correct);
int bp__optimizer_whole_set(const bp__optimizer *o);
int bp__optimizer_converged(const bp__optimizer *o);
void bp__optimizer_point(const bp__optimizer *o, double *cost, double *correct);

/* The state for a checkpoint: o's items (valid until o changes). */
bp_optimizer_state bp__optimizer_state(bp__optimizer *o, bp_state_item *items);
/* The state's values chained into h (bp__hash_words), in the items' order. */
uint64_t bp__optimizer_hash(bp__optimizer *o, uint64_t h);
int bp__optimizer_nonfinite(const bp__optimizer *o, const bp_net *net, char *msg, size_t len);

/* Bytes of an item's data for nparams parameters. */
size_t bp__state_item_bytes(const bp_state_item *it, size_t nparams);

/* "12 of layer 0's 8192 weights are not finite" for buf's first layer that has any, after
 * whose ("", "the velocities of "). 0 when every value is finite. */
int bp__nonfinite_params(const bp_net *net, const bp_real *buf, const char *whose, char *msg,
                         size_t len);

/* The per-element updates run over [from, to) by segments of one layer's weights or biases
 * (optim.c): fn updates params-shaped buffers at [o, o + n), 1 when it stored a value that is
 * not finite. Each element gets the same expression whoever updates it, so neither the range
 * nor the threads change a bit. */
typedef int (*bp__segment_fn)(const void *ctx, size_t o, size_t n, int weights);
int bp__opt_for_range(const bp_net *net, size_t from, size_t to, bp__segment_fn fn,
                      const void *ctx);

#endif
