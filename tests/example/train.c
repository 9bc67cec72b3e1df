/* libbackprop in a program of your own, through its public headers alone: XOR (seed 000's
 * experiment) from a config written here, then a small data set this program makes in
 * memory and hands to the trainer. Each trained network is read back from the trainer. It
 * runs alone or under mpirun (rank 0 prints); DIR must be empty or new.
 *
 *     example-train DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/data.h"
#include "backprop/train.h"

/* What the run told us: every `every`-th epoch is printed, the last one's validation
 * accuracy kept. */
typedef struct {
    long every;
    double val_accuracy;
} report;

static void on_epoch(void *ctx, const bp_metrics_row *row, long epochs)
{
    report *r = ctx;
    r->val_accuracy = row->val_accuracy;
    if (row->epoch % r->every != 0 && row->epoch != epochs)
        return;
    printf("  epoch %5ld/%ld  cost %.5f", row->epoch, epochs, row->train_cost);
    if (row->train_accuracy == row->train_accuracy) /* not NaN */
        printf("  accuracy %.1f%%", 100 * row->train_accuracy);
    printf("\n");
}

/* Judges a trained network (rank 0): 0 when it learnt what it should. */
typedef int (*check_fn)(const bp_net *net, const report *r);

/* Parses ini, trains it to the end on data (in memory; NULL: the config's [data] files),
 * and hands the trained network to check on rank 0 before the trainer goes. 0, a BP_E*
 * code, or 1 when check refused the network. */
static int train(const bp_comm *comm, const char *ini, const bp_dataset *data, report *r,
                 check_fn check)
{
    char err[1024] = "";
    bp_config cfg;
    int rc = bp_config_parse(&cfg, "example", ini, NULL, 0, err, sizeof(err));
    bp_trainer *t = NULL;
    bp_trainer_options opts = {.train = data};
    if (rc == 0)
        rc = bp_trainer_create_with(&t, &cfg, comm, &opts, err, sizeof(err));
    bp_callbacks cb = {on_epoch, NULL, r, NULL};
    if (rc == 0)
        rc = bp_trainer_run(t, &cb, err, sizeof(err));
    if (rc < 0 && err[0]) /* the one rank that holds the reason */
        fprintf(stderr, "example: %s\n", err);
    int bad = rc == 0 && comm->rank == 0 ? check(bp_trainer_net(t), r) : 0;
    bp_trainer_free(t);
    return rc < 0 ? rc : bad;
}

/* The network's outputs for rows x d inputs, into outputs (rows x k). */
static int predict(const bp_net *net, const bp_real *X, size_t rows, bp_real *outputs)
{
    bp_workspace ws;
    if (bp_workspace_create(&ws, net, rows) < 0)
        return BP_ENOMEM;
    size_t k = (size_t)net->sizes[net->nlayers];
    memcpy(outputs, bp_forward(net, &ws, X, rows), rows * k * sizeof(bp_real));
    bp_workspace_free(&ws);
    return 0;
}

static int xor_learnt(const bp_net *net, const report *r)
{
    (void)r;
    const bp_real X[] = {0, 0, 0, 1, 1, 0, 1, 1}, want[] = {0, 1, 1, 0};
    bp_real got[4];
    int bad = predict(net, X, 4, got) < 0;
    for (int i = 0; i < 4 && !bad; i++) {
        printf("  %g XOR %g -> %.3f (want %g)\n", X[2 * i], X[2 * i + 1], got[i], want[i]);
        bad |= got[i] - want[i] > 0.1 || want[i] - got[i] > 0.1;
    }
    return bad;
}

static int xor_example(const bp_comm *comm, const char *dir)
{
    char ini[1024];
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = builtin:xor\n"
             "[network]\nlayers = 2, 2, 2, 1\nhidden = sigmoid\noutput = sigmoid\n"
             "cost = quadratic\n"
             "[train]\nepochs = 10000\nbatch_size = 4\nlearning_rate = 4.0\nseed = 1\n"
             "[checkpoint]\ndir = %s/xor\nevery_epochs = 0\n",
             dir);
    if (comm->rank == 0)
        printf("XOR, [2,2,2,1] sigmoid, squared error, 10000 full-batch steps:\n");
    report r = {.every = 2500};
    return train(comm, ini, NULL, &r, xor_learnt) != 0;
}

/* 600 points in 3 Gaussian clusters of 4 features, labelled by cluster: every rank draws
 * the same points from the same seed. */
static int make_blobs(bp_dataset *ds)
{
    enum { N = 600, D = 4, K = 3 };
    *ds = (bp_dataset){.n = N, .d = D, .k = K};
    ds->X = calloc(N * D, sizeof(bp_real));
    ds->Y = calloc(N * K, sizeof(bp_real));
    ds->labels = calloc(N, sizeof(int));
    if (!ds->X || !ds->Y || !ds->labels)
        return BP_ENOMEM;
    bp_rng rng;
    bp_rng_seed(&rng, 7);
    for (size_t i = 0; i < N; i++) {
        ds->labels[i] = (int)(i % K);
        ds->Y[i * K + i % K] = 1;      /* one-hot */
        for (size_t j = 0; j < D; j++) /* cluster c sits at 2 on axis c, 0 elsewhere */
            ds->X[i * D + j] = (bp_real)((j == i % K ? 2.0 : 0.0) + 0.5 * bp_rng_gaussian(&rng));
    }
    return 0;
}

static int blobs_learnt(const bp_net *net, const report *r)
{
    (void)net;
    printf("  validation accuracy %.1f%% on %d held-out points\n", 100 * r->val_accuracy, 100);
    return !(r->val_accuracy >= 0.9);
}

static int blobs_example(const bp_comm *comm, const char *dir)
{
    char ini[1600];
    bp_dataset blobs;
    int rc = make_blobs(&blobs);
    /* [data] train is required of a config; with the set given in memory no file is read. */
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = blobs-in-memory\nvalidation_split = 100\n"
             "[network]\nlayers = 4, 16, 3\nhidden = relu\noutput = softmax\n"
             "cost = cross_entropy\ninit = he\n"
             "[train]\nepochs = 20\nbatch_size = 32\nlearning_rate = 0.1\nmomentum = 0.9\n"
             "[checkpoint]\ndir = %s/blobs\n",
             dir);
    if (rc == 0 && comm->rank == 0)
        printf("3 clusters in 4 dimensions, made in memory, [4,16,3] relu/softmax:\n");
    report r = {.every = 5};
    if (rc == 0)
        rc = train(comm, ini, &blobs, &r, blobs_learnt);
    else
        fprintf(stderr, "example: %s\n", bp_strerror(rc));
    free(blobs.X);
    free(blobs.Y);
    free(blobs.labels);
    return rc != 0;
}

int main(int argc, char **argv)
{
    bp_comm comm;
    if (bp_comm_init(&argc, &argv, &comm) < 0)
        return 1;
    int bad = argc != 2;
    if (bad && comm.rank == 0)
        fprintf(stderr, "usage: example-train DIR\n");
    if (!bad)
        bad = xor_example(&comm, argv[1]);
    if (!bad)
        bad = blobs_example(&comm, argv[1]);
    bp_comm_finalize(&comm);
    return bad;
}
