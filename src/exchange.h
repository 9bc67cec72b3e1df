/* The gradient exchange of a training step: the ranks' gradient buffers summed over the job,
 * bucket by bucket, starting while the backward pass still computes. exchange.c says how. */
#ifndef BACKPROP_EXCHANGE_H
#define BACKPROP_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"
#include "comm.h"
#include "recorder.h"

typedef struct bp__exchange bp__exchange;

/* Collective over comm's ranks, on communicators of comm's own. A buffer of n reals per
 * rank laid out as net's parameters (then extra slots, summed too); buckets of about
 * bucket_mb megabytes cut at the row blocks of bp__backward_ready, or one bucket for the
 * whole buffer when overlap is 0. With bf16, the sums between nodes travel in bf16 ([comm]
 * dtype), except the slices reaching exact_from or beyond (the extra slots), which stay
 * exact. With i64 the buffer holds n int64 instead (reproducible = any_scale: src/fixed.h),
 * summed exactly, and bf16 is ignored. Returns 0 on this rank, or BP_ENOMEM/BP_ECOMM (the
 * caller agrees on it). */
int bp__exchange_create(bp__exchange **x, const bp_comm *comm, const bp_net *net, size_t n,
                        double bucket_mb, int overlap, size_t exact_from, int bf16, int i64,
                        char *err, size_t errlen);

/* Where this rank writes its gradient: n reals (NULL with i64), or n int64 (NULL without). */
bp_real *bp__exchange_buffer(bp__exchange *x);
int64_t *bp__exchange_buffer_i64(bp__exchange *x);

/* A step begins: no part of the buffer is final yet. */
void bp__exchange_begin(bp__exchange *x);

/* buffer[from .. n) is final on this rank: the buckets it completes are sent on their way.
 * Made for bp__backward_ready (ctx is the exchange). */
void bp__exchange_ready(void *x, size_t from);

/* After this rank's whole buffer is final: the next bucket in order, [*lo, *hi), summed over
 * all ranks in (*sum)[*lo .. *hi), valid until the next step's begin. Returns 1, 0 when
 * every bucket of the step was returned, or BP_ECOMM. */
int bp__exchange_next(bp__exchange *x, size_t *lo, size_t *hi, const bp_real **sum);

/* With i64: a step begins, and convert(ctx, v, k, real, lo, hi) will set reals
 * real[lo .. hi) to the job's sums v[0][i] + ... + v[k - 1][i] of int64 vectors, for each
 * slice where it is summed (the rank that sums a slice converts it, once, for every rank of
 * its node). Where one node's buffers are all the job's, the elements before exact_from are
 * summed only so, in the same pass: the int64 sums next_i64 returns hold the elements from
 * exact_from on (the others only without convert, or with several nodes).
 * With floats as well (only where bp__exchange_takes_floats, and the same on every rank),
 * each rank's elements before exact_from are floats this step, float i at byte 4 i of its
 * buffer, and floats(ctx, v, k, sum, real, lo, hi) turns the node's k of them into the
 * node's int64 sums sum[lo .. hi) (several nodes; then convert as before) or, where sum is
 * NULL, the reals. */
typedef void (*bp__exchange_convert_fn)(void *ctx, const int64_t *const *v, int k, bp_real *real,
                                        size_t lo, size_t hi);
typedef void (*bp__exchange_floats_fn)(void *ctx, const float *const *v, int k, int64_t *sum,
                                       bp_real *real, size_t lo, size_t hi);
void bp__exchange_begin_i64(bp__exchange *x, bp__exchange_convert_fn convert,
                            bp__exchange_floats_fn floats, void *ctx);

/* Whether begin_i64 may be given floats: the node's ranks sum each other's buffers in
 * shared memory (floats are quantized there, never sent between nodes). */
int bp__exchange_takes_floats(const bp__exchange *x);

/* bp__exchange_next with i64: the int64 sums, and the reals they converted to. */
int bp__exchange_next_i64(bp__exchange *x, size_t *lo, size_t *hi, const int64_t **sum,
                          const bp_real **real);

/* Seconds this rank spent so far: *exposed with the trainer's thread waiting (in ready and
 * next; exposed may be NULL), *busy with the exchange doing work or waiting on the network,
 * on either thread. */
void bp__exchange_times(const bp__exchange *x, double *exposed, double *busy);

/* Seconds this rank stood still inside the exchange's waits so far (stopped, or not
 * scheduled: turns of a wait loop longer than a millisecond), on either thread. */
double bp__exchange_stalled(const bp__exchange *x);

/* Buckets the trainer has taken this step (the last one bp__exchange_next returned is this
 * less one). */
int bp__exchange_taken(const bp__exchange *x);

/* The buckets a step's buffer is cut into. */
int bp__exchange_buckets(const bp__exchange *x);

/* Records each bucket's exchange in rec (src/recorder.h) from now on; NULL: no more.
 * Local. */
void bp__exchange_set_recorder(bp__exchange *x, bp__rec *rec);

/* How the sum travels, for a one-line report: "2 ranks on 1 node, shared memory; 4 buckets". */
void bp__exchange_describe(const bp__exchange *x, char *buf, size_t len);

/* Local; stops the thread, unmaps the shared memory. NULL is fine. */
void bp__exchange_free(bp__exchange *x);

#endif
