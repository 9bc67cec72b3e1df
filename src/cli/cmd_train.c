/* backprop train CONFIG [--set SECTION.KEY=VALUE]... [--resume CKPT|latest] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "blas.h"
#include "cli.h"
#include "train.h"

#define MAX_SETS 64

static const char train_usage[] =
    "usage: backprop train CONFIG [--set SECTION.KEY=VALUE]... [--resume CKPT|latest]\n"
    "\n"
    "Trains the network CONFIG describes; under mpirun -np N each rank computes the\n"
    "gradient of 1/N of every mini-batch. --set overrides a config key; --resume continues\n"
    "from a checkpoint (latest = the newest in [checkpoint] dir) at the exact example where\n"
    "it was taken.\n";

typedef struct {
    const char *config, *resume;
    const char *sets[MAX_SETS];
    int nsets;
} train_args;

static int parse_args(int argc, char **argv, train_args *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if ((r = bp_arg_value(argc, argv, &i, "--set", &v)) != 0) {
            if (r < 0 || a->nsets == MAX_SETS)
                return snprintf(err, errlen,
                                r < 0 ? "--set needs SECTION.KEY=VALUE"
                                      : "at most %d --set options",
                                MAX_SETS),
                       -1;
            a->sets[a->nsets++] = v;
        } else if ((r = bp_arg_value(argc, argv, &i, "--resume", &v)) != 0) {
            if (r < 0)
                return snprintf(err, errlen, "--resume needs a checkpoint path or 'latest'"), -1;
            a->resume = v;
        } else if (argv[i][0] == '-' || a->config) {
            return snprintf(err, errlen,
                            "train: unexpected argument '%s' (see backprop train "
                            "--help)",
                            argv[i]),
                   -1;
        } else {
            a->config = argv[i];
        }
    }
    if (!a->config)
        return snprintf(err, errlen, "train: missing CONFIG (see backprop train --help)"), -1;
    return 0;
}

static void print_banner(const bp_trainer *t)
{
    const bp_config *c = t->cfg;
    printf("backprop %s (%s): layers", BP_VERSION, BP_SCALAR_NAME);
    for (int i = 0; i < c->nsizes; i++)
        printf("%s%d", i ? "," : " ", c->sizes[i]);
    printf(" %s/%s/%s, %zu parameters\n", bp_activation_name(c->hidden),
           bp_activation_name(c->output), bp_cost_name(c->cost), t->net.nparams);
    printf("data: %zu train, %zu validation, %zu test; batch %ld over %d rank%s x %d BLAS "
           "thread%s\n",
           t->train.n, t->val.n, t->test.n, c->batch_size, t->comm.size,
           t->comm.size > 1 ? "s" : "", t->threads, t->threads > 1 ? "s" : "");
    const char *replaced = bp_blas_replaced_kernel();
    if (replaced)
        printf("BLAS: %s; OpenBLAS %s kernel (chosen by backprop for this AVX-512 CPU over "
               "%s; BACKPROP_BLAS_KERNEL=keep to keep it)\n",
               bp_gemm_libraries(), bp_blas_kernel(), replaced);
    else
        printf("BLAS: %s; OpenBLAS %s kernel\n", bp_gemm_libraries(), bp_blas_kernel());
    if (t->resumed)
        printf("resumed at epoch %ld, step %ld of the epoch (global step %ld)\n", t->st.epoch + 1,
               t->st.batch_in_epoch, t->st.global_step);
    fflush(stdout);
}

/* Where a step's time goes, on rank 0, in milliseconds per step: what to look at when
 * adding ranks does not add speed. Collective: every rank calls it. */
static void print_step_time(const bp_trainer *t, const bp_comm *comm)
{
    double n = (double)t->timed_steps, slowest = t->compute_s;
    int rc = bp_comm_max_double(comm, &slowest);
    if (comm->rank != 0 || n == 0)
        return;
    double compute = 1e3 * t->compute_s / n, reduce = 1e3 * t->allreduce_s / n;
    double update = 1e3 * t->update_s / n, step = compute + reduce + update;
    printf("step time: %.3f ms = compute %.3f", step, compute);
    if (comm->size > 1) {
        if (rc == 0)
            printf(" (slowest rank %.3f)", 1e3 * slowest / n);
        printf(" + allreduce %.3f (%.1f%%)", reduce, 100 * reduce / step);
    }
    printf(" + update %.3f  [rank 0, mean of %ld steps]\n", update, t->timed_steps);
}

static int train_main(const bp_comm *comm, const train_args *a)
{
    static char err[2048];
    static bp_config cfg;
    int rc = bp_config_load(&cfg, a->config, a->sets, a->nsets, err, sizeof(err));
    int status = bp_cli_agree(comm, rc < 0 ? EXIT_BAD_INPUT : 0, err);
    if (status)
        return status;
    size_t need = bp_config_format(&cfg, NULL, 0) + 1;
    char *text = malloc(need);
    if (!text)
        return bp_cli_agree(comm, EXIT_FAILURE_DURING_WORK, "out of memory");
    bp_config_format(&cfg, text, need);
    bp_trainer t;
    rc = bp_trainer_setup(&t, &cfg, text, comm, a->resume, err, sizeof(err));
    status = bp_cli_agree(comm, rc < 0 ? bp_cli_setup_status(rc) : 0, err);
    if (status == 0) {
        if (comm->rank == 0)
            print_banner(&t);
        rc = bp_trainer_run(&t, err, sizeof(err));
        status = bp_cli_agree(comm, rc < 0 ? EXIT_FAILURE_DURING_WORK : 0, err);
    }
    if (status == 0)
        print_step_time(&t, comm);
    if (status == 0 && comm->rank == 0) {
        printf("done: checkpoint %s/latest.h5, metrics %s\n", cfg.checkpoint_dir, cfg.metrics);
    }
    bp_trainer_free(&t);
    free(text);
    return status;
}

int bp_cmd_train(int argc, char **argv)
{
    bp_comm comm;
    if (bp_comm_init(&argc, &argv, &comm) < 0) {
        bp_cli_error(0, "MPI initialisation failed");
        return EXIT_FAILURE_DURING_WORK;
    }
    int status;
    char err[512];
    train_args a;
    if (bp_cli_wants_help(argc, argv)) {
        if (comm.rank == 0)
            fputs(train_usage, stdout);
        status = EXIT_OK;
    } else if (parse_args(argc, argv, &a, err, sizeof(err)) < 0) {
        if (comm.rank == 0)
            bp_cli_error(0, "%s", err);
        status = EXIT_BAD_INPUT;
    } else {
        status = train_main(&comm, &a);
    }
    bp_comm_finalize();
    return status;
}
