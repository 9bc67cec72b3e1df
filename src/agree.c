/* Agreement across ranks: every rank's outcome becomes everyone's, and every rank runs rank
 * 0's config, data and weights. Collective, all of it: every rank calls each function in the
 * same order, and each returns the same code on every rank. */
#include <string.h>

#include "agree.h"
#include "comm.h"
#include "internal.h"

/* Every rank's outcome becomes everyone's: the worst code, reported by one rank. Returns
 * the agreed code; err is kept only on the rank that reports it (among those with the
 * worst code, one that has a message, the lowest), and emptied on the others. */
int bp__agree(const bp_comm *comm, int rc, char *err, size_t errlen)
{
    /* Severity: 0 success, 1 a stop (BP_ESTOPPED: under any failure), then 1 - code. */
    int severity = rc == BP_ESTOPPED ? 1 : rc < 0 ? 1 - rc : 0;
    int has_message = rc < 0 && err && errlen && err[0];
    int worst, who;
    if (bp_comm_agree(comm, 2 * severity + has_message, &worst, &who) < 0)
        return bp__fail(err, errlen, BP_ECOMM, "the ranks could not agree: %s",
                        bp_strerror(BP_ECOMM));
    if (who != comm->rank && err && errlen)
        err[0] = 0;
    severity = worst / 2;
    return severity == 1 ? BP_ESTOPPED : severity > 1 ? 1 - severity : 0;
}

/* ---- the same run on every rank ----
 * mpirun's MPMD form (-np 1 -wdir A backprop train c.ini : -np 1 -wdir B ...) starts ranks
 * with configs and data of their own. Before any collective that depends on them, every
 * rank compares its effective config, its data and the state it starts from with rank
 * 0's: one allreduce of a hash when they agree, and when they do not, rank 0's copy
 * broadcast so that each rank names what differs. */

/* Keys whose values may differ between ranks: only rank 0 writes checkpoints and metrics,
 * threads is each rank's own, and only rank 0 draws progress. */
static const char *const own_keys[] = {"[checkpoint] dir", "[log] metrics", "[log] progress",
                                       "[train] threads"};

/* Data files: paths name the same file differently from different working directories, so
 * only whether one is given is compared here (the sets that are loaded, and the collectives
 * that load them, follow from it); their contents are compared once they are read. */
static const char *const file_keys[] = {"[data] train",      "[data] train_labels",
                                        "[data] validation", "[data] validation_labels",
                                        "[data] test",       "[data] test_labels"};

static int key_in(const char *key, const char *const *keys, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(key, keys[k]) == 0)
            return 1;
    return 0;
}

/* The effective config's lines that every rank must share, each as "[section] key = value\n"
 * (bp_config_format's text without own_keys). NULL when out of memory. */
static char *shared_config(const bp_config *cfg)
{
    size_t len = bp_config_format(cfg, NULL, 0) + 1, lines = 1;
    char *text = bp__calloc(len, 1);
    if (text)
        bp_config_format(cfg, text, len);
    for (size_t i = 0; text && text[i]; i++)
        lines += text[i] == '\n';
    char *out = text ? bp__calloc(len + 32 * lines, 1) : NULL, section[32] = "";
    size_t at = 0;
    for (char *line = text, *end; out && line && *line; line = end ? end + 1 : NULL) {
        end = strchr(line, '\n');
        int n = end ? (int)(end - line) : (int)strlen(line);
        if (n > 0 && line[0] == '[') {
            snprintf(section, sizeof(section), "%.*s", n, line);
            continue;
        }
        const char *eq = memchr(line, '=', (size_t)n);
        if (!eq)
            continue;
        char key[96];
        snprintf(key, sizeof(key), "%s %.*s", section, (int)(eq - line - 1), line);
        if (key_in(key, file_keys, sizeof(file_keys) / sizeof(file_keys[0])))
            at += (size_t)sprintf(out + at, "%s = %s\n", key,
                                  eq[2] && eq[2] != '\n' ? "(a file)" : "(none)");
        else if (!key_in(key, own_keys, sizeof(own_keys) / sizeof(own_keys[0])))
            at += (size_t)sprintf(out + at, "%s %.*s\n", section, n, line);
    }
    bp__free(text);
    return out;
}

/* 1 when this rank's `bytes` of mine differ from rank 0's, which land in rank0; 0 when
 * they are the same (every rank's, when all are: then rank0 is untouched), BP_ECOMM. */
int bp__differs_from_rank0(const bp_comm *comm, const void *mine, void *rank0, size_t bytes)
{
    int same = bp_comm_same(comm, bp__hash_words(mine, bytes, 0));
    if (same != 0)
        return same < 0 ? same : 0;
    if (comm->rank == 0)
        memcpy(rank0, mine, bytes);
    if (bp__comm_bcast(comm, rank0, bytes) < 0)
        return BP_ECOMM;
    return memcmp(mine, rank0, bytes) != 0;
}

/* This rank's message for the first line of its `what` ("config") that is not rank 0's. */
static int config_differs(const bp_comm *comm, const char *what, const char *hint, const char *mine,
                          const char *rank0, char *err, size_t errlen)
{
    size_t i = 0;
    while (mine[i] && mine[i] == rank0[i])
        i++;
    while (i > 0 && mine[i - 1] != '\n') /* back to the line's start, the same in both */
        i--;
    mine += i, rank0 += i;
    const char *eq = strstr(mine, " = ");
    int key = eq ? (int)(eq - mine) : 0;
    int a = (int)strcspn(mine, "\n"), b = (int)strcspn(rank0, "\n");
    if (key == 0 || strncmp(mine, rank0, (size_t)key + 3) != 0)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "rank %d's %s differs from rank 0's: '%.*s' on rank %d, '%.*s' on "
                        "rank 0",
                        comm->rank, what, a, mine, comm->rank, b, rank0);
    return bp__fail(err, errlen, BP_EMISMATCH,
                    "rank %d's %s differs from rank 0's: %.*s = %.*s on rank %d, %.*s on "
                    "rank 0 (every rank must run the same %s: %s)",
                    comm->rank, what, key, mine, a - key - 3, mine + key + 3, comm->rank,
                    b - key - 3, rank0 + key + 3, what, hint);
}

int bp__config_agree(const bp_comm *comm, const bp_config *cfg, char *err, size_t errlen)
{
    char *mine = shared_config(cfg);
    int rc = bp__lines_agree(comm, mine, "config", "check each rank's config and its overrides",
                             err, errlen);
    bp__free(mine);
    return rc;
}

int bp__lines_agree(const bp_comm *comm, const char *mine, const char *what, const char *hint,
                    char *err, size_t errlen)
{
    char *rank0 = NULL;
    int rc =
        bp__agree(comm, mine ? 0 : bp__fail(err, errlen, BP_ENOMEM, "out of memory"), err, errlen);
    uint64_t len = mine ? strlen(mine) + 1 : 0;
    int differs = rc < 0 ? 0 : bp_comm_same(comm, bp__hash_words(mine, len, 0)) == 0;
    /* Every rank knows whether they differ: all take the broadcasts, or none. */
    if (differs) {
        uint64_t len0 = len;
        rc = bp__comm_bcast(comm, &len0, sizeof(len0));
        rank0 = rc == 0 ? bp__calloc(len0, 1) : NULL;
        rc = bp__agree(comm, rc < 0 ? BP_ECOMM : rank0 ? 0 : BP_ENOMEM, err, errlen);
        if (rc == 0 && comm->rank == 0)
            memcpy(rank0, mine, len);
        if (rc == 0 && bp__comm_bcast(comm, rank0, len0) < 0)
            rc = BP_ECOMM;
        if (rc == 0 && strcmp(mine, rank0) != 0)
            rc = config_differs(comm, what, hint, mine, rank0, err, errlen);
        rc = bp__agree(comm, rc, err, errlen);
    }
    bp__free(rank0);
    return rc;
}

/* What identifies a set across ranks, whatever its file is called. */
typedef struct {
    uint64_t n, d, k, labels, hash;
} set_id;

/* Rows hashed of a set that is not in memory: spread over it, first and last included. */
#define ID_SAMPLE_ROWS 64

/* The set's shape and a hash of its values: all of them when they are in memory, else the
 * labels and ID_SAMPLE_ROWS rows read through read (a pass over a streamed file would cost
 * what an epoch's reading does). Each part is hashed on its own and the parts' hashes
 * together: bp__hash_words chained through its seed over a few bytes at a time loses
 * differences in the high bits. */
static int set_identity(const bp_dataset *ds, bp_rows_fn read, void *ctx, set_id *id, char *err,
                        size_t errlen)
{
    *id = (set_id){ds->n, ds->d, ds->k, ds->labels != NULL, 0};
    if (ds->n == 0)
        return 0;
    uint64_t parts[1 + 2 * ID_SAMPLE_ROWS] = {0};
    size_t nparts = 1;
    if (ds->labels)
        parts[0] = bp__hash_words(ds->labels, ds->n * sizeof(int), 0);
    if (ds->X || !read) {
        parts[nparts++] = bp__hash_words(ds->X, ds->n * ds->d * sizeof(bp_real), 0);
        if (ds->Y)
            parts[nparts++] = bp__hash_words(ds->Y, ds->n * ds->k * sizeof(bp_real), 0);
    }
    size_t rows = ds->X || !read ? 0 : ds->n < ID_SAMPLE_ROWS ? ds->n : ID_SAMPLE_ROWS;
    for (size_t i = 0; i < rows; i++) {
        size_t r = rows > 1 ? i * (ds->n - 1) / (rows - 1) : 0;
        const bp_real *X, *Y;
        const int *labels;
        int rc = read(ctx, r, 1, &X, &Y, &labels, err, errlen);
        if (rc < 0)
            return rc;
        parts[nparts++] = bp__hash_words(X, ds->d * sizeof(bp_real), 0);
        parts[nparts++] = bp__hash_words(Y, ds->k * sizeof(bp_real), 0);
    }
    id->hash = bp__hash_words(parts, nparts * sizeof(parts[0]), 0);
    return 0;
}

/* This rank's message when its set `name` (path) is not rank 0's. */
static int set_differs(const bp_comm *comm, const char *name, const char *path, const set_id *mine,
                       const set_id *rank0, char *err, size_t errlen)
{
    char shape[2][96];
    const set_id *ids[2] = {mine, rank0};
    for (int i = 0; i < 2; i++)
        snprintf(shape[i], sizeof(shape[i]), "%llu x %llu with %llu %s",
                 (unsigned long long)ids[i]->n, (unsigned long long)ids[i]->d,
                 (unsigned long long)ids[i]->k, ids[i]->labels ? "classes" : "targets");
    if (mine->n == 0 || rank0->n == 0)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "rank %d's %s differs from rank 0's: %s on rank %d, %s on rank 0",
                        comm->rank, name, mine->n ? path : "none", comm->rank,
                        rank0->n ? "a set" : "none");
    if (strcmp(shape[0], shape[1]) != 0)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "rank %d's %s (%s) differs from rank 0's: %s on rank %d, %s on rank 0",
                        comm->rank, name, path, shape[0], comm->rank, shape[1]);
    return bp__fail(err, errlen, BP_EMISMATCH,
                    "rank %d's %s (%s) holds other values than rank 0's, in the same shape (%s): "
                    "every rank must read the same data (files are compared by their contents, "
                    "not their names)",
                    comm->rank, name, path, shape[0]);
}

int bp__data_agree(const bp_comm *comm, const bp_dataset *ds, bp_rows_fn read, void *ctx,
                   const char *name, const char *path, char *err, size_t errlen)
{
    set_id mine, rank0;
    int rc = bp__agree(comm, set_identity(ds, read, ctx, &mine, err, errlen), err, errlen);
    if (rc == 0)
        rc = bp__differs_from_rank0(comm, &mine, &rank0, sizeof(mine));
    if (rc == 1)
        rc = set_differs(comm, name, path, &mine, &rank0, err, errlen);
    else if (rc < 0)
        rc = bp__fail(err, errlen, rc, "comparing %s across ranks failed", name);
    return bp__agree(comm, rc, err, errlen);
}

/* The network and the weights it holds, whatever the checkpoint it came from is called;
 * with the velocity when there is one (the parts hashed apart, as in set_identity). */
uint64_t bp__net_hash(const bp_net *net, const bp_real *velocity)
{
    int shape[4 + BP_MAX_LAYERS + 1] = {net->nlayers, (int)net->hidden, (int)net->output,
                                        (int)net->cost};
    memcpy(shape + 4, net->sizes, ((size_t)net->nlayers + 1) * sizeof(int));
    size_t bytes = net->nparams * sizeof(bp_real);
    uint64_t parts[3] = {bp__hash_words(shape, sizeof(shape), 0),
                         bp__hash_words(net->params, bytes, 0),
                         velocity ? bp__hash_words(velocity, bytes, 0) : 0};
    return bp__hash_words(parts, sizeof(parts), 0);
}

int bp__weights_agree(const bp_comm *comm, const bp_net *net, const char *path, char *err,
                      size_t errlen)
{
    uint64_t mine = bp__net_hash(net, NULL), rank0;
    int rc = bp__differs_from_rank0(comm, &mine, &rank0, sizeof(mine));
    if (rc == 1)
        rc = bp__fail(err, errlen, BP_EMISMATCH,
                      "rank %d's checkpoint (%s) holds other weights than rank 0's: every rank "
                      "must read the same checkpoint",
                      comm->rank, path);
    else if (rc < 0)
        rc = bp__fail(err, errlen, rc, "comparing the checkpoints across ranks failed");
    return bp__agree(comm, rc, err, errlen);
}
