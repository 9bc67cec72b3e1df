/* Unit tests of checkpoints: exact round trips, reading the other scalar type, refusing
 * every kind of bad file with a reason, atomic replacement, and the match messages. Files
 * are edited with the HDF5 API to make each bad case; all of it under a fresh temporary
 * directory. */
#include <dirent.h>
#include <errno.h>
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
#include <hdf5.h>

#include "backprop/checkpoint.h"

#ifdef BACKPROP_DOUBLE
#define OTHER_FILE_TYPE H5T_IEEE_F32LE
#define OTHER_NAME "float"
typedef float other_real;
#else
#define OTHER_FILE_TYPE H5T_IEEE_F64LE
#define OTHER_NAME "double"
typedef double other_real;
#endif

static const char config_text[] = "[network]\nlayers = 4, 3, 2\nhidden = tanh ; caf\xc3\xa9\n";

typedef struct {
    char dir[256];
    char path[320];
    bp_net net;
    bp_real *velocity;
    bp_train_state st;
    bp_metrics_row metrics[3];
} fixture;

/* Values that are not short binary fractions, so that a lossy path would show. */
static void fill_net(fixture *f, double scale)
{
    for (size_t i = 0; i < f->net.nparams; i++) {
        f->net.params[i] = (bp_real)(scale * ((double)i / 7.0 - 1.3));
        f->velocity[i] = (bp_real)(-(double)i / 13.0 + 0.01);
    }
}

static void fill_state(fixture *f)
{
    bp_train_state *st = &f->st;
    st->epoch = 3;
    st->batch_in_epoch = 17;
    st->global_step = 1234567890123L; /* beyond 32 bits */
    st->seed = 0xFEDCBA9876543210ULL;
    st->rng.s[0] = UINT64_MAX;
    st->rng.s[1] = 1;
    st->rng.s[2] = 0x8000000000000000ULL;
    st->rng.s[3] = 42;
    st->ranks = 2;
    st->elapsed_s = 12.345678901234567;
    st->epoch_cost_sum = 0.1 + 0.2;
    st->epoch_correct = 57;
    st->epoch_seen = 64;
    st->epoch_train_s = 1.0 / 3.0;
    for (int i = 0; i < 3; i++) {
        bp_metrics_row *m = &f->metrics[i];
        m->epoch = i + 1;
        m->step = 100L * (i + 1);
        m->train_cost = 0.5 / (i + 1);
        m->train_accuracy = 0.9 + 0.01 * i;
        m->val_cost = i == 1 ? 0.7 : NAN; /* only some epochs had a validation pass */
        m->val_accuracy = i == 1 ? 0.8 : NAN;
        m->test_cost = NAN;
        m->test_accuracy = NAN;
        m->samples_per_s = 1e5 / 3.0;
        m->elapsed_s = 4.2 * (i + 1);
    }
    st->nmetrics = 3;
    st->metrics = f->metrics;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/bp-ckpt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    snprintf(f->path, sizeof(f->path), "%s/ckpt-7.h5", mkdtemp(f->dir) ? f->dir : "/nonexistent");
    int sizes[] = {4, 3, 2};
    if (bp_net_create(&f->net, 3, sizes, BP_TANH, BP_SOFTMAX, BP_CROSS_ENTROPY) < 0)
        return -1;
    f->velocity = calloc(f->net.nparams, sizeof(bp_real));
    if (!f->velocity)
        return -1;
    fill_net(f, 1.0);
    fill_state(f);
    *state = f;
    return 0;
}

static void remove_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (!S_ISDIR(sb.st_mode)) {
        unlink(path);
        return;
    }
    chmod(path, 0700); /* undo the read-only directory of the unwritable-directory test */
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char child[1024];
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

static int teardown(void **state)
{
    fixture *f = *state;
    remove_tree(f->dir);
    bp_net_free(&f->net);
    free(f->velocity);
    free(f);
    return 0;
}

/* ---- helpers ---- */

/* The data of ck's item name, which must be there. */
static const void *item_data(const bp_checkpoint *ck, const char *name)
{
    const bp_state_item *it = bp_checkpoint_item(ck, name);
    assert_non_null(it);
    assert_non_null(it->data);
    return it->data;
}

static void assert_no_open_hdf5(void)
{
    assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

static void write_ok(const fixture *f, const char *path)
{
    char err[512] = "";
    int rc = bp_checkpoint_write(
        path, &f->net,
        &(bp_optimizer_state){"sgd", 1, &(bp_state_item){"v", BP_STATE_PARAMS, 0, f->velocity}},
        &f->st, config_text, err, sizeof(err));
    if (rc != 0)
        fail_msg("bp_checkpoint_write: %s", err);
    assert_no_open_hdf5();
}

/* Entries of dir other than . and .., and whether one of them is a leftover temporary. */
static int count_entries(const char *dir, int *temps)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    *temps = 0;
    assert_non_null(d);
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        *temps += strstr(e->d_name, ".tmp.") != NULL;
    }
    closedir(d);
    return n;
}

static int is_zeroed(const bp_checkpoint *ck)
{
    const unsigned char *p = (const unsigned char *)ck;
    for (size_t i = 0; i < sizeof(*ck); i++)
        if (p[i])
            return 0;
    return 1;
}

/* The read must fail with code, a reason naming the file and containing what, *ck zeroed,
 * and no HDF5 handle left open. */
static void expect_refusal(const char *path, int code, const char *what)
{
    bp_checkpoint ck;
    char err[512] = "";
    int rc = bp_checkpoint_read(path, &ck, err, sizeof(err));
    if (rc != code || !strstr(err, what) || strncmp(err, path, strlen(path)) != 0)
        fail_msg("read %s: got %d \"%s\", want %d \"...%s...\"", path, rc, err, code, what);
    assert_true(is_zeroed(&ck));
    assert_no_open_hdf5();
}

static hid_t open_rw(const char *path)
{
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    return file;
}

static void set_int_attr(const char *path, const char *obj, const char *name, int value)
{
    hid_t file = open_rw(path);
    hid_t attr = H5Aopen_by_name(file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    assert_true(H5Awrite(attr, H5T_NATIVE_INT, &value) >= 0);
    H5Aclose(attr);
    H5Fclose(file);
}

static void set_string_attr(const char *path, const char *obj, const char *name, const char *value)
{
    hid_t file = open_rw(path);
    hid_t type = H5Tcopy(H5T_C_S1);
    hid_t space = H5Screate(H5S_SCALAR);
    /* Fixed-length, unlike the writer's variable-length strings: both must read. */
    H5Tset_size(type, strlen(value));
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    if (H5Aexists_by_name(file, obj, name, H5P_DEFAULT) > 0)
        assert_true(H5Adelete_by_name(file, obj, name, H5P_DEFAULT) >= 0);
    hid_t attr =
        H5Acreate_by_name(file, obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    assert_true(H5Awrite(attr, type, value) >= 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    H5Fclose(file);
}

/* Replaces dataset name by one of ftype and the given shape, filled from data (bp_real). */
static void replace_dataset(hid_t file, const char *name, hid_t ftype, int rank,
                            const hsize_t *dims, const bp_real *data)
{
    hid_t space = H5Screate_simple(rank, dims, NULL);
    assert_true(H5Ldelete(file, name, H5P_DEFAULT) >= 0);
    hid_t dset = H5Dcreate2(file, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(dset >= 0);
    assert_true(H5Dwrite(dset, sizeof(bp_real) == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE, H5S_ALL,
                         H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(dset);
    H5Sclose(space);
}

static void copy_prefix(const char *from, const char *to, long n)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    for (long i = 0; i < n; i++) {
        int c = fgetc(in);
        assert_true(c != EOF);
        fputc(c, out);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static long file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

/* ---- round trips ---- */

static void test_round_trip_is_exact(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_no_open_hdf5();
    assert_int_equal(ck.format_version, BP_CHECKPOINT_VERSION);
    assert_string_equal(ck.scalar, BP_SCALAR_NAME);
    assert_int_equal(ck.net.nlayers, 2);
    assert_memory_equal(ck.net.sizes, f->net.sizes, 3 * sizeof(int));
    assert_int_equal(ck.net.hidden, BP_TANH);
    assert_int_equal(ck.net.output, BP_SOFTMAX);
    assert_int_equal(ck.net.cost, BP_CROSS_ENTROPY);
    assert_int_equal(ck.net.nparams, f->net.nparams);
    assert_memory_equal(ck.net.params, f->net.params, f->net.nparams * sizeof(bp_real));
    assert_memory_equal(item_data(&ck, "v"), f->velocity, f->net.nparams * sizeof(bp_real));
    assert_string_equal(ck.optimizer, "sgd");
    assert_int_equal(ck.nopt_state, 1);
    assert_null(bp_checkpoint_item(&ck, "s"));
    const bp_train_state *got = &ck.state, *want = &f->st;
    assert_int_equal(got->epoch, want->epoch);
    assert_int_equal(got->batch_in_epoch, want->batch_in_epoch);
    assert_int_equal(got->global_step, want->global_step);
    assert_true(got->seed == want->seed);
    assert_memory_equal(got->rng.s, want->rng.s, sizeof(want->rng.s));
    assert_int_equal(got->ranks, want->ranks);
    /* Exact: the state resumes a run bit for bit. */
    assert_true(got->elapsed_s == want->elapsed_s);
    assert_true(got->epoch_cost_sum == want->epoch_cost_sum);
    assert_true(got->epoch_correct == want->epoch_correct);
    assert_true(got->epoch_seen == want->epoch_seen);
    assert_true(got->epoch_train_s == want->epoch_train_s);
    assert_int_equal(got->nmetrics, 3);
    assert_memory_equal(got->metrics, f->metrics, sizeof(f->metrics));
    assert_true(isnan(got->metrics[0].val_cost) && isnan(got->metrics[2].test_accuracy));
    assert_true(got->metrics[1].val_cost == 0.7);
    assert_string_equal(ck.config_text, config_text);
    bp_checkpoint_free(&ck);
    assert_true(is_zeroed(&ck));
}

/* Adam's two moments come back exactly; a file without /optimizer's name (written before
 * optimizers had names) reads as sgd; an unknown name is refused. */
static void test_optimizer_state(void **state)
{
    fixture *f = *state;
    bp_real *m2 = calloc(f->net.nparams, sizeof(bp_real));
    for (size_t i = 0; i < f->net.nparams; i++)
        m2[i] = (bp_real)((double)i / 17.0 + 0.003);
    char err[512] = "";
    bp_state_item items[2] = {{"v", BP_STATE_PARAMS, 0, f->velocity},
                              {"s", BP_STATE_PARAMS, 0, m2}};
    bp_optimizer_state adam = {"adam", 2, items};
    assert_int_equal(bp_checkpoint_write(f->path, &f->net, &adam, &f->st, NULL, err, sizeof(err)),
                     0);
    bp_checkpoint ck;
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_string_equal(ck.optimizer, "adam");
    assert_memory_equal(item_data(&ck, "v"), f->velocity, f->net.nparams * sizeof(bp_real));
    assert_memory_equal(item_data(&ck, "s"), m2, f->net.nparams * sizeof(bp_real));
    bp_checkpoint_free(&ck);

    write_ok(f, f->path);
    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(H5Adelete_by_name(file, "optimizer", "name", H5P_DEFAULT) >= 0);
    H5Fclose(file);
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_string_equal(ck.optimizer, "sgd");
    bp_checkpoint_free(&ck);

    file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t group = H5Gopen2(file, "optimizer", H5P_DEFAULT);
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    H5Tset_size(type, 6);
    hid_t attr = H5Acreate2(group, "name", type, space, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(attr, type, "lion2") >= 0);
    H5Aclose(attr), H5Sclose(space), H5Tclose(type), H5Gclose(group), H5Fclose(file);
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "unknown optimizer 'lion2'"));
    assert_no_open_hdf5();
    free(m2);
}

/* L-BFGS's whole state comes back exactly, item by item: counters, points, vectors,
 * history and rho; counters out of range are refused, and so is lbfgs without its state. */
static void test_lbfgs_state(void **state)
{
    fixture *f = *state;
    size_t n = f->net.nparams;
    enum { H = 3 };
    int ints[6] = {H, 2, 1, 2 /* zooming */, 4, 0};
    double points[3][5] = {{0, 2.5, -17.25, 12500.5, 4001},
                           {0.25, 2.25, -3.5, 11250.25, 4010},
                           {0.5, 2.75, 1.0 / 3, 13750.75, 3990}};
    double alpha = 0.123456789012345, objective[2] = {0.5, 4000}, rho[H] = {1.0 / 3, 2.0 / 3, 0};
    bp_real *vecs[6];
    for (int v = 0; v < 6; v++) {
        size_t len = v < 4 ? n : H * n;
        vecs[v] = calloc(len, sizeof(bp_real));
        for (size_t i = 0; i < len; i++)
            vecs[v][i] = (bp_real)((double)(v + 1) / 7.0 - (double)i / 13.0);
    }
    bp_state_item items[] = {
        {"v", BP_STATE_PARAMS, 0, NULL},
        {"lbfgs/x0", BP_STATE_VECTORS, 0, vecs[0]},
        {"lbfgs/g0", BP_STATE_VECTORS, 0, vecs[1]},
        {"lbfgs/d", BP_STATE_VECTORS, 0, vecs[2]},
        {"lbfgs/g_lo", BP_STATE_VECTORS, 0, vecs[3]},
        {"lbfgs/s", BP_STATE_VECTORS, H, vecs[4]},
        {"lbfgs/y", BP_STATE_VECTORS, H, vecs[5]},
        {"lbfgs/history", BP_STATE_INTS, 0, &ints[0]},
        {"lbfgs/pairs", BP_STATE_INTS, 0, &ints[1]},
        {"lbfgs/newest", BP_STATE_INTS, 0, &ints[2]},
        {"lbfgs/phase", BP_STATE_INTS, 0, &ints[3]},
        {"lbfgs/evals", BP_STATE_INTS, 0, &ints[4]},
        {"lbfgs/converged", BP_STATE_INTS, 0, &ints[5]},
        {"lbfgs/x", BP_STATE_REALS, 5, points[0]},
        {"lbfgs/lo", BP_STATE_REALS, 5, points[1]},
        {"lbfgs/hi", BP_STATE_REALS, 5, points[2]},
        {"lbfgs/alpha", BP_STATE_REALS, 0, &alpha},
        {"lbfgs/objective", BP_STATE_REALS, 2, objective},
        {"lbfgs/rho", BP_STATE_REALS, H, rho},
    };
    size_t nitems = sizeof(items) / sizeof(items[0]);
    char err[512] = "";
    bp_optimizer_state opt = {"lbfgs", nitems, items};
    assert_int_equal(bp_checkpoint_write(f->path, &f->net, &opt, &f->st, NULL, err, sizeof(err)),
                     0);
    bp_checkpoint ck;
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_string_equal(ck.optimizer, "lbfgs");
    assert_int_equal(ck.nopt_state, nitems);
    for (size_t i = 1; i < nitems; i++) {
        const bp_state_item *got = bp_checkpoint_item(&ck, items[i].name);
        assert_non_null(got);
        assert_int_equal(got->kind, items[i].kind);
        assert_int_equal(got->count, items[i].count);
        size_t count = items[i].count ? items[i].count : 1;
        size_t bytes = items[i].kind == BP_STATE_VECTORS ? count * n * sizeof(bp_real)
                       : items[i].kind == BP_STATE_INTS  ? count * sizeof(int)
                                                         : count * sizeof(double);
        assert_memory_equal(got->data, items[i].data, bytes);
    }
    char line[256];
    bp_checkpoint_describe_optimizer(&ck, line, sizeof(line));
    assert_string_equal(line, "lbfgs (2 of 3 pairs held; in a line search, zooming, after 4 "
                              "evaluations)");
    bp_checkpoint_free(&ck);

    hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t group = H5Gopen2(file, "/optimizer/lbfgs", H5P_DEFAULT);
    hid_t attr = H5Aopen(group, "pairs", H5P_DEFAULT);
    int pairs = H + 1;
    assert_true(H5Awrite(attr, H5T_NATIVE_INT, &pairs) >= 0);
    H5Aclose(attr), H5Gclose(group), H5Fclose(file);
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "/optimizer/lbfgs: counters out of range"));
    opt.nitems = 1; /* the velocity alone */
    assert_int_equal(bp_checkpoint_write(f->path, &f->net, &opt, &f->st, NULL, err, sizeof(err)),
                     BP_EINVAL);
    assert_non_null(strstr(err, "lbfgs without its state item 'lbfgs/x0'"));
    assert_no_open_hdf5();
    for (int v = 0; v < 6; v++)
        free(vecs[v]);
}

/* Early stopping's state comes back exactly; a file without it has none. */
static void test_early_stopping_state(void **state)
{
    fixture *f = *state;
    bp_real *best = calloc(f->net.nparams, sizeof(bp_real));
    for (size_t i = 0; i < f->net.nparams; i++)
        best[i] = (bp_real)(0.25 - (double)i / 9.0);
    f->st.best_params = best;
    f->st.best_val_cost = 0.31415926535897931;
    f->st.epoch = 9; /* best_epoch and bad_epochs must fit it */
    f->st.best_epoch = 7, f->st.bad_epochs = 2, f->st.stopped_early = 1;
    write_ok(f, f->path);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_non_null(ck.state.best_params);
    assert_memory_equal(ck.state.best_params, best, f->net.nparams * sizeof(bp_real));
    assert_true(ck.state.best_val_cost == 0.31415926535897931);
    assert_int_equal(ck.state.best_epoch, 7);
    assert_int_equal(ck.state.bad_epochs, 2);
    assert_int_equal(ck.state.stopped_early, 1);
    bp_checkpoint_free(&ck);
    f->st.best_params = NULL;
    write_ok(f, f->path);
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_null(ck.state.best_params);
    assert_int_equal(ck.state.best_epoch, 0);
    bp_checkpoint_free(&ck);
    free(best);
}

static void test_round_trip_empty_metrics_no_velocity(void **state)
{
    fixture *f = *state;
    f->st.nmetrics = 0;
    f->st.metrics = NULL;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_write(f->path, &f->net, NULL, &f->st, NULL, err, sizeof(err)),
                     0);
    bp_checkpoint ck;
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_int_equal(ck.state.nmetrics, 0);
    assert_null(ck.state.metrics);
    for (size_t i = 0; i < ck.net.nparams; i++)
        assert_true(((const bp_real *)item_data(&ck, "v"))[i] == 0);
    assert_string_equal(ck.config_text, "");
    bp_checkpoint_free(&ck);
    /* The zeros take no space: the velocity datasets were never written. */
    hid_t file = H5Fopen(f->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dset = H5Dopen2(file, "optimizer/layer_0/vW", H5P_DEFAULT);
    assert_true(dset >= 0);
    assert_int_equal(H5Dget_storage_size(dset), 0);
    H5Dclose(dset);
    dset = H5Dopen2(file, "model/layer_0/W", H5P_DEFAULT);
    assert_true(H5Dget_storage_size(dset) > 0);
    H5Dclose(dset);
    H5Fclose(file);
    assert_no_open_hdf5();
}

/* Another writer may store an empty table with a null dataspace instead of 0 rows. */
static void test_null_metrics_dataspace_reads_as_empty(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    hid_t file = open_rw(f->path);
    assert_true(H5Ldelete(file, "/train/metrics", H5P_DEFAULT) >= 0);
    hid_t space = H5Screate(H5S_NULL);
    hid_t dset = H5Dcreate2(file, "/train/metrics", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT,
                            H5P_DEFAULT);
    assert_true(dset >= 0);
    H5Dclose(dset);
    H5Sclose(space);
    H5Fclose(file);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_int_equal(ck.state.nmetrics, 0);
    assert_null(ck.state.metrics);
    bp_checkpoint_free(&ck);
    assert_no_open_hdf5();
}

/* A checkpoint written by a build of the other scalar type: the weights are stored as
 * OTHER_FILE_TYPE, and reading converts them as a C cast would. */
static void test_reads_the_other_scalar_type(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    hid_t file = open_rw(f->path);
    const char *groups[2][3] = {{"model", "W", "b"}, {"optimizer", "vW", "vb"}};
    for (int g = 0; g < 2; g++) {
        const bp_real *buf = g == 0 ? f->net.params : f->velocity;
        for (int l = 0; l < f->net.nlayers; l++) {
            hsize_t dims[2] = {(hsize_t)f->net.sizes[l + 1], (hsize_t)f->net.sizes[l]};
            char name[64];
            snprintf(name, sizeof(name), "/%s/layer_%d/%s", groups[g][0], l, groups[g][1]);
            replace_dataset(file, name, OTHER_FILE_TYPE, 2, dims,
                            buf + bp_net_offset_W(&f->net, l));
            snprintf(name, sizeof(name), "/%s/layer_%d/%s", groups[g][0], l, groups[g][2]);
            replace_dataset(file, name, OTHER_FILE_TYPE, 1, dims,
                            buf + bp_net_offset_b(&f->net, l));
        }
    }
    H5Fclose(file);
    set_string_attr(f->path, "/model", "scalar", OTHER_NAME);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_string_equal(ck.scalar, OTHER_NAME);
    for (size_t i = 0; i < f->net.nparams; i++) {
        assert_true(ck.net.params[i] == (bp_real)(other_real)f->net.params[i]);
        assert_true(((const bp_real *)item_data(&ck, "v"))[i] ==
                    (bp_real)(other_real)f->velocity[i]);
    }
    bp_checkpoint_free(&ck);
    assert_no_open_hdf5();
}

/* ---- refusals ---- */

static void test_refuses_missing_file(void **state)
{
    fixture *f = *state;
    expect_refusal(f->path, BP_EIO, ": no such file");
}

static void test_refuses_text_file(void **state)
{
    fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs("[network]\nlayers = 784, 30, 10\n", fp);
    fclose(fp);
    expect_refusal(f->path, BP_EFORMAT, ": not an HDF5 file");
}

static void test_refuses_directory(void **state)
{
    fixture *f = *state;
    expect_refusal(f->dir, BP_EIO, ": is a directory, not a file");
}

static void test_refuses_truncated_file(void **state)
{
    fixture *f = *state;
    char half[512];
    write_ok(f, f->path);
    snprintf(half, sizeof(half), "%s/half.h5", f->dir);
    copy_prefix(f->path, half, file_size(f->path) / 2);
    expect_refusal(half, BP_EFORMAT, "truncated or corrupted");
}

static void test_refuses_foreign_hdf5(void **state)
{
    fixture *f = *state;
    hid_t file = H5Fcreate(f->path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 5;
    const double x[5] = {1, 2, 3, 4, 5};
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t dset =
        H5Dcreate2(file, "X", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(dset);
    H5Sclose(space);
    H5Fclose(file);
    expect_refusal(f->path, BP_EFORMAT, ": not a backprop checkpoint (no 'format' attribute)");
}

static void test_refuses_other_format_name(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    /* A control character would break the one-line error message. */
    set_string_attr(f->path, "/", "format", "some-other\nformat");
    expect_refusal(f->path, BP_EFORMAT,
                   ": not a backprop checkpoint (format is 'some-other?format')");
}

static void test_refuses_newer_version(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    set_int_attr(f->path, "/", "format_version", 2);
    expect_refusal(f->path, BP_EFORMAT,
                   ": format version 2 is newer than this backprop supports (1); upgrade "
                   "backprop");
}

/* Flips byte at of the first chunk of dataset name, as a disk error would; returns the
 * byte as it was. */
static unsigned char flip_chunk_byte(const char *path, const char *name, long at,
                                     hsize_t expect_size)
{
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    hid_t space = H5Dget_space(dset);
    hsize_t offset[2], size;
    haddr_t addr;
    unsigned mask;
    assert_true(H5Dget_chunk_info(dset, space, 0, offset, &mask, &addr, &size) >= 0);
    H5Sclose(space);
    H5Dclose(dset);
    H5Fclose(file);
    /* A chunk is its raw values, then their 4-byte checksum. */
    assert_int_equal(size, expect_size + 4);
    FILE *fp = fopen(path, "r+b");
    unsigned char byte, flipped;
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)addr + at, SEEK_SET), 0);
    assert_int_equal(fread(&byte, 1, 1, fp), 1);
    flipped = byte ^ 0xFF;
    assert_int_equal(fseek(fp, (long)addr + at, SEEK_SET), 0);
    assert_int_equal(fwrite(&flipped, 1, 1, fp), 1);
    assert_int_equal(fclose(fp), 0);
    return byte;
}

static void test_refuses_flipped_weight_byte(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    unsigned char was = flip_chunk_byte(f->path, "/model/layer_0/W", 5, 12 * sizeof(bp_real));
    /* That byte was the second weight's: the flip hit the data the test means. */
    assert_memory_equal(&was, (const unsigned char *)f->net.W[0] + 5, 1);
    expect_refusal(f->path, BP_EFORMAT, ": checksum mismatch in /model/layer_0/W (file corrupted)");
}

static void test_refuses_flipped_metrics_byte(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    /* The chunk holds 64 rows; row 1's train_cost starts at byte 80 + 16. */
    unsigned char was = flip_chunk_byte(f->path, "/train/metrics", 80 + 16 + 7, 64 * 80);
    double cost = f->metrics[1].train_cost;
    assert_memory_equal(&was, (const unsigned char *)&cost + 7, 1);
    expect_refusal(f->path, BP_EFORMAT, ": checksum mismatch in /train/metrics (file corrupted)");
}

/* The config text sits in HDF5's global heap, found here by its bytes. */
static void test_refuses_flipped_config_byte(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    long n = file_size(f->path), at = -1, len = (long)strlen(config_text);
    unsigned char *bytes = malloc((size_t)n);
    FILE *fp = fopen(f->path, "r+b");
    assert_non_null(bytes);
    assert_non_null(fp);
    assert_int_equal(fread(bytes, 1, (size_t)n, fp), n);
    for (long i = 0; i + len <= n && at < 0; i++)
        if (memcmp(bytes + i, config_text, (size_t)len) == 0)
            at = i + 12;
    assert_true(at >= 0);
    bytes[at] ^= 0x20; /* one letter's case: still valid text */
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes + at, 1, 1, fp), 1);
    assert_int_equal(fclose(fp), 0);
    free(bytes);
    expect_refusal(f->path, BP_EFORMAT, ": checksum mismatch in /config (file corrupted)");
}

static void test_refuses_missing_dataset(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    hid_t file = open_rw(f->path);
    assert_true(H5Ldelete(file, "/optimizer/layer_1/vb", H5P_DEFAULT) >= 0);
    H5Fclose(file);
    expect_refusal(f->path, BP_EFORMAT, ": /optimizer/layer_1/vb is missing");
}

static void test_refuses_wrong_shape(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    hid_t file = open_rw(f->path);
    hsize_t dims[2] = {2, 5};
    bp_real zeros[10] = {0};
    replace_dataset(file, "/model/layer_1/W", H5T_IEEE_F32LE, 2, dims, zeros);
    H5Fclose(file);
    expect_refusal(f->path, BP_EFORMAT, ": /model/layer_1/W is 2x5, expected 2x3");
}

static void test_refuses_unknown_activation(void **state)
{
    fixture *f = *state;
    write_ok(f, f->path);
    set_string_attr(f->path, "/model", "hidden", "swish");
    expect_refusal(f->path, BP_EFORMAT, ": /model: unknown hidden activation 'swish'");
}

/* ---- writing ---- */

static void test_write_to_unwritable_directory(void **state)
{
    fixture *f = *state;
    char parent[512], target[600], err[512] = "";
    int temps;
    /* root writes through a 0500 directory; a regular file as the parent stops anyone. */
    if (geteuid() == 0) {
        snprintf(parent, sizeof(parent), "%s/not-a-dir", f->dir);
        FILE *fp = fopen(parent, "w");
        assert_non_null(fp);
        fclose(fp);
    } else {
        snprintf(parent, sizeof(parent), "%s/read-only", f->dir);
        assert_int_equal(mkdir(parent, 0500), 0);
    }
    snprintf(target, sizeof(target), "%s/ckpt-10.h5", parent);
    int rc = bp_checkpoint_write(
        target, &f->net,
        &(bp_optimizer_state){"sgd", 1, &(bp_state_item){"v", BP_STATE_PARAMS, 0, f->velocity}},
        &f->st, config_text, err, sizeof(err));
    assert_int_equal(rc, BP_EIO);
    assert_true(strncmp(err, target, strlen(target)) == 0);
    assert_non_null(strstr(err, ": cannot create a temporary file ("));
    assert_int_equal(count_entries(f->dir, &temps), 1);
    assert_int_equal(temps, 0);
    if (geteuid() != 0)
        assert_int_equal(count_entries(parent, &temps), 0);
    assert_no_open_hdf5();
}

/* The temporary file is complete when the rename fails (the target is a non-empty
 * directory): it must be removed, and the target left as it was. */
static void test_failed_rename_removes_temp(void **state)
{
    fixture *f = *state;
    char keep[512], err[512] = "";
    int temps;
    assert_int_equal(mkdir(f->path, 0700), 0);
    snprintf(keep, sizeof(keep), "%s/keep", f->path);
    FILE *fp = fopen(keep, "w");
    assert_non_null(fp);
    fclose(fp);
    int rc = bp_checkpoint_write(
        f->path, &f->net,
        &(bp_optimizer_state){"sgd", 1, &(bp_state_item){"v", BP_STATE_PARAMS, 0, f->velocity}},
        &f->st, config_text, err, sizeof(err));
    assert_int_equal(rc, BP_EIO);
    assert_non_null(strstr(err, ": cannot move the temporary file into place ("));
    assert_int_equal(count_entries(f->dir, &temps), 1);
    assert_int_equal(temps, 0);
    assert_int_equal(access(keep, F_OK), 0);
    assert_no_open_hdf5();
}

/* A write that fails before the rename leaves the previous checkpoint readable. */
static void test_failed_write_keeps_existing_file(void **state)
{
    fixture *f = *state;
    char tmp[512], err[512] = "";
    write_ok(f, f->path);
    /* A directory where the temporary file should go makes its creation fail. */
    snprintf(tmp, sizeof(tmp), "%s/.ckpt-7.h5.tmp.%ld", f->dir, (long)getpid());
    assert_int_equal(mkdir(tmp, 0700), 0);
    f->st.epoch = 99;
    int rc = bp_checkpoint_write(
        f->path, &f->net,
        &(bp_optimizer_state){"sgd", 1, &(bp_state_item){"v", BP_STATE_PARAMS, 0, f->velocity}},
        &f->st, config_text, err, sizeof(err));
    assert_int_equal(rc, BP_EIO);
    assert_non_null(strstr(err, ": cannot create a temporary file ("));
    rmdir(tmp);
    bp_checkpoint ck;
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_int_equal(ck.state.epoch, 3);
    bp_checkpoint_free(&ck);
}

static void test_overwrite_replaces_atomically(void **state)
{
    fixture *f = *state;
    struct stat before, after;
    int temps;
    write_ok(f, f->path);
    assert_int_equal(stat(f->path, &before), 0);
    fill_net(f, -2.0);
    f->st.epoch = 4;
    write_ok(f, f->path);
    assert_int_equal(stat(f->path, &after), 0);
    /* A new inode: the file was renamed over, not rewritten in place. */
    assert_true(before.st_ino != after.st_ino);
    assert_int_equal(count_entries(f->dir, &temps), 1);
    assert_int_equal(temps, 0);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_int_equal(ck.state.epoch, 4);
    assert_memory_equal(ck.net.params, f->net.params, f->net.nparams * sizeof(bp_real));
    bp_checkpoint_free(&ck);
}

/* Overwrites /train's integer attribute name (created as int64 when absent) with v. */
static void set_train_int(const char *path, const char *name, int64_t v)
{
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t group = H5Gopen2(file, "/train", H5P_DEFAULT);
    if (H5Aexists(group, name) > 0)
        H5Adelete(group, name);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(group, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(attr, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(attr), H5Sclose(space), H5Gclose(group), H5Fclose(file);
}

/* The run's n_train and batch_size come back; a file without them reads as 0 (unknown). */
static void test_round_trip_epoch_shape(void **state)
{
    fixture *f = *state;
    f->st.n_train = 200, f->st.batch_size = 16, f->st.batch_in_epoch = 12;
    write_ok(f, f->path);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_int_equal(ck.state.n_train, 200);
    assert_int_equal(ck.state.batch_size, 16);
    bp_checkpoint_free(&ck);
    f->st.n_train = f->st.batch_size = 0;
    write_ok(f, f->path);
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), 0);
    assert_int_equal(ck.state.n_train, 0);
    assert_int_equal(ck.state.batch_size, 0);
    bp_checkpoint_free(&ck);
}

/* Every integer of /train is range-checked and consistent with the others: values a run
 * cannot reach (INT64_MIN epochs trained forever, INT64_MAX overflowed) are refused. */
static void test_refuses_counters_out_of_range(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *name;
        int64_t value;
        const char *why;
    } cases[] = {
        {"epoch", INT64_MIN, "/train: epoch = -9223372036854775808 is out of range"},
        {"epoch", INT64_MAX, "/train: epoch = 9223372036854775807 is out of range"},
        {"epoch", -1, "/train: epoch = -1 is out of range"},
        {"global_step", INT64_MAX, "/train: global_step = 9223372036854775807 is out of range"},
        {"global_step", -5, "/train: global_step = -5 is out of range"},
        {"global_step", 10, "/train: batch_in_epoch = 17 after 3 epochs does not fit global_step"},
        {"batch_in_epoch", -1, "/train: batch_in_epoch = -1 after 3 epochs"},
        {"batch_in_epoch", INT64_MAX, "/train: batch_in_epoch = 9223372036854775807"},
        {"batch_size", 64,
         "/train: batch_in_epoch = 17, but an epoch of 200 examples in batches "
         "of 64 has 4 steps"},
        {"n_train", -200, "/train: n_train = -200 or batch_size"},
        {"ranks", 0, "/train: ranks = 0 is out of range"},
        {"ranks", -3, "/train: ranks = -3 is out of range"},
        {"best_epoch", 4, "early stopping's best_epoch = 4"},
        {"bad_epochs", -1, "bad_epochs = -1"},
        {"stopped_early", 2, "stopped_early = 2 do not fit epoch 3"},
    };
    bp_real *best = calloc(f->net.nparams, sizeof(bp_real));
    f->st.best_params = best;
    f->st.best_epoch = 2, f->st.bad_epochs = 1;
    f->st.n_train = 200, f->st.batch_size = 10;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_ok(f, f->path);
        set_train_int(f->path, cases[i].name, cases[i].value);
        bp_checkpoint ck;
        char err[512] = "";
        assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), BP_EFORMAT);
        if (!strstr(err, cases[i].why))
            fail_msg("%s = %lld: got '%s'", cases[i].name, (long long)cases[i].value, err);
        assert_no_open_hdf5();
    }
    /* A metrics row past where the run stands, and more rows than epochs. */
    f->metrics[2].epoch = 4;
    write_ok(f, f->path);
    bp_checkpoint ck;
    char err[512] = "";
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "/train/metrics row 2: epoch 4, step 300 is beyond"));
    f->metrics[2].epoch = 3;
    f->st.epoch = 2, f->st.best_epoch = 1;
    write_ok(f, f->path);
    assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), BP_EFORMAT);
    assert_non_null(strstr(err, "/train/metrics has 3 rows for 2 epochs"));
    f->st.best_params = NULL;
    free(best);
}

/* Weights from anywhere but the file itself are refused: soft and external links, external
 * raw storage, virtual datasets. */
static void test_refuses_foreign_objects(void **state)
{
    fixture *f = *state;
    char other[400], raw[400], err[512] = "";
    snprintf(other, sizeof(other), "%s/other.h5", f->dir);
    snprintf(raw, sizeof(raw), "%s/raw.bin", f->dir);
    write_ok(f, other);
    const char *whys[4] = {"/model/layer_0/W is a soft link",
                           "/model/layer_0/W is an external link to another file",
                           "/model/layer_0/W is a dataset stored in external raw files",
                           "/model/layer_0/W is a virtual dataset"};
    for (int c = 0; c < 4; c++) {
        write_ok(f, f->path);
        hid_t file = H5Fopen(f->path, H5F_ACC_RDWR, H5P_DEFAULT);
        assert_true(H5Ldelete(file, "/model/layer_0/W", H5P_DEFAULT) >= 0);
        hsize_t dims[2] = {3, 4};
        hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        if (c == 0) {
            assert_true(H5Lcreate_soft("/optimizer/layer_0/vW", file, "/model/layer_0/W",
                                       H5P_DEFAULT, H5P_DEFAULT) >= 0);
        } else if (c == 1) {
            assert_true(H5Lcreate_external(other, "/model/layer_0/W", file, "/model/layer_0/W",
                                           H5P_DEFAULT, H5P_DEFAULT) >= 0);
        } else {
            if (c == 2) {
                assert_true(H5Pset_external(dcpl, raw, 0, 12 * sizeof(double)) >= 0);
            } else {
                hid_t src = H5Screate_simple(2, dims, NULL);
                assert_true(H5Pset_virtual(dcpl, space, other, "/model/layer_0/W", src) >= 0);
                H5Sclose(src);
            }
            hid_t d = H5Dcreate2(file, "/model/layer_0/W", H5T_IEEE_F64LE, space, H5P_DEFAULT, dcpl,
                                 H5P_DEFAULT);
            assert_true(d >= 0);
            H5Dclose(d);
        }
        H5Pclose(dcpl), H5Sclose(space), H5Fclose(file);
        bp_checkpoint ck;
        assert_int_equal(bp_checkpoint_read(f->path, &ck, err, sizeof(err)), BP_EFORMAT);
        if (!strstr(err, whys[c]) || !strstr(err, "holds everything in its own file"))
            fail_msg("case %d: got '%s'", c, err);
        assert_no_open_hdf5();
    }
}

/* ---- matching ---- */

static void expect_mismatch(const bp_checkpoint *ck, int n, const int *sizes, bp_activation h,
                            bp_activation o, bp_cost c, const char *want)
{
    bp_net net;
    char err[256] = "";
    assert_int_equal(bp_net_create(&net, n, sizes, h, o, c), 0);
    assert_int_equal(bp_checkpoint_match(ck, &net, err, sizeof(err)), BP_EMISMATCH);
    assert_string_equal(err, want);
    bp_net_free(&net);
}

static void test_match_messages(void **state)
{
    fixture *f = *state;
    bp_checkpoint ck = {0};
    char err[256] = "";
    int same[] = {4, 3, 2}, wider[] = {4, 5, 2}, deeper[] = {4, 3, 3, 2};
    assert_int_equal(bp_net_create(&ck.net, 3, same, BP_TANH, BP_SOFTMAX, BP_CROSS_ENTROPY), 0);
    assert_int_equal(bp_checkpoint_match(&ck, &f->net, err, sizeof(err)), 0);
    expect_mismatch(&ck, 3, wider, BP_TANH, BP_SOFTMAX, BP_CROSS_ENTROPY,
                    "checkpoint has layers 4,3,2 but the config has 4,5,2");
    expect_mismatch(&ck, 4, deeper, BP_TANH, BP_SOFTMAX, BP_CROSS_ENTROPY,
                    "checkpoint has layers 4,3,2 but the config has 4,3,3,2");
    expect_mismatch(&ck, 3, same, BP_RELU, BP_SOFTMAX, BP_CROSS_ENTROPY,
                    "checkpoint has hidden = tanh but the config has relu");
    expect_mismatch(&ck, 3, same, BP_TANH, BP_SIGMOID, BP_CROSS_ENTROPY,
                    "checkpoint has output = softmax but the config has sigmoid");
    expect_mismatch(&ck, 3, same, BP_TANH, BP_SOFTMAX, BP_QUADRATIC,
                    "checkpoint has cost = cross_entropy but the config has quadratic");
    bp_checkpoint_free(&ck);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_round_trip_is_exact),
        TEST(test_optimizer_state),
        TEST(test_lbfgs_state),
        TEST(test_early_stopping_state),
        TEST(test_round_trip_empty_metrics_no_velocity),
        TEST(test_null_metrics_dataspace_reads_as_empty),
        TEST(test_reads_the_other_scalar_type),
        TEST(test_refuses_missing_file),
        TEST(test_refuses_text_file),
        TEST(test_refuses_directory),
        TEST(test_refuses_truncated_file),
        TEST(test_refuses_foreign_hdf5),
        TEST(test_refuses_other_format_name),
        TEST(test_refuses_newer_version),
        TEST(test_refuses_flipped_weight_byte),
        TEST(test_refuses_flipped_metrics_byte),
        TEST(test_refuses_flipped_config_byte),
        TEST(test_refuses_missing_dataset),
        TEST(test_refuses_wrong_shape),
        TEST(test_refuses_unknown_activation),
        TEST(test_write_to_unwritable_directory),
        TEST(test_failed_rename_removes_temp),
        TEST(test_failed_write_keeps_existing_file),
        TEST(test_overwrite_replaces_atomically),
        TEST(test_match_messages),
        TEST(test_round_trip_epoch_shape),
        TEST(test_refuses_counters_out_of_range),
        TEST(test_refuses_foreign_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
