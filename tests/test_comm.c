/* Two trainers in one process, through the public API, at 1 rank and under mpirun at 2: one
 * after the other on the same and on another communicator, two alive at once on duplicates
 * of the world, and the world split so that each half trains on its own. Each run gives the
 * bits of a lone run of its config: a trainer keeps nothing in the process that another
 * one sees. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backprop/checkpoint.h"
#include "backprop/comm.h"
#include "backprop/config.h"
#include "backprop/train.h"
#include "comm.h"
#include "exchange.h"
#include "test_dir.h"

static bp_comm world;

/* A regression on builtin:line (1000 examples): batches of 50 split over the ranks, the data
 * shared on the node at 2 ranks (placement auto), momentum to carry state between steps. */
static void line_config(bp_config *cfg, const char *run)
{
    char ini[1024], err[512] = "";
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = builtin:line\nvalidation_split = 10\n"
             "[network]\nlayers = 1, 16, 1\nhidden = tanh\noutput = linear\ncost = quadratic\n"
             "[train]\nepochs = 3\nbatch_size = 50\nlearning_rate = 0.01\nmomentum = 0.9\n"
             "seed = 7\nthreads = 1\n"
             "[checkpoint]\ndir = %s/%s\nevery_epochs = 0\n",
             dir, run);
    assert_int_equal(bp_config_parse(cfg, "test", ini, NULL, 0, err, sizeof(err)), 0);
}

/* A trainer made on comm runs cfg (run) to its end. */
static bp_trainer *create(const bp_comm *comm, const bp_config *cfg)
{
    bp_trainer *t = NULL;
    char err[512] = "";
    int rc = bp_trainer_create(&t, cfg, NULL, comm, NULL, err, sizeof(err));
    if (rc != 0)
        fail_msg("bp_trainer_create: %s", err);
    return t;
}

static void run(bp_trainer *t)
{
    char err[512] = "";
    if (bp_trainer_run(t, NULL, err, sizeof(err)) != 0)
        fail_msg("bp_trainer_run: %s", err);
}

/* The weights, velocity and metrics of run's latest checkpoint, which comm's rank 0 wrote. */
static void read_latest(const char *run, bp_checkpoint *ck)
{
    char path[256], err[512] = "";
    snprintf(path, sizeof(path), "%s/%s/latest.h5", dir, run);
    if (bp_checkpoint_read(path, ck, err, sizeof(err)) != 0)
        fail_msg("%s", err);
}

static void assert_same_run(const char *a_run, const char *b_run)
{
    bp_checkpoint a, b;
    read_latest(a_run, &a);
    read_latest(b_run, &b);
    assert_int_equal(a.net.nparams, b.net.nparams);
    assert_memory_equal(a.net.params, b.net.params, a.net.nparams * sizeof(bp_real));
    assert_memory_equal(bp_checkpoint_item(&a, "v")->data, bp_checkpoint_item(&b, "v")->data,
                        a.net.nparams * sizeof(bp_real));
    assert_int_equal(a.state.global_step, b.state.global_step);
    assert_int_equal(a.state.nmetrics, b.state.nmetrics);
    for (size_t i = 0; i < a.state.nmetrics; i++) {
        assert_true(a.state.metrics[i].train_cost == b.state.metrics[i].train_cost);
        assert_true(a.state.metrics[i].val_cost == b.state.metrics[i].val_cost);
    }
    bp_checkpoint_free(&a);
    bp_checkpoint_free(&b);
}

/* One config run alone on comm, written under run. */
static void lone_run(const bp_comm *comm, const char *name)
{
    bp_config cfg;
    line_config(&cfg, name);
    bp_trainer *t = create(comm, &cfg);
    run(t);
    bp_trainer_free(t);
}

/* One after the other: on the world, on a duplicate of it (freed), on the world again. */
static void test_one_after_another(void **state)
{
    (void)state;
    lone_run(&world, "first");
    bp_comm dup;
    assert_int_equal(bp_comm_dup(&world, &dup), 0);
    assert_int_equal(dup.rank, world.rank);
    assert_int_equal(dup.size, world.size);
    assert_int_equal(dup.local_size, world.local_size);
    lone_run(&dup, "on_dup");
    bp_comm_free(&dup);
    assert_null(dup.mpi);
    lone_run(&world, "again");
    if (world.rank == 0) {
        assert_same_run("first", "on_dup");
        assert_same_run("first", "again");
    }
}

/* Side by side: two trainers set up at once on two duplicates (two exchanges, two node
 * segments, two watchdogs alive together), run in turn, freed together. */
static void test_two_alive_at_once(void **state)
{
    (void)state;
    lone_run(&world, "lone");
    bp_comm a, b;
    assert_int_equal(bp_comm_dup(&world, &a), 0);
    assert_int_equal(bp_comm_dup(&world, &b), 0);
    bp_config ca, cb;
    line_config(&ca, "a");
    line_config(&cb, "b");
    bp_trainer *ta = create(&a, &ca);
    bp_trainer *tb = create(&b, &cb);
    run(tb);
    run(ta);
    bp_trainer_free(ta);
    bp_trainer_free(tb);
    bp_comm_free(&a);
    bp_comm_free(&b);
    if (world.rank == 0) {
        assert_same_run("lone", "a");
        assert_same_run("lone", "b");
    }
}

/* The world split in halves by rank parity: at 2 ranks each rank trains alone on its own
 * communicator while the other does too, and each gets the bits of a run without MPI at
 * all (a bp_comm of one rank that no bp_comm_* call made). */
static void test_split_in_halves(void **state)
{
    (void)state;
    const bp_comm none = {.rank = 0, .size = 1, .local_size = 1, .mpi = NULL};
    lone_run(&none, "no_mpi");
    bp_comm half;
    assert_int_equal(bp_comm_split(&world, world.rank % 2, &half), 0);
    assert_int_equal(half.size, (world.size + 1 - world.rank % 2) / 2);
    assert_int_equal(half.rank, world.rank / 2);
    if (half.size == 1) { /* at 1 and 2 ranks; each rank 0 of its half writes its own run */
        lone_run(&half, "half");
        assert_same_run("no_mpi", "half");
    }
    bp_comm_free(&half);
    bp_comm bad;
    assert_int_equal(bp_comm_split(&world, -1, &bad), BP_EINVAL);
    assert_null(bad.mpi);
    assert_int_equal(bad.size, 1);
}

/* The watchdog's callback for --hang: says so, and returns (the library must then end the
 * job itself). */
static void expired(void *ctx, int rank, const char *reason)
{
    (void)ctx;
    fprintf(stderr, "expired on rank %d: %s\n", rank, reason);
    fflush(stderr);
}

/* --hang, at 2 ranks: rank 1 comes 4 s late to a collective on a duplicate whose watchdog
 * allows 1 s. Rank 0's watchdog names the collective and the late rank through the
 * callback, which returns: the library ends the job (MPI_Abort) before rank 1 arrives, so
 * "not ended" is never printed. */
static int hang(void)
{
    bp_comm d;
    int max, who;
    if (bp_comm_dup(&world, &d) < 0 || bp_comm_watch(&d, 1, expired, NULL) < 0)
        return 1;
    if (world.rank == 1)
        sleep(4);
    bp_comm_agree(&d, 1, &max, &who);
    printf("not ended\n");
    bp_comm_free(&d);
    bp_comm_finalize(&world);
    return 0;
}

/* The program frees its comm right after create: the trainer's own reference keeps the
 * communicators (and their watchdog) alive until bp_trainer_free, and the run is the
 * lone run's. */
static void test_comm_freed_first(void **state)
{
    (void)state;
    lone_run(&world, "lone");
    bp_comm d;
    assert_int_equal(bp_comm_dup(&world, &d), 0);
    assert_int_equal(bp_comm_watch(&d, 60, expired, NULL), 0);
    bp_config cfg;
    line_config(&cfg, "orphan");
    bp_trainer *t = create(&d, &cfg);
    bp_comm_free(&d);
    assert_null(d.mpi);
    run(t);
    bp_trainer_free(t);
    assert_null(bp_trainer_net(NULL));
    if (world.rank == 0)
        assert_same_run("lone", "orphan");
}

/* What bp__print_ranks writes for r, in a buffer the caller frees. */
static char *printed_ranks(const bp__rank_host *r, int n)
{
    char *text = NULL;
    size_t bytes = 0;
    FILE *f = open_memstream(&text, &bytes);
    assert_non_null(f);
    bp__print_ranks(f, r, n);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void assert_ranks(const char *want, const bp__rank_host *r, int n)
{
    char *text = printed_ranks(r, n);
    assert_string_equal(text, want);
    free(text);
}

/* The watchdog's message names ranks with their hosts: each host once, after its ranks, in
 * the order of their lowest rank; three ranks or more in a row as a range. */
static void test_watchdog_names_ranks(void **state)
{
    (void)state;
    bp__rank_host one[] = {{2, "bp-host3"}};
    assert_ranks("rank 2 (host bp-host3)", one, 1);
    bp__rank_host some[] = {{2, "x"}, {5, "x"}, {7, "y"}};
    assert_ranks("ranks 2, 5 (host x), 7 (host y)", some, 3);
    bp__rank_host runs[] = {{4, "b"}, {5, "b"}, {6, "b"},  {7, "b"},
                            {8, "c"}, {9, "c"}, {10, "c"}, {11, "c"}};
    assert_ranks("ranks 4-7 (host b), 8-11 (host c)", runs, 8);
    bp__rank_host pair[] = {{4, "b"}, {5, "b"}, {9, "b"}, {10, "b"}, {11, "b"}};
    assert_ranks("ranks 4, 5, 9-11 (host b)", pair, 5);
    /* ranks placed round-robin: each host still once */
    bp__rank_host mixed[] = {{1, "a"}, {2, "b"}, {3, "a"}, {4, "b"}, {5, "a"}};
    assert_ranks("ranks 1, 3, 5 (host a), 2, 4 (host b)", mixed, 5);
}

/* Host names come from the system: the event record escapes what JSON requires. */
static void test_watchdog_escapes_json(void **state)
{
    (void)state;
    char *text = NULL;
    size_t bytes = 0;
    FILE *f = open_memstream(&text, &bytes);
    assert_non_null(f);
    bp__print_json_string(f, "a\"b\\c\n\t\x01\x7f\xc3\xa9z");
    assert_int_equal(fclose(f), 0);
    assert_string_equal(text, "\"a\\\"b\\\\c\\u000a\\u0009\\u0001\\u007f\xc3\xa9z\"");
    free(text);
}

/* The exchange's floats (any_scale, one micro-shard a rank): at 2 ranks on one node each
 * rank's floats (float i at byte 4 i of its int64 buffer) reach the floats callback of the
 * rank that sums their slice, as one vector per rank in rank order, with no int64 sum to
 * fill; the reals it makes are every rank's, and the slots after exact_from are summed as
 * int64. Alone (no node segment), the exchange takes no floats. */
static int floats_k;
static void add_floats(void *ctx, const float *const *v, int k, int64_t *sum, bp_real *real,
                       size_t lo, size_t hi)
{
    (void)ctx;
    assert_null(sum);
    floats_k = k;
    for (size_t i = lo; i < hi; i++) {
        float s = 0;
        for (int j = 0; j < k; j++)
            s = s * 1000 + v[j][i]; /* rank order shows in the digits */
        real[i] = s;
    }
}
static void no_convert(void *ctx, const int64_t *const *v, int k, bp_real *real, size_t lo,
                       size_t hi)
{
    (void)ctx, (void)v, (void)k, (void)real;
    fail_msg("convert called for [%zu, %zu) with floats", lo, hi);
}

static void test_exchange_floats(void **state)
{
    (void)state;
    bp_net net;
    int sizes[2] = {20, 10}; /* 210 parameters, then 2 slots: floats in both ranks' slices */
    assert_int_equal(bp_net_create(&net, 2, sizes, BP_SIGMOID, BP_SIGMOID, BP_QUADRATIC), 0);
    size_t np = net.nparams, n = np + 2;
    char err[256] = "";
    bp__exchange *x;
    assert_int_equal(bp__exchange_create(&x, &world, &net, n, 4, 1, np, 0, 1, err, sizeof(err)), 0);
    if (world.size == 1 || !bp__exchange_takes_floats(x)) {
        assert_true(world.size == 1 && !bp__exchange_takes_floats(x));
        bp__exchange_free(x);
        bp_net_free(&net);
        return;
    }
    assert_int_equal(world.size, 2);
    int64_t *buf = bp__exchange_buffer_i64(x);
    float *f = (float *)buf;
    for (size_t i = 0; i < np; i++)
        f[i] = (float)(world.rank * 100 + (int)i);
    buf[np] = world.rank + 1, buf[np + 1] = 7;
    bp__exchange_begin_i64(x, no_convert, add_floats, NULL);
    bp__exchange_ready(x, 0);
    size_t lo, hi;
    const int64_t *sum;
    const bp_real *real;
    int rc;
    while ((rc = bp__exchange_next_i64(x, &lo, &hi, &sum, &real)) == 1)
        ;
    assert_int_equal(rc, 0);
    assert_int_equal(floats_k, 2); /* this rank summed a slice, from both ranks' floats */
    for (size_t i = 0; i < np; i++)
        assert_true(real[i] == (bp_real)(i * 1000 + 100 + i));
    assert_int_equal(sum[np], 3);
    assert_int_equal(sum[np + 1], 14);
    bp__exchange_free(x);
    bp_net_free(&net);
}

int main(int argc, char **argv)
{
    if (bp_comm_init(&argc, &argv, &world) < 0)
        return 1;
    if (argc > 1 && strcmp(argv[1], "--hang") == 0)
        return hang();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_after_another, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_two_alive_at_once, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_split_in_halves, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_comm_freed_first, make_dir, remove_dir),
        cmocka_unit_test(test_watchdog_names_ranks),
        cmocka_unit_test(test_watchdog_escapes_json),
        cmocka_unit_test(test_exchange_floats),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    bp_comm_finalize(&world);
    return failed;
}
