/* The communicator: which ranks a trainer (or any collective of the library) runs over.
 *
 *     bp_comm world;
 *     bp_comm_init(&argc, &argv, &world);  // MPI_Init when the program has not
 *     ...                                  // trainers on &world
 *     bp_comm_finalize(&world);
 *
 * A bp_comm is the library's own communicators (a duplicate of MPI_COMM_WORLD, or of what
 * it was made from, and the node and cross-node communicators the gradient exchange uses),
 * so that its collectives never mix with a program's messages or another bp_comm's. Two
 * trainers may live at once on two bp_comms (bp_comm_dup, bp_comm_split); trainers on one
 * bp_comm take turns (each collective of one is over all of the comm's ranks). A bp_comm
 * may be copied; the copies share its communicators, which bp_comm_free (or
 * bp_comm_finalize) releases once, on one of the copies. A trainer holds a reference of its
 * own: they end with the comm's free or the last trainer's, whichever comes later. A bp_comm of
 * {rank 0, size 1, local_size 1} and no mpi is a job of one that never calls MPI.
 *
 * Every function here but bp_comm_watch is collective over the comm's ranks. */
#ifndef BACKPROP_COMM_H
#define BACKPROP_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "backprop/backprop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's MPI communicators and the watchdog of one bp_comm (opaque). */
typedef struct bp_comm_mpi bp_comm_mpi;

/* This process's place in the comm's ranks. */
typedef struct {
    int rank, size;   /* in the comm */
    int local_size;   /* the comm's ranks on this node */
    bp_comm_mpi *mpi; /* NULL: a job of one, without MPI */
} bp_comm;

/* MPI_Init (or nothing when the program or an earlier call already initialised MPI); a lone
 * process started without mpirun is a job of one. comm gets the library's own duplicate of
 * MPI_COMM_WORLD, whose errors return as codes; the program's communicators are untouched.
 * 0, or BP_ECOMM. */
int bp_comm_init(int *argc, char ***argv, bp_comm *comm);

/* Frees comm (bp_comm_free), then calls MPI_Finalize when bp_comm_init called MPI_Init and
 * this is the last comm bp_comm_init gave. Free every comm made by bp_comm_dup or
 * bp_comm_split first. */
void bp_comm_finalize(bp_comm *comm);

/* Collective over comm: *out gets communicators of its own over the same ranks, in the
 * same order. It inherits comm's expired callback (bp_comm_watch); its watchdog is off until
 * bp_comm_watch (bp_trainer_create sets it from [comm] timeout). 0, or BP_ECOMM/BP_ENOMEM
 * with *out a job of one (free it all the same). */
int bp_comm_dup(const bp_comm *comm, bp_comm *out);

/* Collective over comm: the ranks that pass the same color (>= 0) form one new comm, ranked
 * in comm's order (MPI_Comm_split). As bp_comm_dup otherwise; BP_EINVAL for a negative
 * color. */
int bp_comm_split(const bp_comm *comm, int color, bp_comm *out);

/* Local: stops comm's watchdog and frees its communicators (when no trainer still holds
 * them; the last trainer's bp_trainer_free does it then); comm becomes a job of one.
 * Collective in MPI's sense (MPI_Comm_free): every rank of comm frees it. */
void bp_comm_free(bp_comm *comm);

/* Called from the watchdog's thread when a collective on a comm has waited longer than its
 * limit, with this rank and a one-line reason ("timed out after 10 s in the gradient
 * exchange across nodes at step 1234: rank 1 (host h2) did not arrive ..."; with the
 * environment's BACKPROP_EVENTS=1 a JSON record on stderr before it, docs/running.md). On a
 * node only the first rank to time out is called while the job ends (the others wait 5 s
 * more, then are called too). It must end the process
 * (the collective that waits cannot be returned from); the CLI prints the reason and exits
 * with status 1, and mpirun then ends the job. If it returns, the library calls MPI_Abort
 * on the comm. */
typedef void (*bp_timeout_fn)(void *ctx, int rank, const char *reason);

/* comm's watchdog: from now on no collective on comm (or its copies) waits more than seconds.
 * When one does, expired (if not NULL; otherwise the one set before on comm, or inherited
 * from the comm it was made from) is called as above. seconds <= 0 turns it off; a job of one
 * rank needs none. Local. Returns 0, or BP_ENOMEM when its thread cannot be started. */
int bp_comm_watch(const bp_comm *comm, double seconds, bp_timeout_fn expired, void *ctx);

/* Every rank passes a value; all learn the largest one (*max) and the lowest rank that
 * passed it (*who), so that exactly one rank reports. 0, or BP_ECOMM when the collective
 * failed (then *max is value and *who this rank). */
int bp_comm_agree(const bp_comm *comm, int value, int *max, int *who);

/* 1 when every rank passed the same value, 0 when they differ, BP_ECOMM when the collective
 * failed. */
int bp_comm_same(const bp_comm *comm, uint64_t value);

/* In place: buf becomes the sum over the ranks of their n reals. 0, BP_EINVAL (n too large
 * for MPI), or BP_ECOMM. */
int bp_comm_sum(const bp_comm *comm, bp_real *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
