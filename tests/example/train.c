/* libbackprop in a program of your own, through its public headers alone: XOR (seed 000's
 * experiment) from a config written here, then a small data set this program makes and
 * saves as HDF5. It runs alone or under mpirun (rank 0 prints); DIR must be empty or new.
 *
 *     example-train DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/data.h"
#include "backprop/train.h"

/* Prints every `every`-th epoch's training cost (and accuracy, where there are labels). */
static void on_epoch(void *ctx, const bp_metrics_row *row, long epochs)
{
    long every = *(const long *)ctx;
    if (row->epoch % every != 0 && row->epoch != epochs)
        return;
    printf("  epoch %5ld/%ld  cost %.5f", row->epoch, epochs, row->train_cost);
    if (row->train_accuracy == row->train_accuracy) /* not NaN */
        printf("  accuracy %.1f%%", 100 * row->train_accuracy);
    printf("\n");
}

/* Parses ini, trains it to the end and leaves the final network in *out (rank 0 reads it
 * back from DIR/latest.h5 like any other program would). 0 or a BP_E* code. */
static int train(const bp_comm *comm, const char *ini, long every, bp_checkpoint *out)
{
    char err[1024] = "", latest[1200];
    bp_config cfg;
    int rc = bp_config_parse(&cfg, "example", ini, NULL, 0, err, sizeof(err));
    bp_trainer *t = NULL;
    if (rc == 0)
        rc = bp_trainer_create(&t, &cfg, NULL, comm, NULL, err, sizeof(err));
    bp_callbacks cb = {on_epoch, NULL, &every};
    if (rc == 0)
        rc = bp_trainer_run(t, &cb, err, sizeof(err));
    bp_trainer_free(t);
    snprintf(latest, sizeof(latest), "%s/latest.h5", cfg.checkpoint_dir);
    if (rc == 0)
        rc = bp_checkpoint_read(latest, out, err, sizeof(err));
    if (rc < 0 && err[0]) /* the one rank that holds the reason */
        fprintf(stderr, "example: %s\n", err);
    return rc;
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
    bp_checkpoint ck;
    int rc = train(comm, ini, 2500, &ck);
    if (rc < 0 || comm->rank != 0)
        return rc == 0 ? 0 : 1;
    const bp_real X[] = {0, 0, 0, 1, 1, 0, 1, 1}, want[] = {0, 1, 1, 0};
    bp_real got[4];
    int bad = predict(&ck.net, X, 4, got) < 0;
    for (int i = 0; i < 4 && !bad; i++) {
        printf("  %g XOR %g -> %.3f (want %g)\n", X[2 * i], X[2 * i + 1], got[i], want[i]);
        bad |= got[i] - want[i] > 0.1 || want[i] - got[i] > 0.1;
    }
    bp_checkpoint_free(&ck);
    return bad;
}

/* 600 points in 3 Gaussian clusters of 4 features, labelled by cluster, written as
 * DIR/blobs.h5 in backprop's layout (/X, /y). */
static int make_blobs(const char *path)
{
    enum { N = 600, D = 4, K = 3 };
    bp_dataset ds = {.n = N, .d = D, .k = K};
    ds.X = calloc(N * D, sizeof(bp_real));
    ds.labels = calloc(N, sizeof(int));
    int rc = ds.X && ds.labels ? 0 : BP_ENOMEM;
    bp_rng rng;
    bp_rng_seed(&rng, 7);
    for (size_t i = 0; rc == 0 && i < N; i++) {
        ds.labels[i] = (int)(i % K);
        for (size_t j = 0; j < D; j++) /* cluster c sits at 2 on axis c, 0 elsewhere */
            ds.X[i * D + j] = (bp_real)((j == i % K ? 2.0 : 0.0) + 0.5 * bp_rng_gaussian(&rng));
    }
    char err[512] = "";
    if (rc == 0)
        rc = bp_dataset_write_h5(&ds, path, 1, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "example: %s\n", err[0] ? err : bp_strerror(rc));
    free(ds.X);
    free(ds.labels);
    return rc;
}

static int blobs_example(const bp_comm *comm, const char *dir)
{
    char path[600], ini[1600];
    snprintf(path, sizeof(path), "%s/blobs.h5", dir);
    /* Every rank writes the same bytes: no rank reads a half-written file, as each file
     * appears under its name in one rename. */
    if (make_blobs(path) < 0)
        return 1;
    snprintf(ini, sizeof(ini),
             "[data]\ntrain = %s\nvalidation_split = 100\n"
             "[network]\nlayers = 4, 16, 3\nhidden = relu\noutput = softmax\n"
             "cost = cross_entropy\ninit = he\n"
             "[train]\nepochs = 20\nbatch_size = 32\nlearning_rate = 0.1\nmomentum = 0.9\n"
             "[checkpoint]\ndir = %s/blobs\n",
             path, dir);
    if (comm->rank == 0)
        printf("3 clusters in 4 dimensions (%s), [4,16,3] relu/softmax:\n", path);
    bp_checkpoint ck;
    int rc = train(comm, ini, 5, &ck);
    if (rc < 0 || comm->rank != 0)
        return rc == 0 ? 0 : 1;
    const bp_metrics_row *last = &ck.state.metrics[ck.state.nmetrics - 1];
    printf("  validation accuracy %.1f%% on %d held-out points\n", 100 * last->val_accuracy, 100);
    int bad = !(last->val_accuracy >= 0.9);
    bp_checkpoint_free(&ck);
    return bad;
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
    bp_comm_finalize();
    return bad;
}
