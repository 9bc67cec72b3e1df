/* The MPI layer, thin and in one place: everything else sees a bp_comm (plain ints and an
 * opaque handle) and calls these few collectives, each over the comm it is given. */
#ifndef BACKPROP_COMM_INTERNAL_H
#define BACKPROP_COMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backprop/comm.h"

/* A trainer's reference to comm's communicators, taken at create and dropped at free:
 * the program may free its comm first. */
void bp__comm_retain(const bp_comm *comm);
void bp__comm_release(bp_comm *comm);

/* The step comm's watchdog names in its reason (the trainer's global step); -1 for none. */
void bp__comm_set_step(const bp_comm *comm, long step);

/* In-place sum across ranks of n doubles. */
int bp__comm_allreduce_sum_double(const bp_comm *comm, double *buf, size_t n);

/* *value becomes its largest value over the ranks. */
int bp__comm_max_double(const bp_comm *comm, double *value);

/* reproducible = any_scale (src/train.c): the maxima of n doubles over the ranks, in place,
 * and the exact sum of n int64 over the ranks, in place (integer sums do not depend on the
 * order MPI takes). 0 or BP_ECOMM. */
int bp__comm_max_doubles(const bp_comm *comm, double *buf, size_t n);
int bp__comm_sum_i64(const bp_comm *comm, int64_t *buf, size_t n);

/* Rank 0's bytes of buf, sent to every rank (the others' buf is overwritten): what a rank
 * compares with its own to find what differs. 0, or BP_ECOMM. */
int bp__comm_bcast(const bp_comm *comm, void *buf, size_t bytes);

/* Node-shared memory: one copy of the data per node (MPI-3 shared windows over the ranks
 * that share memory, whether or not the gradient exchange treats them as one node). */
typedef struct bp_shared bp_shared;

/* This rank's place among comm's ranks sharing its memory, and how many they are. */
int bp__comm_node_ranks(const bp_comm *comm, int *rank, int *size);

/* The node's rank 0 sends bytes of buf to the node's other ranks (of comm). */
int bp__comm_node_bcast(const bp_comm *comm, void *buf, size_t bytes);

/* Collective over comm's ranks on the node: bytes of memory (the node's rank 0's value counts)
 * that every rank of the node reaches at *base. The node's rank 0 writes it, then all call
 * bp__comm_share_ready before reading. BP_ENOMEM when it cannot be had (/dev/shm full),
 * BP_ECOMM when a collective failed. */
int bp__comm_share(const bp_comm *comm, size_t bytes, bp_shared **out, void **base);
int bp__comm_share_ready(bp_shared *s);
void bp__comm_share_free(bp_shared *s); /* collective over the node's ranks */

/* The watchdog's words for ranks (src/comm.c): a rank and its host. */
typedef struct {
    int rank;
    const char *host;
} bp__rank_host;

/* The n ranks of r (sorted by rank) as the watchdog's message names them: "rank 2 (host a)",
 * "ranks 2, 5 (host a), 7 (host b)", "ranks 4-7 (host b), 8-11 (host c)". Each host once,
 * after its ranks, in the order of its lowest rank; three or more ranks in a row as a
 * range. */
void bp__print_ranks(FILE *f, const bp__rank_host *r, int n);

/* s as a JSON string, quotes included: quotes, backslashes and control characters escaped
 * (host names come from the system). */
void bp__print_json_string(FILE *f, const char *s);

/* Rank `start` .. `end` of this rank's contiguous shard of m examples: sizes differ by at
 * most one, the first m % size ranks take one more; a rank may get none. */
void bp__shard(size_t m, int rank, int size, size_t *start, size_t *end);

#endif
