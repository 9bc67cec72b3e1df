/* [data] placement: replicated, node (one copy per node in MPI-3 shared memory) or stream
 * (rows read from the HDF5 file as the steps need them). See place.h. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "internal.h"
#include "place.h"

/* Where Open MPI's shared windows live: a full /dev/shm would end the leader with SIGBUS
 * when it first touches the pages, so its room is checked first. */
#define SHM_DIR "/dev/shm"

static double shm_room(void)
{
    struct statvfs fs;
    if (statvfs(SHM_DIR, &fs) != 0)
        return INFINITY; /* no such directory: MPI puts its segments elsewhere */
    return (double)fs.f_bavail * (double)fs.f_frsize;
}

/* ---- choosing ---- */

typedef struct {
    double bytes, largest;           /* the sets in memory, and the largest of them */
    int streamable;                  /* every set is an HDF5 file with a contiguous float /X */
    double held;                     /* what stream holds: /y and the training permutation */
    size_t n[BP__SETS], d[BP__SETS]; /* each file's examples and features */
    char what[3 * (BP_PATH_MAX + 64)];
} data_size;

/* "train.h5: 60000 examples of 784 features, test.h5: ...": what the memory is for. */
static void describe(const bp_config *c, const size_t *n, const size_t *d, char *buf, size_t len)
{
    const char *paths[BP__SETS] = {c->train, c->validation, c->test};
    size_t at = 0;
    buf[0] = 0;
    for (int s = 0; s < BP__SETS && at < len; s++)
        if (paths[s][0])
            at += (size_t)snprintf(buf + at, len - at, "%s%s: %zu examples of %zu features",
                                   at ? ", " : "", paths[s], n[s], d[s]);
}

static int measure(const bp_config *c, int classes, data_size *out, char *err, size_t errlen)
{
    const char *paths[BP__SETS] = {c->train, c->validation, c->test};
    const char *labels[BP__SETS] = {c->train_labels, c->validation_labels, c->test_labels};
    *out = (data_size){.streamable = 1};
    size_t ns[BP__SETS] = {0}, ds[BP__SETS] = {0};
    for (int s = 0; s < BP__SETS; s++) {
        if (!paths[s][0])
            continue;
        size_t n, d;
        double bytes;
        int rc = bp__dataset_shape(paths[s], labels[s], classes, &n, &d, &bytes, err, errlen);
        if (rc < 0)
            return rc;
        /* A shape that is neither HDF5 nor built in is IDX images': the key that names
         * their labels is the config's to say (the loader only knows none was given). */
        static const char *const set_names[BP__SETS] = {"train", "validation", "test"};
        if (!labels[s][0] && !bp__is_h5_path(paths[s]) && strncmp(paths[s], "builtin:", 8) != 0)
            return bp__fail(err, errlen, BP_EINVAL,
                            "%s: IDX images need their labels: set [data] %s_labels", paths[s],
                            set_names[s]);
        /* Read whole (limit applies after), and validation_split's rows copied out. */
        double row = bytes / (double)n;
        if (s == BP__SET_TRAIN && c->validation_split > 0)
            bytes += row * (double)c->validation_split;
        ns[s] = n, ds[s] = d;
        out->bytes += bytes;
        /* stream holds /y (a label and a one-hot or target row) and the permutation */
        size_t k = classes > 0 ? (size_t)classes : 1;
        out->held += (double)n * ((double)k * sizeof(bp_real) + sizeof(int) + sizeof(size_t));
        int contiguous = 0;
        if (!bp__is_h5_path(paths[s]) || bp__h5_shape(paths[s], &n, &d, &contiguous, NULL, 0) < 0)
            contiguous = 0;
        out->streamable &= contiguous;
    }
    describe(c, ns, ds, out->what, sizeof(out->what));
    memcpy(out->n, ns, sizeof(ns));
    memcpy(out->d, ds, sizeof(ds));
    return 0;
}

/* The same for sets given in memory (bp_trainer_options): what the trainer's copies take. */
static void measure_given(const bp_config *c, const bp_dataset *const given[BP__SETS],
                          data_size *out)
{
    static const char *const names[BP__SETS] = {"the training set", "the validation set",
                                                "the test set"};
    *out = (data_size){.streamable = 0};
    size_t at = 0;
    for (int s = 0; s < BP__SETS; s++) {
        const bp_dataset *ds = given[s];
        if (!ds || ds->n == 0)
            continue;
        double row = (double)(ds->d + ds->k) * sizeof(bp_real) + (ds->labels ? sizeof(int) : 0);
        double bytes = row * (double)ds->n;
        if (s == BP__SET_TRAIN && c->validation_split > 0)
            bytes += row * (double)c->validation_split;
        out->bytes += bytes;
        out->n[s] = ds->n, out->d[s] = ds->d;
        if (at < sizeof(out->what))
            at += (size_t)snprintf(out->what + at, sizeof(out->what) - at,
                                   "%s%s in memory: %zu examples of %zu features", at ? ", " : "",
                                   names[s], ds->n, ds->d);
    }
}

/* What this rank needs for kind: replicated, the data; node, on the node's rank 0, the data
 * (decoded into the node's shared memory, which counts against its memory; the others need
 * nothing); stream, /y and the permutation. */
static double need_of(bp_placement kind, const data_size *ds, int node_rank)
{
    if (kind == BP_PLACE_REPLICATED)
        return ds->bytes;
    if (kind == BP_PLACE_NODE) /* decoded into the shared memory: no copy of its own */
        return node_rank == 0 ? ds->bytes : 0;
    return ds->held;
}

/* kind cannot have the memory it needs: need on this rank, and ranks of the node_size on
 * the node that each need as much from avail. The reason names the data and the ways out. */
static int refuse(bp_placement kind, const data_size *ds, double need, int ranks, int node_size,
                  double avail, char *err, size_t errlen)
{
    char each[32], all[32], have[32], on[96] = "";
    bp__human_bytes(need, each, sizeof(each));
    bp__human_bytes(need * ranks, all, sizeof(all));
    bp__human_bytes(avail, have, sizeof(have));
    if (ranks > 1)
        snprintf(on, sizeof(on), " on each of the %d ranks on this node (%s in all)", ranks, all);
    const char *hint = ds->streamable
                           ? "placement = stream reads the rows from the files instead"
                           : "placement = stream would read the rows from the files, were they "
                             "HDF5 with a contiguous, uncompressed /X (as convert can write them)";
    if (kind == BP_PLACE_REPLICATED)
        return bp__fail(err, errlen, BP_EINVAL,
                        "[data] placement = replicated: %s need %s of memory%s, but only %s is "
                        "available; %s%s",
                        ds->what, each, on, have,
                        node_size > 1 ? "placement = node keeps one copy per node, or " : "", hint);
    if (kind == BP_PLACE_STREAM)
        return bp__fail(err, errlen, BP_EINVAL,
                        "[data] placement = stream: %s: their labels or targets and the order of "
                        "the training rows need %s of memory on each rank, but only %s is "
                        "available",
                        ds->what, each, have);
    return bp__fail(err, errlen, BP_EINVAL,
                    "[data] placement = node: %s need %s of memory on the node's rank 0 (it "
                    "decodes the data into memory the node's ranks share), but only %s is "
                    "available; %s",
                    ds->what, each, have, hint);
}

bp_placement bp__place_auto(const bp__place_room *r, char *why, size_t len)
{
    data_size ds = {.bytes = r->bytes, .held = r->held, .streamable = r->streamable};
    /* Node sharing needs company; the memory decides between holding rows and streaming
     * them. */
    double node_need = need_of(BP_PLACE_NODE, &ds, 0);
    int node_fits = node_need <= r->avail && node_need <= r->own && ds.bytes <= r->shm;
    /* replicated copies share the node's memory, unless max_memory_mb is per rank; a
     * process's own limits (ulimit) are its own */
    int ranks = r->per_rank ? 1 : r->node_size;
    double rep_need = need_of(BP_PLACE_REPLICATED, &ds, 0);
    int rep_fits = rep_need * ranks <= r->avail && rep_need <= r->own;
    if (r->node_size > 1 && node_fits) {
        snprintf(why, len, "one copy for the %d ranks on this node", r->node_size);
        return BP_PLACE_NODE;
    }
    if (rep_fits) {
        snprintf(why, len,
                 r->node_size > 1 ? "a copy per rank fits, one per node does not"
                                  : "one rank on this node");
        return BP_PLACE_REPLICATED;
    }
    if (ds.streamable) {
        snprintf(why, len, "the data does not fit in memory");
        return BP_PLACE_STREAM;
    }
    snprintf(why, len, "too large, and not streamable");
    return r->node_size > 1 ? BP_PLACE_NODE : BP_PLACE_REPLICATED;
}

/* What the placement choice and its check weigh: the sets' sizes (p's, measured), the
 * room this node and process have, and this rank's place on its node. */
static bp__place_room room_of(const bp__place *p, const bp_config *cfg)
{
    int node_rank, node_size;
    bp__comm_node_ranks(&p->comm, &node_rank, &node_size);
    return (bp__place_room){.bytes = p->bytes,
                            .held = p->held,
                            .streamable = p->streamable,
                            .avail = bp__memory_available(p->ceiling),
                            .shm = shm_room(),
                            .own = bp__rlimit_room_at(""),
                            .node_size = node_size,
                            .node_rank = node_rank,
                            .per_rank = cfg->max_memory_mb > 0};
}

int bp__place_choose(bp__place *p, const bp_config *cfg, int classes,
                     const bp_dataset *const given[BP__SETS], const bp_comm *comm, char *err,
                     size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->comm = *comm;
    /* The data's budget travels with the placement: each trainer its own. */
    p->ceiling = cfg->max_memory_mb > 0 ? cfg->max_memory_mb * 1024 * 1024 : 0;
    data_size ds;
    int rc = 0;
    /* Sets in memory replace the [data] files as a whole: a validation or test set given
     * alone would be dropped without a word while the files are read. */
    if (given && !given[BP__SET_TRAIN] && (given[BP__SET_VAL] || given[BP__SET_TEST]))
        return bp__fail(err, errlen, BP_EINVAL,
                        "the %s set was given in memory without a training set: give the "
                        "training set in memory too, or no set at all (the config's files)",
                        given[BP__SET_VAL] ? "validation" : "test");
    if (given && given[BP__SET_TRAIN]) {
        memcpy(p->given, given, sizeof(p->given));
        measure_given(cfg, given, &ds);
    } else {
        rc = measure(cfg, classes, &ds, err, errlen);
    }
    if (rc < 0)
        return rc;
    p->bytes = ds.bytes, p->streamable = ds.streamable, p->held = ds.held;
    snprintf(p->what, sizeof(p->what), "%s", ds.what);
    if (!p->given[BP__SET_TRAIN]) { /* the files' shapes, for node's windows */
        memcpy(p->file_n, ds.n, sizeof(ds.n));
        memcpy(p->file_d, ds.d, sizeof(ds.d));
    }
    bp_placement kind = cfg->placement;
    if (kind == BP_PLACE_AUTO) {
        bp__place_room r = room_of(p, cfg);
        kind = bp__place_auto(&r, p->why, sizeof(p->why));
    }
    p->kind = kind;
    return bp__place_set(p, kind, cfg, err, errlen);
}

int bp__place_fits(bp_placement kind, const bp__place_room *r, const char *what, char *err,
                   size_t errlen)
{
    data_size ds = {.bytes = r->bytes, .streamable = r->streamable, .held = r->held};
    snprintf(ds.what, sizeof(ds.what), "%s", what);
    /* Replicated copies share the node's memory, unless max_memory_mb set a limit per rank
     * (a cgroup cannot tell: it may hold one rank or all of them). */
    double need = need_of(kind, &ds, r->node_rank);
    int ranks = kind == BP_PLACE_REPLICATED && !r->per_rank ? r->node_size : 1;
    if (need * ranks > r->avail)
        return refuse(kind, &ds, need, ranks, r->node_size, r->avail, err, errlen);
    if (need > r->own) /* this process's own limits (ulimit -d, -v) */
        return refuse(kind, &ds, need, 1, r->node_size, r->own, err, errlen);
    if (kind == BP_PLACE_NODE && r->node_rank == 0 && ds.bytes > r->shm) {
        char size[32], room[32];
        return bp__fail(err, errlen, BP_EINVAL,
                        "[data] placement = node: the data (%s) does not fit in %s (%s free), "
                        "where MPI keeps shared memory",
                        bp__human_bytes(ds.bytes, size, sizeof(size)), SHM_DIR,
                        bp__human_bytes(r->shm, room, sizeof(room)));
    }
    return 0;
}

/* placement = stream of sets that are not all HDF5 files with a contiguous /X: the first
 * that is not says why. */
static int refuse_stream(const bp__place *p, const bp_config *cfg, char *err, size_t errlen)
{
    if (p->given[BP__SET_TRAIN])
        return bp__fail(err, errlen, BP_EINVAL,
                        "[data] placement = stream reads rows from HDF5 files, and the sets were "
                        "given in memory");
    const char *paths[BP__SETS] = {cfg->train, cfg->validation, cfg->test};
    for (int s = 0; s < BP__SETS; s++)
        if (paths[s][0]) {
            bp__h5_stream *st;
            int rc = bp__is_h5_path(paths[s])
                         ? bp__h5_stream_open(&st, paths[s], 0, err, errlen)
                         : bp__fail(err, errlen, BP_EINVAL,
                                    "[data] placement = stream reads rows from HDF5 files, and "
                                    "%s is not one (convert can write it as one)",
                                    paths[s]);
            if (rc < 0)
                return rc;
            bp__h5_stream_close(st);
        }
    return 0;
}

int bp__place_set(bp__place *p, bp_placement kind, const bp_config *cfg, char *err, size_t errlen)
{
    if (kind != p->kind)
        p->why[0] = 0;
    p->kind = kind;
    if (kind == BP_PLACE_STREAM && !p->streamable) {
        int rc = refuse_stream(p, cfg, err, errlen);
        if (rc < 0)
            return rc;
    }
    bp__place_room r = room_of(p, cfg);
    return bp__place_fits(kind, &r, p->what, err, errlen);
}

/* ---- reading ahead (stream) ----
 * A thread of each rank reads the next step's rows from the file while this step computes,
 * into buffers of its own; the next gather waits for it (if it is not done yet) and copies
 * them. Only one read is ever in flight: every read of the stream waits for it first. */

struct bp__ahead {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    enum { AHEAD_IDLE, AHEAD_ASKED, AHEAD_DONE, AHEAD_QUIT } state;
    bp__h5_stream *stream;
    size_t *rows, count, cap, d, k;
    bp_real *X, *Y;
    int *L, rc;
};

static void *read_ahead(void *arg)
{
    bp__ahead *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->state != AHEAD_ASKED && a->state != AHEAD_QUIT)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->state == AHEAD_QUIT)
            break;
        pthread_mutex_unlock(&a->mu);
        /* All the rows asked of the disk at once, then read in order. A failure is not
         * reported from here: the gather reads again, and says why. */
        bp__h5_stream_ahead(a->stream, a->rows, a->count);
        int rc = bp__h5_stream_pread(a->stream, a->rows, a->count, a->X, a->Y, a->L);
        pthread_mutex_lock(&a->mu);
        a->rc = rc;
        a->state = AHEAD_DONE;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static int ahead_start(bp__place *p, size_t cap, size_t d, size_t k)
{
    bp__ahead *a = bp__calloc(1, sizeof(*a));
    if (!a)
        return BP_ENOMEM;
    *a = (bp__ahead){.stream = p->stream[BP__SET_TRAIN], .cap = cap, .d = d, .k = k};
    a->rows = bp__calloc(cap, sizeof(size_t));
    a->X = bp__calloc(bp__mul(cap, d), sizeof(bp_real));
    a->Y = bp__calloc(bp__mul(cap, k), sizeof(bp_real));
    a->L = bp__calloc(cap, sizeof(int));
    int ok = a->rows && a->X && a->Y && a->L && pthread_mutex_init(&a->mu, NULL) == 0;
    if (ok && pthread_cond_init(&a->cv, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        ok = 0;
    }
    if (ok && pthread_create(&a->thread, NULL, read_ahead, a) != 0) {
        pthread_cond_destroy(&a->cv);
        pthread_mutex_destroy(&a->mu);
        ok = 0;
    }
    if (!ok) {
        bp__free(a->rows), bp__free(a->X), bp__free(a->Y), bp__free(a->L), bp__free(a);
        return BP_ENOMEM;
    }
    p->ahead = a;
    return 0;
}

/* Waits for the read in flight, if any; returns whether it read exactly rows[0 .. count). */
static int ahead_wait(bp__ahead *a, const size_t *rows, size_t count)
{
    pthread_mutex_lock(&a->mu);
    while (a->state == AHEAD_ASKED)
        pthread_cond_wait(&a->cv, &a->mu);
    int hit = a->state == AHEAD_DONE && a->rc == 0 && rows && a->count == count &&
              memcmp(a->rows, rows, count * sizeof(size_t)) == 0;
    a->state = AHEAD_IDLE;
    pthread_mutex_unlock(&a->mu);
    return hit;
}

static void ahead_stop(bp__ahead *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    while (a->state == AHEAD_ASKED)
        pthread_cond_wait(&a->cv, &a->mu);
    a->state = AHEAD_QUIT;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    bp__free(a->rows), bp__free(a->X), bp__free(a->Y), bp__free(a->L), bp__free(a);
}

int bp__place_take_ahead(bp__place *p, const size_t *rows, size_t count, bp_real **X, bp_real **Y,
                         int **labels)
{
    bp__ahead *a = p->ahead;
    if (!a || !ahead_wait(a, rows, count))
        return 0;
    /* The buffers change hands: the read-ahead's become the batch, the batch's are read into
     * next (both hold a.cap rows). */
    bp_real *x = *X, *y = *Y;
    int *l = *labels;
    *X = a->X, *Y = a->Y, *labels = a->L;
    a->X = x, a->Y = y, a->L = l;
    return 1;
}

int bp__place_ahead_buffers(bp__place *p, size_t rows, size_t d, size_t k)
{
    return p->kind == BP_PLACE_STREAM ? ahead_start(p, rows, d, k) : 0;
}

/* ---- loading ---- */

/* One set, /X decoded into X (len values) when the file holds as many (node placement's
 * window), else into memory of its own. */
static int load_set(const bp__place *p, bp_dataset *ds, const char *path, const char *labels,
                    const bp_net *net, uint64_t seed, bp_real *X, size_t len, char *err,
                    size_t errlen)
{
    int k = net->sizes[net->nlayers];
    bp__load_opts o = {.X = X,
                       .X_len = len,
                       .ceiling = p->ceiling,
                       .progress = p->progress,
                       .progress_ctx = p->progress_ctx};
    int rc = bp__dataset_load_with(ds, path, labels[0] ? labels : NULL, k, seed, &o, err, errlen);
    if (rc == 0)
        rc = bp_dataset_check(ds, net->sizes[0], k, path, err, errlen);
    return rc;
}

/* A set given in memory, copied into ds (the trainer's own, under the placement's
 * ceiling) with the checks a file's rows get: finite, labels within its targets, the
 * network's widths. */
static int copy_given(const bp__place *p, bp_dataset *ds, const bp_dataset *from, const char *name,
                      const bp_net *net, char *err, size_t errlen)
{
    if (!from->X || !from->Y || from->n == 0 || from->d == 0 || from->k == 0)
        return bp__fail(err, errlen, BP_EINVAL,
                        "%s: a set given in memory needs examples, with X and Y", name);
    bp__load_opts o = {.ceiling = p->ceiling};
    int rc = bp__dataset_alloc(ds, from->n, from->d, from->k, from->labels != NULL, &o, name, err,
                               errlen);
    if (rc < 0)
        return rc;
    memcpy(ds->X, from->X, from->n * from->d * sizeof(bp_real));
    memcpy(ds->Y, from->Y, from->n * from->k * sizeof(bp_real));
    for (size_t i = 0; from->labels && i < from->n; i++) {
        if (from->labels[i] < 0 || (size_t)from->labels[i] >= from->k)
            return bp__fail(err, errlen, BP_EINVAL, "%s: label %d at row %zu is outside 0..%zu",
                            name, from->labels[i], i, from->k - 1);
        ds->labels[i] = from->labels[i];
        /* The cost reads Y and the accuracy the labels: a file's loader makes one from the
         * other, and two that disagree would be trained on one and scored on the other. */
        for (size_t j = 0; j < from->k; j++)
            if (from->Y[i * from->k + j] != (j == (size_t)from->labels[i]))
                return bp__fail(err, errlen, BP_EINVAL,
                                "%s: Y row %zu is not the one-hot row of its label %d", name, i,
                                from->labels[i]);
    }
    rc = bp__check_finite(ds->X, ds->n, ds->d, name, "X", err, errlen);
    if (rc == 0)
        rc = bp__check_finite(ds->Y, ds->n, ds->k, name, "Y", err, errlen);
    if (rc == 0)
        rc = bp_dataset_check(ds, net->sizes[0], net->sizes[net->nlayers], name, err, errlen);
    return rc;
}

/* Set s: the copy of the one given in memory, or the file at path (with its labels). */
static int load_one(const bp__place *p, int s, bp_dataset *ds, const char *path, const char *labels,
                    const bp_net *net, uint64_t seed, char *err, size_t errlen)
{
    static const char *const names[BP__SETS] = {"the training set", "the validation set",
                                                "the test set"};
    if (p->given[BP__SET_TRAIN])
        return p->given[s] ? copy_given(p, ds, p->given[s], names[s], net, err, errlen) : 0;
    bp_real *X = p->xbase[s];
    return load_set(p, ds, path, labels, net, seed, X, X ? p->file_n[s] * p->file_d[s] : 0, err,
                    errlen);
}

static int load_memory(const bp__place *p, bp_dataset *const sets[BP__SETS], const bp_config *c,
                       const bp_net *net, char *err, size_t errlen)
{
    int given = p->given[BP__SET_TRAIN] != NULL;
    const char *train_name = given ? "the training set" : c->train;
    if (given && p->given[BP__SET_VAL] && c->validation_split)
        return bp__fail(err, errlen, BP_EINVAL,
                        "[data] validation_split = %ld takes the validation rows from the "
                        "training set, and a validation set was given too",
                        c->validation_split);
    int rc = load_one(p, BP__SET_TRAIN, sets[BP__SET_TRAIN], c->train, c->train_labels, net,
                      c->seed, err, errlen);
    if (rc < 0)
        return rc;
    bp_dataset *train = sets[BP__SET_TRAIN];
    bp_dataset_limit(train, (size_t)c->limit);
    if (c->validation_split) {
        if ((size_t)c->validation_split >= train->n)
            return bp__fail(err, errlen, BP_EINVAL,
                            "validation_split = %ld leaves no training examples (%s has %zu)",
                            c->validation_split, train_name, train->n);
        rc = bp_dataset_split(train, train->n - (size_t)c->validation_split, sets[BP__SET_VAL]);
        if (rc < 0)
            return bp__fail(err, errlen, rc, "validation split: %s", bp_strerror(rc));
    } else if (given || c->validation[0]) {
        rc = load_one(p, BP__SET_VAL, sets[BP__SET_VAL], c->validation, c->validation_labels, net,
                      c->seed, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (given || c->test[0])
        rc = load_one(p, BP__SET_TEST, sets[BP__SET_TEST], c->test, c->test_labels, net, c->seed,
                      err, errlen);
    return rc;
}

/* One set's file, opened and checked: its shape in *shape, and this rank's share of all its
 * rows scanned for NaN and infinity (all of them, as the other placements read the whole
 * file before limit applies: the same file is refused in each). */
static int open_stream(bp__place *p, int s, const char *path, const bp_net *net, size_t limit,
                       const bp_comm *comm, bp_dataset *shape, char *err, size_t errlen)
{
    int k = net->sizes[net->nlayers];
    int rc = bp__h5_stream_open(&p->stream[s], path, k, err, errlen);
    if (rc < 0)
        return rc;
    p->own_stream[s] = 1;
    bp__h5_stream_shape(p->stream[s], shape);
    size_t lo, hi;
    bp__shard(shape->n, comm->rank, comm->size, &lo, &hi);
    if (limit > 0 && limit < shape->n)
        shape->n = limit;
    rc = bp_dataset_check(shape, net->sizes[0], k, path, err, errlen);
    bp__load_opts o = {.progress = p->progress, .progress_ctx = p->progress_ctx};
    return rc < 0 ? rc : bp__h5_stream_check(p->stream[s], lo, hi, &o, err, errlen);
}

static int load_stream(bp__place *p, bp_dataset *const sets[BP__SETS], const bp_config *c,
                       const bp_net *net, const bp_comm *comm, char *err, size_t errlen)
{
    bp_dataset *train = sets[BP__SET_TRAIN], *val = sets[BP__SET_VAL];
    int rc =
        open_stream(p, BP__SET_TRAIN, c->train, net, (size_t)c->limit, comm, train, err, errlen);
    if (rc == 0 && c->validation_split) {
        /* The last rows of the training file's used part, read through its descriptor. */
        size_t vs = (size_t)c->validation_split;
        if (vs >= train->n)
            return bp__fail(err, errlen, BP_EINVAL,
                            "validation_split = %ld leaves no training examples (%s has %zu)",
                            c->validation_split, c->train, train->n);
        *val = *train;
        val->n = vs;
        train->n -= vs;
        p->stream[BP__SET_VAL] = p->stream[BP__SET_TRAIN];
        p->base[BP__SET_VAL] = train->n;
        if (val->labels)
            val->labels += train->n;
    } else if (rc == 0 && c->validation[0]) {
        rc = open_stream(p, BP__SET_VAL, c->validation, net, 0, comm, val, err, errlen);
    }
    if (rc == 0 && c->test[0])
        rc = open_stream(p, BP__SET_TEST, c->test, net, 0, comm, sets[BP__SET_TEST], err, errlen);
    return rc;
}

int bp__place_load(bp__place *p, bp_dataset *const sets[BP__SETS], const bp_config *cfg,
                   const bp_net *net, const bp_comm *comm, bp_load_progress_fn progress,
                   void *progress_ctx, char *err, size_t errlen)
{
    p->progress = progress, p->progress_ctx = progress_ctx;
    int node_rank, node_size;
    bp__comm_node_ranks(&p->comm, &node_rank, &node_size);
    if (p->kind == BP_PLACE_STREAM)
        return load_stream(p, sets, cfg, net, comm, err, errlen);
    if (p->kind == BP_PLACE_NODE) {
        /* Every rank of the node maps a window for each file's /X, sized from its header;
         * the node's rank 0 decodes into it, as a replicated rank would into its own. */
        const char *paths[BP__SETS] = {cfg->train, cfg->validation, cfg->test};
        for (int s = 0; s < BP__SETS; s++) {
            size_t len = p->file_n[s] * p->file_d[s];
            if (!paths[s][0] || len == 0)
                continue;
            void *base;
            int rc = bp__comm_share(&p->comm, len * sizeof(bp_real), &p->xwin[s], &base);
            char size[32];
            if (rc < 0)
                return bp__fail(
                    err, errlen, rc,
                    "[data] placement = node: cannot map %s of shared memory for %s: "
                    "%s",
                    bp__human_bytes((double)(len * sizeof(bp_real)), size, sizeof(size)), paths[s],
                    bp_strerror(rc));
            p->xbase[s] = base;
        }
        if (node_rank != 0)
            return 0;
    }
    return load_memory(p, sets, cfg, net, err, errlen);
}

/* ---- one copy per node ---- */

static int share_set(bp__place *p, int s, bp_dataset *ds, int leader)
{
    /* in place: the node's rank 0 decoded /X into the window every rank maps already */
    uint64_t shape[5] = {ds->n, ds->d, ds->k, ds->labels != NULL,
                         leader && ds->X && ds->X == p->xbase[s]};
    int rc = bp__comm_node_bcast(&p->comm, shape, sizeof(shape));
    if (rc < 0 || shape[0] == 0)
        return rc;
    size_t n = shape[0], d = shape[1], k = shape[2];
    int in_place = shape[4] != 0;
    if (!in_place && p->xwin[s]) { /* not used (the header's shape was not what loaded) */
        bp__comm_share_free(p->xwin[s]);
        p->xwin[s] = NULL, p->xbase[s] = NULL;
    }
    size_t xb = in_place ? 0 : n * d * sizeof(bp_real), yb = n * k * sizeof(bp_real);
    size_t lb = shape[3] ? n * sizeof(int) : 0;
    void *base;
    rc = bp__comm_share(&p->comm, xb + yb + lb, &p->shared[s], &base);
    if (rc < 0)
        return rc;
    char *at = base;
    if (leader) {
        if (!in_place)
            memcpy(at, ds->X, xb);
        memcpy(at + xb, ds->Y, yb);
        if (lb)
            memcpy(at + xb + yb, ds->labels, lb);
        if (in_place)
            ds->X = NULL;    /* the window's */
        bp_dataset_free(ds); /* the node's copy replaces the private one */
    }
    if (in_place && bp__comm_share_ready(p->xwin[s]) < 0)
        rc = BP_ECOMM;
    if (bp__comm_share_ready(p->shared[s]) < 0)
        rc = BP_ECOMM;
    *ds = (bp_dataset){.n = n,
                       .d = d,
                       .k = k,
                       .X = in_place ? p->xbase[s] : (bp_real *)at,
                       .Y = (bp_real *)(at + xb),
                       .labels = lb ? (int *)(at + xb + yb) : NULL};
    return rc;
}

int bp__place_share(bp__place *p, bp_dataset *const sets[BP__SETS], char *err, size_t errlen)
{
    if (p->kind != BP_PLACE_NODE)
        return 0;
    int node_rank, node_size;
    bp__comm_node_ranks(&p->comm, &node_rank, &node_size);
    for (int s = 0; s < BP__SETS; s++) {
        int rc = share_set(p, s, sets[s], node_rank == 0);
        if (rc < 0)
            return bp__fail(err, errlen, rc,
                            "[data] placement = node: cannot share the data between the ranks "
                            "of a node: %s",
                            bp_strerror(rc));
    }
    return 0;
}

/* ---- rows ---- */

int bp__place_rows(bp__place *p, bp_dataset *const sets[BP__SETS], int s, const size_t *rows,
                   size_t count, size_t first, bp_real *X, bp_real *Y, int *labels, char *err,
                   size_t errlen)
{
    const bp_dataset *ds = sets[s];
    if (p->ahead)
        ahead_wait(p->ahead, NULL, 0); /* one read at a time */
    if (p->kind == BP_PLACE_STREAM) {
        if (rows || p->base[s] == 0)
            return bp__h5_stream_rows(p->stream[s], rows, count, first, X, Y, labels, err, errlen);
        return bp__h5_stream_rows(p->stream[s], NULL, count, p->base[s] + first, X, Y, labels, err,
                                  errlen);
    }
    size_t d = ds->d, k = ds->k;
    for (size_t i = 0; i < count; i++) {
        size_t row = rows ? rows[i] : first + i;
        memcpy(X + i * d, ds->X + row * d, d * sizeof(bp_real));
        memcpy(Y + i * k, ds->Y + row * k, k * sizeof(bp_real));
        if (labels && ds->labels)
            labels[i] = ds->labels[row];
    }
    return 0;
}

void bp__place_ahead(bp__place *p, bp_dataset *const sets[BP__SETS], const size_t *rows,
                     size_t count)
{
    const bp_dataset *ds = sets[BP__SET_TRAIN];
    bp__ahead *a = p->ahead;
    /* The thread only when the rows come from the disk: out of the page cache a mapped row
     * costs what a row in memory does, and handing the work over would cost more. */
    if (a && count <= a->cap && bp__h5_stream_cold(p->stream[BP__SET_TRAIN])) {
        ahead_wait(a, NULL, 0);
        pthread_mutex_lock(&a->mu);
        memcpy(a->rows, rows, count * sizeof(size_t));
        a->count = count;
        a->state = AHEAD_ASKED;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        return;
    }
    if (p->kind == BP_PLACE_STREAM) {
        bp__h5_stream_ahead(p->stream[BP__SET_TRAIN], rows, count);
        return;
    }
    size_t bytes = ds->d * sizeof(bp_real);
    for (size_t i = 0; i < count; i++) {
        const char *row = (const char *)(ds->X + rows[i] * ds->d);
        for (size_t off = 0; off < bytes; off += 64)
            __builtin_prefetch(row + off, 0, 1);
    }
}

void bp__place_free(bp__place *p, bp_dataset *const sets[BP__SETS])
{
    ahead_stop(p->ahead); /* before the streams it reads close */
    for (int s = 0; s < BP__SETS; s++) {
        if (sets[s]->X && sets[s]->X == p->xbase[s] && !p->shared[s])
            sets[s]->X = NULL; /* decoded into the window, not yet shared: the window's */
        if (p->shared[s])
            bp__comm_share_free(p->shared[s]);
        else if (p->kind != BP_PLACE_STREAM)
            bp_dataset_free(sets[s]);
        if (p->xwin[s])
            bp__comm_share_free(p->xwin[s]);
        if (p->own_stream[s])
            bp__h5_stream_close(p->stream[s]);
        memset(sets[s], 0, sizeof(*sets[s]));
    }
    bp__free(p->Xe);
    bp__free(p->Ye);
    bp__free(p->Le);
    memset(p, 0, sizeof(*p));
}
