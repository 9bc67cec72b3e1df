/* The public API as a careless or hostile program calls it, through the public headers alone:
 * arguments a program can get wrong are refused with BP_EINVAL and one reason on one rank,
 * never a crash, a silently ignored input or a NaN result. test_api_2ranks runs it at 2
 * ranks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backprop/eval.h"
#include "backprop/gradcheck.h"
#include "backprop/train.h"
#include "test_dir.h"

static bp_comm comm;

static int make_job_dir(void **state)
{
    (void)state;
    int ok = 1;
    if (comm.rank == 0) /* one directory for the job: rank 0 names it, the others learn it */
        ok = make_dir(state) == 0;
    int max, who;
    for (size_t i = 0; i < sizeof(dir); i++) { /* a byte at a time: only agree is public */
        assert_int_equal(
            bp_comm_agree(&comm, comm.rank == 0 ? (unsigned char)dir[i] : 0, &max, &who), 0);
        dir[i] = (char)max;
    }
    return ok ? 0 : -1;
}

static int remove_job_dir(void **state)
{
    (void)state;
    int max, who;
    bp_comm_agree(&comm, 0, &max, &who); /* every rank is done with it */
    return comm.rank == 0 ? remove_dir(state) : 0;
}

/* The reason is on exactly one rank (the lowest that failed: here every rank fails alike,
 * so rank 0), and says what is wrong. */
static void assert_reason(const char *err, const char *want)
{
    if (comm.rank == 0)
        assert_non_null(strstr(err, want));
    else
        assert_string_equal(err, "");
}

static void parse(bp_config *cfg, const char *run)
{
    char ini[1024], err[512] = "";
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = builtin:xor\n"
             "[network]\nlayers = 2, 3, 1\nhidden = sigmoid\noutput = sigmoid\ncost = quadratic\n"
             "[train]\nepochs = 1\nbatch_size = 4\nlearning_rate = 1\n"
             "[checkpoint]\ndir = %s/%s\n",
             dir, run);
    assert_int_equal(bp_config_parse(cfg, "api", ini, NULL, 0, err, sizeof(err)), 0);
}

/* A validation or test set in memory without a training set: the config's files would be
 * read and the given set dropped without a word. */
static void test_given_set_without_train(void **state)
{
    (void)state;
    bp_real X[] = {0, 0, 1, 1}, Y[] = {0, 0};
    bp_dataset val = {.n = 2, .d = 2, .k = 1, .X = X, .Y = Y};
    bp_config cfg;
    parse(&cfg, "alone");
    char err[1024] = "";
    bp_trainer *t = NULL;
    bp_trainer_options opts = {.validation = &val};
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), BP_EINVAL);
    assert_null(t);
    assert_reason(err, "the validation set was given in memory without a training set");
    opts = (bp_trainer_options){.test = &val};
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), BP_EINVAL);
    assert_reason(err, "the test set was given in memory without a training set");
    opts = (bp_trainer_options){.train = &val, .test = &val}; /* with one, both are taken */
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), 0);
    bp_trainer_info info;
    bp_trainer_get_info(t, &info);
    assert_int_equal(info.n_train, 2);
    assert_int_equal(info.n_test, 2);
    bp_trainer_free(t);
}

/* A labelled set whose targets are not its labels' one-hot rows: the cost would train on Y
 * and the accuracy score the labels. */
static void test_given_labels_disagree(void **state)
{
    (void)state;
    bp_real X[] = {0, 0, 1, 1, 0, 1}, Y[] = {1, 0, 0, 1, 0, 1};
    int labels[] = {0, 1, 1};
    bp_dataset train = {.n = 3, .d = 2, .k = 2, .X = X, .Y = Y, .labels = labels};
    char ini[1024], err[1024] = "";
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = in-memory\n[network]\nlayers = 2, 2\noutput = softmax\n"
             "[train]\nepochs = 1\nbatch_size = 3\nlearning_rate = 1\n"
             "[checkpoint]\ndir = %s/labels\n",
             dir);
    bp_config cfg;
    assert_int_equal(bp_config_parse(&cfg, "api", ini, NULL, 0, err, sizeof(err)), 0);
    bp_trainer *t = NULL;
    bp_trainer_options opts = {.train = &train};
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), 0);
    bp_trainer_free(t);
    labels[2] = 0; /* row 2's Y says class 1 */
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), BP_EINVAL);
    assert_null(t);
    assert_reason(err, "the training set: Y row 2 is not the one-hot row of its label 0");
    labels[2] = 1;
    Y[4] = 0.5; /* a row of two classes at once */
    assert_int_equal(bp_trainer_create_with(&t, &cfg, &comm, &opts, err, sizeof(err)), BP_EINVAL);
    assert_reason(err, "Y row 2 is not the one-hot row of its label 1");
}

/* Options that make the check meaningless (no step, no examples) or that are missing. */
static void test_gradcheck_options(void **state)
{
    (void)state;
    bp_config cfg;
    parse(&cfg, "gradcheck");
    char err[1024] = "";
    bp_gradcheck_report rep;
    assert_int_equal(bp_gradcheck_run(&comm, &cfg, NULL, &rep, err, sizeof(err)), BP_EINVAL);
    assert_reason(err, "a gradient check needs its options");
    assert_int_equal(rep.nlayers, 0);
    const struct {
        double epsilon;
        long examples;
        const char *why;
    } bad[] = {{0, 4, "step epsilon must be a finite number > 0, not 0"},
               {-1e-4, 4, "step epsilon must be a finite number > 0, not -0.0001"},
               {NAN, 4, "step epsilon must be a finite number > 0, not nan"},
               {INFINITY, 4, "step epsilon must be a finite number > 0, not inf"},
               {1e-4, 0, "needs at least one example, not 0"},
               {1e-4, -5, "needs at least one example, not -5"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bp_gradcheck_run_opts o = {.epsilon = bad[i].epsilon, .examples = bad[i].examples};
        assert_int_equal(bp_gradcheck_run(&comm, &cfg, &o, &rep, err, sizeof(err)), BP_EINVAL);
        assert_reason(err, bad[i].why);
        assert_null(rep.layers);
    }
    bp_gradcheck_run_opts good = {.epsilon = 1e-4, .examples = 4};
    assert_int_equal(bp_gradcheck_run(&comm, &cfg, &good, &rep, err, sizeof(err)), 0);
    assert_int_equal(rep.nlayers, 2);
    for (int l = 0; l < rep.nlayers; l++)
        assert_true(isfinite(rep.layers[l].max_rel_error));
    bp_gradcheck_report_free(&rep);
}

/* An evaluation job without its checkpoint or its data. */
static void test_eval_job_incomplete(void **state)
{
    (void)state;
    bp_config cfg;
    parse(&cfg, "eval");
    char err[1024] = "", ckpt[128];
    bp_trainer *t = NULL;
    assert_int_equal(bp_trainer_create(&t, &cfg, NULL, &comm, NULL, err, sizeof(err)), 0);
    assert_int_equal(bp_trainer_run(t, NULL, err, sizeof(err)), 0);
    bp_trainer_free(t);
    snprintf(ckpt, sizeof(ckpt), "%s/eval/latest.h5", dir);
    bp_eval_result res;
    bp_eval_job job = {.checkpoint = ckpt, .data = NULL, .data_name = "the data"};
    assert_int_equal(bp_eval_run(&comm, &job, &res, err, sizeof(err)), BP_EINVAL);
    assert_reason(err, "an evaluation needs a checkpoint and a data set (the data set is missing)");
    job = (bp_eval_job){.checkpoint = NULL, .data = "builtin:xor"};
    assert_int_equal(bp_eval_run(&comm, &job, &res, err, sizeof(err)), BP_EINVAL);
    assert_reason(err, "(the checkpoint is missing)");
    job = (bp_eval_job){.checkpoint = ckpt, .data = "builtin:xor"}; /* no data_name: fine */
    assert_int_equal(bp_eval_run(&comm, &job, &res, err, sizeof(err)), 0);
    assert_int_equal(res.n, 4);
    bp_eval_result_free(&res);
}

int main(int argc, char **argv)
{
    if (bp_comm_init(&argc, &argv, &comm) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_given_set_without_train, make_job_dir, remove_job_dir),
        cmocka_unit_test_setup_teardown(test_given_labels_disagree, make_job_dir, remove_job_dir),
        cmocka_unit_test_setup_teardown(test_gradcheck_options, make_job_dir, remove_job_dir),
        cmocka_unit_test_setup_teardown(test_eval_job_incomplete, make_job_dir, remove_job_dir),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    bp_comm_finalize(&comm);
    return failed;
}
