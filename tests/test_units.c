/* Unit tests of the parts behind the trainer: where the data goes (place.c), the sets eval
 * reads in row order (source.c), the run directory (rundir.c), and what a trainer keeps to
 * itself (its memory ceiling, data given in memory, the network it gives back). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "backprop/train.h"
#include "fileio.h"
#include "internal.h"
#include "place.h"
#include "rundir.h"
#include "source.h"
#include "test_dir.h"

static bp_comm comm;

static const char *in_dir(const char *name)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

/* n rows of d features, labels i % classes, values from i and j alone (sixteenths: exact in
 * a float file and in either build). */
static void make_set(bp_dataset *ds, size_t n, size_t d, size_t classes)
{
    *ds = (bp_dataset){.n = n, .d = d, .k = classes};
    ds->X = calloc(n * d, sizeof(bp_real));
    ds->Y = calloc(n * classes, sizeof(bp_real));
    ds->labels = calloc(n, sizeof(int));
    assert_true(ds->X && ds->Y && ds->labels);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            ds->X[i * d + j] = (bp_real)((double)((i * 7 + j * 3) % 16) / 16.0);
        ds->labels[i] = (int)(i % classes);
        ds->Y[i * classes + i % classes] = 1;
    }
}

static void free_set(bp_dataset *ds)
{
    free(ds->X), free(ds->Y), free(ds->labels);
    memset(ds, 0, sizeof(*ds));
}

static void write_set(const bp_dataset *ds, const char *path, int flags)
{
    char err[512] = "";
    assert_int_equal(bp_dataset_write_h5(ds, path, flags, err, sizeof(err)), 0);
}

/* ---- place.c: the choice for given sizes and budgets ---- */

#define GIB (1024.0 * 1024 * 1024)

static bp__place_room room(double bytes, double avail, double shm, int node_size, int streamable)
{
    return (bp__place_room){.bytes = bytes,
                            .held = bytes / 100,
                            .streamable = streamable,
                            .avail = avail,
                            .shm = shm,
                            .own = INFINITY,
                            .node_size = node_size};
}

static void test_place_auto(void **state)
{
    (void)state;
    char why[160];
    /* Company on the node, one copy fits: shared. */
    bp__place_room r = room(1 * GIB, 4 * GIB, 8 * GIB, 4, 1);
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_NODE);
    assert_string_equal(why, "one copy for the 4 ranks on this node");
    /* Alone on the node: a copy of its own. */
    r = room(1 * GIB, 4 * GIB, 8 * GIB, 1, 1);
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_REPLICATED);
    assert_string_equal(why, "one rank on this node");
    /* /dev/shm too small for one copy, the memory holds two: a copy per rank. */
    r = room(1 * GIB, 4 * GIB, 0.5 * GIB, 2, 1);
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_REPLICATED);
    assert_string_equal(why, "a copy per rank fits, one per node does not");
    /* ... but not four copies, unless max_memory_mb makes the budget each rank's. */
    r = room(1 * GIB, 3 * GIB, 0.5 * GIB, 4, 1);
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_STREAM);
    assert_string_equal(why, "the data does not fit in memory");
    r.per_rank = 1;
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_REPLICATED);
    /* Larger than the memory: streamed when it can be, else the most frugal in memory. */
    r = room(10 * GIB, 4 * GIB, 8 * GIB, 1, 1);
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_STREAM);
    r.streamable = 0;
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_REPLICATED);
    assert_string_equal(why, "too large, and not streamable");
    r.node_size = 2;
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_NODE);
    /* A process's own limit (ulimit) counts as the memory does. */
    r = room(1 * GIB, 4 * GIB, 8 * GIB, 1, 1);
    r.own = 0.5 * GIB;
    assert_int_equal(bp__place_auto(&r, why, sizeof(why)), BP_PLACE_STREAM);
}

static void test_place_refusals(void **state)
{
    (void)state;
    char err[1024] = "";
    const char *what = "t.h5: 1000 examples of 10 features";
    bp__place_room r = room(1 * GIB, 1.5 * GIB, 8 * GIB, 2, 1);
    assert_int_equal(bp__place_fits(BP_PLACE_NODE, &r, what, err, sizeof(err)), 0);
    assert_int_equal(bp__place_fits(BP_PLACE_REPLICATED, &r, what, err, sizeof(err)), BP_EINVAL);
    assert_string_equal(err, "[data] placement = replicated: t.h5: 1000 examples of 10 features "
                             "need 1.0 GiB of memory on each of the 2 ranks on this node (2.0 "
                             "GiB in all), but only 1.5 GiB is available; placement = node keeps "
                             "one copy per node, or placement = stream reads the rows from the "
                             "files instead");
    r.per_rank = 1; /* max_memory_mb: 1.5 GiB for each rank */
    assert_int_equal(bp__place_fits(BP_PLACE_REPLICATED, &r, what, err, sizeof(err)), 0);
    /* The node's rank 0 needs the room in /dev/shm; the others need none. */
    r = room(1 * GIB, 4 * GIB, 0.5 * GIB, 2, 0);
    assert_int_equal(bp__place_fits(BP_PLACE_NODE, &r, what, err, sizeof(err)), BP_EINVAL);
    assert_string_equal(err, "[data] placement = node: the data (1.0 GiB) does not fit in "
                             "/dev/shm (512.0 MiB free), where MPI keeps shared memory");
    r.node_rank = 1;
    assert_int_equal(bp__place_fits(BP_PLACE_NODE, &r, what, err, sizeof(err)), 0);
    /* Not streamable: the hint says how to make it so. */
    r = room(1 * GIB, 0.5 * GIB, 8 * GIB, 1, 0);
    assert_int_equal(bp__place_fits(BP_PLACE_REPLICATED, &r, what, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err,
                           "need 1.0 GiB of memory, but only 512.0 MiB is available; "
                           "placement = stream would read the rows from the files, were "
                           "they HDF5 with a contiguous, uncompressed /X (as convert can write "
                           "them)"));
    /* stream holds /y and the order. */
    r = room(100 * GIB, 0.5 * GIB, 8 * GIB, 1, 1);
    assert_int_equal(bp__place_fits(BP_PLACE_STREAM, &r, what, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "[data] placement = stream: t.h5: 1000 examples of 10 features: "
                                "their labels or targets and the order of the training rows need "
                                "1.0 GiB of memory on each rank, but only 512.0 MiB"));
    /* The process's own limits, named with their room. */
    r = room(1 * GIB, 4 * GIB, 8 * GIB, 1, 1);
    r.own = 0.25 * GIB;
    assert_int_equal(bp__place_fits(BP_PLACE_REPLICATED, &r, what, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "but only 256.0 MiB is available"));
}

/* ---- source.c: rows read in place equal those in memory ---- */

static void expect_rows(bp__source *src, const bp_dataset *want, size_t first, size_t count)
{
    const bp_real *X, *Y;
    const int *labels;
    char err[512] = "";
    assert_int_equal(bp__source_rows(src, first, count, &X, &Y, &labels, err, sizeof(err)), 0);
    assert_memory_equal(X, want->X + first * want->d, count * want->d * sizeof(bp_real));
    assert_memory_equal(Y, want->Y + first * want->k, count * want->k * sizeof(bp_real));
    assert_memory_equal(labels, want->labels + first, count * sizeof(int));
}

static void test_source_rows(void **state)
{
    (void)state;
    bp_dataset want;
    make_set(&want, 300, 5, 3);
    const char *flat = in_dir("flat.h5"), *packed = in_dir("packed.h5");
    write_set(&want, flat, BP_WRITE_CONTIGUOUS);
    write_set(&want, packed, 0);
    char err[512] = "";
    bp__source a, b;
    assert_int_equal(bp__source_open(&a, flat, NULL, 5, 3, 0, 64, err, sizeof(err)), 0);
    assert_non_null(a.stream); /* read in place */
    assert_int_equal(bp__source_open(&b, packed, NULL, 5, 3, 0, 64, err, sizeof(err)), 0);
    assert_null(b.stream); /* loaded whole */
    for (size_t first = 0; first < 300; first += 64) {
        size_t count = 300 - first < 64 ? 300 - first : 64;
        expect_rows(&a, &want, first, count);
        expect_rows(&b, &want, first, count);
    }
    /* validation_split's rows: the last 50 of the first 200. */
    assert_int_equal(bp__source_tail(&a, 200, 50, err, sizeof(err)), 0);
    assert_int_equal(a.ds.n, 50);
    bp_dataset tail = want;
    tail.X += 150 * 5, tail.Y += 150 * 3, tail.labels += 150;
    expect_rows(&a, &tail, 0, 50);
    assert_int_equal(bp__source_tail(&b, 0, 300, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "validation_split = 300 leaves no training examples"));
    bp__source_close(&a);
    bp__source_close(&b);
    free_set(&want);
}

static void test_source_damage(void **state)
{
    (void)state;
    bp_dataset want;
    make_set(&want, 300, 5, 3);
    want.X[123 * 5 + 2] = NAN;
    const char *flat = in_dir("nan.h5");
    write_set(&want, flat, BP_WRITE_CONTIGUOUS);
    char err[512] = "";
    bp__source src;
    const bp_real *X, *Y;
    const int *labels;
    /* In place: the rows are checked as they are read. */
    assert_int_equal(bp__source_open(&src, flat, NULL, 5, 3, 0, 100, err, sizeof(err)), 0);
    assert_int_equal(bp__source_rows(&src, 0, 100, &X, &Y, &labels, err, sizeof(err)), 0);
    assert_int_equal(bp__source_rows(&src, 100, 100, &X, &Y, &labels, err, sizeof(err)),
                     BP_EFORMAT);
    assert_non_null(strstr(err, "nan.h5: /X row 123 column 2 is NaN"));
    bp__source_close(&src);
    /* Loaded whole: refused at open. */
    const char *packed = in_dir("nan-packed.h5");
    write_set(&want, packed, 0);
    assert_int_equal(bp__source_open(&src, packed, NULL, 5, 3, 0, 100, err, sizeof(err)),
                     BP_EFORMAT);
    assert_non_null(strstr(err, "row 123 column 2 is NaN"));
    /* A file cut short: a reason, never a signal. */
    want.X[123 * 5 + 2] = 0;
    const char *cut = in_dir("cut.h5");
    write_set(&want, cut, BP_WRITE_CONTIGUOUS);
    struct stat st;
    assert_int_equal(stat(cut, &st), 0);
    assert_int_equal(truncate(cut, st.st_size - 2000), 0);
    int rc = bp__source_open(&src, cut, NULL, 5, 3, 0, 100, err, sizeof(err));
    for (size_t first = 0; rc == 0 && first < 300; first += 100)
        rc = bp__source_rows(&src, first, 100, &X, &Y, &labels, err, sizeof(err));
    assert_true(rc == BP_EIO || rc == BP_EFORMAT);
    assert_non_null(strstr(err, "cut.h5"));
    bp__source_close(&src);
    free_set(&want);
}

/* ---- rundir.c ---- */

static void run_config(bp_config *cfg, const char *run, const char *data, const char *extra)
{
    char ini[2048], err[512] = "";
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = %s\n%s"
             "[network]\nlayers = 2, 3, 1\nhidden = sigmoid\noutput = sigmoid\ncost = quadratic\n"
             "[train]\nepochs = 3\nbatch_size = 2\nlearning_rate = 2.0\nseed = 3\n"
             "[checkpoint]\ndir = %s/%s\nevery_epochs = 0\n",
             data, extra, dir, run);
    assert_int_equal(bp_config_parse(cfg, "test", ini, NULL, 0, err, sizeof(err)), 0);
}

static void train_once(const bp_config *cfg)
{
    char err[512] = "";
    bp_trainer *t = NULL;
    assert_int_equal(bp_trainer_create(&t, cfg, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);
}

static void test_rundir(void **state)
{
    (void)state;
    bp_config cfg;
    run_config(&cfg, "fresh/run", "builtin:xor", "");
    char err[512] = "", path[512];
    bp__lock dl = {.fd = -1}, ml = {.fd = -1};
    /* "latest" of a directory that holds no run yet. */
    assert_int_equal(bp__rundir_resolve(&cfg, "latest", path, sizeof(path), err, sizeof(err)),
                     BP_ENOENT);
    assert_non_null(strstr(err, "latest.h5"));
    /* A fresh directory is made, and locked while a run holds it. */
    assert_int_equal(bp__rundir_prepare(&cfg, NULL, &dl, &ml, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(in_dir("fresh/run"), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    bp__lock dl2 = {.fd = -1}, ml2 = {.fd = -1};
    assert_int_equal(bp__rundir_prepare(&cfg, NULL, &dl2, &ml2, err, sizeof(err)), BP_EINVAL);
    bp__lock_drop(&dl2), bp__lock_drop(&ml2);
    bp__lock_drop(&dl), bp__lock_drop(&ml);
    /* A directory holding a run: refused to a fresh run, found by "latest". */
    train_once(&cfg);
    assert_int_equal(bp__rundir_prepare(&cfg, NULL, &dl, &ml, err, sizeof(err)), BP_EEXIST);
    assert_non_null(strstr(err, "latest.h5"));
    bp__lock_drop(&dl), bp__lock_drop(&ml);
    assert_int_equal(bp__rundir_resolve(&cfg, "latest", path, sizeof(path), err, sizeof(err)), 0);
    assert_string_equal(path, in_dir("fresh/run/latest.h5"));
    assert_int_equal(bp__rundir_resolve(&cfg, "a/ckpt-7.h5", path, sizeof(path), err, sizeof(err)),
                     0);
    assert_string_equal(path, "a/ckpt-7.h5");
    /* Resuming it is fine. */
    assert_int_equal(bp__rundir_prepare(&cfg, "latest", &dl, &ml, err, sizeof(err)), 0);
    bp__lock_drop(&dl), bp__lock_drop(&ml);
}

/* ---- the trainer's own memory ceiling, data in memory, the network given back ---- */

static void test_memory_ceiling_is_the_trainers(void **state)
{
    (void)state;
    /* 40000 rows of 8 features and 2 classes: more than 1 MiB in memory. */
    bp_dataset big;
    make_set(&big, 40000, 8, 2);
    const char *path = in_dir("big.h5");
    write_set(&big, path, 0);
    char err[1024] = "", data[512];
    snprintf(data, sizeof(data), "%s", path);
    bp_config tight, roomy;
    const char *net = "[network]\nlayers = 8, 2\n";
    char ini[2048];
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = %s\nmax_memory_mb = 1\n%s[train]\nepochs = 1\nbatch_size = 100\n"
             "learning_rate = 0.1\n[checkpoint]\ndir = %s/tight\n",
             data, net, dir);
    assert_int_equal(bp_config_parse(&tight, "tight", ini, NULL, 0, err, sizeof(err)), 0);
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = %s\nmax_memory_mb = 100\n%s[train]\nepochs = 1\nbatch_size = 100\n"
             "learning_rate = 0.1\n[checkpoint]\ndir = %s/roomy\n",
             data, net, dir);
    assert_int_equal(bp_config_parse(&roomy, "roomy", ini, NULL, 0, err, sizeof(err)), 0);
    bp_trainer *a = NULL, *b = NULL;
    /* Side by side: each trainer its own budget. */
    assert_int_equal(bp_trainer_create(&a, &roomy, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_create(&b, &tight, NULL, &comm, NULL, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "but only 1.0 MiB is available"));
    assert_null(b);
    assert_int_equal(bp_trainer_run(a, NULL, err, sizeof(err)), 0);
    bp_trainer_free(a);
    /* One after the other: the tight one's budget does not outlive it. */
    bp_config small;
    run_config(&small, "small", "builtin:xor", "max_memory_mb = 1\n");
    train_once(&small);
    bp_dataset ds;
    assert_int_equal(bp_dataset_load(&ds, path, NULL, 2, 0, err, sizeof(err)), 0);
    bp_dataset_free(&ds);
    bp_checkpoint ck;
    char latest[512];
    snprintf(latest, sizeof(latest), "%s/roomy/latest.h5", dir);
    assert_int_equal(bp_checkpoint_read(latest, &ck, err, sizeof(err)), 0);
    bp_checkpoint_free(&ck);
    free_set(&big);
}

/* A set given in memory trains to the bits of the same rows read from a file, and the
 * trainer hands back the network that latest.h5 holds. */
static void test_data_from_memory(void **state)
{
    (void)state;
    bp_dataset train, test;
    make_set(&train, 120, 2, 2);
    make_set(&test, 30, 2, 2);
    for (size_t i = 0; i < 120; i++) /* a second view of the features */
        train.X[i * 2 + 1] = (bp_real)((double)(i % 5) / 4.0);
    write_set(&train, in_dir("train.h5"), 0);
    write_set(&test, in_dir("test.h5"), 0);
    const char *rest = "[network]\nlayers = 2, 4, 2\noutput = softmax\n"
                       "[train]\nepochs = 4\nbatch_size = 16\nlearning_rate = 0.5\nseed = 5\n";
    char ini[2048], err[1024] = "";
    bp_config files, memory;
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = %s\ntest = %s\nvalidation_split = 20\n%s"
             "[checkpoint]\ndir = %s/files\n",
             in_dir("train.h5"), in_dir("test.h5"), rest, dir);
    assert_int_equal(bp_config_parse(&files, "files", ini, NULL, 0, err, sizeof(err)), 0);
    /* [data] train names a file the trainer then never reads. */
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = %s\nvalidation_split = 20\n%s[checkpoint]\ndir = %s/memory\n",
             in_dir("absent.h5"), rest, dir);
    assert_int_equal(bp_config_parse(&memory, "memory", ini, NULL, 0, err, sizeof(err)), 0);

    train_once(&files);
    bp_trainer *t = NULL;
    bp_trainer_options opts = {.train = &train, .test = &test};
    assert_int_equal(bp_trainer_create_with(&t, &memory, &comm, &opts, err, sizeof(err)), 0);
    bp_trainer_info info;
    bp_trainer_get_info(t, &info);
    assert_int_equal(info.n_train, 100);
    assert_int_equal(info.n_val, 20);
    assert_int_equal(info.n_test, 30);
    free_set(&train); /* copied: the trainer does not need the caller's any more */
    free_set(&test);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    const bp_net *net = bp_trainer_net(t);
    bp_checkpoint a, b;
    char path[512];
    snprintf(path, sizeof(path), "%s/files/latest.h5", dir);
    assert_int_equal(bp_checkpoint_read(path, &a, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/memory/latest.h5", dir);
    assert_int_equal(bp_checkpoint_read(path, &b, err, sizeof(err)), 0);
    assert_int_equal(net->nparams, a.net.nparams);
    assert_memory_equal(net->params, a.net.params, net->nparams * sizeof(bp_real));
    assert_memory_equal(net->params, b.net.params, net->nparams * sizeof(bp_real));
    bp_trainer_free(t);
    bp_checkpoint_free(&a);
    bp_checkpoint_free(&b);
}

static void test_data_from_memory_refusals(void **state)
{
    (void)state;
    bp_dataset train;
    make_set(&train, 40, 2, 2);
    char ini[1024], err[1024] = "";
    bp_config cfg;
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = unused.h5\nplacement = stream\n[network]\nlayers = 2, 2\n"
             "[train]\nepochs = 1\nbatch_size = 8\nlearning_rate = 0.1\n"
             "[checkpoint]\ndir = %s/refused\n",
             dir);
    assert_int_equal(bp_config_parse(&cfg, "r", ini, NULL, 0, err, sizeof(err)), 0);
    bp_trainer *t = NULL;
    bp_trainer_options opts = {.train = &train};
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "placement = stream reads rows from HDF5 files, and the sets were "
                                "given in memory"));
    cfg.placement = BP_PLACE_AUTO;
    train.X[17 * 2 + 1] = INFINITY;
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "the training set: X row 17 column 1 is infinite"));
    train.X[17 * 2 + 1] = 0;
    cfg.sizes[0] = 3;
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)),
                     BP_EMISMATCH);
    assert_non_null(strstr(err, "the training set: examples have 2 features but the network has "
                                "3 inputs"));
    assert_null(t);
    free_set(&train);
}

/* Every rank passes its copy of a set given in memory, and they must agree, as files must
 * (test_units_2ranks runs this at 2 ranks; placement = replicated: under node, the node's
 * rank 0 holds the set for all, as it reads a file for all). */
static void test_given_sets_agree(void **state)
{
    (void)state;
    bp_dataset train;
    make_set(&train, 40, 2, 2);
    char ini[1024], err[1024] = "";
    bp_config same, differs;
    const char *rest = "[network]\nlayers = 2, 2\n[train]\nepochs = 1\nbatch_size = 8\n"
                       "learning_rate = 0.1\n";
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = a\nplacement = replicated\n%s[checkpoint]\ndir = %s/same\n", rest,
             dir);
    assert_int_equal(bp_config_parse(&same, "s", ini, NULL, 0, err, sizeof(err)), 0);
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = a\nplacement = replicated\n%s[checkpoint]\ndir = %s/differs\n", rest,
             dir);
    assert_int_equal(bp_config_parse(&differs, "d", ini, NULL, 0, err, sizeof(err)), 0);
    bp_trainer *t = NULL;
    bp_trainer_options opts = {.train = &train};
    assert_int_equal(bp_trainer_create_with(&t, &same, &comm, &opts, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);
    if (comm.rank == 1)
        train.X[5] = 7; /* row 2, column 1 */
    int rc = bp_trainer_create_with(&t, &differs, &comm, &opts, err, sizeof(err));
    if (comm.size == 1) {
        assert_int_equal(rc, 0);
        bp_trainer_free(t);
    } else {
        assert_int_equal(rc, BP_EMISMATCH); /* on every rank, said once */
        assert_null(t);
        if (comm.rank == 1)
            assert_non_null(strstr(err, "rank 1's [data] train (given in memory) holds other "
                                        "values than rank 0's"));
        else
            assert_string_equal(err, "");
    }
    free_set(&train);
}

int main(int argc, char **argv)
{
    if (bp_comm_init(&argc, &argv, &comm) < 0)
        return 1;
    if (argc > 1) /* test_units_2ranks: the tests that are about ranks */
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_place_auto),
        cmocka_unit_test(test_place_refusals),
        cmocka_unit_test_setup_teardown(test_source_rows, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_source_damage, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_rundir, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_memory_ceiling_is_the_trainers, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_data_from_memory, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_data_from_memory_refusals, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_given_sets_agree, make_dir, remove_dir),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    bp_comm_finalize(&comm);
    return failed;
}
