/* What comm.c shares with exchange.c, the other file that speaks MPI: a bp_comm's
 * communicators and its watchdog's hooks. Nothing else includes mpi.h. */
#ifndef BACKPROP_COMM_MPI_H
#define BACKPROP_COMM_MPI_H

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backprop/comm.h"
#include "backprop/config.h"

#ifdef BACKPROP_DOUBLE
#define BP_MPI_REAL MPI_DOUBLE
#else
#define BP_MPI_REAL MPI_FLOAT
#endif

#define BP__WATCH_SLOTS 2 /* the trainer's thread and the exchange's */
#define BP__HOST_CHARS 65 /* a host name (Linux's HOST_NAME_MAX is 64) and its NUL */

/* One rank's line of its node's arrival board (a shared-memory segment per comm and node):
 * what the watchdog of any rank of the node reads to tell who did not arrive. Each rank
 * writes its own line only. */
typedef struct {
    /* Per watchdog slot, the node-wide points this thread has reached on the comm: its
     * collectives and the exchange's waits on the node. Every rank of a node passes the
     * same points in the same order, so a rank that counts fewer has not reached the one
     * another waits in. (Not the exchange's waits across nodes: how many a rank has
     * depends on its slice; those ranks are on other hosts anyway.) */
    _Atomic long count[BP__WATCH_SLOTS];
    _Atomic int inside[BP__WATCH_SLOTS]; /* waiting now (between enter and leave) */
    _Atomic long long beat_ns;           /* the rank's watchdog's last look (CLOCK_MONOTONIC): a
                                            stopped process's stands still */
    _Atomic long long fired_ns;          /* when its watchdog reported; 0 before */
    /* A cache line each (the board is page-aligned): no rank's stores evict another's. */
    char pad[64 - BP__WATCH_SLOTS * (sizeof(long) + sizeof(int)) - 2 * sizeof(long long)];
} bp__arrival;

/* One bp_comm's watchdog: its own thread, started by bp_comm_watch, stopped by
 * bp_comm_free. */
typedef struct {
    struct {
        _Atomic long long since_ns; /* when the current collective began; 0 when in none */
        _Atomic(const char *) what; /* "the gradient exchange" */
    } slot[BP__WATCH_SLOTS];
    _Atomic long step; /* the trainer's global step, for the message */
    _Atomic long long timeout_ns;
    bp_timeout_fn expired;
    void *ctx;
    int started, stop; /* stop: under mu */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled by bp_comm_free: the thread ends at once */
} bp__watchdog;

struct bp_comm_mpi {
    MPI_Comm world; /* the library's duplicate of what the comm was made from */
    /* Ranks of this node, and the ranks of every node with this rank's place on its node
     * (one per node). Where nodes hold different numbers of ranks, a node is treated as
     * one rank: node is this rank alone and cross is world. */
    MPI_Comm node, cross;
    MPI_Comm flat; /* another duplicate of world: every rank a node of its own */
    MPI_Comm shm;  /* the ranks that share this rank's memory, whatever node above says */
    int rank, size, node_rank, node_size, cross_rank, cross_size;
    int threads_ok; /* MPI lets a second thread call it (MPI_THREAD_SERIALIZED or more) */
    bp__watchdog wd;
    /* For the watchdog's message: every rank's host and MPI_COMM_WORLD number (renumbered
     * when they differ from the comm's), and the node's board: board_n lines, line i for
     * comm rank board_rank[i], this rank's at mine (or own, without a board). */
    char (*hosts)[BP__HOST_CHARS];
    int *world_rank, renumbered;
    bp__arrival *board, *mine, own;
    int board_n, *board_rank;
    size_t board_bytes;
    /* The flight recorder (src/recorder.h): this rank's ring, the collective being recorded
     * in it, and the node's rings (rings_n of ring_bytes, mapped as the board is), which
     * the watchdog writes to trace_path (when set) as it fires. */
    struct bp__rec_rings {
        struct bp__rec *mine;
        int64_t open;
        char *base;
        size_t ring_bytes, bytes;
        int n;
        long steps;
        char path[BP_PATH_MAX + 80];
    } rec;
    atomic_int refs; /* the program's bp_comm and every trainer built on it */
};
typedef struct bp_comm_mpi bp__mpi;

/* The watchdog's view of a thread of comm m: slot 0 is the trainer's thread, slot 1 the
 * exchange's. Between enter and leave the slot counts as waiting in a collective named
 * what, here and on the node's arrival board. */
void bp__watch_enter(bp__mpi *m, int slot, const char *what);
void bp__watch_leave(bp__mpi *m, int slot);

/* Slot's thread reached the next node-wide point on comm m: a collective of the comm or of
 * its node, or a wait of the exchange on the node (whether or not it has to wait). Two
 * plain atomic accesses to this rank's own line of the board. */
void bp__watch_count(bp__mpi *m, int slot);

#endif
