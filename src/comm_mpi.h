/* What comm.c shares with exchange.c, the other file that speaks MPI: a bp_comm's
 * communicators and its watchdog's hooks. Nothing else includes mpi.h. */
#ifndef BACKPROP_COMM_MPI_H
#define BACKPROP_COMM_MPI_H

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>

#include "backprop/comm.h"

#ifdef BACKPROP_DOUBLE
#define BP_MPI_REAL MPI_DOUBLE
#else
#define BP_MPI_REAL MPI_FLOAT
#endif

#define BP__WATCH_SLOTS 2 /* the trainer's thread and the exchange's */

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
    atomic_int refs; /* the program's bp_comm and every trainer built on it */
};
typedef struct bp_comm_mpi bp__mpi;

/* The watchdog's view of a thread of comm m: slot 0 is the trainer's thread, slot 1 the
 * exchange's. Between enter and leave the slot counts as waiting in a collective named
 * what. */
void bp__watch_enter(bp__mpi *m, int slot, const char *what);
void bp__watch_leave(bp__mpi *m, int slot);

#endif
