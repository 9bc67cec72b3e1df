/* What one step of the trainer reports: the slots after the gradients in the exchange's
 * buffer, which every rank fills and the exchange sums with the gradients, what their sums
 * said, and the clock of the steps' phases on this rank. */
#ifndef BACKPROP_STEP_H
#define BACKPROP_STEP_H

#include <stdint.h>

#include "backprop/backprop.h"
#include "backprop/config.h"
#include "backprop/train.h"
#include "comm.h"

/* The slots after the gradients in the exchange's buffer: summed like them, so what every
 * rank must know about a step arrives with its gradient sum and costs no collective. */
enum {
    BP__SLOT_COST,    /* cost sum of the rank's shard */
    BP__SLOT_CORRECT, /* correctly classified examples in it */
    BP__SLOT_STOP,    /* 1 when this rank was asked to stop (bp_request_stop) */
    BP__SLOT_ORDERS,  /* rank 0's orders, BP__ORDER_* bits; 0 on the others */
    BP__SLOT_FAILED,  /* 1 when this rank could not read its rows (stream) */
    BP__EXTRAS,
    /* Then a slot per rank r, BP__SLOT_WORK + r: rank r's previous step's work (its rows,
     * forward and backward passes) in microseconds, 0 on the other ranks: what straggler
     * detection reads (src/straggler.h). */
    BP__SLOT_WORK = BP__EXTRAS
};
enum {
    BP__ORDER_CHECKPOINT = 1,  /* rank 0 took a checkpoint before the step (every_seconds) */
    BP__ORDER_WRITE_FAILED = 2 /* the background checkpoint write failed: stop */
};

/* The last step: what its slots summed to, as every rank knows it, and this rank's part. */
typedef struct {
    double cost, correct; /* summed over the ranks */
    int stop;             /* some rank was asked to stop */
    int orders;           /* rank 0's BP__ORDER_* bits */
    int failed;           /* some rank could not read its rows */
    int nonfinite;        /* the update left weights that are not finite */
    int read_failed;      /* this rank could not read its rows */
    int outcome;          /* the optimizer's BP__OPT_* after it */
} bp__step_result;

/* Fills cost to failed from the summed slots, extras[BP__SLOT_*]; the rest is the step's to
 * set. */
void bp__step_result_read(bp__step_result *s, const bp_real *extras);

/* reproducible = any_scale: the same from the slots summed in fixed point, the cost's at
 * cost_scale (src/fixed.h). */
void bp__step_result_read_fixed(bp__step_result *s, const int64_t *extras, double cost_scale);

/* The rows [*lo, *hi) of a global batch of m rows that rank `rank` of `size` takes: a
 * contiguous shard (bp__shard), or under reproducible = any_scale, whole micro-shards of
 * cfg->micro_batch rows (a rank past the micro-shards takes none). */
void bp__step_rows(const bp_config *cfg, size_t m, int rank, int size, size_t *lo, size_t *hi);

/* This process's seconds in the steps of a run, by phase: gather + forward + backward, the
 * exchange that was not hidden (waiting for slower ranks included), the update; and the
 * time the exchange took in all, hidden behind the backward pass or not. */
typedef struct {
    double compute_s, exchange_s, update_s, exchange_busy_s;
    double data_s; /* the steps' rows: copied into the batch, or read from the file */
    long steps;
} bp__step_clock;

/* Adds one step's phases, in seconds: its rows, its computation, its exchange not hidden,
 * the exchange in all, its update. */
void bp__step_clock_add(bp__step_clock *c, double data_s, double compute_s, double exchange_s,
                        double busy_s, double update_s);

/* Collective over comm (the slowest rank's computation): the clock's averages per step into
 * times, every other field zero. 0, or BP_ECOMM when the ranks could not be asked (then the
 * slowest is this rank's). */
int bp__step_clock_report(const bp__step_clock *c, const bp_comm *comm, bp_step_times *times);

#endif
