/* Unit tests of the config reader and of the sharding arithmetic of the distributed step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backprop/config.h"
#include "comm.h"

static const char *const good = "[data]\n"
                                "train = builtin:xor   ; inline comment\n"
                                "[network]\n"
                                "layers = 2, 3 ,1\n"
                                "hidden = tanh\n"
                                "output = sigmoid\n"
                                "cost = quadratic\n"
                                "[train]\n"
                                "epochs = 7\n"
                                "batch_size = 4\n"
                                "learning_rate = 0.5\n"
                                "momentum = 0.9\n"
                                "threads = 3\n";

static void test_parses_values_and_defaults(void **state)
{
    (void)state;
    bp_config c;
    char err[256] = "";
    assert_int_equal(bp_config_parse(&c, "x.ini", good, NULL, 0, err, sizeof(err)), 0);
    assert_string_equal(c.train, "builtin:xor");
    assert_int_equal(c.nsizes, 3);
    assert_int_equal(c.sizes[1], 3);
    assert_int_equal(c.hidden, BP_TANH);
    assert_int_equal(c.cost, BP_QUADRATIC);
    assert_int_equal(c.epochs, 7);
    assert_float_equal(c.momentum, 0.9, 0);
    assert_int_equal(c.threads, 3);
    /* defaults */
    assert_int_equal(c.init, BP_INIT_GAUSSIAN_SCALED);
    assert_float_equal(c.lambda, 0, 0);
    assert_int_equal((int)c.seed, 1);
    assert_int_equal(c.every_epochs, 1);
    assert_int_equal(c.keep, 3);
    assert_int_equal(c.progress, BP_PROGRESS_AUTO);
    assert_int_equal(c.overlap, 1);
    assert_float_equal(c.bucket_mb, 4, 0);
    assert_float_equal(c.every_seconds, 0, 0);
    assert_int_equal(c.lr_schedule, BP_LR_CONSTANT);
    assert_int_equal(c.optimizer, BP_OPT_SGD);
    assert_int_equal(c.bf16, 0);
    assert_int_equal(c.comm_bf16, 0);
    assert_float_equal(c.beta1, 0.9, 0);
    assert_float_equal(c.beta2, 0.999, 0);
    assert_float_equal(c.adam_epsilon, 1e-8, 0);
    assert_int_equal(c.decoupled, 0);
    assert_int_equal(c.lr_step_epochs, 10);
    assert_float_equal(c.lr_gamma, 0.1, 0);
    assert_float_equal(c.lr_power, 0.5, 0);
    assert_string_equal(c.checkpoint_dir, "runs/x");
    assert_string_equal(c.metrics, "runs/x/metrics.csv");
    assert_int_equal(c.placement, BP_PLACE_AUTO);
    assert_float_equal(c.max_memory_mb, 0, 0);
}

static void test_set_overrides_and_format_round_trips(void **state)
{
    (void)state;
    bp_config a, b;
    char err[256] = "";
    const char *sets[] = {"train.epochs=9",        "network.layers=2,5,5,1",
                          "checkpoint.dir=out",    "comm.overlap=false",
                          "comm.bucket_mb=0.25",   "checkpoint.every_seconds=1.5",
                          "train.precision=bf16",  "comm.dtype=bf16",
                          "data.placement=stream", "data.max_memory_mb=1.5"};
    assert_int_equal(bp_config_parse(&a, "x.ini", good, sets, 10, err, sizeof(err)), 0);
    assert_int_equal(a.placement, BP_PLACE_STREAM);
    assert_float_equal(a.max_memory_mb, 1.5, 0);
    assert_int_equal(a.bf16, 1);
    assert_int_equal(a.comm_bf16, 1);
    assert_float_equal(a.every_seconds, 1.5, 0);
    assert_int_equal(a.epochs, 9);
    assert_int_equal(a.overlap, 0);
    assert_float_equal(a.bucket_mb, 0.25, 0);
    assert_int_equal(a.nsizes, 4);
    assert_string_equal(a.metrics, "out/metrics.csv");
    char text[8192];
    bp_config_format(&a, text, sizeof(text));
    assert_int_equal(bp_config_parse(&b, "effective", text, NULL, 0, err, sizeof(err)), 0);
    assert_memory_equal(&a, &b, sizeof(a));
}

/* Each bad input: the message names the file, the line and the problem. */
static void test_errors_name_file_and_line(void **state)
{
    (void)state;
    static const struct {
        const char *replace, *with;
        char message[96]; /* an array: never null (GCC's format check cannot tell a pointer) */
    } cases[] = {
        {"[train]", "[training]", "x.ini:8: unknown section [training]"},
        {"threads = 3", "thread = 3", "x.ini:13: unknown key 'thread' in [train]"},
        {"epochs = 7", "epochs = 7.5", "x.ini:9: [train] epochs: expected an integer, got '7.5'"},
        {"epochs = 7", "epochs = 0", "x.ini:9: [train] epochs: 0 is out of range"},
        {"momentum = 0.9", "momentum = 1", "x.ini:12: [train] momentum: 1 is out of range"},
        {"learning_rate = 0.5", "learning_rate = nan", "x.ini:11: [train] learning_rate: expected"},
        {"layers = 2, 3 ,1", "layers = 2, -3, 1", "x.ini:4: [network] layers: expected positive"},
        {"layers = 2, 3 ,1", "layers = 2", "x.ini:4: [network] layers: need at least"},
        {"hidden = tanh", "hidden = softmax", "x.ini:5: [network] hidden: expected sigmoid"},
        {"output = sigmoid", "output = linear\ncost = cross_entropy", "set twice"},
        {"cost = quadratic", "cost = cross_entropy\noutput = linear", "set twice"},
        {"layers = 2, 3 ,1\n", "", "x.ini:3: missing required key 'layers' in [network]"},
        {"threads = 3", "threads = many", "x.ini:13: [train] threads: expected auto"},
        {"[data]", "junk\n[data]", "x.ini:1: syntax error"},
        {"threads = 3", "threads = 3\n[comm]\noverlap = yes",
         "x.ini:15: [comm] overlap: expected true or false, got 'yes'"},
        {"threads = 3", "threads = 3\n[comm]\nbucket_mb = 0",
         "x.ini:15: [comm] bucket_mb: 0 is out of range (0.001 to 1024)"},
        {"threads = 3", "threads = 3\n[comm]\ndtype = fp8",
         "x.ini:15: [comm] dtype: expected float or bf16, got 'fp8'"},
        {"[network]", "placement = shared\n[network]",
         "x.ini:3: [data] placement: expected auto, replicated, node or stream, got 'shared'"},
        {"[network]", "max_memory_mb = -1\n[network]",
         "x.ini:3: [data] max_memory_mb: -1 is out of range (0 (what the node has) to 1e12)"},
        {"momentum = 0.9", "precision = fp16",
         "x.ini:12: [train] precision: expected float or bf16, got 'fp16'"},
        {"momentum = 0.9", "optimizer = bfgs",
         "x.ini:12: [train] optimizer: expected sgd, adam or lbfgs, got 'bfgs'"},
        {"momentum = 0.9", "momentum = 0.9\noptimizer = lbfgs",
         "x.ini:12: [train] momentum applies to optimizer = sgd (lbfgs has no momentum)"},
        {"momentum = 0.9", "optimizer = lbfgs\nlr_schedule = cosine",
         "x.ini:13: [train] lr_schedule = cosine: lbfgs finds each step by a line search"},
        {"momentum = 0.9", "lbfgs_history = 0",
         "x.ini:12: [train] lbfgs_history: 0 is out of range"},
        {"momentum = 0.9", "lbfgs_history = 101",
         "x.ini:12: [train] lbfgs_history: 101 is out of range (1 to 100)"},
        {"momentum = 0.9", "lbfgs_tolerance = -1",
         "x.ini:12: [train] lbfgs_tolerance: -1 is out of range"},
        {"learning_rate = 0.5\n", "", "x.ini:8: missing required key 'learning_rate' in [train]"},
        {"momentum = 0.9", "momentum = 0.9\noptimizer = adam",
         "x.ini:12: [train] momentum applies to optimizer = sgd (adam has beta1)"},
        {"momentum = 0.9", "beta2 = 1", "x.ini:12: [train] beta2: 1 is out of range"},
        {"momentum = 0.9", "weight_decay = adamw",
         "x.ini:12: [train] weight_decay: expected coupled or decoupled, got 'adamw'"},
        {"momentum = 0.9", "lr_schedule = linear",
         "x.ini:12: [train] lr_schedule: expected constant, step, cosine or inverse_scaling, "
         "got 'linear'"},
        {"momentum = 0.9", "lr_gamma = 1.5", "x.ini:12: [train] lr_gamma: 1.5 is out of range"},
        {"momentum = 0.9", "lr_step_epochs = 0",
         "x.ini:12: [train] lr_step_epochs: 0 is out of range"},
        {"threads = 3", "threads = 3\n[checkpoint]\nevery_seconds = -1",
         "x.ini:15: [checkpoint] every_seconds: -1 is out of range (0 (off) to 1e9 seconds)"},
        {"threads = 3", "threads = 3\n[checkpoint]\nevery_seconds = soon",
         "x.ini:15: [checkpoint] every_seconds: expected"},
        /* Under a second the watchdog (0.1 s ticks, ranks 0.2 s apart) cannot keep it. */
        {"threads = 3", "threads = 3\n[comm]\ntimeout = 0.5",
         "x.ini:15: [comm] timeout: 0.5 s is below the 1 s the watchdog can honour"},
        {"threads = 3", "threads = 3\n[comm]\ntimeout = 1e-9", "x.ini:15: [comm] timeout: 1e-09 s"},
        {"threads = 3", "threads = 3\n[comm]\ntimeout = -1",
         "x.ini:15: [comm] timeout: -1 is out of range (0 (off), or 1 to 1e9 seconds)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[2048], err[512] = "";
        const char *at = strstr(good, cases[i].replace);
        assert_non_null(at);
        snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - good), good, cases[i].with,
                 at + strlen(cases[i].replace));
        bp_config c;
        assert_int_equal(bp_config_parse(&c, "x.ini", text, NULL, 0, err, sizeof(err)), BP_EINVAL);
        if (!strstr(err, cases[i].message))
            print_error("case %zu: got '%s', want '%s'\n", i, err, cases[i].message);
        assert_non_null(strstr(err, cases[i].message));
    }
}

static void test_cross_key_checks(void **state)
{
    (void)state;
    bp_config c;
    char err[512];
    const char *linear_ce[] = {"network.output=linear", "network.cost=cross_entropy"};
    assert_int_equal(bp_config_parse(&c, "x.ini", good, linear_ce, 2, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "--set: [network] cross_entropy needs"));
    /* The same problem from the file: blamed on the cost key's line. */
    const char *text = "[data]\ntrain = builtin:xor\n[network]\nlayers = 2, 1\noutput = linear\n"
                       "cost = cross_entropy\n[train]\nepochs = 1\nbatch_size = 1\n"
                       "learning_rate = 1\n";
    assert_int_equal(bp_config_parse(&c, "y.ini", text, NULL, 0, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "y.ini:6: [network] cross_entropy needs"));
    const char *both[] = {"data.validation=v.h5", "data.validation_split=10"};
    assert_int_equal(bp_config_parse(&c, "x.ini", good, both, 2, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "not both"));
    /* lbfgs finds its own steps: learning_rate may be left out, and the defaults hold. */
    const char *lbfgs[] = {"train.optimizer=lbfgs", "train.momentum=0"};
    const char *no_rate = "[data]\ntrain = builtin:xor\n[network]\nlayers = 2, 1\n[train]\n"
                          "epochs = 1\nbatch_size = 4\n";
    assert_int_equal(bp_config_parse(&c, "z.ini", no_rate, lbfgs, 2, err, sizeof(err)), 0);
    assert_int_equal(c.optimizer, BP_OPT_LBFGS);
    assert_int_equal(c.lbfgs_history, 10);
    assert_float_equal(c.lbfgs_tolerance, 1e-5, 0);
    assert_int_equal(bp_config_parse(&c, "z.ini", no_rate, NULL, 0, err, sizeof(err)), BP_EINVAL);
    assert_string_equal(err, "z.ini:5: missing required key 'learning_rate' in [train]");
    /* One key twice on the command line is refused, as it is in a file; a --set over
     * the file's key is what --set is for. The limits of [comm] timeout hold there too. */
    const char *twice[] = {"train.epochs=3", "train.epochs=4"};
    assert_int_equal(bp_config_parse(&c, "x.ini", good, twice, 2, err, sizeof(err)), BP_EINVAL);
    assert_string_equal(err, "--set train.epochs=4: [train] epochs is set twice on the command "
                             "line");
    const char *timeouts[][1] = {{"comm.timeout=0"}, {"comm.timeout=1"}, {"comm.timeout=0.99"}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(bp_config_parse(&c, "x.ini", good, timeouts[i], 1, err, sizeof(err)),
                         i < 2 ? 0 : BP_EINVAL);
    assert_non_null(strstr(err, "--set: [comm] timeout: 0.99 s is below the 1 s"));
    const char *bad_set[] = {"train.epochs"};
    assert_int_equal(bp_config_parse(&c, "x.ini", good, bad_set, 1, err, sizeof(err)), BP_EINVAL);
    assert_string_equal(err, "--set train.epochs: expected SECTION.KEY=VALUE");
}

/* Shards of m examples over `size` ranks: contiguous, covering, sizes within one. */
static void test_shards(void **state)
{
    (void)state;
    for (size_t m = 0; m < 40; m++)
        for (int size = 1; size <= 7; size++) {
            size_t next = 0, smallest = m, largest = 0;
            for (int r = 0; r < size; r++) {
                size_t lo, hi;
                bp__shard(m, r, size, &lo, &hi);
                assert_int_equal(lo, next);
                next = hi;
                smallest = hi - lo < smallest ? hi - lo : smallest;
                largest = hi - lo > largest ? hi - lo : largest;
            }
            assert_int_equal(next, m);
            assert_true(largest - smallest <= 1);
        }
}

/* Two "ranks" in one process: the shards' gradient sums add up to the whole batch's. */
static void test_shard_gradients_sum_to_batch_gradient(void **state)
{
    (void)state;
    int sizes[] = {3, 5, 2};
    bp_net net;
    assert_int_equal(bp_net_create(&net, 3, sizes, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY), 0);
    bp_rng rng;
    bp_rng_seed(&rng, 3);
    bp_net_init(&net, BP_INIT_HE, 0, &rng);
    enum { M = 7 };
    bp_real X[M * 3], Y[M * 2];
    for (int i = 0; i < M * 3; i++)
        X[i] = (bp_real)bp_rng_gaussian(&rng);
    for (int i = 0; i < M; i++)
        Y[2 * i] = (bp_real)(i % 2), Y[2 * i + 1] = (bp_real)(1 - i % 2);
    bp_workspace ws;
    assert_int_equal(bp_workspace_create(&ws, &net, M), 0);
    bp_real *whole = calloc(net.nparams, sizeof(bp_real));
    bp_real *parts = calloc(net.nparams, sizeof(bp_real));
    bp_forward(&net, &ws, X, M);
    bp_backward(&net, &ws, Y, M, whole, 0);
    for (int r = 0; r < 2; r++) {
        size_t lo, hi;
        bp__shard(M, r, 2, &lo, &hi);
        bp_forward(&net, &ws, X + lo * 3, hi - lo);
        bp_backward(&net, &ws, Y + lo * 2, hi - lo, parts, r > 0); /* overwrite, then add */
    }
    for (size_t i = 0; i < net.nparams; i++)
        assert_float_equal(parts[i], whole[i], 1e-5);
    free(whole);
    free(parts);
    bp_workspace_free(&ws);
    bp_net_free(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_values_and_defaults),
        cmocka_unit_test(test_set_overrides_and_format_round_trips),
        cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_cross_key_checks),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_shard_gradients_sum_to_batch_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
