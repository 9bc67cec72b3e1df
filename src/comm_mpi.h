/* What comm.c shares with exchange.c, the other file that speaks MPI: the library's
 * communicators and the watchdog's hooks. Nothing else includes mpi.h. */
#ifndef BACKPROP_COMM_MPI_H
#define BACKPROP_COMM_MPI_H

#include <mpi.h>

#ifdef BACKPROP_DOUBLE
#define BP_MPI_REAL MPI_DOUBLE
#else
#define BP_MPI_REAL MPI_FLOAT
#endif

typedef struct {
    MPI_Comm world; /* the library's duplicate of MPI_COMM_WORLD */
    /* Ranks of this node, and the ranks of every node with this rank's place on its node
     * (one per node). Where nodes hold different numbers of ranks, a node is treated as
     * one rank: node is this rank alone and cross is world. */
    MPI_Comm node, cross;
    MPI_Comm flat; /* another duplicate of world: every rank a node of its own */
    MPI_Comm shm;  /* the ranks that share this rank's memory, whatever node above says */
    int node_rank, node_size, cross_rank, cross_size;
    int threads_ok; /* MPI lets a second thread call it (MPI_THREAD_SERIALIZED or more) */
} bp__mpi;

/* The communicators above; NULL before bp_comm_init. */
const bp__mpi *bp__mpi_get(void);

/* The watchdog's view of a thread: slot 0 is the trainer's thread, slot 1 the exchange's.
 * Between enter and leave the slot counts as waiting in a collective named what. */
void bp__watch_enter(int slot, const char *what);
void bp__watch_leave(int slot);

#endif
