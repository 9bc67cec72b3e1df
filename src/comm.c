#include <mpi.h>
#include <unistd.h>

#include "comm.h"

#ifdef BACKPROP_DOUBLE
#define BP_MPI_REAL MPI_DOUBLE
#else
#define BP_MPI_REAL MPI_FLOAT
#endif

/* The library's own copy of MPI_COMM_WORLD: its collectives never mix with a program's
 * own messages, and its error handler (errors come back as codes: a rank never dies inside
 * MPI without saying why) is set on the copy, not on the program's communicator. */
static MPI_Comm world = MPI_COMM_NULL;
static int we_initialised; /* MPI_Finalize is ours to call only if MPI_Init was */

int bp_comm_init(int *argc, char ***argv, bp_comm *comm)
{
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        if (MPI_Init(argc, argv) != MPI_SUCCESS)
            return BP_ECOMM;
        we_initialised = 1;
    }
    if (world == MPI_COMM_NULL && MPI_Comm_dup(MPI_COMM_WORLD, &world) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
    MPI_Comm_rank(world, &comm->rank);
    MPI_Comm_size(world, &comm->size);
    MPI_Comm node;
    comm->local_size = 1;
    if (MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &comm->local_size);
        MPI_Comm_free(&node);
    }
    return 0;
}

void bp_comm_finalize(void)
{
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized)
        return;
    if (world != MPI_COMM_NULL)
        MPI_Comm_free(&world);
    if (we_initialised)
        MPI_Finalize();
    we_initialised = 0;
}

/* In place, over every rank; 0 or BP_ECOMM. */
static int allreduce(const bp_comm *comm, void *buf, size_t n, MPI_Datatype type, MPI_Op op)
{
    if (comm->size == 1)
        return 0;
    return MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, type, op, world) == MPI_SUCCESS ? 0 : BP_ECOMM;
}

int bp_comm_allreduce_sum(const bp_comm *comm, bp_real *buf, size_t n)
{
    return allreduce(comm, buf, n, BP_MPI_REAL, MPI_SUM);
}

int bp_comm_allreduce_sum_double(const bp_comm *comm, double *buf, size_t n)
{
    return allreduce(comm, buf, n, MPI_DOUBLE, MPI_SUM);
}

int bp_comm_max_double(const bp_comm *comm, double *value)
{
    return allreduce(comm, value, 1, MPI_DOUBLE, MPI_MAX);
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
    if (MPI_Allreduce(&in, &out, 1, MPI_2INT, MPI_MAXLOC, world) != MPI_SUCCESS)
        return BP_ECOMM;
    *max = out.value, *who = out.rank;
    return 0;
}

int bp_comm_same(const bp_comm *comm, uint64_t value)
{
    if (comm->size == 1)
        return 1;
    uint64_t v[2] = {value, ~value}, r[2];
    if (MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MAX, world) != MPI_SUCCESS)
        return BP_ECOMM;
    /* max(v) == v and max(~v) == ~v on every rank only when all v are equal. */
    return r[0] == value && r[1] == ~value;
}

void bp_shard(size_t m, int rank, int size, size_t *start, size_t *end)
{
    size_t base = m / (size_t)size, extra = m % (size_t)size, r = (size_t)rank;
    *start = r * base + (r < extra ? r : extra);
    *end = *start + base + (r < extra);
}
