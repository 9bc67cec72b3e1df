/* The MPI layer, thin and in one place: everything else sees a bp_comm of plain ints
 * and calls these few collectives. */
#ifndef BACKPROP_COMM_H
#define BACKPROP_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"

typedef struct {
    int rank, size; /* in the job */
    int local_size; /* ranks on this node */
} bp_comm;

/* MPI_Init (or nothing when already initialised); errors return instead of aborting. */
int bp_comm_init(int *argc, char ***argv, bp_comm *comm);
void bp_comm_finalize(void);

/* In-place sum across ranks of n reals: THE one collective of a training step. */
int bp_comm_allreduce_sum(const bp_comm *comm, bp_real *buf, size_t n);
int bp_comm_allreduce_sum_double(const bp_comm *comm, double *buf, size_t n);

/* *value becomes its largest value over the ranks. */
int bp_comm_max_double(const bp_comm *comm, double *value);

/* Every rank passes its status (0 ok, else an exit status); all learn the largest one and
 * the lowest rank that reported it, so exactly one rank prints the error. */
int bp_comm_agree(const bp_comm *comm, int status, int *who);

/* 1 when every rank passed the same value, else 0 (also 0 if the collective failed). */
int bp_comm_same(const bp_comm *comm, uint64_t value);

/* Broadcasts a NUL-terminated string of at most len bytes from rank 0. */
int bp_comm_bcast_string(const bp_comm *comm, char *buf, size_t len);

/* Rank `start` .. `end` of this rank's contiguous shard of m examples: sizes differ by at
 * most one, the first m % size ranks take one more; a rank may get none. */
void bp_shard(size_t m, int rank, int size, size_t *start, size_t *end);

#endif
