/* The MPI layer, thin and in one place: everything else sees a bp_comm (plain ints and an
 * opaque handle) and calls these few collectives, each over the comm it is given. */
#ifndef BACKPROP_COMM_INTERNAL_H
#define BACKPROP_COMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backprop/comm.h"
#include "recorder.h"

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

/* Every rank's k doubles into all (rank r's at all[r * k]) on rank 0; all is not touched
 * elsewhere (may be NULL there). 0, or BP_ECOMM. */
int bp__comm_gather_doubles(const bp_comm *comm, const double *mine, int k, double *all);

/* ---- the flight recorder (src/recorder.h) ---- */

/* Collective over comm's ranks: room for a ring of ring_bytes per rank in memory the
 * node's ranks share, this rank's at *mine (not yet initialised); *mine is NULL where
 * there is none (no MPI, no room in /dev/shm): the caller keeps its ring itself. 0, or
 * BP_ECOMM. */
int bp__comm_map_rings(const bp_comm *comm, size_t ring_bytes, bp__rec **mine);

/* This rank's ring (which records comm's collectives from now on), and where the
 * watchdog writes the node's rings when it fires: trace ("" or NULL: nowhere), their last
 * `steps` steps. Local. */
void bp__comm_set_recorder(const bp_comm *comm, bp__rec *mine, const char *trace, long steps);

/* Rank's host name as the comm knows it; NULL without MPI. */
const char *bp__comm_host(const bp_comm *comm, int rank);

/* Every rank's events on rank 0: n views (rank order, clocks set to rank 0's), over
 * storage freed by bp__rec_gathered_free. */
typedef struct {
    bp__rec_view *views;
    int n;
    bp__rec_event *events;
} bp__rec_gathered;

/* Collective: a copy of each rank's ring mine (NULL: none) gathered to rank 0 into *g
 * (empty elsewhere); ranks on other hosts get their clock's offset by round trips. 0, or
 * BP_ECOMM (or BP_ENOMEM without MPI). */
int bp__comm_gather_rings(const bp_comm *comm, const bp__rec *mine, bp__rec_gathered *g);
void bp__rec_gathered_free(bp__rec_gathered *g);

/* Rank `start` .. `end` of this rank's contiguous shard of m examples: sizes differ by at
 * most one, the first m % size ranks take one more; a rank may get none. */
void bp__shard(size_t m, int rank, int size, size_t *start, size_t *end);

#endif
