/* Straggler detection: which rank's step work (its rows and its forward and backward
 * passes, before it joins the exchange) keeps the others waiting. Every rank sends its
 * previous step's work time with its gradients (a slot per rank: src/step.h), so rank 0
 * knows all of them one step late, at no extra collective, and feeds them here.
 *
 * The steps are cut into windows of BP__STRAGGLER_STEPS steps lasting at least
 * BP__STRAGGLER_SECONDS. In a window, rank r is slow when its mean work exceeds the median
 * of the other ranks' means by the factor ([log] straggler_factor) and by at least
 * BP__STRAGGLER_MIN_MS a step. A rank slow in two windows in a row joins the slow set; one
 * not slow in two windows in a row leaves it. docs/running.md says why these numbers. */
#ifndef BACKPROP_STRAGGLER_H
#define BACKPROP_STRAGGLER_H

#define BP__STRAGGLER_STEPS 50
#define BP__STRAGGLER_SECONDS 0.5
#define BP__STRAGGLER_MIN_MS 0.1

typedef struct {
    int ranks;
    double factor;
    double *sum;           /* per rank, the window's work, seconds */
    double *mean, *sorted; /* per rank, the last window's mean work, and them sorted */
    unsigned char *slow; /* per rank: slow in the last window (bit 0) and the one before (bit 1) */
    unsigned char *in;   /* per rank: in the slow set */
    long steps;          /* steps in the window so far */
    double seconds;      /* its wall time so far */
    long first_step;     /* its first step */
    /* What the last change said, for the report: */
    long from_step, to_step; /* the window that changed the set */
    int n_in;                /* ranks in the slow set */
    int warned_any;          /* a rank was ever in it */
    double worst_factor;     /* the largest factor of a rank in the set, over the run */
    int worst_rank;          /* its rank */
} bp__straggler;

/* 0, or BP_ENOMEM. factor 0: off (bp__straggler_add does nothing). */
int bp__straggler_init(bp__straggler *s, int ranks, double factor);
void bp__straggler_free(bp__straggler *s);

/* One step: work[r] is rank r's work time in seconds of the step `step` (the previous one),
 * wall its wall time. Returns 1 when the slow set changed (then s->in, s->mean and
 * bp__straggler_others tell what it is), else 0. */
int bp__straggler_add(bp__straggler *s, const double *work, double wall, long step);

/* The median of the other ranks' mean work in the last window, seconds. */
double bp__straggler_others(const bp__straggler *s, int r);

#endif
