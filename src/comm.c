#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "comm.h"
#include "comm_mpi.h"

/* The library's own copy of MPI_COMM_WORLD: its collectives never mix with a program's
 * own messages, and its error handler (errors come back as codes: a rank never dies inside
 * MPI without saying why) is set on the copy, not on the program's communicator. */
static MPI_Comm world = MPI_COMM_NULL;
static int we_initialised; /* MPI_Finalize is ours to call only if MPI_Init was */
static int comm_local_size = 1;

static int comms_rank(void)
{
    int r = 0;
    MPI_Comm_rank(world, &r);
    return r;
}

static int comms_size(void)
{
    int n = 1;
    MPI_Comm_size(world, &n);
    return n;
}
static bp__mpi comms = {.world = MPI_COMM_NULL,
                        .node = MPI_COMM_NULL,
                        .cross = MPI_COMM_NULL,
                        .flat = MPI_COMM_NULL,
                        .shm = MPI_COMM_NULL};

const bp__mpi *bp__mpi_get(void)
{
    return world == MPI_COMM_NULL ? NULL : &comms;
}

/* The node's ranks and, across nodes, the ranks with the same place on theirs: the two
 * levels of the gradient exchange. */
static int split_levels(MPI_Comm node)
{
    int size, range[2];
    MPI_Comm_size(node, &size);
    range[0] = -size, range[1] = size;
    if (MPI_Allreduce(MPI_IN_PLACE, range, 2, MPI_INT, MPI_MAX, world) != MPI_SUCCESS)
        return BP_ECOMM;
    int uniform = -range[0] == range[1];
    if (MPI_Comm_dup(node, &comms.shm) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_set_errhandler(comms.shm, MPI_ERRORS_RETURN);
    if (uniform)
        comms.node = node;
    else if (MPI_Comm_free(&node) != MPI_SUCCESS ||
             MPI_Comm_split(world, comms_rank(), 0, &comms.node) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_rank(comms.node, &comms.node_rank);
    MPI_Comm_size(comms.node, &comms.node_size);
    if (MPI_Comm_split(world, comms.node_rank, comms_rank(), &comms.cross) != MPI_SUCCESS ||
        MPI_Comm_dup(world, &comms.flat) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_set_errhandler(comms.flat, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(comms.node, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(comms.cross, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comms.cross, &comms.cross_rank);
    MPI_Comm_size(comms.cross, &comms.cross_size);
    return 0;
}

int bp_comm_init(int *argc, char ***argv, bp_comm *comm)
{
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        /* SERIALIZED: the exchange's thread calls MPI while the trainer's waits for it;
         * never two at once. (The watchdog's thread never calls MPI.) */
        int provided;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
            return BP_ECOMM;
        we_initialised = 1;
    }
    if (world != MPI_COMM_NULL) { /* again: the same job */
        *comm = (bp_comm){comms_rank(), comms_size(), comm_local_size};
        return 0;
    }
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    comms.threads_ok = level >= MPI_THREAD_SERIALIZED;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &world) != MPI_SUCCESS)
        return BP_ECOMM;
    comms.world = world;
    MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
    MPI_Comm node;
    if (MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comms_rank(), MPI_INFO_NULL, &node) !=
        MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_size(node, &comm_local_size);
    if (split_levels(node) < 0)
        return BP_ECOMM;
    *comm = (bp_comm){comms_rank(), comms_size(), comm_local_size};
    return 0;
}

void bp_comm_finalize(void)
{
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized)
        return;
    MPI_Comm *all[] = {&comms.node, &comms.cross, &comms.flat, &comms.shm, &world};
    for (int i = 0; i < 5; i++)
        if (*all[i] != MPI_COMM_NULL)
            MPI_Comm_free(all[i]);
    comms.world = MPI_COMM_NULL;
    if (we_initialised)
        MPI_Finalize();
    we_initialised = 0;
}

/* ---- the watchdog ----
 * No collective waits forever. A thread of its own watches the collective this rank is in:
 * entering one stores the time and what it is (two relaxed atomic stores, nothing on the
 * hot path), leaving clears it. When a collective has waited longer than the timeout, the
 * thread reports through the program's callback and ends the process with exit status 1;
 * mpirun then ends the job. A rank that never arrives (stopped, hung outside MPI, cut off
 * from the network) is found by the ranks waiting for it. */

#define WD_SLOTS 2 /* the trainer's thread and the exchange's */

static struct {
    struct {
        _Atomic long long since_ns; /* when the current collective began; 0 when in none */
        _Atomic(const char *) what; /* "the gradient exchange" */
    } slot[WD_SLOTS];
    _Atomic long step; /* the trainer's global step, for the message */
    _Atomic long long timeout_ns;
    bp_timeout_fn expired;
    void *ctx;
    int rank, size, started;
} wd = {.step = -1};

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *watch(void *unused)
{
    for (;;) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        nanosleep(&tick, NULL);
        long long limit = atomic_load_explicit(&wd.timeout_ns, memory_order_relaxed), since = 0;
        int s = 0;
        for (int i = 0; i < WD_SLOTS && !since; i++) {
            s = i;
            since = atomic_load_explicit(&wd.slot[i].since_ns, memory_order_acquire);
            if (since && now_ns() - since <= limit)
                since = 0;
        }
        if (since == 0 || limit == 0)
            continue;
        /* With many ranks waiting, the lowest fires first and mpirun takes down the rest
         * before they speak: one line for the job. */
        struct timespec stagger = {0, 200 * 1000 * 1000L * (wd.rank < 4 ? wd.rank : 4)};
        nanosleep(&stagger, NULL);
        if (atomic_load_explicit(&wd.slot[s].since_ns, memory_order_relaxed) != since)
            continue; /* it arrived meanwhile */
        char msg[512], who[96], at[32] = "";
        if (wd.size == 2)
            snprintf(who, sizeof(who), "rank %d did not arrive", 1 - wd.rank);
        else
            snprintf(who, sizeof(who), "a rank did not arrive");
        long step = atomic_load_explicit(&wd.step, memory_order_relaxed);
        if (step >= 0)
            snprintf(at, sizeof(at), " at step %ld", step);
        snprintf(msg, sizeof(msg),
                 "timed out after %.0f s in %s%s: %s (stopped, hung, or cut off from the "
                 "network); [comm] timeout sets the limit",
                 (double)limit / 1e9, atomic_load_explicit(&wd.slot[s].what, memory_order_relaxed),
                 at, who);
        if (wd.expired)
            wd.expired(wd.ctx, wd.rank, msg);
        _exit(1);
    }
    return NULL;
}

int bp_comm_watch(const bp_comm *comm, double seconds, bp_timeout_fn expired, void *ctx)
{
    /* Only the limit changes once the thread runs: the rest is its to read. */
    if (!wd.started) {
        wd.rank = comm->rank, wd.size = comm->size;
        if (expired)
            wd.expired = expired, wd.ctx = ctx;
    }
    atomic_store(&wd.timeout_ns, seconds > 0 ? (long long)(seconds * 1e9) : 0);
    if (seconds <= 0 || wd.started || comm->size == 1)
        return 0;
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&thread, &attr, watch, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return BP_ENOMEM;
    wd.started = 1;
    return 0;
}

void bp__comm_set_step(long step)
{
    atomic_store_explicit(&wd.step, step, memory_order_relaxed);
}

void bp__watch_enter(int slot, const char *what)
{
    atomic_store_explicit(&wd.slot[slot].what, what, memory_order_relaxed);
    /* release: a watchdog that sees this time also sees the name stored before it */
    atomic_store_explicit(&wd.slot[slot].since_ns, now_ns(), memory_order_release);
}

void bp__watch_leave(int slot)
{
    atomic_store_explicit(&wd.slot[slot].since_ns, 0, memory_order_relaxed);
}

static void enter(const char *what)
{
    bp__watch_enter(0, what);
}

static void leave(void)
{
    bp__watch_leave(0);
}

/* In place, over every rank; 0 or BP_ECOMM. */
static int allreduce(const bp_comm *comm, void *buf, size_t n, MPI_Datatype type, MPI_Op op,
                     const char *what)
{
    if (comm->size == 1)
        return 0;
    if (n > INT_MAX) /* MPI counts are ints */
        return BP_EINVAL;
    enter(what);
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, type, op, world);
    leave();
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

int bp__comm_allreduce_sum(const bp_comm *comm, bp_real *buf, size_t n)
{
    return allreduce(comm, buf, n, BP_MPI_REAL, MPI_SUM, "the gradient allreduce");
}

int bp__comm_allreduce_sum_double(const bp_comm *comm, double *buf, size_t n)
{
    return allreduce(comm, buf, n, MPI_DOUBLE, MPI_SUM, "the evaluation sum");
}

int bp__comm_max_double(const bp_comm *comm, double *value)
{
    return allreduce(comm, value, 1, MPI_DOUBLE, MPI_MAX, "the step-time maximum");
}

int bp_comm_agree(const bp_comm *comm, int value, int *max, int *who)
{
    *max = value, *who = comm->rank;
    if (comm->size == 1)
        return 0;
    struct {
        int value, rank;
    } in = {value, comm->rank}, out;
    /* MAXLOC breaks ties by the lowest rank. */
    enter("an agreement between ranks");
    int rc = MPI_Allreduce(&in, &out, 1, MPI_2INT, MPI_MAXLOC, world);
    leave();
    if (rc != MPI_SUCCESS)
        return BP_ECOMM;
    *max = out.value, *who = out.rank;
    return 0;
}

int bp_comm_same(const bp_comm *comm, uint64_t value)
{
    if (comm->size == 1)
        return 1;
    uint64_t v[2] = {value, ~value}, r[2];
    enter("the replica check");
    int rc = MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MAX, world);
    leave();
    if (rc != MPI_SUCCESS)
        return BP_ECOMM;
    /* max(v) == v and max(~v) == ~v on every rank only when all v are equal. */
    return r[0] == value && r[1] == ~value;
}

int bp__comm_bcast(const bp_comm *comm, void *buf, size_t bytes)
{
    if (comm->size == 1)
        return 0;
    if (bytes > INT_MAX)
        return BP_EINVAL;
    enter("the broadcast of rank 0's config and data");
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, world);
    leave();
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

/* ---- one copy of the data per node ---- */

struct bp_shared {
    MPI_Win win;
};

int bp__comm_node_ranks(int *rank, int *size)
{
    *rank = 0, *size = 1;
    if (comms.shm == MPI_COMM_NULL)
        return 0;
    MPI_Comm_rank(comms.shm, rank);
    MPI_Comm_size(comms.shm, size);
    return 0;
}

int bp__comm_node_bcast(void *buf, size_t bytes)
{
    int size = 1;
    if (comms.shm != MPI_COMM_NULL)
        MPI_Comm_size(comms.shm, &size);
    if (size == 1)
        return 0;
    if (bytes > INT_MAX)
        return BP_EINVAL;
    enter("the node's broadcast of the data's shape");
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, comms.shm);
    leave();
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

int bp__comm_share(size_t bytes, bp_shared **out, void **base)
{
    *out = NULL, *base = NULL;
    int rank;
    MPI_Comm_rank(comms.shm, &rank);
    bp_shared *s = calloc(1, sizeof(*s));
    int ok = s != NULL, all_ok;
    /* Every rank must reach the allocation or none: a rank without memory for the handle
     * says so first. */
    enter("the node's agreement on shared memory");
    int rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comms.shm);
    leave();
    if (rc != MPI_SUCCESS || !all_ok) {
        free(s);
        return rc != MPI_SUCCESS ? BP_ECOMM : BP_ENOMEM;
    }
    /* The node's rank 0 holds it all: the others' share is empty, and they reach its
     * memory through shared_query. One byte at least: MPI may return no address for 0. */
    MPI_Aint mine = rank == 0 ? (MPI_Aint)(bytes ? bytes : 1) : 0, size;
    int unit;
    void *at = NULL;
    enter("the node's allocation of shared memory");
    rc = MPI_Win_allocate_shared(mine, 1, MPI_INFO_NULL, comms.shm, &at, &s->win);
    leave();
    if (rc != MPI_SUCCESS) {
        free(s);
        return BP_ENOMEM;
    }
    MPI_Win_set_errhandler(s->win, MPI_ERRORS_RETURN);
    /* Local calls, but a rank they fail on must not free the window alone: the node
     * agrees, and frees it together. */
    int locked = 0;
    ok = MPI_Win_shared_query(s->win, 0, &size, &unit, &at) == MPI_SUCCESS &&
         (locked = MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win) == MPI_SUCCESS);
    enter("the node's agreement on shared memory");
    rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comms.shm);
    leave();
    if (rc != MPI_SUCCESS || !all_ok) {
        if (locked)
            MPI_Win_unlock_all(s->win);
        enter("the node's release of shared memory");
        MPI_Win_free(&s->win);
        leave();
        free(s);
        return BP_ECOMM;
    }
    *out = s, *base = at;
    return 0;
}

int bp__comm_share_ready(bp_shared *s)
{
    /* The writer's stores become visible: sync, the node's barrier, sync (MPI-3's
     * unified model for shared windows). */
    MPI_Win_sync(s->win);
    enter("the node's barrier after sharing the data");
    int rc = MPI_Barrier(comms.shm);
    leave();
    MPI_Win_sync(s->win);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

void bp__comm_share_free(bp_shared *s)
{
    if (!s)
        return;
    MPI_Win_unlock_all(s->win);
    enter("the node's release of shared memory");
    MPI_Win_free(&s->win);
    leave();
    free(s);
}

void bp__shard(size_t m, int rank, int size, size_t *start, size_t *end)
{
    size_t base = m / (size_t)size, extra = m % (size_t)size, r = (size_t)rank;
    *start = r * base + (r < extra ? r : extra);
    *end = *start + base + (r < extra);
}
