/* backprop gradcheck CONFIG: backprop's gradient, computed through the same sharded step
 * and allreduce as training, against centred differences of the cost. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backprop/config.h"
#include "backprop/gradcheck.h"
#include "cli.h"

#define MAX_SETS 64
#define MAX_EXAMPLES 1000000
/* The numeric side is evaluated in double in either build (bp_gradcheck); the tolerance
 * bounds the analytic side's own rounding: ~1e-7 relative in float (configs/xor.ini:
 * 3.9e-7), ~1e-10 in double, far below the O(1) error of a wrong gradient. */
#define DEFAULT_EPSILON 1e-5
#ifdef BACKPROP_DOUBLE
#define DEFAULT_TOLERANCE 1e-7
#else
#define DEFAULT_TOLERANCE 1e-4
#endif

static const char gradcheck_usage[] =
    "usage: backprop gradcheck CONFIG [--set SECTION.KEY=VALUE]... [--epsilon E]\n"
    "                          [--tolerance T] [--examples M]\n"
    "\n"
    "Builds CONFIG's network from its seed and compares backprop's gradient of the cost\n"
    "(mean over the first M training examples, default 16, plus the L2 term) with centred\n"
    "differences. Prints one line per layer and last 'max relative error: X', where a\n"
    "layer's error is ||g - n|| / max(||g||, ||n||); exits 1 when X > T.\n";

typedef struct {
    const char *config;
    const char *sets[MAX_SETS];
    int nsets;
    double epsilon, tolerance;
    long examples;
} gc_args;

static int parse_args(int argc, char **argv, gc_args *a, char *err, size_t len)
{
    memset(a, 0, sizeof(*a));
    a->epsilon = DEFAULT_EPSILON, a->tolerance = DEFAULT_TOLERANCE, a->examples = 16;
    for (int i = 1; i < argc; i++) {
        const char *v, *name = argv[i];
        int r;
        if ((r = bp_arg_value(argc, argv, &i, "--set", &v)) > 0) {
            if (a->nsets == MAX_SETS)
                return snprintf(err, len, "at most %d --set options", MAX_SETS), -1;
            a->sets[a->nsets++] = v;
        } else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--epsilon", &v)) > 0)
            r = bp_arg_positive(v, &a->epsilon) < 0 ? -2 : 1;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--tolerance", &v)) > 0)
            r = bp_arg_positive(v, &a->tolerance) < 0 ? -2 : 1;
        else if (r == 0 && (r = bp_arg_value(argc, argv, &i, "--examples", &v)) > 0)
            r = bp_arg_long(v, 1, MAX_EXAMPLES, &a->examples) < 0 ? -3 : 1;
        else if (r == 0 && name[0] != '-' && !a->config)
            a->config = name, r = 1;
        if (r == -2)
            return snprintf(err, len, "%s: expected a positive number, got '%s'", name, v), -1;
        if (r == -3)
            return snprintf(err, len, "%s: expected an integer from 1 to %d, got '%s'", name,
                            MAX_EXAMPLES, v),
                   -1;
        if (r <= 0)
            return snprintf(err, len, r < 0 ? "%s needs a value" : "unexpected argument '%s'",
                            name),
                   -1;
    }
    if (!a->config)
        return snprintf(err, len, "gradcheck: missing CONFIG"), -1;
    return 0;
}

static void print_results(const bp_gradcheck_report *rep, double *worst)
{
    const bp_gradcheck_layer *res = rep->layers;
    const int *sizes = rep->sizes;
    *worst = 0;
    for (int l = 0; l < rep->nlayers; l++) {
        printf("layer %d (%dx%d): %zu checked, relative error %.3e, worst entry %.3e, "
               "largest gradient %.3e",
               l, sizes[l + 1], sizes[l], res[l].checked, res[l].rel_error, res[l].max_rel_error,
               res[l].max_abs_grad);
        if (res[l].kinks)
            printf(", %zu skipped at relu kinks", res[l].kinks);
        printf("\n");
        *worst = fmax(*worst, res[l].rel_error);
    }
    printf("max relative error: %.3e\n", *worst);
}

/* x as the fewest digits that read back to it: the same value whatever its spelling
 * ("1e-5", "0.00001"), and a short line when the ranks' values differ. */
static void shortest(char *buf, size_t len, double x)
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, len, "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

/* The options that change what the ranks compute together (--examples: the rows of the
 * gradient's sum) or what they decide (--epsilon, --tolerance), as lines to compare. */
static void options_text(const gc_args *a, char *buf, size_t len)
{
    char epsilon[32], tolerance[32];
    shortest(epsilon, sizeof(epsilon), a->epsilon);
    shortest(tolerance, sizeof(tolerance), a->tolerance);
    snprintf(buf, len, "--epsilon = %s\n--examples = %ld\n--tolerance = %s\n", epsilon, a->examples,
             tolerance);
}

static int check(const bp_comm *comm, const gc_args *a, char *err, size_t len)
{
    static bp_config cfg;
    int rc = bp_cli_config_load(&cfg, a->config, a->sets, a->nsets, err, len);
    if (rc == 0)
        bp_comm_watch(comm, cfg.comm_timeout, NULL, NULL); /* a thread already runs: no error */
    int status = bp_cli_agree(comm, rc < 0 ? bp_cli_setup_status(rc) : 0, err);
    if (status)
        return status;
    /* The ranks sum one gradient: of one config, one data set (by contents) and one set of
     * options. */
    char options[128];
    options_text(a, options, sizeof(options));
    bp_gradcheck_run_opts opts = {.epsilon = a->epsilon,
                                  .examples = a->examples,
                                  .options = options,
                                  .options_what = "command line",
                                  .options_hint = "check each rank's options"};
    bp_gradcheck_report rep;
    rc = bp_gradcheck_run(comm, &cfg, &opts, &rep, err, len);
    if (rc < 0)
        return bp_cli_report(
            comm, rep.during_work ? EXIT_FAILURE_DURING_WORK : bp_cli_setup_status(rc), err);
    double worst;
    if (comm->rank == 0)
        print_results(&rep, &worst);
    /* Every rank computed the same numbers; each decides the same way. */
    for (int l = 0; l < rep.nlayers; l++)
        if (!(rep.layers[l].rel_error <= a->tolerance))
            status = EXIT_FAILURE_DURING_WORK;
    bp_gradcheck_report_free(&rep);
    return status;
}

int bp_cmd_gradcheck(int argc, char **argv)
{
    bp_comm comm;
    int started = bp_cli_init(&argc, &argv, &comm);
    if (started != 0)
        return started;
    static char err[2048];
    gc_args a;
    int status = EXIT_OK;
    if (bp_cli_wants_help(argc, argv)) {
        if (comm.rank == 0)
            fputs(gradcheck_usage, stdout);
    } else if (parse_args(argc, argv, &a, err, sizeof(err)) < 0) {
        status = bp_cli_agree(&comm, EXIT_BAD_INPUT, err);
    } else {
        status = check(&comm, &a, err, sizeof(err));
    }
    bp_comm_finalize(&comm);
    return status;
}
