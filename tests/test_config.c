/* Unit tests of the config reader (and its key table: docs/config.md is checked against it) and of
 * the sharding arithmetic of the distributed step. */
#include <math.h>
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
    assert_int_equal(c.any_scale, 0); /* reproducible = same_ranks */
    assert_int_equal(c.micro_batch, 64);
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
        char message[128]; /* an array: never null (GCC's format check cannot tell a pointer) */
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
         "x.ini:12: [train] optimizer: expected sgd, adam, lbfgs or nesterov, got 'bfgs'"},
        {"momentum = 0.9", "momentum = 0.9\noptimizer = lbfgs",
         "x.ini:12: [train] momentum applies to optimizer = sgd or nesterov (lbfgs has none)"},
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
         "x.ini:12: [train] momentum applies to optimizer = sgd or nesterov (adam has beta1)"},
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
        /* What any_scale refuses, at the key that asks for it. */
        {"threads = 3", "threads = 3\nreproducible = any_scale\nprecision = bf16",
         "x.ini:15: [train] reproducible = any_scale does not take precision = bf16 "
         "(docs/reproducibility.md)"},
        {"threads = 3", "threads = 3\nreproducible = any_scale\n[comm]\ndtype = bf16",
         "x.ini:16: [train] reproducible = any_scale does not take [comm] dtype = bf16 "
         "(docs/reproducibility.md)"},
        {"threads = 3", "threads = 3\nmicro_batch = 0",
         "x.ini:14: [train] micro_batch: 0 is out of range"},
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
    assert_non_null(strstr(err, "override: [network] cross_entropy needs"));
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
    assert_string_equal(err, "override train.epochs=4: [train] epochs is set twice on the command "
                             "line");
    const char *timeouts[][1] = {{"comm.timeout=0"}, {"comm.timeout=1"}, {"comm.timeout=0.99"}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(bp_config_parse(&c, "x.ini", good, timeouts[i], 1, err, sizeof(err)),
                         i < 2 ? 0 : BP_EINVAL);
    assert_non_null(strstr(err, "override: [comm] timeout: 0.99 s is below the 1 s"));
    const char *bad_set[] = {"train.epochs"};
    assert_int_equal(bp_config_parse(&c, "x.ini", good, bad_set, 1, err, sizeof(err)), BP_EINVAL);
    assert_string_equal(err, "override train.epochs: expected SECTION.KEY=VALUE");
}

/* Every key set away from its default, and the effective config the writer gave for it
 * before the writer became a loop over the key table (bp_config_format's old snprintf).
 * Checkpoints store this text and resumes compare it: not a byte of it may move. */
static const char *const every_key_sets[] = {"data.train_labels=tl",
                                             "data.test=t.h5",
                                             "data.test_labels=te",
                                             "data.validation_split=5",
                                             "data.limit=100",
                                             "data.placement=node",
                                             "data.max_memory_mb=1.5",
                                             "network.layers=2,5,5,1",
                                             "network.hidden=tanh",
                                             "network.output=linear",
                                             "network.cost=quadratic",
                                             "network.init=he",
                                             "network.init_epsilon=0.3",
                                             "train.lambda=0.001",
                                             "train.momentum=0.7",
                                             "train.optimizer=nesterov",
                                             "train.beta1=0.8",
                                             "train.beta2=0.99",
                                             "train.adam_epsilon=1e-7",
                                             "train.weight_decay=decoupled",
                                             "train.precision=bf16",
                                             "train.lbfgs_history=7",
                                             "train.lbfgs_tolerance=0.001",
                                             "train.lr_schedule=cosine",
                                             "train.lr_step_epochs=3",
                                             "train.lr_gamma=0.5",
                                             "train.lr_min=0.01",
                                             "train.lr_power=0.25",
                                             "train.early_stopping=4",
                                             "train.seed=18446744073709551615",
                                             "train.threads=3",
                                             "train.micro_batch=32",
                                             "checkpoint.dir=out",
                                             "checkpoint.every_epochs=2",
                                             "checkpoint.every_steps=10",
                                             "checkpoint.every_seconds=1.5",
                                             "checkpoint.keep=0",
                                             "comm.timeout=60",
                                             "comm.overlap=false",
                                             "comm.dtype=bf16",
                                             "comm.bucket_mb=0.25",
                                             "log.metrics=m.csv",
                                             "log.progress=off",
                                             "log.trace=tr.json",
                                             "log.trace_steps=50",
                                             "log.straggler_factor=2"};

static const char every_key_text[] = "[data]\n"
                                     "train = builtin:xor\n"
                                     "train_labels = tl\n"
                                     "validation = \n"
                                     "validation_labels = \n"
                                     "validation_split = 5\n"
                                     "test = t.h5\n"
                                     "test_labels = te\n"
                                     "limit = 100\n"
                                     "placement = node\n"
                                     "max_memory_mb = 1.5\n"
                                     "\n"
                                     "[network]\n"
                                     "layers = 2, 5, 5, 1\n"
                                     "hidden = tanh\n"
                                     "output = linear\n"
                                     "cost = quadratic\n"
                                     "init = he\n"
                                     "init_epsilon = 0.29999999999999999\n"
                                     "\n"
                                     "[train]\n"
                                     "epochs = 7\n"
                                     "batch_size = 4\n"
                                     "learning_rate = 0.5\n"
                                     "lambda = 0.001\n"
                                     "momentum = 0.69999999999999996\n"
                                     "optimizer = nesterov\n"
                                     "beta1 = 0.80000000000000004\n"
                                     "beta2 = 0.98999999999999999\n"
                                     "adam_epsilon = 9.9999999999999995e-08\n"
                                     "weight_decay = decoupled\n"
                                     "precision = bf16\n"
                                     "lbfgs_history = 7\n"
                                     "lbfgs_tolerance = 0.001\n"
                                     "lr_schedule = cosine\n"
                                     "lr_step_epochs = 3\n"
                                     "lr_gamma = 0.5\n"
                                     "lr_min = 0.01\n"
                                     "lr_power = 0.25\n"
                                     "early_stopping = 4\n"
                                     "seed = 18446744073709551615\n"
                                     "threads = 3\n"
                                     "reproducible = same_ranks\n"
                                     "micro_batch = 32\n"
                                     "\n"
                                     "[checkpoint]\n"
                                     "dir = out\n"
                                     "every_epochs = 2\n"
                                     "every_steps = 10\n"
                                     "every_seconds = 1.5\n"
                                     "keep = 0\n"
                                     "\n"
                                     "[comm]\n"
                                     "timeout = 60\n"
                                     "overlap = false\n"
                                     "dtype = bf16\n"
                                     "bucket_mb = 0.25\n"
                                     "\n"
                                     "[log]\n"
                                     "metrics = m.csv\n"
                                     "progress = off\n"
                                     "trace = tr.json\n"
                                     "trace_steps = 50\n"
                                     "straggler_factor = 2\n";

static void test_format_is_byte_identical_to_the_stored_text(void **state)
{
    (void)state;
    bp_config a, b;
    char err[512] = "", text[8192];
    int n = (int)(sizeof(every_key_sets) / sizeof(every_key_sets[0]));
    assert_int_equal(bp_config_parse(&a, "x.ini", good, every_key_sets, n, err, sizeof(err)), 0);
    size_t len = bp_config_format(&a, text, sizeof(text));
    assert_string_equal(text, every_key_text);
    assert_int_equal(len, strlen(every_key_text));
    assert_int_equal(bp_config_format(&a, NULL, 0), len);
    /* Cut short, it still says the whole length and ends the text it kept, like snprintf. */
    char small[11];
    memset(small, 'Z', sizeof(small));
    assert_int_equal(bp_config_format(&a, small, 10), len);
    assert_memory_equal(small, every_key_text, 9);
    assert_int_equal(small[9], 0);
    assert_int_equal(small[10], 'Z');
    assert_int_equal(bp_config_parse(&b, "effective", text, NULL, 0, err, sizeof(err)), 0);
    assert_memory_equal(&a, &b, sizeof(a));
}

/* A config of the required keys alone: everything else takes its default. */
static const char *const minimal = "[data]\ntrain = builtin:xor\n[network]\nlayers = 2, 1\n"
                                   "[train]\nepochs = 1\nbatch_size = 1\nlearning_rate = 1\n";

static int is_enum(const bp_config_key *k)
{
    return strstr(k->type, " | ") && !strstr(k->type, "…");
}

/* Each enum's message lists every name of its table, in order, and each name is taken. */
static void test_enum_errors_list_every_name(void **state)
{
    (void)state;
    int enums = 0;
    bp_config_key k;
    for (size_t i = 0; bp_config_describe(i, &k) == 0; i++) {
        if (!is_enum(&k))
            continue;
        enums++;
        char names[128][32], set[160], want[1024], err[1024];
        int n = 0;
        for (const char *p = k.type; n < 128; n++) {
            const char *bar = strstr(p, " | ");
            int len = bar ? (int)(bar - p) : (int)strlen(p);
            snprintf(names[n], sizeof(names[n]), "%.*s", len, p);
            if (!bar) {
                n++;
                break;
            }
            p = bar + 3;
        }
        int at = snprintf(want, sizeof(want), "override %s.%s=bogus: [%s] %s: expected ", k.section,
                          k.key, k.section, k.key);
        for (int j = 0; j < n; j++)
            at += snprintf(want + at, sizeof(want) - (size_t)at, "%s%s",
                           j == 0       ? ""
                           : j == n - 1 ? " or "
                                        : ", ",
                           names[j]);
        snprintf(want + at, sizeof(want) - (size_t)at, ", got 'bogus'");
        snprintf(set, sizeof(set), "%s.%s=bogus", k.section, k.key);
        const char *sets[] = {set};
        bp_config c;
        assert_int_equal(bp_config_parse(&c, "x.ini", minimal, sets, 1, err, sizeof(err)),
                         BP_EINVAL);
        assert_string_equal(err, want);
        for (int j = 0; j < n; j++) {
            snprintf(set, sizeof(set), "%s.%s=%.31s", k.section, k.key, names[j]);
            err[0] = 0;
            bp_config_parse(&c, "x.ini", minimal, sets, 1, err, sizeof(err));
            if (strstr(err, "expected"))
                print_error("%s: %s\n", set, err);
            assert_null(strstr(err, "expected"));
        }
    }
    assert_int_equal(enums, 13);
    /* The activations' own names say which value each spelling stores. */
    static const char *const acts[] = {"sigmoid", "relu", "tanh", "linear", "softmax"};
    for (int j = 0; j < 5; j++) {
        char set[2][64], err[512];
        snprintf(set[0], sizeof(set[0]), "network.output=%s", acts[j]);
        snprintf(set[1], sizeof(set[1]), "network.hidden=%s", acts[j]);
        const char *sets[] = {set[0], set[1], "network.cost=quadratic", "network.layers=2,3,2"};
        bp_config c;
        bp_activation a;
        assert_int_equal(bp_activation_parse(acts[j], &a), 0);
        if (bp_config_parse(&c, "x.ini", minimal, sets, 4, err, sizeof(err)) == 0)
            assert_true(c.output == a && c.hidden == a);
        else
            assert_non_null(strstr(err, "expected"));
    }
}

/* Every numeric key: its ends, refused just outside and taken just inside. The bounds
 * here are written out again on purpose, against the table. */
static void test_numeric_ranges_refused_at_both_ends(void **state)
{
    (void)state;
    enum { INT, REAL, OPEN_LO, OPEN_HI };
    static const struct {
        const char *key;
        double lo, hi;
        int kind;
    } ranges[] = {
        {"data.validation_split", 0, 1e15, INT},
        {"data.limit", 0, 1e15, INT},
        {"data.max_memory_mb", 0, 1e12, REAL},
        {"network.init_epsilon", 0, 1e300, OPEN_LO},
        {"train.epochs", 1, 1e9, INT},
        {"train.batch_size", 1, 1e8, INT},
        {"train.learning_rate", 0, 1e300, OPEN_LO},
        {"train.lambda", 0, 1e300, REAL},
        {"train.momentum", 0, 1, OPEN_HI},
        {"train.beta1", 0, 1, OPEN_HI},
        {"train.beta2", 0, 1, OPEN_HI},
        {"train.adam_epsilon", 0, 1, OPEN_LO},
        {"train.lbfgs_history", 1, 100, INT},
        {"train.lbfgs_tolerance", 0, 1e300, REAL},
        {"train.lr_step_epochs", 1, 1e9, INT},
        {"train.lr_gamma", 0, 1, OPEN_LO},
        {"train.lr_min", 0, 1e300, REAL},
        {"train.lr_power", 0, 10, REAL},
        {"train.early_stopping", 0, 1e9, INT},
        {"train.threads", 1, 4096, INT},
        {"train.micro_batch", 1, 1e8, INT},
        {"checkpoint.every_epochs", 0, 1e9, INT},
        {"checkpoint.every_steps", 0, 1e15, INT},
        {"checkpoint.every_seconds", 0, 1e9, REAL},
        {"checkpoint.keep", 0, 1e9, INT},
        {"comm.timeout", 0, 1e9, REAL},
        {"comm.bucket_mb", 0.001, 1024, REAL},
        {"log.trace_steps", 0, 1000, INT},
        {"log.straggler_factor", 0, 1000, REAL},
    };
    size_t nranges = sizeof(ranges) / sizeof(ranges[0]);
    /* Every numeric key of the table is here (seed takes any 64-bit value: below). */
    bp_config_key k;
    size_t numeric = 0;
    for (size_t i = 0; bp_config_describe(i, &k) == 0; i++) {
        if (is_enum(&k) || strcmp(k.type, "path") == 0 || strcmp(k.type, "integers") == 0 ||
            strcmp(k.key, "seed") == 0)
            continue;
        numeric++;
        char name[96];
        snprintf(name, sizeof(name), "%s.%s", k.section, k.key);
        size_t j = 0;
        while (j < nranges && strcmp(ranges[j].key, name) != 0)
            j++;
        if (j == nranges)
            print_error("%s has no range in this test\n", name);
        assert_true(j < nranges);
    }
    assert_int_equal(numeric, nranges);
    for (size_t j = 0; j < nranges; j++) {
        int is_int = ranges[j].kind == INT;
        double lo = ranges[j].lo, hi = ranges[j].hi;
        /* {value, taken?} at each end */
        double out_lo = ranges[j].kind == OPEN_LO ? lo : is_int ? lo - 1 : nextafter(lo, -INFINITY);
        double out_hi = ranges[j].kind == OPEN_HI ? hi : is_int ? hi + 1 : nextafter(hi, INFINITY);
        double in_lo = ranges[j].kind == OPEN_LO ? nextafter(lo, INFINITY) : lo;
        double in_hi = ranges[j].kind == OPEN_HI ? nextafter(hi, -INFINITY) : hi;
        const double values[] = {out_lo, in_lo, in_hi, out_hi};
        for (int v = 0; v < 4; v++) {
            char set[128], err[512] = "";
            snprintf(set, sizeof(set), is_int ? "%s=%.0f" : "%s=%.17g", ranges[j].key, values[v]);
            const char *sets[] = {set};
            bp_config c;
            int rc = bp_config_parse(&c, "x.ini", minimal, sets, 1, err, sizeof(err));
            int taken = v == 1 || v == 2;
            if (rc != (taken ? 0 : BP_EINVAL))
                print_error("%s: %s\n", set, err);
            assert_int_equal(rc, taken ? 0 : BP_EINVAL);
            if (!taken)
                assert_true(strstr(err, "is out of range (") ||
                            strstr(err, "expected auto or 1..4096"));
        }
    }
    const char *seeds[][1] = {{"train.seed=0"},
                              {"train.seed=18446744073709551615"},
                              {"train.seed=-1"},
                              {"train.seed=18446744073709551616"}};
    for (int v = 0; v < 4; v++) {
        bp_config c;
        char err[512];
        assert_int_equal(bp_config_parse(&c, "x.ini", minimal, seeds[v], 1, err, sizeof(err)),
                         v < 2 ? 0 : BP_EINVAL);
    }
}

/* Setting a key to the default the table states changes nothing. */
static void test_stated_defaults_are_the_defaults(void **state)
{
    (void)state;
    bp_config plain, c;
    char err[512] = "";
    assert_int_equal(bp_config_parse(&plain, "x.ini", minimal, NULL, 0, err, sizeof(err)), 0);
    bp_config_key k;
    int checked = 0;
    for (size_t i = 0; bp_config_describe(i, &k) == 0; i++) {
        if (strncmp(k.fallback, "required", 8) == 0)
            continue;
        char set[256];
        /* Paths default to unset ("—"), dir and metrics to names made from others. */
        const char *value =
            strcmp(k.fallback, "—") == 0 || strchr(k.fallback, '<') ? NULL : k.fallback;
        if (!value)
            assert_true(strcmp(k.type, "path") == 0);
        snprintf(set, sizeof(set), "%s.%s=%s", k.section, k.key, value ? value : "");
        const char *sets[] = {set};
        assert_int_equal(bp_config_parse(&c, "x.ini", minimal, sets, 1, err, sizeof(err)), 0);
        assert_memory_equal(&c, &plain, sizeof(c));
        checked++;
    }
    /* all but train, layers, epochs, batch_size and learning_rate */
    assert_int_equal(checked, (int)bp_config_key_count() - 5);
    assert_int_equal(bp_config_describe(bp_config_key_count(), &k), BP_EINVAL);
}

/* A docs/config.md table cell as the table states it: no backticks, "\|" as "|". */
static void plain_cell(char *s)
{
    char *w = s;
    const char *r = s;
    while (*r == ' ')
        r++;
    for (; *r; r++) {
        if (*r == '`' || (*r == '\\' && r[1] == '|'))
            continue;
        *w++ = *r;
    }
    while (w > s && w[-1] == ' ')
        w--;
    *w = 0;
}

/* docs/config.md: every key of the table in its section's table, with the same type and
 * default, and no key the table lacks. Found beside this file (CMake compiles it by its
 * full path). */
static void test_docs_agree_with_the_table(void **state)
{
    (void)state;
    char path[4096];
    const char *slash = strrchr(__FILE__, '/');
    snprintf(path, sizeof(path), "%.*s/../docs/config.md", (int)(slash ? slash - __FILE__ : 1),
             slash ? __FILE__ : ".");
    FILE *f = fopen(path, "r");
    if (!f)
        print_error("cannot open %s\n", path);
    assert_non_null(f);
    size_t nkeys = bp_config_key_count();
    int *seen = calloc(nkeys, sizeof(int));
    char section[64] = "", line[8192];
    int rows = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "## [%63[a-z]]", section) == 1 || strncmp(line, "| `", 3) != 0)
            continue;
        char *cells[4];
        int n = 0;
        for (char *p = line + 1; n < 4; n++) {
            cells[n] = p;
            while (*p && !(*p == '|' && p[-1] != '\\'))
                p++;
            assert_int_equal(*p, '|');
            *p++ = 0;
            plain_cell(cells[n]);
        }
        bp_config_key k;
        size_t i = 0;
        while (bp_config_describe(i, &k) == 0 &&
               (strcmp(k.section, section) != 0 || strcmp(k.key, cells[0]) != 0))
            i++;
        if (i == nkeys)
            print_error("docs/config.md: [%s] %s is no key\n", section, cells[0]);
        assert_true(i < nkeys);
        if (strcmp(cells[1], k.type) != 0 || strcmp(cells[2], k.fallback) != 0)
            print_error("docs/config.md: [%s] %s: '%s', default '%s'; the table: '%s', '%s'\n",
                        section, cells[0], cells[1], cells[2], k.type, k.fallback);
        assert_string_equal(cells[1], k.type);
        assert_string_equal(cells[2], k.fallback);
        seen[i]++;
        rows++;
    }
    fclose(f);
    for (size_t i = 0; i < nkeys; i++) {
        bp_config_key k;
        bp_config_describe(i, &k);
        if (seen[i] != 1)
            print_error("docs/config.md lists [%s] %s %d times\n", k.section, k.key, seen[i]);
        assert_int_equal(seen[i], 1);
    }
    assert_int_equal(rows, (int)nkeys);
    free(seen);
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
        cmocka_unit_test(test_format_is_byte_identical_to_the_stored_text),
        cmocka_unit_test(test_enum_errors_list_every_name),
        cmocka_unit_test(test_numeric_ranges_refused_at_both_ends),
        cmocka_unit_test(test_stated_defaults_are_the_defaults),
        cmocka_unit_test(test_docs_agree_with_the_table),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_shard_gradients_sum_to_batch_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
