/* The MPI layer, thin and in one place: everything else sees a bp_comm of plain ints
 * and calls these few collectives. */
#ifndef BACKPROP_COMM_H
#define BACKPROP_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/train.h" /* bp_comm, bp_comm_init, bp_comm_finalize */

/* The step the reason names (the trainer's global step); -1 for none. */
void bp_comm_set_step(long step);

/* In-place sum across ranks of n reals: THE one collective of a training step. */
int bp_comm_allreduce_sum(const bp_comm *comm, bp_real *buf, size_t n);
int bp_comm_allreduce_sum_double(const bp_comm *comm, double *buf, size_t n);

/* *value becomes its largest value over the ranks. */
int bp_comm_max_double(const bp_comm *comm, double *value);

/* Every rank passes a value; all learn the largest one (*max) and the lowest rank that
 * passed it (*who), so that exactly one rank reports. 0, or BP_ECOMM when the collective
 * failed (then *max is value and *who this rank). */
int bp_comm_agree(const bp_comm *comm, int value, int *max, int *who);

/* 1 when every rank passed the same value, 0 when they differ, BP_ECOMM when the collective
 * failed. */
int bp_comm_same(const bp_comm *comm, uint64_t value);

/* Rank `start` .. `end` of this rank's contiguous shard of m examples: sizes differ by at
 * most one, the first m % size ranks take one more; a rank may get none. */
void bp_shard(size_t m, int rank, int size, size_t *start, size_t *end);

#endif
