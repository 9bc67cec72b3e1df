/* The trainer through its public API, in-process at one rank (no mpirun): setup from a
 * config, a run with callbacks, a checkpoint on request, and a resume that continues
 * bit for bit; refusals come back as codes with one message. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
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
#include "backprop/train.h"
#include "test_dir.h"
#include "train.h" /* src/train.h: the trainer's fields, to spoil a weight by hand */

static bp_comm comm;

/* XOR with [2,3,1] sigmoid units, full batch, momentum: small, and every part of the state
 * (velocity, rng, metrics) matters to a resume. */
static void xor_config(bp_config *cfg, const char *run, long epochs)
{
    char ini[1024], err[512] = "";
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = builtin:xor\n"
             "[network]\nlayers = 2, 3, 1\nhidden = sigmoid\noutput = sigmoid\ncost = quadratic\n"
             "[train]\nepochs = %ld\nbatch_size = 2\nlearning_rate = 2.0\nmomentum = 0.5\n"
             "seed = 3\n"
             "[checkpoint]\ndir = %s/%s\nevery_epochs = 0\n",
             epochs, dir, run);
    assert_int_equal(bp_config_parse(cfg, "test", ini, NULL, 0, err, sizeof(err)), 0);
}

typedef struct {
    long epochs_seen, last_epoch, progress_calls;
} seen;

static void on_epoch(void *ctx, const bp_metrics_row *row, long epochs)
{
    seen *s = ctx;
    assert_int_equal(row->epoch, s->last_epoch + 1);
    assert_int_equal(row->step, 2 * row->epoch); /* 4 examples, batch 2 */
    s->last_epoch = row->epoch;
    s->epochs_seen++;
    assert_int_equal(epochs, 40);
}

static void on_progress(void *ctx, long epoch, long epochs, size_t step, size_t steps, double rate)
{
    seen *s = ctx;
    assert_true(step >= 1 && step <= steps);
    assert_int_equal(steps, 2);
    assert_true(rate >= 0);
    s->progress_calls++;
}

static void read_latest(const char *run, bp_checkpoint *ck)
{
    char path[256], err[512] = "";
    snprintf(path, sizeof(path), "%s/%s/latest.h5", dir, run);
    assert_int_equal(bp_checkpoint_read(path, ck, err, sizeof(err)), 0);
}

static void test_run_with_callbacks(void **state)
{
    bp_config cfg;
    xor_config(&cfg, "a", 40);
    bp_trainer *t = NULL;
    char err[512] = "";
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err)), 0);
    bp_trainer_info info;
    bp_trainer_get_info(t, &info);
    assert_int_equal(info.nparams, 3 * 2 + 3 + 1 * 3 + 1);
    assert_int_equal(info.n_train, 4);
    assert_int_equal(info.ranks, 1);
    assert_int_equal(info.resumed, 0);
    seen s = {0};
    bp_callbacks cb = {on_epoch, on_progress, &s, NULL};
    assert_int_equal(bp_trainer_run(t, &cb, err, sizeof(err)), 0);
    assert_int_equal(s.epochs_seen, 40);
    assert_int_equal(s.progress_calls, 80);
    bp_step_times times;
    assert_int_equal(bp_trainer_step_times(t, &times), 0);
    assert_int_equal(times.steps, 80);
    assert_true(times.compute_ms > 0 && times.slowest_compute_ms == times.compute_ms);
    bp_trainer_get_info(t, &info);
    assert_int_equal(info.epoch, 40);
    assert_int_equal(info.global_step, 80);
    bp_trainer_free(t);
    bp_checkpoint ck;
    read_latest("a", &ck);
    assert_int_equal(ck.state.global_step, 80);
    assert_int_equal(ck.state.nmetrics, 40);
    bp_checkpoint_free(&ck);
}

/* 40 epochs straight, against 15, a checkpoint asked for by the program, and a resume to
 * 40 in a new trainer: the same bytes. */
static void test_checkpoint_and_resume_exactly(void **state)
{
    bp_config straight, first, rest;
    xor_config(&straight, "straight", 40);
    xor_config(&first, "parts", 15);
    xor_config(&rest, "parts", 40);
    char err[512] = "";
    bp_trainer *t = NULL;
    assert_int_equal(bp_trainer_create(&t, &straight, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);

    assert_int_equal(bp_trainer_create(&t, &first, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_checkpoint(t, err, sizeof(err)), 0); /* again: harmless */
    bp_trainer_free(t);

    assert_int_equal(bp_trainer_create(&t, &rest, NULL, &comm, "latest", err, sizeof(err)), 0);
    bp_trainer_info info;
    bp_trainer_get_info(t, &info);
    assert_int_equal(info.resumed, 1);
    assert_int_equal(info.epoch, 15);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);

    bp_checkpoint a, b;
    read_latest("straight", &a);
    read_latest("parts", &b);
    assert_int_equal(a.net.nparams, b.net.nparams);
    assert_memory_equal(a.net.params, b.net.params, a.net.nparams * sizeof(bp_real));
    assert_memory_equal(bp_checkpoint_item(&a, "v")->data, bp_checkpoint_item(&b, "v")->data,
                        a.net.nparams * sizeof(bp_real));
    assert_int_equal(b.state.nmetrics, 40);
    for (size_t i = 0; i < 40; i++)
        assert_true(a.state.metrics[i].train_cost == b.state.metrics[i].train_cost);
    bp_checkpoint_free(&a);
    bp_checkpoint_free(&b);
}

/* A checkpoint is never written from weights that are not finite, however they became so
 * (the steps stop on a non-finite update; this is the backstop for every other way): the
 * request fails with BP_EDIVERGED, and latest.h5 stays the finite one before it. */
static void test_no_checkpoint_of_nonfinite_weights(void **state)
{
    (void)state;
    bp_config cfg;
    xor_config(&cfg, "nan", 5);
    char err[512] = "";
    bp_trainer *t = NULL;
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_checkpoint before;
    read_latest("nan", &before);
    t->net.params[t->net.nparams - 1] = (bp_real)NAN;
    assert_int_equal(bp_trainer_checkpoint(t, err, sizeof(err)), BP_EDIVERGED);
    assert_non_null(strstr(err, "not finite"));
    t->net.params[t->net.nparams - 1] = (bp_real)INFINITY;
    assert_int_equal(bp_trainer_checkpoint(t, err, sizeof(err)), BP_EDIVERGED);
    bp_trainer_free(t);
    bp_checkpoint after;
    read_latest("nan", &after);
    assert_memory_equal(before.net.params, after.net.params, before.net.nparams * sizeof(bp_real));
    bp_checkpoint_free(&before);
    bp_checkpoint_free(&after);
}

/* The progress callback asks for a stop after the last step of epoch 7, as a signal handler
 * would: the next step carries the request, and the run stops at its end, mid-epoch. */
static void stop_mid_epoch(void *ctx, long epoch, long epochs, size_t step, size_t steps,
                           double rate)
{
    (void)ctx, (void)epochs, (void)steps, (void)rate;
    if (epoch == 7 && step == 2)
        bp_request_stop(SIGUSR1);
}

/* bp_request_stop: the run ends at the end of the step with BP_ESTOPPED and a checkpoint
 * of that step; the request is consumed, and a resume ends where an uninterrupted run
 * does, bit for bit. A withdrawn request stops nothing. */
static void test_stop_on_request(void **state)
{
    bp_config straight, cfg;
    xor_config(&straight, "straight", 40);
    xor_config(&cfg, "stopped", 40);
    char err[512] = "";
    bp_trainer *t = NULL;
    bp_request_stop(SIGTERM);
    bp_request_stop(0); /* withdrawn */
    assert_int_equal(bp_trainer_create(&t, &straight, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);

    bp_callbacks cb = {NULL, stop_mid_epoch, NULL, NULL};
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, &cb, err, sizeof(err)), BP_ESTOPPED);
    bp_trainer_info info;
    bp_trainer_get_info(t, &info);
    assert_int_equal(info.stop_signal, SIGUSR1);
    assert_int_equal(info.global_step, 15);
    bp_trainer_free(t);
    bp_checkpoint ck;
    read_latest("stopped", &ck);
    assert_int_equal(ck.state.global_step, 15);
    assert_int_equal(ck.state.epoch, 7);
    assert_int_equal(ck.state.batch_in_epoch, 1);
    bp_checkpoint_free(&ck);

    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, "latest", err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);
    bp_checkpoint a, b;
    read_latest("straight", &a);
    read_latest("stopped", &b);
    assert_int_equal(b.state.global_step, 80);
    assert_memory_equal(a.net.params, b.net.params, a.net.nparams * sizeof(bp_real));
    assert_memory_equal(bp_checkpoint_item(&a, "v")->data, bp_checkpoint_item(&b, "v")->data,
                        a.net.nparams * sizeof(bp_real));
    bp_checkpoint_free(&a);
    bp_checkpoint_free(&b);
}

/* A second trainer on a directory in use is refused with the reason, even in one process,
 * and leaves *t NULL; so is a fresh run over a finished one. */
static void test_refusals(void **state)
{
    bp_config cfg;
    xor_config(&cfg, "busy", 5);
    char err[512] = "";
    bp_trainer *t = NULL, *second = (bp_trainer *)&cfg;
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_create(&second, &cfg, NULL, &comm, NULL, err, sizeof(err)),
                     BP_EINVAL);
    assert_null(second);
    assert_non_null(strstr(err, "is in use by another run"));
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err)), BP_EEXIST);
    assert_non_null(strstr(err, "already holds a run"));
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, "nowhere.h5", err, sizeof(err)),
                     BP_EIO);
    assert_non_null(strstr(err, "nowhere.h5: no such file"));
    bp_trainer_free(NULL);
}

int main(int argc, char **argv)
{
    if (bp_comm_init(&argc, &argv, &comm) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_run_with_callbacks, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_checkpoint_and_resume_exactly, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_stop_on_request, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_refusals, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_no_checkpoint_of_nonfinite_weights, make_dir,
                                        remove_dir),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    bp_comm_finalize(&comm);
    return failed;
}
