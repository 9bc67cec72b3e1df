/* The MPI layer: a bp_comm's communicators (made by bp_comm_init, bp_comm_dup and
 * bp_comm_split, each with communicators of its own), its watchdog, and the few collectives
 * the library calls, each over the comm it is given. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "comm.h"
#include "comm_mpi.h"
#include "fileio.h"
#include "recorder.h"

/* The one piece of process-wide state in this file, because MPI's own is: MPI_Init runs once
 * per process, and MPI_Finalize once after it, with every communicator of every bp_comm made
 * on the way. So whether we called MPI_Init (then MPI_Finalize is ours to call) and how many
 * comms bp_comm_init gave that are not finalized yet (the last one finalizes) belong to the
 * process, not to a comm (Horovod keeps the same flag, should_finalize, for the same reason).
 * bp_comm_init and bp_comm_finalize are called from one thread, as MPI_Init and MPI_Finalize
 * must be. */
static struct {
    int we_initialised; /* MPI_Init_thread was ours */
    int open;           /* comms of bp_comm_init not finalized yet */
} mpi_process;

static const bp_comm alone = {.rank = 0, .size = 1, .local_size = 1, .mpi = NULL};

/* The node's ranks and, across nodes, the ranks with the same place on theirs: the two
 * levels of the gradient exchange. */
static int split_levels(bp__mpi *m, MPI_Comm node)
{
    int size, range[2];
    MPI_Comm_size(node, &size);
    range[0] = -size, range[1] = size;
    if (MPI_Allreduce(MPI_IN_PLACE, range, 2, MPI_INT, MPI_MAX, m->world) != MPI_SUCCESS)
        return BP_ECOMM;
    int uniform = -range[0] == range[1];
    if (MPI_Comm_dup(node, &m->shm) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_set_errhandler(m->shm, MPI_ERRORS_RETURN);
    if (uniform)
        m->node = node;
    else if (MPI_Comm_free(&node) != MPI_SUCCESS ||
             MPI_Comm_split(m->world, m->rank, 0, &m->node) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_rank(m->node, &m->node_rank);
    MPI_Comm_size(m->node, &m->node_size);
    if (MPI_Comm_split(m->world, m->node_rank, m->rank, &m->cross) != MPI_SUCCESS ||
        MPI_Comm_dup(m->world, &m->flat) != MPI_SUCCESS)
        return BP_ECOMM;
    MPI_Comm_set_errhandler(m->flat, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(m->node, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(m->cross, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->cross, &m->cross_rank);
    MPI_Comm_size(m->cross, &m->cross_size);
    return 0;
}

/* Drops a reference to m; the last frees what m holds (its watchdog stopped first) and
 * m. */
static void release(bp__mpi *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) > 1)
        return;
    bp__watchdog *w = &m->wd;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->started)
        pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    int finalized = 0;
    MPI_Finalized(&finalized);
    MPI_Comm *all[] = {&m->node, &m->cross, &m->flat, &m->shm, &m->world};
    for (int i = 0; i < 5 && !finalized; i++)
        if (*all[i] != MPI_COMM_NULL)
            MPI_Comm_free(all[i]);
    if (m->board)
        munmap(m->board, m->board_bytes);
    if (m->rec.base)
        munmap(m->rec.base, m->rec.bytes);
    free(m->hosts);
    free(m->world_rank);
    free(m->board_rank);
    free(m);
}

/* to[i]: the number in comm `into` of rank i of comm `from`, for its n ranks. Local. */
static void translate(MPI_Comm from, MPI_Comm into, int n, int *to)
{
    MPI_Group a, b;
    MPI_Comm_group(from, &a);
    MPI_Comm_group(into, &b);
    for (int i = 0; i < n; i++)
        MPI_Group_translate_ranks(a, 1, &i, b, &to[i]);
    MPI_Group_free(&a);
    MPI_Group_free(&b);
}

_Static_assert(sizeof(bp__arrival) == 64, "a board line is one cache line");

/* Every rank's host and MPI_COMM_WORLD number, for the watchdog to name ranks by. */
static int name_ranks(bp__mpi *m)
{
    char host[BP__HOST_CHARS] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "unknown");
    if (MPI_Allgather(host, BP__HOST_CHARS, MPI_CHAR, m->hosts, BP__HOST_CHARS, MPI_CHAR,
                      m->world) != MPI_SUCCESS)
        return BP_ECOMM;
    translate(m->world, MPI_COMM_WORLD, m->size, m->world_rank);
    for (int r = 0; r < m->size; r++)
        m->renumbered |= m->world_rank[r] != r;
    return 0;
}

/* A segment of per_rank bytes for each rank of the node (of m->shm), page-aligned: the
 * node's rank 0 creates it under a name of its pid, m's address and tag (no other comm or
 * job has it), the others open it, and it is unlinked as soon as all have it mapped. *at
 * is NULL where it cannot be had (no room in /dev/shm). 0, or BP_ECOMM when a collective
 * failed. */
static int map_node(bp__mpi *m, size_t per_rank, const char *tag, void **at_out, size_t *bytes_out)
{
    int me, n;
    MPI_Comm_rank(m->shm, &me);
    MPI_Comm_size(m->shm, &n);
    *at_out = NULL, *bytes_out = 0;
    size_t page = 4096;
    size_t bytes = ((size_t)n * per_rank + page - 1) / page * page;
    char name[64] = "";
    int fd = -1, ok = 1;
    if (me == 0) {
        snprintf(name, sizeof(name), "/backprop-%s-%ld-%p", tag, (long)getpid(), (void *)m);
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        ok = fd >= 0 && posix_fallocate(fd, 0, (off_t)bytes) == 0;
        if (!ok && fd >= 0) /* no room: the name goes with the attempt */
            shm_unlink(name);
        if (!ok)
            name[0] = 0;
    }
    if (MPI_Bcast(name, sizeof(name), MPI_CHAR, 0, m->shm) != MPI_SUCCESS)
        return BP_ECOMM;
    if (me != 0 && name[0])
        fd = shm_open(name, O_RDWR, 0);
    void *at = MAP_FAILED;
    if (fd >= 0 && name[0])
        at = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    ok = at != MAP_FAILED;
    int rc = MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, m->shm);
    if (me == 0 && name[0])
        shm_unlink(name);
    if (at != MAP_FAILED && (!ok || rc != MPI_SUCCESS))
        munmap(at, bytes);
    if (rc != MPI_SUCCESS)
        return BP_ECOMM;
    if (ok)
        *at_out = at, *bytes_out = bytes;
    return 0;
}

/* The node's arrival board: a line per rank of the node, made as the exchange makes its
 * segment (src/exchange.c, map_segment). Without it the watchdog can only say that one of
 * the other ranks did not arrive. 0, or BP_ECOMM when a collective failed. */
static int map_board(bp__mpi *m)
{
    int me, n;
    MPI_Comm_rank(m->shm, &me);
    MPI_Comm_size(m->shm, &n);
    m->board_rank = malloc((size_t)n * sizeof(int));
    void *at;
    size_t bytes;
    if (map_node(m, sizeof(bp__arrival), "board", &at, &bytes) < 0)
        return BP_ECOMM;
    int ok = at && m->board_rank;
    if (MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, m->shm) != MPI_SUCCESS) {
        if (at)
            munmap(at, bytes);
        return BP_ECOMM;
    }
    if (!ok) {
        if (at)
            munmap(at, bytes);
        return 0;
    }
    translate(m->shm, m->world, n, m->board_rank);
    m->board = at, m->board_bytes = bytes, m->board_n = n, m->mine = m->board + me;
    return 0;
}

/* A bp_comm over world (a fresh duplicate or split, which it takes): its node and
 * cross-node communicators, and a watchdog not yet started that calls parent's callback. */
static int build(MPI_Comm world, const bp__mpi *parent, bp_comm *out)
{
    *out = alone;
    MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
    int size;
    MPI_Comm_size(world, &size);
    bp__mpi *m = calloc(1, sizeof(*m));
    if (m) {
        m->hosts = calloc((size_t)size, sizeof(*m->hosts));
        m->world_rank = calloc((size_t)size, sizeof(int));
        m->mine = &m->own;
    }
    int ok = m && m->hosts && m->world_rank, all_ok = 0;
    /* Every rank goes on to the collectives below, or none. */
    if (MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, world) != MPI_SUCCESS || !all_ok) {
        if (m)
            free(m->hosts), free(m->world_rank);
        free(m);
        MPI_Comm_free(&world);
        return ok ? BP_ECOMM : BP_ENOMEM;
    }
    m->world = world;
    atomic_init(&m->refs, 1);
    m->node = m->cross = m->flat = m->shm = MPI_COMM_NULL;
    MPI_Comm_rank(world, &m->rank);
    MPI_Comm_size(world, &m->size);
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    m->threads_ok = level >= MPI_THREAD_SERIALIZED;
    atomic_init(&m->wd.step, -1);
    if (parent)
        m->wd.expired = parent->wd.expired, m->wd.ctx = parent->wd.ctx;
    /* The watchdog sleeps on a monotonic clock: a wall clock set back must not stall it. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&m->wd.mu, NULL);
    pthread_cond_init(&m->wd.cv, &attr);
    pthread_condattr_destroy(&attr);
    MPI_Comm node;
    int local_size = 1;
    if (MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, m->rank, MPI_INFO_NULL, &node) !=
        MPI_SUCCESS) {
        release(m);
        return BP_ECOMM;
    }
    MPI_Comm_size(node, &local_size);
    if (split_levels(m, node) < 0 || name_ranks(m) < 0 || map_board(m) < 0) {
        release(m);
        return BP_ECOMM;
    }
    *out = (bp_comm){m->rank, m->size, local_size, m};
    return 0;
}

int bp_comm_init(int *argc, char ***argv, bp_comm *comm)
{
    *comm = alone;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        /* SERIALIZED: the exchange's thread calls MPI while the trainer's waits for it;
         * never two at once. (The watchdog's thread never calls MPI but to abort.) */
        int provided;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
            return BP_ECOMM;
        mpi_process.we_initialised = 1;
    }
    MPI_Comm world;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &world) != MPI_SUCCESS)
        return BP_ECOMM;
    int rc = build(world, NULL, comm);
    mpi_process.open += rc == 0;
    return rc;
}

void bp_comm_finalize(bp_comm *comm)
{
    if (comm->mpi)
        mpi_process.open--;
    bp_comm_free(comm);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized || !mpi_process.we_initialised || mpi_process.open > 0)
        return;
    MPI_Finalize();
    mpi_process.we_initialised = 0;
}

static void enter(bp__mpi *m, const char *what);
static void leave(bp__mpi *m);

int bp_comm_dup(const bp_comm *comm, bp_comm *out)
{
    *out = alone;
    if (!comm->mpi) /* a job of one without MPI stays one */
        return 0;
    MPI_Comm world;
    enter(comm->mpi, "the making of a communicator");
    int rc = MPI_Comm_dup(comm->mpi->world, &world);
    leave(comm->mpi);
    return rc == MPI_SUCCESS ? build(world, comm->mpi, out) : BP_ECOMM;
}

int bp_comm_split(const bp_comm *comm, int color, bp_comm *out)
{
    *out = alone;
    if (!comm->mpi)
        return color < 0 ? BP_EINVAL : 0;
    /* A rank with a negative color still joins the split (the others wait for it), and
     * gets no communicator. */
    MPI_Comm world;
    enter(comm->mpi, "the making of a communicator");
    int rc =
        MPI_Comm_split(comm->mpi->world, color < 0 ? MPI_UNDEFINED : color, comm->rank, &world);
    leave(comm->mpi);
    if (rc != MPI_SUCCESS)
        return BP_ECOMM;
    return color < 0 ? BP_EINVAL : build(world, comm->mpi, out);
}

void bp__comm_retain(const bp_comm *comm)
{
    if (comm->mpi)
        atomic_fetch_add(&comm->mpi->refs, 1);
}

void bp__comm_release(bp_comm *comm)
{
    release(comm->mpi);
    comm->mpi = NULL;
}

void bp_comm_free(bp_comm *comm)
{
    release(comm->mpi);
    *comm = alone;
}

/* ---- the watchdog ----
 * No collective waits forever. Each comm's watchdog is a thread of its own that watches the
 * collective this rank is in on that comm: entering one stores the time and what it is (two
 * relaxed atomic stores, nothing on the hot path), leaving clears it. When a collective has
 * waited longer than the timeout, the thread reports through the program's callback, which
 * ends the process; mpirun then ends the job. A rank that never arrives (stopped, hung
 * outside MPI, cut off from the network) is found by the ranks waiting for it. One thread
 * per comm rather than one per process: a comm's limit, callback and step are its own, and
 * bp_comm_free ends its thread with it. */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleeps ns, or less when the comm is freed meanwhile: 1 then. */
static int wd_sleep(bp__watchdog *w, long long ns)
{
    long long until_ns = now_ns() + ns;
    struct timespec until = {(time_t)(until_ns / 1000000000LL), (long)(until_ns % 1000000000LL)};
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (!w->stop && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    int stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return stop;
}

/* The slot whose collective is older than the limit, with its start in *since; -1 if none. */
static int overdue(bp__watchdog *w, long long *since)
{
    long long limit = atomic_load_explicit(&w->timeout_ns, memory_order_relaxed);
    for (int i = 0; i < BP__WATCH_SLOTS && limit > 0; i++) {
        *since = atomic_load_explicit(&w->slot[i].since_ns, memory_order_acquire);
        if (*since && now_ns() - *since > limit)
            return i;
    }
    return -1;
}

/* ---- naming the ranks that did not arrive ---- */

static int same_host(const bp__rank_host *a, const bp__rank_host *b)
{
    return strcmp(a->host, b->host) == 0;
}

/* The ranks of r[from..n) on r[from]'s host, runs of three or more as "a-b". */
static void print_host_ranks(FILE *f, const bp__rank_host *r, int from, int n, int *first)
{
    for (int i = from; i < n; i++) {
        if (!same_host(&r[i], &r[from]))
            continue;
        int last = i; /* the run r[i].rank, r[i].rank + 1, ... on this host */
        while (last + 1 < n && r[last + 1].rank == r[last].rank + 1 &&
               same_host(&r[last + 1], &r[from]))
            last++;
        if (last - i < 2)
            last = i;
        fprintf(f, "%s%d", *first ? "" : ", ", r[i].rank);
        if (last > i)
            fprintf(f, "-%d", r[last].rank);
        *first = 0;
        i = last;
    }
    fprintf(f, " (host %s)", r[from].host);
}

void bp__print_ranks(FILE *f, const bp__rank_host *r, int n)
{
    fputs(n == 1 ? "rank " : "ranks ", f);
    for (int i = 0; i < n; i++) {
        int seen = 0; /* i's host was printed with a lower rank of it */
        for (int j = 0; j < i && !seen; j++)
            seen = same_host(&r[j], &r[i]);
        if (seen)
            continue;
        if (i > 0)
            fputs(", ", f);
        int first = 1;
        print_host_ranks(f, r, i, n, &first);
    }
}

void bp__print_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* What the watchdog of comm m knows, on expiry, of who did not arrive. */
typedef struct {
    bp__rank_host *missing; /* ranks known not to have arrived */
    int n_missing;
    bp__rank_host *others; /* when none is known: the ranks it may be, all on other hosts */
    int n_others;
    int whole_node; /* others holds no rank of this node: the board showed all arrived */
} who_is_missing;

static bp__rank_host named(const bp__mpi *m, int r)
{
    return (bp__rank_host){m->world_rank[r], m->hosts[r]};
}

/* A rank of this node that did not arrive: its line shows it has not reached a point this
 * rank has (a lower count in any slot) and it is not waiting itself (then it waits for
 * another: an allreduce may end on some ranks before others); or its process stands
 * still (its watchdog has not looked for longer than a healthy one ever waits: a rank
 * stopped inside the collective). */
static int behind(const bp__mpi *m, const bp__arrival *peer, long long now)
{
    int later = 0, waiting = 0;
    for (int k = 0; k < BP__WATCH_SLOTS; k++) {
        later |= atomic_load_explicit(&peer->count[k], memory_order_relaxed) <
                 atomic_load_explicit(&m->mine->count[k], memory_order_relaxed);
        waiting |= atomic_load_explicit(&peer->inside[k], memory_order_relaxed);
    }
    long long beat = atomic_load_explicit(&peer->beat_ns, memory_order_relaxed);
    long long limit = atomic_load_explicit(&m->wd.timeout_ns, memory_order_relaxed) / 2;
    return (later && !waiting) ||
           (beat && now - beat > (limit > 1000000000LL ? limit : 1000000000LL));
}

/* Who did not arrive: this node's ranks that the board shows behind; else, where every
 * rank of the node has arrived (or there is no board), the ranks elsewhere. */
static void find_missing(const bp__mpi *m, who_is_missing *w)
{
    *w = (who_is_missing){calloc((size_t)m->size, sizeof(bp__rank_host)), 0,
                          calloc((size_t)m->size, sizeof(bp__rank_host)), 0, 0};
    if (!w->missing || !w->others)
        return;
    char *here = calloc((size_t)m->size, 1); /* ranks on the board */
    w->whole_node = here && m->board;
    long long now = now_ns();
    for (int i = 0; i < m->board_n; i++) {
        int r = m->board_rank[i];
        if (here)
            here[r] = 1;
        if (r != m->rank && behind(m, &m->board[i], now))
            w->missing[w->n_missing++] = named(m, r);
    }
    for (int r = 0; r < m->size; r++)
        if (r != m->rank && !(here && here[r]))
            w->others[w->n_others++] = named(m, r);
    free(here);
    if (w->n_missing == 0 && w->n_others == 1) /* then it can only be that one */
        w->missing[w->n_missing++] = w->others[0];
}

/* "rank 2 (host b) did not arrive", or what the board allows: into f. */
static void print_who(FILE *f, const bp__mpi *m, const who_is_missing *w)
{
    const char *world = m->renumbered ? "world " : "";
    if (w->n_missing > 0) {
        fputs(world, f);
        bp__print_ranks(f, w->missing, w->n_missing);
    } else if (w->n_others > 0) {
        fprintf(f, "%sone of %s", w->whole_node ? "no rank on this host is missing: " : "", world);
        bp__print_ranks(f, w->others, w->n_others);
    } else {
        fputs("a rank", f);
    }
    fputs(" did not arrive", f);
}

/* BACKPROP_EVENTS=1: the expiry as one line of JSON on stderr, for a launcher to read
 * (docs/running.md has its fields). One write: ranks' lines do not mix. */
static void print_event(const bp__mpi *m, const who_is_missing *w, const char *what, long step)
{
    const char *events = getenv("BACKPROP_EVENTS");
    char *line = NULL;
    size_t bytes = 0;
    FILE *f = events && strcmp(events, "1") == 0 ? open_memstream(&line, &bytes) : NULL;
    if (!f)
        return;
    fprintf(f,
            "backprop-event: {\"event\":\"timeout\",\"rank\":%d,\"host\":", m->world_rank[m->rank]);
    bp__print_json_string(f, m->hosts[m->rank]);
    if (step >= 0)
        fprintf(f, ",\"step\":%ld,\"what\":", step);
    else
        fputs(",\"step\":null,\"what\":", f);
    bp__print_json_string(f, what);
    fputs(",\"missing\":[", f);
    for (int i = 0; i < w->n_missing; i++) {
        fprintf(f, "%s{\"rank\":%d,\"host\":", i ? "," : "", w->missing[i].rank);
        bp__print_json_string(f, w->missing[i].host);
        fputc('}', f);
    }
    fputs("],\"suspect_hosts\":[", f);
    const bp__rank_host *s = w->n_missing ? w->missing : w->others;
    int n = w->n_missing ? w->n_missing : w->n_others, listed = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = same_host(&s[j], &s[i]);
        if (seen)
            continue;
        fputs(listed++ ? "," : "", f);
        bp__print_json_string(f, s[i].host);
    }
    fputs("]}\n", f);
    if (fclose(f) == 0) {
        fwrite(line, 1, bytes, stderr);
        fflush(stderr);
    }
    free(line);
}

static void write_node_trace(bp__mpi *m, char *note, size_t len);

/* Slot s's collective hung: the program's callback ends the process. */
static void expire(bp__mpi *m, int s)
{
    bp__watchdog *w = &m->wd;
    char msg[1024 + sizeof(m->rec.path) + 600], note[sizeof(m->rec.path) + 600];
    char at[32] = "", *who = NULL;
    size_t who_bytes = 0;
    who_is_missing missing;
    find_missing(m, &missing);
    FILE *f = open_memstream(&who, &who_bytes);
    if (f) {
        print_who(f, m, &missing);
        if (fclose(f) != 0)
            free(who), who = NULL;
    }
    long step = atomic_load_explicit(&w->step, memory_order_relaxed);
    if (step >= 0)
        snprintf(at, sizeof(at), " at step %ld", step);
    const char *what = atomic_load_explicit(&w->slot[s].what, memory_order_relaxed);
    int n = snprintf(msg, sizeof(msg), "timed out after %.0f s in %s%s: %s",
                     (double)atomic_load_explicit(&w->timeout_ns, memory_order_relaxed) / 1e9, what,
                     at, who ? who : "a rank did not arrive");
    const char *tail = " (stopped, hung, or cut off from the network); [comm] timeout sets the "
                       "limit";
    /* The seconds before the hang, written first: the line says where they are. */
    write_node_trace(m, note, sizeof(note));
    /* A list of thousands of ranks is cut short (to 1024 bytes); the reason's end is kept. */
    size_t room = 1024 - strlen(tail) - 4;
    if (n > 0 && (size_t)n > room)
        strcpy(msg + room, "...");
    strcat(msg, tail);
    strcat(msg, note);
    free(who);
    print_event(m, &missing, what, step);
    free(missing.missing);
    free(missing.others);
    if (w->expired)
        w->expired(w->ctx, m->rank, msg);
    /* The callback did not end the process (or there is none). The collective that hung
     * cannot be returned from, and a library must not _exit a program: the job ends the way
     * MPI ends jobs. MPI_Abort from this thread while another is inside MPI goes beyond what
     * MPI_THREAD_SERIALIZED promises, but ending everything is what MPI_Abort is for (Open
     * MPI's goes through its runtime, not the hung communicator's progress). */
    MPI_Abort(m->world, 1);
}

/* Another rank of this node reported a hung collective in the last 5 s: its process is
 * ending, and mpirun ends the job; a second line would only repeat it (with a rank that
 * was stopped and is woken by mpirun's SIGCONT, a wrong one). After 5 s this one reports
 * too: nothing waits forever. */
static int reported_on_node(const bp__mpi *m)
{
    long long now = now_ns();
    for (int i = 0; m->board && i < m->board_n; i++) {
        long long fired = atomic_load_explicit(&m->board[i].fired_ns, memory_order_relaxed);
        if (&m->board[i] != m->mine && fired && now - fired < 5000000000LL)
            return 1;
    }
    return 0;
}

static void *watch(void *arg)
{
    bp__mpi *m = arg;
    bp__watchdog *w = &m->wd;
    for (;;) {
        /* First thing: a rank stopped right after this starts is seen standing still. */
        atomic_store_explicit(&m->mine->beat_ns, now_ns(), memory_order_relaxed);
        if (wd_sleep(w, 100 * 1000 * 1000LL))
            break;
        long long since = 0;
        int s = overdue(w, &since);
        if (s < 0)
            continue;
        /* With many ranks waiting, the lowest fires first and mpirun takes down the rest
         * before they speak: one line for the job. */
        if (wd_sleep(w, 200 * 1000 * 1000LL * (m->rank < 4 ? m->rank : 4)))
            break;
        if (atomic_load_explicit(&w->slot[s].since_ns, memory_order_relaxed) != since)
            continue; /* it arrived meanwhile */
        if (reported_on_node(m))
            continue; /* the job is ending: its line is said */
        atomic_store_explicit(&m->mine->fired_ns, now_ns(), memory_order_relaxed);
        expire(m, s);
    }
    return NULL;
}

int bp_comm_watch(const bp_comm *comm, double seconds, bp_timeout_fn expired, void *ctx)
{
    if (!comm->mpi) /* no MPI: nothing can wait for another rank */
        return 0;
    bp__watchdog *w = &comm->mpi->wd;
    /* Only the limit changes once the thread runs: the rest is its to read. */
    if (!w->started && expired)
        w->expired = expired, w->ctx = ctx;
    atomic_store(&w->timeout_ns, seconds > 0 ? (long long)(seconds * 1e9) : 0);
    if (seconds <= 0 || w->started || comm->size == 1)
        return 0;
    if (pthread_create(&w->thread, NULL, watch, comm->mpi) != 0)
        return BP_ENOMEM;
    w->started = 1;
    return 0;
}

void bp__comm_set_step(const bp_comm *comm, long step)
{
    if (comm->mpi)
        atomic_store_explicit(&comm->mpi->wd.step, step, memory_order_relaxed);
}

void bp__watch_enter(bp__mpi *m, int slot, const char *what)
{
    atomic_store_explicit(&m->wd.slot[slot].what, what, memory_order_relaxed);
    /* release: a watchdog that sees this time also sees the name stored before it */
    atomic_store_explicit(&m->wd.slot[slot].since_ns, now_ns(), memory_order_release);
    atomic_store_explicit(&m->mine->inside[slot], 1, memory_order_relaxed);
}

void bp__watch_leave(bp__mpi *m, int slot)
{
    atomic_store_explicit(&m->wd.slot[slot].since_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&m->mine->inside[slot], 0, memory_order_relaxed);
}

void bp__watch_count(bp__mpi *m, int slot)
{
    /* This thread alone writes its count: a load and a store, no locked add. */
    _Atomic long *count = &m->mine->count[slot];
    atomic_store_explicit(count, atomic_load_explicit(count, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void enter(bp__mpi *m, const char *what)
{
    bp__watch_count(m, 0);
    bp__watch_enter(m, 0, what);
    m->rec.open = bp__rec_begin(m->rec.mine, BP__REC_COLLECTIVE, 0, what);
}

static void leave(bp__mpi *m)
{
    bp__watch_leave(m, 0);
    bp__rec_end(m->rec.mine, m->rec.open);
}

/* In place, over every rank; 0 or BP_ECOMM. */
static int allreduce(const bp_comm *comm, void *buf, size_t n, MPI_Datatype type, MPI_Op op,
                     const char *what)
{
    if (comm->size == 1)
        return 0;
    if (!comm->mpi) /* ranks that no bp_comm_* call made */
        return BP_ECOMM;
    if (n > INT_MAX) /* MPI counts are ints */
        return BP_EINVAL;
    enter(comm->mpi, what);
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, type, op, comm->mpi->world);
    leave(comm->mpi);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

int bp_comm_sum(const bp_comm *comm, bp_real *buf, size_t n)
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

int bp__comm_gather_doubles(const bp_comm *comm, const double *mine, int k, double *all)
{
    if (comm->size == 1) {
        memcpy(all, mine, (size_t)k * sizeof(double));
        return 0;
    }
    if (!comm->mpi)
        return BP_ECOMM;
    enter(comm->mpi, "the gathering of the ranks' step times");
    int rc = MPI_Gather(mine, k, MPI_DOUBLE, all, k, MPI_DOUBLE, 0, comm->mpi->world);
    leave(comm->mpi);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

int bp__comm_max_doubles(const bp_comm *comm, double *buf, size_t n)
{
    return allreduce(comm, buf, n, MPI_DOUBLE, MPI_MAX, "the any_scale exponent maximum");
}

int bp__comm_sum_i64(const bp_comm *comm, int64_t *buf, size_t n)
{
    return allreduce(comm, buf, n, MPI_INT64_T, MPI_SUM, "the any_scale fixed-point sum");
}

int bp_comm_agree(const bp_comm *comm, int value, int *max, int *who)
{
    *max = value, *who = comm->rank;
    if (comm->size == 1)
        return 0;
    if (!comm->mpi)
        return BP_ECOMM;
    struct {
        int value, rank;
    } in = {value, comm->rank}, out;
    /* MAXLOC breaks ties by the lowest rank. */
    enter(comm->mpi, "an agreement between ranks");
    int rc = MPI_Allreduce(&in, &out, 1, MPI_2INT, MPI_MAXLOC, comm->mpi->world);
    leave(comm->mpi);
    if (rc != MPI_SUCCESS)
        return BP_ECOMM;
    *max = out.value, *who = out.rank;
    return 0;
}

int bp_comm_same(const bp_comm *comm, uint64_t value)
{
    if (comm->size == 1)
        return 1;
    if (!comm->mpi)
        return BP_ECOMM;
    uint64_t v[2] = {value, ~value}, r[2];
    enter(comm->mpi, "the replica check");
    int rc = MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MAX, comm->mpi->world);
    leave(comm->mpi);
    if (rc != MPI_SUCCESS)
        return BP_ECOMM;
    /* max(v) == v and max(~v) == ~v on every rank only when all v are equal. */
    return r[0] == value && r[1] == ~value;
}

int bp__comm_bcast(const bp_comm *comm, void *buf, size_t bytes)
{
    if (comm->size == 1)
        return 0;
    if (!comm->mpi)
        return BP_ECOMM;
    if (bytes > INT_MAX)
        return BP_EINVAL;
    enter(comm->mpi, "the broadcast of rank 0's config and data");
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, comm->mpi->world);
    leave(comm->mpi);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

/* ---- one copy of the data per node ---- */

struct bp_shared {
    MPI_Win win;
    bp__mpi *mpi; /* the comm's: its node's ranks, and its watchdog */
};

int bp__comm_node_ranks(const bp_comm *comm, int *rank, int *size)
{
    *rank = 0, *size = 1;
    if (!comm->mpi)
        return 0;
    MPI_Comm_rank(comm->mpi->shm, rank);
    MPI_Comm_size(comm->mpi->shm, size);
    return 0;
}

int bp__comm_node_bcast(const bp_comm *comm, void *buf, size_t bytes)
{
    int rank, size;
    bp__comm_node_ranks(comm, &rank, &size);
    if (size == 1)
        return 0;
    if (bytes > INT_MAX)
        return BP_EINVAL;
    enter(comm->mpi, "the node's broadcast of the data's shape");
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, comm->mpi->shm);
    leave(comm->mpi);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

int bp__comm_share(const bp_comm *comm, size_t bytes, bp_shared **out, void **base)
{
    *out = NULL, *base = NULL;
    if (!comm->mpi) /* no MPI: no node to share with */
        return BP_ECOMM;
    int rank;
    MPI_Comm_rank(comm->mpi->shm, &rank);
    bp_shared *s = calloc(1, sizeof(*s));
    int ok = s != NULL, all_ok;
    if (s)
        s->mpi = comm->mpi;
    /* Every rank must reach the allocation or none: a rank without memory for the handle
     * says so first. */
    enter(comm->mpi, "the node's agreement on shared memory");
    int rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm->mpi->shm);
    leave(comm->mpi);
    if (rc != MPI_SUCCESS || !all_ok) {
        free(s);
        return rc != MPI_SUCCESS ? BP_ECOMM : BP_ENOMEM;
    }
    /* The node's rank 0 holds it all: the others' share is empty, and they reach its
     * memory through shared_query. One byte at least: MPI may return no address for 0. */
    MPI_Aint mine = rank == 0 ? (MPI_Aint)(bytes ? bytes : 1) : 0, size;
    int unit;
    void *at = NULL;
    enter(comm->mpi, "the node's allocation of shared memory");
    rc = MPI_Win_allocate_shared(mine, 1, MPI_INFO_NULL, comm->mpi->shm, &at, &s->win);
    leave(comm->mpi);
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
    enter(comm->mpi, "the node's agreement on shared memory");
    rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm->mpi->shm);
    leave(comm->mpi);
    if (rc != MPI_SUCCESS || !all_ok) {
        if (locked)
            MPI_Win_unlock_all(s->win);
        enter(comm->mpi, "the node's release of shared memory");
        MPI_Win_free(&s->win);
        leave(comm->mpi);
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
    enter(s->mpi, "the node's barrier after sharing the data");
    int rc = MPI_Barrier(s->mpi->shm);
    leave(s->mpi);
    MPI_Win_sync(s->win);
    return rc == MPI_SUCCESS ? 0 : BP_ECOMM;
}

void bp__comm_share_free(bp_shared *s)
{
    if (!s)
        return;
    MPI_Win_unlock_all(s->win);
    enter(s->mpi, "the node's release of shared memory");
    MPI_Win_free(&s->win);
    leave(s->mpi);
    free(s);
}

void bp__shard(size_t m, int rank, int size, size_t *start, size_t *end)
{
    size_t base = m / (size_t)size, extra = m % (size_t)size, r = (size_t)rank;
    *start = r * base + (r < extra ? r : extra);
    *end = *start + base + (r < extra);
}

/* ---- the flight recorder's rings (src/recorder.h) ---- */

int bp__comm_map_rings(const bp_comm *comm, size_t ring_bytes, bp__rec **mine)
{
    *mine = NULL;
    bp__mpi *m = comm->mpi;
    if (!m)
        return 0;
    ring_bytes = (ring_bytes + 63) / 64 * 64;
    if (m->rec.base) { /* a trainer before this one on the comm had its own */
        munmap(m->rec.base, m->rec.bytes);
        m->rec = (struct bp__rec_rings){.open = -1};
    }
    void *at;
    size_t bytes;
    enter(m, "the node's agreement on the flight recorder");
    int rc = map_node(m, ring_bytes, "rings", &at, &bytes);
    leave(m);
    if (rc < 0 || !at)
        return rc;
    int me;
    MPI_Comm_rank(m->shm, &me);
    MPI_Comm_size(m->shm, &m->rec.n);
    m->rec.base = at, m->rec.bytes = bytes, m->rec.ring_bytes = ring_bytes;
    *mine = (bp__rec *)(m->rec.base + (size_t)me * ring_bytes);
    return 0;
}

void bp__comm_set_recorder(const bp_comm *comm, bp__rec *mine, const char *trace, long steps)
{
    bp__mpi *m = comm->mpi;
    if (!m)
        return;
    m->rec.mine = mine, m->rec.steps = steps, m->rec.open = -1;
    snprintf(m->rec.path, sizeof(m->rec.path), "%s", trace ? trace : "");
}

const char *bp__comm_host(const bp_comm *comm, int rank)
{
    return comm->mpi && rank >= 0 && rank < comm->size ? comm->mpi->hosts[rank] : NULL;
}

/* The watchdog fired: the node's rings, the stopped rank's included, as a trace at
 * [log] trace when this node holds rank 0, else beside it with the host's name added
 * (PATH.HOST): the seconds before the hang are what the user needs to see. Nothing
 * collective: the others may never answer. Into note, for the error line: where it went,
 * or why it did not. */
static void write_node_trace(bp__mpi *m, char *note, size_t len)
{
    note[0] = 0;
    if (!m->rec.path[0] || !m->rec.mine)
        return;
    /* Without the node's segment (no room in /dev/shm), this rank's own ring alone. */
    int rings = m->rec.base ? m->rec.n : 1;
    size_t ring_bytes = m->rec.base ? m->rec.ring_bytes : bp__rec_bytes(m->rec.mine->capacity);
    const char *base = m->rec.base ? m->rec.base : (const char *)m->rec.mine;
    bp__rec_view *v = calloc((size_t)rings, sizeof(*v));
    bp__rec_event **copies = calloc((size_t)rings, sizeof(*copies));
    char(*hosts)[sizeof(((bp__rec *)0)->host)] = calloc((size_t)rings, sizeof(*hosts));
    int n = 0, holds_zero = 0;
    for (int i = 0; v && copies && hosts && i < rings; i++) {
        const bp__rec *r = (const bp__rec *)(base + (size_t)i * ring_bytes);
        if (r->magic == 0 || r->capacity == 0 || bp__rec_bytes(r->capacity) > ring_bytes ||
            !(copies[n] = malloc(r->capacity * sizeof(bp__rec_event))))
            continue;
        memcpy(hosts[n], r->host, sizeof(hosts[n]));
        hosts[n][sizeof(hosts[n]) - 1] = 0;
        holds_zero |= r->rank == 0;
        v[n] = (bp__rec_view){r->rank, hosts[n], copies[n], bp__rec_copy(r, copies[n]), 0};
        n++;
    }
    char path[sizeof(m->rec.path) + BP__HOST_CHARS + 2];
    snprintf(path, sizeof(path), "%s", m->rec.path);
    if (!holds_zero) { /* a host's name as a file name's part: letters, digits, . - _ */
        size_t at = strlen(path);
        path[at++] = '.';
        for (const char *c = m->hosts[m->rank]; *c && at + 1 < sizeof(path); c++)
            path[at++] = (isalnum((unsigned char)*c) || *c == '-' || *c == '.') ? *c : '_';
        path[at] = 0;
    }
    char *text = NULL, err[512];
    size_t bytes = 0;
    FILE *f = n > 0 ? open_memstream(&text, &bytes) : NULL;
    bp__rec_about about = {"watchdog", BP_VERSION, m->rec.steps, m->size, bp__rec_now()};
    int ok = f && bp__rec_write_json(f, v, n, &about) == 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (ok && bp__publish(path, text, bytes, BP__OUT_REPLACE, err, sizeof(err)) < 0)
        snprintf(note, len, "; the trace could not be written: %.500s", err);
    else if (ok)
        snprintf(note, len, "; this host's ranks' last steps: %s", path);
    free(text);
    for (int i = 0; copies && i < n; i++)
        free(copies[i]);
    free(copies);
    free(hosts);
    free(v);
}

/* Rank r's clock against rank 0's, by round trips (the least delayed of 5 counts): what
 * to add to r's times. Ranks on rank 0's host share its clock. */
static int clock_offsets(bp__mpi *m, int64_t *offset)
{
    enum { ROUNDS = 5, TAG = 7711 };
    for (int r = 1; r < m->size; r++) {
        offset[r] = 0;
        if (strcmp(m->hosts[r], m->hosts[0]) == 0)
            continue;
        int first = r; /* the host's first rank measures; the others take its offset */
        for (int q = 1; q < r && first == r; q++)
            if (strcmp(m->hosts[q], m->hosts[r]) == 0)
                first = q;
        if (first != r) {
            offset[r] = offset[first];
            continue;
        }
        int64_t best_rtt = INT64_MAX;
        for (int k = 0; k < ROUNDS; k++) {
            int64_t t = 0;
            if (m->rank == 0) {
                int64_t a = bp__rec_now();
                if (MPI_Send(&a, 1, MPI_INT64_T, r, TAG, m->world) != MPI_SUCCESS ||
                    MPI_Recv(&t, 1, MPI_INT64_T, r, TAG, m->world, MPI_STATUS_IGNORE) !=
                        MPI_SUCCESS)
                    return BP_ECOMM;
                int64_t b = bp__rec_now();
                if (b - a < best_rtt)
                    best_rtt = b - a, offset[r] = a + (b - a) / 2 - t;
            } else if (m->rank == r) {
                if (MPI_Recv(&t, 1, MPI_INT64_T, 0, TAG, m->world, MPI_STATUS_IGNORE) !=
                    MPI_SUCCESS)
                    return BP_ECOMM;
                t = bp__rec_now();
                if (MPI_Send(&t, 1, MPI_INT64_T, 0, TAG, m->world) != MPI_SUCCESS)
                    return BP_ECOMM;
            }
        }
    }
    return 0;
}

int bp__comm_gather_rings(const bp_comm *comm, const bp__rec *mine, bp__rec_gathered *g)
{
    *g = (bp__rec_gathered){0};
    size_t cap = mine ? mine->capacity : 0;
    bp__rec_event *own = cap ? malloc(cap * sizeof(*own)) : NULL;
    size_t n = own ? bp__rec_copy(mine, own) : 0;
    bp__mpi *m = comm->mpi;
    if (!m || comm->size == 1) {
        g->views = calloc(1, sizeof(*g->views));
        if (!g->views) {
            free(own);
            return BP_ENOMEM;
        }
        g->events = own, g->n = 1;
        g->views[0] = (bp__rec_view){0, mine ? mine->host : "", own, n, 0};
        return 0;
    }
    int64_t *offset = calloc((size_t)m->size, sizeof(int64_t));
    int *counts = calloc((size_t)m->size, sizeof(int)), *displs = NULL;
    int count = (int)(n * sizeof(*own)), rc = 0, ok = offset && counts;
    char *all = NULL;
    /* Every rank takes the same path through the collectives below: what memory a rank
     * lacks is agreed first, and rank 0's room for the whole is told to all. */
    enter(m, "the gathering of the trace");
    if (MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, m->world) != MPI_SUCCESS)
        rc = BP_ECOMM;
    else if (!ok)
        rc = BP_ENOMEM;
    if (rc == 0 && (clock_offsets(m, offset) < 0 ||
                    MPI_Gather(&count, 1, MPI_INT, counts, 1, MPI_INT, 0, m->world) != MPI_SUCCESS))
        rc = BP_ECOMM;
    if (rc == 0 && m->rank == 0) {
        size_t total = 0;
        displs = calloc((size_t)m->size, sizeof(int));
        for (int r = 0; displs && r < m->size && total < INT_MAX; r++)
            displs[r] = (int)total, total += (size_t)counts[r];
        all = displs && total < INT_MAX ? malloc(total ? total : 1) : NULL; /* MPI's ints */
        ok = all != NULL;
    }
    if (rc == 0 && MPI_Bcast(&ok, 1, MPI_INT, 0, m->world) != MPI_SUCCESS)
        rc = BP_ECOMM;
    else if (rc == 0 && !ok)
        rc = BP_ENOMEM;
    if (rc == 0 && MPI_Gatherv(own, count, MPI_BYTE, all, counts, displs, MPI_BYTE, 0, m->world) !=
                       MPI_SUCCESS)
        rc = BP_ECOMM;
    leave(m);
    free(own);
    if (rc == 0 && m->rank == 0 && all) {
        g->views = calloc((size_t)m->size, sizeof(*g->views));
        for (int r = 0; g->views && r < m->size; r++)
            g->views[r] = (bp__rec_view){r, m->hosts[r], (bp__rec_event *)(all + displs[r]),
                                         (size_t)counts[r] / sizeof(bp__rec_event), offset[r]};
        g->n = g->views ? m->size : 0;
        g->events = (bp__rec_event *)all, all = NULL;
    }
    free(all);
    free(displs);
    free(counts);
    free(offset);
    return rc;
}

void bp__rec_gathered_free(bp__rec_gathered *g)
{
    free(g->views);
    free(g->events);
    *g = (bp__rec_gathered){0};
}
