/* Where a run's data sets live ([data] placement), and how a step's rows reach a rank:
 * - replicated: every rank reads, decodes and holds every set;
 * - node: one rank of each node (the node's rank 0) reads and decodes them into memory that
 *   every rank of the node maps (MPI-3 shared windows): one copy per node;
 * - stream: no rank holds /X; each reads the rows its steps and its share of evaluation
 *   need from the HDF5 file (shared file system), asking the kernel for the next step's
 *   rows ahead. For sets larger than a node's memory.
 * Rows come out the same in all three, so a run's trajectory does not depend on it. */
#ifndef BACKPROP_PLACE_H
#define BACKPROP_PLACE_H

#include "backprop/config.h"
#include "backprop/data.h"
#include "comm.h"
#include "data_internal.h"

enum { BP__SET_TRAIN, BP__SET_VAL, BP__SET_TEST, BP__SETS };

typedef struct bp__ahead bp__ahead; /* stream: the thread that reads the next step's rows */

typedef struct {
    bp_placement kind;                 /* in effect (never auto after bp__place_choose) */
    char why[160];                     /* auto's reason, for the log */
    double bytes;                      /* the sets' rows in memory, in all (one copy) */
    int streamable;                    /* every set is an HDF5 file with a contiguous /X */
    double held;                       /* what stream holds: /y and the permutation */
    char what[3 * (BP_PATH_MAX + 64)]; /* the sets' names and shapes, for messages */
    bp_shared *shared[BP__SETS];       /* node: the window each set lives in (its /X too, when
                                        * not decoded in place) */
    bp_shared *xwin[BP__SETS];         /* node: the window each file's /X is decoded into */
    bp_real *xbase[BP__SETS];          /* node: its address in this rank */
    size_t file_n[BP__SETS], file_d[BP__SETS]; /* each file's shape, from its header */
    bp__h5_stream *stream[BP__SETS];           /* stream: each set's file (val may share train's) */
    size_t base[BP__SETS];                     /* stream: the file's row of the set's row 0 */
    int own_stream[BP__SETS];                  /* closes stream[i] */
    bp__ahead *ahead;                          /* stream: the next step's rows, read meanwhile */
    bp_real *Xe, *Ye;                          /* stream: rows read for evaluation (the trainer's */
    int *Le;                                   /* workspace's rows; freed here) */
    double ceiling; /* bytes the data may take ([data] max_memory_mb); 0: no ceiling */
    const bp_dataset *given[BP__SETS]; /* sets given in memory, used instead of the config's
                                        * files when given[0] is: the caller's, read during
                                        * setup only (later, only whether they were given) */
    bp_load_progress_fn progress;      /* told how far the loads have come (bp__place_load) */
    void *progress_ctx;
    bp_comm comm; /* the trainer's: the node's ranks of it share the data */
} bp__place;

/* What the choice of a placement goes by on one rank: the sets' sizes, the room there is
 * (the node's memory under the ceiling, /dev/shm, this process's own limits) and the ranks
 * sharing the node. */
typedef struct {
    double bytes;   /* the sets' rows in memory, one copy */
    double held;    /* what stream holds: /y and the permutation */
    int streamable; /* every set is an HDF5 file with a contiguous /X */
    double avail;   /* bp__memory_available(ceiling) */
    double shm;     /* room in /dev/shm */
    double own;     /* bp__rlimit_room_at("") */
    int node_size;  /* ranks on this node (1 in a job of one) */
    int node_rank;  /* this rank's place on it */
    int per_rank;   /* [data] max_memory_mb is set: the budget is each rank's */
} bp__place_room;

/* placement = auto's choice for r: node when the node has company and one copy fits,
 * replicated when a copy per rank fits, stream when the sets are streamable, else the most
 * frugal in-memory kind (for bp__place_fits to refuse). why: the reason, in words. */
bp_placement bp__place_auto(const bp__place_room *r, char *why, size_t len);

/* 0 when kind fits r's room; else BP_EINVAL with a reason that names what (the sets), the
 * memory needed and there is, and the placements that would fit. */
int bp__place_fits(bp_placement kind, const bp__place_room *r, const char *what, char *err,
                   size_t errlen);

/* Every rank: the placement this rank would take for cfg (auto: from the data's size, the
 * memory there is under [data] max_memory_mb, and the ranks sharing it), checked against
 * that memory. given (may be NULL): sets in memory, used instead of the config's files when
 * given[BP__SET_TRAIN] is not NULL (then stream is refused). The ranks then agree on the
 * largest kind (replicated < node < stream: the most frugal wins) and call bp__place_set
 * with it. A reason in err on failure (a missing file, too little memory). */
int bp__place_choose(bp__place *p, const bp_config *cfg, int classes,
                     const bp_dataset *const given[BP__SETS], const bp_comm *comm, char *err,
                     size_t errlen);

/* Records the agreed kind; when it is not this rank's choice, checks the memory again. */
int bp__place_set(bp__place *p, bp_placement kind, const bp_config *cfg, char *err, size_t errlen);

/* Reads the sets as the placement says (or copies those given in memory): replicated, every
 * rank; node, the node's rank 0 (the others have nothing to read); stream, every rank opens
 * the files and checks its share of the rows. sets[] get their shapes (and rows, when in
 * memory). progress (may be NULL) is told how far the reads have come. */
int bp__place_load(bp__place *p, bp_dataset *const sets[BP__SETS], const bp_config *cfg,
                   const bp_net *net, const bp_comm *comm, bp_load_progress_fn progress,
                   void *progress_ctx, char *err, size_t errlen);

/* node: after every rank agreed that the load went well, collective over each node's
 * ranks: the node's rank 0 copies its sets into shared memory, and every rank's sets[]
 * point there. Nothing for the other placements. */
int bp__place_share(bp__place *p, bp_dataset *const sets[BP__SETS], char *err, size_t errlen);

/* count rows of set s into X, Y, labels (labels may be NULL): rows[i], or first + i when
 * rows is NULL. In memory, copies; streamed, reads. */
int bp__place_rows(bp__place *p, bp_dataset *const sets[BP__SETS], int s, const size_t *rows,
                   size_t count, size_t first, bp_real *X, bp_real *Y, int *labels, char *err,
                   size_t errlen);

/* The training rows the next step will ask for: prefetched into the caches, or (stream) read
 * by a thread of the placement's while this step computes. */
void bp__place_ahead(bp__place *p, bp_dataset *const sets[BP__SETS], const size_t *rows,
                     size_t count);

/* stream: when the rows read ahead are rows[0 .. count), *X, *Y and *labels (buffers of
 * the capacity given to bp__place_ahead_buffers) become theirs, and 1 is returned; else 0
 * (then bp__place_rows reads them). */
int bp__place_take_ahead(bp__place *p, const size_t *rows, size_t count, bp_real **X, bp_real **Y,
                         int **labels);

/* stream: starts the thread that reads ahead, with room for rows rows of d features and k
 * targets (a step's shard). Nothing for the others. 0 or BP_ENOMEM. */
int bp__place_ahead_buffers(bp__place *p, size_t rows, size_t d, size_t k);

/* Frees what the placement holds (collective over the node's ranks under node). */
void bp__place_free(bp__place *p, bp_dataset *const sets[BP__SETS]);

#endif
