/* The gradient exchange: every rank's gradient buffer summed over the job, in buckets that
 * start while the backward pass computes the layers below them.
 *
 * Two levels. On a node, the ranks' buffers live in one shared memory segment: each rank
 * sums its slice of a bucket over the node's buffers in place (no copies, no messages), and
 * every rank reads the node's sum from there. Across nodes, the ranks with the same place
 * on their nodes exchange their slices: an all-to-all of chunks (each rank sums one chunk),
 * then an allgather. A thread of the exchange's own moves those bytes, so they travel while
 * the trainer's thread computes; the trainer applies each bucket's update as it arrives.
 *
 * Every element is summed by our loops in a fixed order, never by MPI's reductions: the
 * node's ranks in order, then the nodes in order. So the sum does not depend on the bucket
 * size, on overlap on or off, or on the algorithm MPI picks for a message size: the same
 * ranks on the same nodes repeat a run to the bit, and N nodes of one rank give the bits of
 * N ranks on one node.
 *
 * With integers (reproducible = any_scale, src/fixed.h) the buffer holds int64 and the same
 * paths sum them: exact, so in no order at all.
 *
 * Why not MPI_Allreduce per bucket: across nodes, Open MPI progresses a nonblocking
 * collective only inside MPI calls, its algorithms sum in orders that differ from one
 * another (it picks one by message size, so by bucket size), and for W3's buffer between
 * two hosts its own pick took 1.8 times as long as this exchange for the same bytes
 * (docs/scaling.md). On a node, its shared-memory transport copies every byte in and out
 * of its own buffers, where reading the peers' buffers in place does not
 * (docs/benchmarks.md: W3's exchange on 2 ranks against MPI_Allreduce of its buffer). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "comm_mpi.h"
#include "exchange.h"
#include "internal.h"
#include "recorder.h"

typedef struct {
    size_t lo, hi;
} span;

struct bp__exchange {
    bp__mpi *mpi; /* the comm's communicators and watchdog; NULL for a job of one */
    size_t n;
    int i64;      /* the buffer holds int64, not bp_real */
    size_t esize; /* bytes of an element */
    /* i64: the sums converted to bp_real where they are summed (bp__exchange_begin_i64) */
    bp_real *real; /* n reals: in the segment after the node's sum, or this rank's own */
    bp__exchange_convert_fn convert;
    bp__exchange_floats_fn floats; /* this step's gradients are floats (begin_i64) */
    void *convert_ctx;
    int nb;       /* buckets; bucket 0 ends the buffer, the last starts it */
    span *bucket; /* in the order the backward pass completes them */
    int posted;   /* buckets this rank has made final this step */
    int taken;    /* buckets next() has returned this step */

    /* The node: p ranks, this one at place me. */
    int p, me;
    void *own;              /* this rank's buffer */
    void **peer;            /* every node rank's buffer, in the segment */
    void *sum;              /* the node's sum: own when p == 1 */
    _Atomic long *arrived;  /* per bucket, in the segment: ranks that posted it, */
    _Atomic long *finished; /* and that finished it, counted over every step */
    /* per bucket, in the segment: when the last rank posted it and finished it
     * (CLOCK_MONOTONIC, the node's one clock), for count_late */
    _Atomic long long *arrived_at, *finished_at;
    long seq;      /* steps begun */
    void *segment; /* mmap of the node's shared memory, or NULL */
    size_t segment_bytes;

    /* Across nodes: this rank's slice travels on cross among `nodes` ranks. */
    MPI_Comm cross;
    int nodes, me_cross;
    void *scratch, *acc; /* chunks received, and the chunk being summed */
    size_t chunk_max;
    int *counts, *displs;             /* chunk j of a slice: counts[j] reals from displs[j] */
    int *scounts, *rcounts, *rdispls; /* the chunks sent to and received from node j */
    MPI_Request req;
    /* [comm] dtype = bf16: what crosses between nodes below exact_from travels in bf16. */
    int bf16;
    size_t exact_from;
    bp_bf16 *wire, *scratch16; /* a slice, and the chunks received */

    /* The exchange's thread (threaded): it takes buckets [done, queued). */
    int threaded, stop, failed;
    int queued, done;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double thread_busy_s; /* under mu */

    double exposed_s, busy_s; /* the trainer's thread */

    /* The flight recorder: each bucket's exchange is an event from its posting to its
     * sum's arrival (rec_id[b]); NULL when off. */
    bp__rec *rec;
    int64_t *rec_id;

    /* Per watchdog slot (thread), nanoseconds this rank stood still inside its waits
     * (stopped, or not scheduled), time the others may have waited for it
     * (src/straggler.h): on the node, how much later than STALL_NS after the wait ended
     * it saw so (wait_count); across nodes, a turn of the test loop longer than STALL_NS
     * (count_stall). */
    _Atomic long long stall_ns[2];
};

#define STALL_NS 1000000LL

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A wait loop's turn began at *last: a turn longer than STALL_NS counts as standing
 * still (one thread writes a slot). */
static void count_stall(bp__exchange *x, int slot, long long *last)
{
    long long now = mono_ns();
    if (now - *last > STALL_NS)
        atomic_store_explicit(&x->stall_ns[slot],
                              atomic_load_explicit(&x->stall_ns[slot], memory_order_relaxed) + now -
                                  *last,
                              memory_order_relaxed);
    *last = now;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* This node rank's slice of bucket b: equal parts in whole cache lines. */
static span slice(const bp__exchange *x, int b, int r)
{
    span s = x->bucket[b];
    size_t len = s.hi - s.lo, line = 64 / x->esize;
    size_t per = ((len + (size_t)x->p - 1) / (size_t)x->p + line - 1) / line * line;
    return (span){s.lo + min_size(len, per * (size_t)r),
                  s.lo + min_size(len, per * (size_t)r + per)};
}

/* i64: this rank's slice of bucket b, summed over the job, converted to bp_real for every
 * rank of the node to read. */
static void convert_slice(bp__exchange *x, int b)
{
    if (!x->i64 || !x->convert)
        return;
    span s = slice(x, b, x->me);
    const int64_t *sum = x->sum;
    if (s.lo < s.hi)
        x->convert(x->convert_ctx, &sum, 1, x->real, s.lo, s.hi);
}

BP__VECTORIZE static void add2(bp_real *restrict out, const bp_real *restrict a,
                               const bp_real *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

BP__VECTORIZE static void add_to(bp_real *restrict out, const bp_real *restrict a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] += a[i];
}

BP__VECTORIZE static void add2_i64(int64_t *restrict out, const int64_t *restrict a,
                                   const int64_t *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

BP__VECTORIZE static void add_to_i64(int64_t *restrict out, const int64_t *restrict a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] += a[i];
}

/* out = v[0] + v[1] + ... + v[k-1], element by element, left to right; out is none of v.
 * Elements of bp_real, or int64 when i64. */
static void sum_in_order(int i64, void *out, void *const *v, int k, size_t n)
{
    if (k == 1) {
        memcpy(out, v[0], n * (i64 ? sizeof(int64_t) : sizeof(bp_real)));
        return;
    }
    if (i64) {
        add2_i64(out, v[0], v[1], n);
        for (int j = 2; j < k; j++)
            add_to_i64(out, v[j], n);
        return;
    }
    add2(out, v[0], v[1], n);
    for (int j = 2; j < k; j++)
        add_to(out, v[j], n);
}

/* Element i of a buffer of the exchange's elements. */
static void *at(const bp__exchange *x, void *buf, size_t i)
{
    return (char *)buf + i * x->esize;
}

/* ---- the node: a shared memory segment ---- */

/* This rank adds itself to *counter, which reaches target when the node's last rank does:
 * that rank stamps *done_at. */
static void count_in(_Atomic long *counter, long target, _Atomic long long *done_at)
{
    if (atomic_fetch_add_explicit(counter, 1, memory_order_acq_rel) + 1 == target)
        atomic_store_explicit(done_at, mono_ns(), memory_order_release);
}

/* Waits until *counter reaches target: the node's ranks run in step, so the wait is short;
 * it yields the core first and sleeps after, for nodes with more ranks than cores. A
 * rank that sees it more than STALL_NS after the last rank's stamp in *done_at was not
 * running meanwhile (stopped, or not scheduled): that time counts as its standing still.
 * (A stamp older than the wait is not this one's yet: then it saw it at once.) */
static void wait_count(bp__exchange *x, _Atomic long *counter, long target, int slot,
                       _Atomic long long *done_at)
{
    bp__watch_count(x->mpi, slot); /* a node-wide point, waited at or not */
    if (atomic_load_explicit(counter, memory_order_acquire) >= target)
        return;
    bp__watch_enter(x->mpi, slot, "the gradient exchange on this node");
    int64_t id = bp__rec_begin(x->rec, BP__REC_WAIT, 0, NULL);
    long long began = mono_ns();
    for (long spins = 0; atomic_load_explicit(counter, memory_order_acquire) < target; spins++) {
        if (spins < 2000) {
            sched_yield();
        } else {
            struct timespec pause = {0, 20 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    long long now = mono_ns(), done = atomic_load_explicit(done_at, memory_order_acquire);
    if (done >= began && now - done > STALL_NS)
        atomic_store_explicit(&x->stall_ns[slot],
                              atomic_load_explicit(&x->stall_ns[slot], memory_order_relaxed) + now -
                                  done,
                              memory_order_relaxed);
    bp__rec_end(x->rec, id);
    bp__watch_leave(x->mpi, slot);
}

/* Maps the node's segment: a header of per-bucket counters, then p buffers of n reals and
 * the node's sum. Local rank 0 creates it, the others open it by name, and it is unlinked as
 * soon as all have it (nothing is left in /dev/shm, whatever happens to the job later).
 * posix_fallocate reserves the pages up front: a full /dev/shm is an error here, never a
 * SIGBUS later. Returns 1 when every rank of the node has it mapped. */
static int map_segment(bp__exchange *x, MPI_Comm node)
{
    size_t page = 4096, reals = (x->n * x->esize + page - 1) / page * page;
    size_t header =
        (2 * (size_t)x->nb * (sizeof(long) + sizeof(long long)) + page - 1) / page * page;
    size_t real_bytes = x->i64 ? (x->n * sizeof(bp_real) + page - 1) / page * page : 0;
    x->segment_bytes = header + ((size_t)x->p + 1) * reals + real_bytes;
    char name[64] = "";
    int fd = -1, ok = 1;
    if (x->me == 0) {
        /* The exchange's address tells it from any other exchange this process sets up at
         * once (two trainers side by side), the pid from other processes'. */
        snprintf(name, sizeof(name), "/backprop-%ld-%p", (long)getpid(), (void *)x);
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        ok = fd >= 0 && posix_fallocate(fd, 0, (off_t)x->segment_bytes) == 0;
        if (!ok && fd >= 0) /* no room: the name goes with the attempt */
            shm_unlink(name);
        if (!ok)
            name[0] = 0;
    }
    if (MPI_Bcast(name, sizeof(name), MPI_CHAR, 0, node) != MPI_SUCCESS)
        name[0] = 0;
    if (x->me != 0 && name[0])
        fd = shm_open(name, O_RDWR, 0);
    void *m = MAP_FAILED;
    if (fd >= 0 && name[0])
        m = mmap(NULL, x->segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    ok = m != MAP_FAILED && x->peer; /* every rank joins the collectives, even without */
    if (MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, node) != MPI_SUCCESS)
        ok = 0;
    if (x->me == 0 && name[0])
        shm_unlink(name);
    if (m != MAP_FAILED && !ok)
        munmap(m, x->segment_bytes);
    if (!ok)
        return 0;
    x->segment = m;
    x->arrived = (_Atomic long *)m;
    x->finished = x->arrived + x->nb;
    x->arrived_at = (_Atomic long long *)(x->finished + x->nb);
    x->finished_at = x->arrived_at + x->nb;
    for (int r = 0; r <= x->p; r++)
        x->peer[r] = (char *)m + header + (size_t)r * reals;
    x->own = x->peer[x->me];
    x->sum = x->peer[x->p];
    if (x->i64)
        x->real = (bp_real *)((char *)m + header + ((size_t)x->p + 1) * reals);
    return 1;
}

/* ---- across nodes ---- */

/* Waits for the collective in flight. The exchange's thread tests and sleeps rather than
 * spinning in MPI_Wait: it shares the cores with the trainer's products, and the kernel
 * moves the bytes meanwhile (polling every 20 us or every 100 us made no measurable
 * difference to the step across two simulated hosts). */
static int wait_request(bp__exchange *x, int slot)
{
    int rc = MPI_SUCCESS, flag = 0;
    bp__watch_enter(x->mpi, slot, "the gradient exchange across nodes");
    if (slot == 0) {
        rc = MPI_Wait(&x->req, MPI_STATUS_IGNORE);
    } else {
        long long last = mono_ns();
        while ((rc = MPI_Test(&x->req, &flag, MPI_STATUS_IGNORE)) == MPI_SUCCESS && !flag) {
            struct timespec pause = {0, 20 * 1000};
            nanosleep(&pause, NULL);
            count_stall(x, slot, &last);
        }
    }
    bp__watch_leave(x->mpi, slot);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

/* sum[s.lo .. s.hi) becomes its sum over the nodes: chunk j of it goes to node j, which
 * adds the nodes' chunks in node order; then every node gathers every chunk. Both halves
 * are MPI collectives that only move bytes (the same bytes as a ring allreduce: each node
 * sends and receives (n-1)/n of the slice twice); the adding is ours. (Pairs of
 * MPI_Isend/MPI_Irecv for the first half moved the same bytes 2 to 3 times slower through
 * Open MPI's TCP transport here; MPI_Ialltoallv did not.) */
/* Node j's chunk of a slice of len reals: counts[j] from displs[j]; what this node sends to
 * and receives from each. Returns this node's chunk's length. */
static int chunks(bp__exchange *x, size_t len)
{
    int n = x->nodes, me = x->me_cross;
    for (int j = 0; j < n; j++) {
        size_t lo, hi;
        bp__shard(len, j, n, &lo, &hi);
        x->counts[j] = (int)(hi - lo), x->displs[j] = (int)lo;
    }
    int mine = x->counts[me];
    for (int j = 0; j < n; j++) {
        x->scounts[j] = j == me ? 0 : x->counts[j];
        x->rcounts[j] = j == me ? 0 : mine;
    }
    return mine;
}

/* cross_sum in bf16, as PyTorch's bf16 compression hook sends a bucket: the node's slice
 * is rounded to bf16 (to nearest even) and sent so; each node widens the chunks it
 * receives and its own, sums them in float in node order, rounds that sum to bf16 for the
 * allgather, and every node widens the gathered slice. Two roundings in all: each node's
 * sum on the way out, the total on the way back (where the hook over NCCL or gloo rounds
 * every partial sum). Half the bytes of float. */
static int cross_sum_bf16(bp__exchange *x, span s, int slot)
{
    int me = x->me_cross, mine = chunks(x, s.hi - s.lo);
    bp_real *X = (bp_real *)x->sum + s.lo;
    bp_bf16 *W = x->wire;
    bp__to_bf16(W, X, s.hi - s.lo);
    if (MPI_Ialltoallv(W, x->scounts, x->displs, MPI_UINT16_T, x->scratch16, x->rcounts, x->rdispls,
                       MPI_UINT16_T, x->cross, &x->req) != MPI_SUCCESS)
        return BP_ECOMM;
    if (wait_request(x, slot) < 0)
        return BP_ECOMM;
    for (int j = 0; j < x->nodes; j++) {
        const bp_bf16 *v = j == me ? W + x->displs[me] : x->scratch16 + (size_t)j * x->chunk_max;
        if (j == 0)
            bp__bf16_widen(x->acc, v, (size_t)mine);
        else
            bp__bf16_add(x->acc, v, (size_t)mine);
    }
    bp__to_bf16(W + x->displs[me], x->acc, (size_t)mine);
    if (MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, W, x->counts, x->displs, MPI_UINT16_T,
                        x->cross, &x->req) != MPI_SUCCESS)
        return BP_ECOMM;
    if (wait_request(x, slot) < 0)
        return BP_ECOMM;
    bp__bf16_widen(X, W, s.hi - s.lo);
    return 0;
}

static int cross_sum(bp__exchange *x, span s, int slot)
{
    int n = x->nodes, me = x->me_cross;
    if (n == 1 || s.hi == s.lo)
        return 0;
    /* The extra slots (costs, counts, orders) must sum exactly: in a slice that reaches
     * them, the gradients go in bf16 and the slots after them in float. */
    if (x->bf16 && s.lo < x->exact_from) {
        span grads = {s.lo, min_size(s.hi, x->exact_from)};
        int rc = cross_sum_bf16(x, grads, slot);
        if (rc < 0 || s.hi <= x->exact_from)
            return rc;
        s.lo = x->exact_from;
    }
    void *X = at(x, x->sum, s.lo);
    MPI_Datatype type = x->i64 ? MPI_INT64_T : BP_MPI_REAL;
    int mine = chunks(x, s.hi - s.lo);
    if (MPI_Ialltoallv(X, x->scounts, x->displs, type, x->scratch, x->rcounts, x->rdispls, type,
                       x->cross, &x->req) != MPI_SUCCESS)
        return BP_ECOMM;
    if (wait_request(x, slot) < 0)
        return BP_ECOMM;
    void *v[n];
    for (int j = 0; j < n; j++)
        v[j] =
            j == me ? at(x, X, (size_t)x->displs[me]) : at(x, x->scratch, (size_t)j * x->chunk_max);
    sum_in_order(x->i64, x->acc, v, n, (size_t)mine);
    memcpy(at(x, X, (size_t)x->displs[me]), x->acc, (size_t)mine * x->esize);
    if (MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, X, x->counts, x->displs, type, x->cross,
                        &x->req) != MPI_SUCCESS)
        return BP_ECOMM;
    return wait_request(x, slot);
}

static void *exchange_thread(void *arg)
{
    bp__exchange *x = arg;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (!x->stop && x->done == x->queued)
            pthread_cond_wait(&x->cv, &x->mu);
        if (x->stop)
            break;
        int b = x->done;
        pthread_mutex_unlock(&x->mu);
        double t0 = bp__now_s();
        int64_t id = bp__rec_begin(x->rec, BP__REC_CROSS, b, NULL);
        int rc = cross_sum(x, slice(x, b, x->me), 1);
        if (rc == 0)
            convert_slice(x, b);
        bp__rec_end(x->rec, id);
        double t = bp__now_s() - t0;
        pthread_mutex_lock(&x->mu);
        x->failed |= rc < 0;
        x->done = b + 1;
        x->thread_busy_s += t;
        pthread_cond_broadcast(&x->cv);
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

/* ---- the step ---- */

/* Buckets from the end of the buffer, cut only where a row block of bp__backward_ready
 * starts, each at most bucket_bytes (or one block, where a block is larger). The last
 * block is a bucket of its own: the step waits for it after the backward pass. A buffer
 * that fits in one bucket is one bucket. */
static int cut_buckets(bp__exchange *x, const bp_net *net, double bucket_bytes, int overlap)
{
    size_t cuts = 1;
    for (int l = 0; l < net->nlayers; l++) {
        size_t rows = bp__grad_block_rows(net, l);
        cuts += ((size_t)net->sizes[l + 1] + rows - 1) / rows;
    }
    x->bucket = bp__calloc(cuts, sizeof(span));
    if (!x->bucket)
        return BP_ENOMEM;
    size_t hi = x->n, lo = x->n; /* the bucket being filled: [lo, hi) */
    if ((double)x->n * (double)x->esize <= bucket_bytes)
        overlap = 0; /* all in one bucket: nothing to overlap */
    for (int l = net->nlayers - 1; l >= 0 && overlap; l--) {
        size_t rows = bp__grad_block_rows(net, l), n_in = (size_t)net->sizes[l];
        for (size_t r = ((size_t)net->sizes[l + 1] - 1) / rows * rows;; r -= rows) {
            size_t at = bp_net_offset_W(net, l) + r * n_in;
            int last = at == 0; /* alone in the last bucket */
            if (((double)(hi - at) * (double)x->esize > bucket_bytes || last) && lo < hi) {
                x->bucket[x->nb++] = (span){lo, hi};
                hi = lo;
            }
            lo = at;
            if (r == 0)
                break;
        }
    }
    x->bucket[x->nb++] = (span){0, hi};
    return 0;
}

int bp__exchange_create(bp__exchange **out, const bp_comm *comm, const bp_net *net, size_t n,
                        double bucket_mb, int overlap, size_t exact_from, int bf16, int i64,
                        char *err, size_t errlen)
{
    *out = NULL;
    bp__mpi *mpi = comm->mpi;
    bp__exchange *x = bp__calloc(1, sizeof(*x));
    if (x) {
        x->n = n, x->mpi = mpi, x->i64 = i64;
        x->esize = i64 ? sizeof(int64_t) : sizeof(bp_real);
        bf16 = bf16 && !i64; /* integers sum exactly: nothing to round */
    }
    if (!x || cut_buckets(x, net, bucket_mb * 1e6, overlap) < 0) {
        bp__exchange_free(x);
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the gradient exchange");
    }
    x->p = 1, x->nodes = 1;
    x->cross = MPI_COMM_NULL;
    x->exact_from = exact_from;
    /* bf16 is for links between nodes: ranks that all share one node (even where they
     * fall back to the flat communicator) keep float. */
    x->bf16 = bf16 && !(mpi && mpi->node_size == comm->size);
    int rc = 0;
    if (comm->size > 1 && mpi) {
        /* The two levels where every node holds the same ranks and the node's segment maps
         * everywhere; else every rank is a node of its own, on the flat communicator. */
        int levels = mpi->node_size > 1;
        x->p = mpi->node_size, x->me = mpi->node_rank;
        x->peer = bp__calloc((size_t)x->p + 1, sizeof(void *));
        if (!x->peer)
            rc = BP_ENOMEM;
        if (levels) /* collective on the node: every rank calls it */
            levels = map_segment(x, mpi->node);
        if (MPI_Allreduce(MPI_IN_PLACE, &levels, 1, MPI_INT, MPI_MIN, mpi->world) != MPI_SUCCESS)
            rc = BP_ECOMM;
        if (levels) {
            x->cross = mpi->cross, x->nodes = mpi->cross_size, x->me_cross = mpi->cross_rank;
        } else {
            if (x->segment)
                munmap(x->segment, x->segment_bytes);
            x->segment = NULL;
            x->p = 1, x->me = 0;
            x->cross = mpi->flat, x->nodes = comm->size, x->me_cross = comm->rank;
        }
    }
    if (!x->segment) {
        x->own = x->sum = bp__calloc(n, x->esize);
        x->real = i64 ? bp__calloc(n, sizeof(bp_real)) : NULL;
        if (!x->own || (i64 && !x->real))
            rc = BP_ENOMEM;
    }
    if (rc == 0 && x->nodes > 1) {
        size_t widest = 0;
        for (int b = 0; b < x->nb; b++) {
            span s = slice(x, b, x->me);
            widest = s.hi - s.lo > widest ? s.hi - s.lo : widest;
        }
        x->chunk_max = widest / (size_t)x->nodes + 1;
        x->scratch = bp__calloc(bp__mul((size_t)x->nodes, x->chunk_max), x->esize);
        x->acc = bp__calloc(x->chunk_max, x->esize);
        x->counts = bp__calloc((size_t)x->nodes, sizeof(int));
        x->displs = bp__calloc((size_t)x->nodes, sizeof(int));
        x->scounts = bp__calloc((size_t)x->nodes, sizeof(int));
        x->rcounts = bp__calloc((size_t)x->nodes, sizeof(int));
        x->rdispls = bp__calloc((size_t)x->nodes, sizeof(int));
        if (bf16) {
            x->wire = bp__calloc(widest, sizeof(bp_bf16));
            x->scratch16 = bp__calloc(bp__mul((size_t)x->nodes, x->chunk_max), sizeof(bp_bf16));
        }
        if (!x->scratch || !x->acc || !x->counts || !x->displs || !x->scounts || !x->rcounts ||
            !x->rdispls || (bf16 && (!x->wire || !x->scratch16)))
            rc = BP_ENOMEM;
        for (int j = 0; rc == 0 && j < x->nodes; j++) /* node j's chunk lands here */
            x->rdispls[j] = (int)((size_t)j * x->chunk_max);
        if (widest > (size_t)INT_MAX)
            rc = bp__fail(err, errlen, BP_EINVAL, "[comm] bucket_mb is too large for MPI");
    }
    if (rc == 0 && x->nodes > 1 && x->nb > 1 && mpi->threads_ok) {
        pthread_mutex_init(&x->mu, NULL);
        pthread_cond_init(&x->cv, NULL);
        if (pthread_create(&x->thread, NULL, exchange_thread, x) == 0)
            x->threaded = 1;
        else
            rc = BP_ENOMEM;
    }
    if (rc < 0) {
        bp__exchange_free(x);
        if (err && errlen && !err[0])
            bp__fail(err, errlen, rc, "cannot set up the gradient exchange: %s", bp_strerror(rc));
        return rc;
    }
    *out = x;
    return 0;
}

bp_real *bp__exchange_buffer(bp__exchange *x)
{
    return x->i64 ? NULL : x->own;
}

int64_t *bp__exchange_buffer_i64(bp__exchange *x)
{
    return x->i64 ? x->own : NULL;
}

void bp__exchange_begin(bp__exchange *x)
{
    x->seq++;
    x->posted = x->taken = 0;
    if (x->threaded) {
        pthread_mutex_lock(&x->mu);
        x->queued = x->done = 0;
        pthread_mutex_unlock(&x->mu);
    }
}

/* Bucket b is final on this rank: its node sum (this rank's slice), then across nodes. */
static void post(bp__exchange *x, int b)
{
    if (x->rec_id)
        x->rec_id[b] = bp__rec_begin(x->rec, BP__REC_BUCKET, b, NULL);
    /* One node's sum is the job's: the int64 sums of the gradients go straight to reals,
     * never written (W3 at 2 ranks: a write and a read of 23 MB a rank a step less); only
     * the slots after them, read as integers, are summed as such. Floats (one micro-shard
     * a rank) are quantized and summed here: to reals on one node, else to the node's int64
     * sum, which then crosses the nodes. */
    int fused = x->p > 1 && x->nodes == 1 && x->i64 && x->convert;
    int floats = x->p > 1 && x->floats;
    if (x->p > 1) {
        count_in(&x->arrived[b], x->seq * x->p, &x->arrived_at[b]);
        wait_count(x, &x->arrived[b], x->seq * x->p, 0, &x->arrived_at[b]);
        span s = slice(x, b, x->me);
        if (fused || floats) { /* the gradients' part: summed and converted in one pass */
            size_t cut = min_size(s.hi, s.lo > x->exact_from ? s.lo : x->exact_from);
            if (s.lo < cut && floats)
                x->floats(x->convert_ctx, (const float *const *)x->peer, x->p,
                          x->nodes == 1 ? NULL : (int64_t *)x->sum, x->real, s.lo, cut);
            else if (s.lo < cut)
                x->convert(x->convert_ctx, (const int64_t *const *)x->peer, x->p, x->real, s.lo,
                           cut);
            s.lo = cut;
        }
        void *v[x->p];
        for (int r = 0; r < x->p; r++)
            v[r] = at(x, x->peer[r], s.lo);
        sum_in_order(x->i64, at(x, x->sum, s.lo), v, x->p, s.hi - s.lo);
    }
    if (x->nodes == 1 && !fused) /* the node's sum is the job's */
        convert_slice(x, b);
    if (x->threaded) {
        pthread_mutex_lock(&x->mu);
        x->queued = b + 1;
        pthread_cond_signal(&x->cv);
        pthread_mutex_unlock(&x->mu);
    }
}

void bp__exchange_ready(void *ctx, size_t from)
{
    bp__exchange *x = ctx;
    if (x->posted == x->nb || x->bucket[x->posted].lo < from)
        return;
    double t0 = bp__now_s();
    while (x->posted < x->nb && x->bucket[x->posted].lo >= from)
        post(x, x->posted++);
    double t = bp__now_s() - t0;
    x->exposed_s += t, x->busy_s += t;
}

static int next(bp__exchange *x, size_t *lo, size_t *hi)
{
    if (x->taken == x->nb)
        return 0;
    int b = x->taken++, rc = 0;
    double t0 = bp__now_s();
    if (x->threaded) {
        pthread_mutex_lock(&x->mu);
        while (x->done <= b)
            pthread_cond_wait(&x->cv, &x->mu);
        rc = x->failed ? BP_ECOMM : 0;
        /* Failed: the thread must be out of MPI before the trainer's next collective. */
        while (rc < 0 && x->done < x->queued)
            pthread_cond_wait(&x->cv, &x->mu);
        pthread_mutex_unlock(&x->mu);
    } else if (x->nodes > 1) {
        int64_t id = bp__rec_begin(x->rec, BP__REC_CROSS, b, NULL);
        rc = cross_sum(x, slice(x, b, x->me), 0);
        if (rc == 0)
            convert_slice(x, b);
        bp__rec_end(x->rec, id);
    }
    double t1 = bp__now_s();
    if (x->p > 1) {
        count_in(&x->finished[b], x->seq * x->p, &x->finished_at[b]);
        wait_count(x, &x->finished[b], x->seq * x->p, 0, &x->finished_at[b]);
    }
    double t2 = bp__now_s();
    if (x->rec_id)
        bp__rec_end(x->rec, x->rec_id[b]);
    x->exposed_s += t2 - t0;
    /* The thread counts its own work; waiting for it is not more of it. */
    x->busy_s += (x->threaded ? 0 : t1 - t0) + (t2 - t1);
    *lo = x->bucket[b].lo, *hi = x->bucket[b].hi;
    return rc < 0 ? rc : 1;
}

int bp__exchange_next(bp__exchange *x, size_t *lo, size_t *hi, const bp_real **sum)
{
    *sum = x->i64 ? NULL : x->sum;
    return next(x, lo, hi);
}

int bp__exchange_next_i64(bp__exchange *x, size_t *lo, size_t *hi, const int64_t **sum,
                          const bp_real **real)
{
    *sum = x->i64 ? x->sum : NULL;
    *real = x->i64 ? x->real : NULL;
    return next(x, lo, hi);
}

void bp__exchange_begin_i64(bp__exchange *x, bp__exchange_convert_fn convert,
                            bp__exchange_floats_fn floats, void *ctx)
{
    x->convert = convert, x->floats = floats, x->convert_ctx = ctx;
    bp__exchange_begin(x);
}

int bp__exchange_takes_floats(const bp__exchange *x)
{
    return x->i64 && x->p > 1;
}

double bp__exchange_stalled(const bp__exchange *x)
{
    return 1e-9 * (double)(atomic_load_explicit(&x->stall_ns[0], memory_order_relaxed) +
                           atomic_load_explicit(&x->stall_ns[1], memory_order_relaxed));
}

int bp__exchange_taken(const bp__exchange *x)
{
    return x->taken;
}

int bp__exchange_buckets(const bp__exchange *x)
{
    return x->nb;
}

void bp__exchange_set_recorder(bp__exchange *x, bp__rec *rec)
{
    free(x->rec_id);
    x->rec_id = rec ? calloc((size_t)x->nb, sizeof(int64_t)) : NULL;
    x->rec = x->rec_id ? rec : NULL;
}

void bp__exchange_times(const bp__exchange *x, double *exposed, double *busy)
{
    double thread = 0;
    if (x->threaded) {
        pthread_mutex_lock((pthread_mutex_t *)&x->mu);
        thread = x->thread_busy_s;
        pthread_mutex_unlock((pthread_mutex_t *)&x->mu);
    }
    if (exposed)
        *exposed = x->exposed_s;
    *busy = x->busy_s + thread;
}

void bp__exchange_describe(const bp__exchange *x, char *buf, size_t len)
{
    size_t widest = 0;
    for (int b = 0; b < x->nb; b++)
        widest =
            x->bucket[b].hi - x->bucket[b].lo > widest ? x->bucket[b].hi - x->bucket[b].lo : widest;
    double mb = (double)(widest * x->esize) / 1e6;
    snprintf(buf, len, "%d node%s x %d rank%s (%s), %d bucket%s of at most %.1f MB%s%s", x->nodes,
             x->nodes == 1 ? "" : "s", x->p, x->p == 1 ? "" : "s",
             x->segment ? "summed in shared memory on the node" : "no shared memory", x->nb,
             x->nb == 1 ? "" : "s", mb,
             x->threaded                 ? ", sent while the backward pass runs"
             : x->nodes > 1 && x->nb > 1 ? ", sent after the backward pass (MPI without threads)"
                                         : "",
             !x->bf16       ? ""
             : x->nodes > 1 ? "; in bf16 between nodes"
                            : "; dtype = bf16 has nothing to send on one node: float");
}

void bp__exchange_free(bp__exchange *x)
{
    if (!x)
        return;
    if (x->threaded) {
        pthread_mutex_lock(&x->mu);
        x->stop = 1;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
        pthread_join(x->thread, NULL);
        pthread_mutex_destroy(&x->mu);
        pthread_cond_destroy(&x->cv);
    }
    if (x->segment) {
        munmap(x->segment, x->segment_bytes);
    } else {
        bp__free(x->own);
        bp__free(x->real);
    }
    bp__free(x->peer);
    bp__free(x->bucket);
    bp__free(x->scratch);
    bp__free(x->acc);
    bp__free(x->wire);
    bp__free(x->scratch16);
    bp__free(x->counts);
    bp__free(x->displs);
    bp__free(x->scounts);
    bp__free(x->rcounts);
    bp__free(x->rdispls);
    free(x->rec_id);
    bp__free(x);
}
