/* L-BFGS's state machine (lbfgs.c), behind optimizer = lbfgs (opt_lbfgs.c). */
#ifndef BACKPROP_LBFGS_H
#define BACKPROP_LBFGS_H

#include "optimizer.h"

/* Where L-BFGS stands on its search line x0 + alpha d: the step alpha, the objective there
 * (mean cost plus the L2 term), its slope along d, and the summed data cost and correct
 * count that the epoch's metrics report. */
typedef struct {
    double alpha, f, slope, cost, correct;
} bp__lbfgs_point;

/* The phases of an L-BFGS iteration (bp__lbfgs_state.phase). */
enum {
    BP__LBFGS_FIRST,   /* the first evaluation of the run, at the initial weights */
    BP__LBFGS_BRACKET, /* the line search widens the step until a minimum is bracketed */
    BP__LBFGS_ZOOM,    /* it narrows the bracket [lo, hi] */
    BP__LBFGS_NEXT     /* an iteration ended at x0; the next step starts the next one */
};

/* L-BFGS between two cost evaluations: everything its next step depends on (and what a
 * checkpoint's /optimizer/lbfgs holds). Vectors are params-shaped; s and y hold `history`
 * of them, row by row. */
typedef struct {
    int history;               /* the (s, y) pairs kept: [train] lbfgs_history */
    int pairs;                 /* pairs held so far, at most history */
    int newest;                /* the row of the newest pair */
    int phase;                 /* BP__LBFGS_* */
    int evals;                 /* evaluations in the current line search */
    int converged;             /* 0, or why the run ended: BP_LBFGS_CONVERGED_* */
    double alpha;              /* the step being evaluated */
    double lambda, n_train;    /* the objective's: a resume must minimise the same one */
    bp__lbfgs_point x, lo, hi; /* the iteration's start (alpha 0), the bracket's ends */
    bp_real *x0, *g0;          /* the iteration's start and the objective's gradient there */
    bp_real *d;                /* the search direction */
    bp_real *g_lo;             /* the gradient at lo */
    bp_real *s, *y;            /* history x nparams: x_{k+1} - x_k and g_{k+1} - g_k */
    double *rho;               /* history: 1 / (y . s) of each pair */
} bp__lbfgs_state;

/* L-BFGS (lbfgs.c), one evaluation at a time. The state's buffers for n parameters and
 * `history` pairs; zeroed, in phase BP__LBFGS_FIRST. 0 or BP_ENOMEM (nothing allocated). */
int bp__lbfgs_alloc(bp__lbfgs_state *st, size_t n, int history);
void bp__lbfgs_free(bp__lbfgs_state *st); /* and zeroes it: freeing twice is fine */
/* dst = src, buffers included; both allocated for n parameters and src's history. */
void bp__lbfgs_copy(bp__lbfgs_state *dst, const bp__lbfgs_state *src, size_t n);

typedef struct {
    double n_train, lambda; /* the objective: mean cost over n_train plus lambda/(2n) sum W^2 */
    double tolerance;       /* converged when max |gradient of the objective| <= this */
} bp__lbfgs_setup;

/* bp__lbfgs_evaluated's answers, the optimizer interface's. */
enum {
    BP__LBFGS_GO_ON = BP__OPT_GO_ON,       /* the weights are the next trial of the search */
    BP__LBFGS_ITERATED = BP__OPT_ITERATED, /* an iteration ended at the weights */
    BP__LBFGS_DONE = BP__OPT_DONE,         /* converged (state.converged says why) */
    BP__LBFGS_DIVERGED = BP__OPT_DIVERGED  /* the first evaluation's cost is not finite */
};

/* Before a step: where an iteration begins, moves the weights to its first trial. */
void bp__lbfgs_begin(bp__lbfgs_state *st, bp_real *params, size_t n);

/* After a step: the data cost summed over the training set, correct its correct count,
 * and grad_sum the gradient summed, all at net's weights; g is scratch for nparams. Moves
 * the weights to where the next step evaluates, or ends the iteration; BP__LBFGS_*. */
int bp__lbfgs_evaluated(bp__lbfgs_state *st, const bp_net *net, const bp_real *grad_sum,
                        double cost_sum, double correct, const bp__lbfgs_setup *setup, bp_real *g);

#endif
