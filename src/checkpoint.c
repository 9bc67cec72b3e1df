/* Checkpoints: the network, the momentum buffer, where the run stands and the config, in
 * one HDF5 file. Written to a temporary file and renamed into place, so a reader sees the
 * old file or the new one, never half of one; verified field by field on read, so a damaged
 * or foreign file is refused with a reason instead of resuming from garbage. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "backprop/checkpoint.h"
#include "fileio.h"
#include "h5util.h"
#include "internal.h"
#include "optimizer.h"

#ifdef BACKPROP_DOUBLE
#define BP__H5_FILE_REAL H5T_IEEE_F64LE
#else
#define BP__H5_FILE_REAL H5T_IEEE_F32LE
#endif

#define NCOLS BP_METRIC_COLUMNS
/* Each chunk carries its own checksum and HDF5 caps a chunk at 4 GiB: 1 MiB of floats. */
#define CHUNK_ELEMS ((hsize_t)1 << 18)
/* bp__hash's starting value (FNV-1a 64). */
#define FNV_OFFSET 1469598103934665603ULL
/* Bounds the 'layers' attribute of a file we did not write before anything is sized by it. */
#define MAX_SIZES 1024
/* The most epochs a config can ask for ([train] epochs), and the most steps or examples a
 * double holds exactly (the metrics table, Adam's step count): a counter beyond them was
 * not written by a run, and arithmetic on it could overflow. */
#define MAX_EPOCHS 1000000000LL
#define MAX_COUNT 9007199254740992LL

const char *const bp_metric_columns[NCOLS] = {
    "epoch",        "step",      "train_cost",    "train_accuracy", "val_cost",
    "val_accuracy", "test_cost", "test_accuracy", "samples_per_s",  "elapsed_s"};
static const char *const train_int_names[3] = {"epoch", "batch_in_epoch", "global_step"};
static const char *const train_real_names[5] = {"elapsed_s", "epoch_cost_sum", "epoch_correct",
                                                "epoch_seen", "epoch_train_s"};
static const char *const train_shape_names[2] = {"n_train", "batch_size"};

/* The params-shaped buffers stored layer by layer: the group, then the names standing for
 * W and b in it. */
typedef struct {
    const char *group, *w, *b;
} tensor_group;

static const tensor_group params_group = {"model", "W", "b"};
static const tensor_group velocity_group = {"optimizer", "vW", "vb"};
static const tensor_group best_group = {"early_stopping", "W", "b"};

static void layer_name(char *buf, size_t len, const char *group, int l, const char *leaf)
{
    snprintf(buf, len, "/%s/layer_%d/%s", group, l, leaf);
}

/* ---- writing ---- */

/* Names the step about to run, for the error message, and clears errno so that a value
 * found there after a failure was set by this step. */
static void begin_step(char *step, size_t len, const char *what)
{
    snprintf(step, len, "%s", what);
    errno = 0;
}

/* Whole rows, up to CHUNK_ELEMS values per chunk; a row longer than that is split. */
static void chunk_dims(int rank, const hsize_t *dims, hsize_t *chunk)
{
    hsize_t cols = rank == 2 ? dims[1] : 1;
    if (cols > CHUNK_ELEMS)
        cols = CHUNK_ELEMS;
    hsize_t rows = CHUNK_ELEMS / cols;
    chunk[0] = rows < dims[0] ? rows : dims[0];
    if (rank == 2)
        chunk[1] = cols;
}

/* A chunked dataset with the Fletcher32 filter, so that a flipped byte fails the read.
 * data NULL: zeros, as a dataset never written: its chunks are not allocated and read as
 * the fill value, 0 (no bytes to encode, checksum or fsync). */
static int write_real(hid_t file, const char *name, int rank, const hsize_t *dims,
                      const bp_real *data)
{
    hsize_t chunk[2];
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dset = H5I_INVALID_HID;
    int rc = -1;
    chunk_dims(rank, dims, chunk);
    if (space < 0 || dcpl < 0 || lcpl < 0 || H5Pset_chunk(dcpl, rank, chunk) < 0 ||
        H5Pset_fletcher32(dcpl) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        goto cleanup;
    dset = H5Dcreate2(file, name, BP__H5_FILE_REAL, space, lcpl, dcpl, H5P_DEFAULT);
    if (dset >= 0 &&
        (!data || H5Dwrite(dset, BP__H5_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0))
        rc = 0;
cleanup:
    bp__h5_close(dset);
    bp__h5_close(lcpl);
    bp__h5_close(dcpl);
    bp__h5_close(space);
    return rc;
}

/* buf is params-shaped; b has W's first dimension, hence rank 2 - k over the same dims. */
static int write_layers(hid_t file, const tensor_group *g, const bp_net *net, const bp_real *buf,
                        char *step, size_t steplen)
{
    for (int l = 0; l < net->nlayers; l++) {
        hsize_t dims[2] = {(hsize_t)net->sizes[l + 1], (hsize_t)net->sizes[l]};
        const char *leaf[2] = {g->w, g->b};
        const bp_real *data[2] = {buf ? buf + bp_net_offset_W(net, l) : NULL,
                                  buf ? buf + bp_net_offset_b(net, l) : NULL};
        for (int k = 0; k < 2; k++) {
            char name[96], what[128];
            layer_name(name, sizeof(name), g->group, l, leaf[k]);
            snprintf(what, sizeof(what), "cannot write %s", name);
            begin_step(step, steplen, what);
            if (write_real(file, name, 2 - k, dims, data[k]) < 0)
                return -1;
        }
    }
    return 0;
}

static int write_model_attrs(hid_t file, const bp_net *net)
{
    const char *names[4][2] = {{"hidden", bp_activation_name(net->hidden)},
                               {"output", bp_activation_name(net->output)},
                               {"cost", bp_cost_name(net->cost)},
                               {"scalar", BP_SCALAR_NAME}};
    hid_t model = H5Gcreate2(file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = model < 0 ? -1
                       : bp__h5_write_attr(model, "layers", H5T_STD_I32LE, H5T_NATIVE_INT,
                                           (hsize_t)net->nlayers + 1, net->sizes);
    for (int i = 0; rc == 0 && i < 4; i++)
        rc = bp__h5_write_string_attr(model, names[i][0], names[i][1]);
    bp__h5_close(model);
    return rc;
}

static void metrics_to_doubles(const bp_metrics_row *m, double *r)
{
    const double v[NCOLS] = {(double)m->epoch, (double)m->step, m->train_cost, m->train_accuracy,
                             m->val_cost,      m->val_accuracy, m->test_cost,  m->test_accuracy,
                             m->samples_per_s, m->elapsed_s};
    memcpy(r, v, sizeof(v));
}

/* Whether x is a whole number that a long holds exactly; NaN fails both comparisons. */
static int whole_number(double x)
{
    return x >= -9007199254740992.0 && x <= 9007199254740992.0 && x == (double)(long)x;
}

/* -1 when epoch or step is not a whole number: converting it to long would be undefined. */
static int doubles_to_metrics(const double *r, bp_metrics_row *m)
{
    if (!whole_number(r[0]) || !whole_number(r[1]))
        return -1;
    m->epoch = (long)r[0];
    m->step = (long)r[1];
    m->train_cost = r[2];
    m->train_accuracy = r[3];
    m->val_cost = r[4];
    m->val_accuracy = r[5];
    m->test_cost = r[6];
    m->test_accuracy = r[7];
    m->samples_per_s = r[8];
    m->elapsed_s = r[9];
    return 0;
}

/* Chunked and checksummed like the weights. Rows are unlimited only because a fixed
 * dimension cannot be smaller than its chunk, and the table starts with no rows. */
static hid_t create_metrics(hid_t train, hsize_t nrows)
{
    hsize_t dims[2] = {nrows, NCOLS}, maxdims[2] = {H5S_UNLIMITED, NCOLS};
    hsize_t chunk[2] = {64, NCOLS};
    hid_t space = H5Screate_simple(2, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dset = H5I_INVALID_HID;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 2, chunk) >= 0 &&
        H5Pset_fletcher32(dcpl) >= 0)
        dset = H5Dcreate2(train, "metrics", H5T_IEEE_F64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    bp__h5_close(dcpl);
    bp__h5_close(space);
    return dset;
}

/* nmetrics x NCOLS doubles; with no rows yet nothing is written. */
static int write_metrics(hid_t train, const bp_train_state *st)
{
    double *rows = NULL;
    hid_t dset = H5I_INVALID_HID, strtype = H5I_INVALID_HID;
    int rc = -1;
    if (st->nmetrics) {
        rows = bp__calloc(bp__mul(st->nmetrics, NCOLS), sizeof(double));
        if (!rows)
            goto cleanup;
        for (size_t i = 0; i < st->nmetrics; i++)
            metrics_to_doubles(&st->metrics[i], rows + i * NCOLS);
    }
    dset = create_metrics(train, st->nmetrics);
    strtype = bp__h5_vlen_string_type();
    if (dset < 0 || strtype < 0)
        goto cleanup;
    if (rows && H5Dwrite(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0)
        goto cleanup;
    rc = bp__h5_write_attr(dset, "columns", strtype, strtype, NCOLS, bp_metric_columns);
cleanup:
    bp__h5_close(strtype);
    bp__h5_close(dset);
    bp__free(rows);
    return rc;
}

static int write_train(hid_t file, const bp_train_state *st)
{
    const int64_t ints[3] = {st->epoch, st->batch_in_epoch, st->global_step};
    const double reals[5] = {st->elapsed_s, st->epoch_cost_sum, st->epoch_correct, st->epoch_seen,
                             st->epoch_train_s};
    hid_t train = H5Gcreate2(file, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = train < 0 ? -1 : 0;
    for (int i = 0; rc == 0 && i < 3; i++)
        rc = bp__h5_write_attr(train, train_int_names[i], H5T_STD_I64LE, H5T_NATIVE_INT64, 0,
                               &ints[i]);
    for (int i = 0; rc == 0 && i < 5; i++)
        rc = bp__h5_write_attr(train, train_real_names[i], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0,
                               &reals[i]);
    if (rc == 0)
        rc = bp__h5_write_attr(train, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &st->seed);
    if (rc == 0)
        rc = bp__h5_write_attr(train, "rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, 4, st->rng.s);
    if (rc == 0)
        rc = bp__h5_write_attr(train, "ranks", H5T_STD_I32LE, H5T_NATIVE_INT, 0, &st->ranks);
    /* Unknown (0) is left out, as in files from before they were stored. */
    const int64_t shape[2] = {st->n_train, st->batch_size};
    for (int i = 0; rc == 0 && i < 2; i++)
        if (shape[i] > 0)
            rc = bp__h5_write_attr(train, train_shape_names[i], H5T_STD_I64LE, H5T_NATIVE_INT64, 0,
                                   &shape[i]);
    if (rc == 0)
        rc = write_metrics(train, st);
    if (rc == 0 && st->best_params) { /* early stopping's counters; its weights: below */
        const int64_t counts[3] = {st->best_epoch, st->bad_epochs, st->stopped_early};
        const char *names[3] = {"best_epoch", "bad_epochs", "stopped_early"};
        for (int i = 0; rc == 0 && i < 3; i++)
            rc = bp__h5_write_attr(train, names[i], H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &counts[i]);
        if (rc == 0)
            rc = bp__h5_write_attr(train, "best_val_cost", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0,
                                   &st->best_val_cost);
    }
    bp__h5_close(train);
    return rc;
}

/* The text lives in HDF5's global heap, which carries no checksum: hence the hash. The
 * compact layout keeps the reference to it inside the checksummed object header. */
static int write_config(hid_t file, const char *text)
{
    const uint64_t hash = bp__hash(text, strlen(text), FNV_OFFSET);
    hid_t type = bp__h5_vlen_string_type();
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dset = H5I_INVALID_HID;
    int rc = -1;
    if (type < 0 || space < 0 || dcpl < 0 || H5Pset_layout(dcpl, H5D_COMPACT) < 0)
        goto cleanup;
    dset = H5Dcreate2(file, "config", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset >= 0 && H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text) >= 0)
        rc = bp__h5_write_attr(dset, "fnv1a64", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &hash);
cleanup:
    bp__h5_close(dset);
    bp__h5_close(dcpl);
    bp__h5_close(space);
    bp__h5_close(type);
    return rc;
}

/* An attribute item's group under /optimizer and its leaf: "lbfgs/pairs" is the attribute
 * "pairs" of /optimizer/lbfgs. */
static void attr_place(const bp_state_item *it, char *group, size_t len, const char **leaf)
{
    const char *slash = strrchr(it->name, '/');
    int dir = slash ? (int)(slash - it->name) : 0;
    snprintf(group, len, "/optimizer%s%.*s", slash ? "/" : "", dir, it->name);
    *leaf = slash ? slash + 1 : it->name;
}

static hid_t attr_file_type(int kind)
{
    return kind == BP_STATE_INTS ? H5T_STD_I32LE : H5T_IEEE_F64LE;
}

static hid_t attr_mem_type(int kind)
{
    return kind == BP_STATE_INTS ? H5T_NATIVE_INT : H5T_NATIVE_DOUBLE;
}

/* One item where its kind puts it (checkpoint.h); datasets before the attributes on their
 * groups, as the spec's order has them. */
static int write_item(hid_t file, const bp_net *net, const bp_state_item *it, char *step,
                      size_t steplen)
{
    char path[96], w[64], b[64], what[160];
    const char *leaf;
    if (it->kind == BP_STATE_PARAMS) {
        snprintf(w, sizeof(w), "%sW", it->name);
        snprintf(b, sizeof(b), "%sb", it->name);
        tensor_group g = {"optimizer", w, b};
        return write_layers(file, &g, net, it->data, step, steplen);
    }
    if (it->kind == BP_STATE_VECTORS) {
        snprintf(path, sizeof(path), "/optimizer/%s", it->name);
        snprintf(what, sizeof(what), "cannot write %s", path);
        begin_step(step, steplen, what);
        hsize_t dims[2] = {(hsize_t)it->count, (hsize_t)net->nparams};
        return it->count ? write_real(file, path, 2, dims, it->data)
                         : write_real(file, path, 1, dims + 1, it->data);
    }
    attr_place(it, path, sizeof(path), &leaf);
    snprintf(what, sizeof(what), "cannot write %s's attributes", path);
    begin_step(step, steplen, what);
    hid_t g = H5Gopen2(file, path, H5P_DEFAULT);
    int rc = g < 0 ? -1
                   : bp__h5_write_attr(g, leaf, attr_file_type(it->kind), attr_mem_type(it->kind),
                                       (hsize_t)it->count, it->data);
    bp__h5_close(g);
    return rc;
}

/* The item of opt called name, or NULL. */
static const bp_state_item *opt_item(const bp_optimizer_state *opt, const char *name)
{
    for (size_t i = 0; i < opt->nitems; i++)
        if (opt->items[i].name && strcmp(opt->items[i].name, name) == 0)
            return &opt->items[i];
    return NULL;
}

/* /optimizer: the items in the order of the optimizer's spec, then its name (attribute
 * "name"). */
static int write_optimizer(hid_t file, const bp_net *net, const bp_optimizer_state *opt, char *step,
                           size_t steplen)
{
    const bp__opt_backend *be = bp__opt_backend_named(opt->name);
    for (size_t i = 0; i < be->nspec; i++)
        if (write_item(file, net, opt_item(opt, be->spec[i].name), step, steplen) < 0)
            return -1;
    begin_step(step, steplen, "cannot write /optimizer's name");
    hid_t group = H5Gopen2(file, "optimizer", H5P_DEFAULT);
    int rc = group < 0 ? -1 : bp__h5_write_string_attr(group, "name", opt->name);
    bp__h5_close(group);
    return rc;
}

/* opt holds every item its optimizer keeps, of the spec's kinds and sizes; only tensors may
 * be zeros (NULL). */
static int check_optimizer(const bp_optimizer_state *opt, char *err, size_t errlen)
{
    const bp__opt_backend *be = bp__opt_backend_named(opt->name);
    if (!be)
        return bp__fail(err, errlen, BP_EINVAL, "bp_checkpoint_write: unknown optimizer '%s'",
                        opt->name ? opt->name : "(null)");
    for (size_t i = 0; i < be->nspec; i++) {
        const bp_state_item *want = &be->spec[i], *it = opt_item(opt, want->name);
        int tensor = want->kind == BP_STATE_PARAMS || want->kind == BP_STATE_VECTORS;
        if (!it || it->kind != want->kind || (!tensor && !it->data) ||
            (want->count != BP__AS_STORED && it->count != want->count) ||
            (want->count == BP__AS_STORED && it->count == 0))
            return bp__fail(err, errlen, BP_EINVAL,
                            "bp_checkpoint_write: %s without its state item '%s'", be->name,
                            want->name);
    }
    return 0;
}

static int write_contents(hid_t file, const bp_net *net, const bp_optimizer_state *opt,
                          const bp_train_state *st, const char *config_text, char *step,
                          size_t steplen)
{
    const int version = BP_CHECKPOINT_VERSION;
    begin_step(step, steplen, "cannot write the format attributes");
    if (bp__h5_write_string_attr(file, "format", BP_CHECKPOINT_FORMAT) < 0 ||
        bp__h5_write_attr(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, 0, &version) < 0)
        return -1;
    begin_step(step, steplen, "cannot write /model");
    if (write_model_attrs(file, net) < 0 ||
        write_layers(file, &params_group, net, net->params, step, steplen) < 0 ||
        write_optimizer(file, net, opt, step, steplen) < 0)
        return -1;
    begin_step(step, steplen, "cannot write /train");
    if (write_train(file, st) < 0 ||
        (st->best_params &&
         write_layers(file, &best_group, net, st->best_params, step, steplen) < 0))
        return -1;
    begin_step(step, steplen, "cannot write /config");
    return write_config(file, config_text ? config_text : "");
}

static int write_checkpoint(const char *path, const bp_net *net, const bp_optimizer_state *opt,
                            const bp_train_state *state, const char *config_text, char *err,
                            size_t errlen)
{
    if (!path || !net || !net->params || !state || (state->nmetrics && !state->metrics))
        return bp__fail(err, errlen, BP_EINVAL, "bp_checkpoint_write: missing argument");
    char step[160] = "";
    hid_t file = bp__h5_create(1);
    int rc = file < 0 ? -1 : write_contents(file, net, opt, state, config_text, step, sizeof(step));
    if (rc == 0) /* closes the file */
        rc = bp__h5_publish(file, path, BP__OUT_REPLACE, err, errlen);
    else {
        bp__h5_close(file);
        rc = bp__fail(err, errlen, BP_ENOMEM, "%s: %s (out of memory)", path,
                      file < 0 ? "cannot create" : step);
    }
    return rc;
}

int bp_checkpoint_write(const char *path, const bp_net *net, const bp_optimizer_state *opt,
                        const bp_train_state *state, const char *config_text, char *err,
                        size_t errlen)
{
    static const bp_state_item zeros = {"v", BP_STATE_PARAMS, 0, NULL};
    const bp_optimizer_state sgd = {"sgd", 1, &zeros};
    if (!opt)
        opt = &sgd;
    int rc = check_optimizer(opt, err, errlen);
    if (rc < 0)
        return rc;
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    rc = write_checkpoint(path, net, opt, state, config_text, err, errlen);
    bp__h5_quiet_end(&q);
    return rc;
}

/* ---- reading ---- */

typedef struct {
    const char *path;
    hid_t file;
    char *err;
    size_t errlen;
} ck_reader;

/* What /model's attributes say the network is. */
typedef struct {
    int nsizes;
    int sizes[MAX_SIZES];
    bp_activation hidden, output;
    bp_cost cost;
    char scalar[8];
} model_desc;

/* Writes "PATH: WHAT" as the reason and returns code. */
__attribute__((format(printf, 3, 4))) static int refuse(const ck_reader *r, int code,
                                                        const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return bp__fail(r->err, r->errlen, code, "%s: %s", r->path, what);
}

static int open_checkpoint(ck_reader *r)
{
    /* Named before HDF5 opens it: a missing file, an unreadable one, a FIFO (which would be
     * waited on) each get their own reason. */
    int rc = bp__input_check(r->path, NULL, r->err, r->errlen);
    if (rc < 0)
        return rc;
    if (H5Fis_hdf5(r->path) <= 0)
        return refuse(r, BP_EFORMAT, "not an HDF5 file");
    r->file = H5Fopen(r->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0)
        return refuse(r, BP_EFORMAT, "cannot open as HDF5 (truncated or corrupted file)");
    return 0;
}

/* What a link visit found that is not stored in the file itself. */
typedef struct {
    const char *what;
    char name[160];
} foreign_object;

static herr_t find_foreign(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
    foreign_object *f = data;
    if (info->type == H5L_TYPE_HARD) {
        hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
        if (obj < 0)
            return -1;
        hid_t dcpl = H5Iget_type(obj) == H5I_DATASET ? H5Dget_create_plist(obj) : H5I_INVALID_HID;
        if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_VIRTUAL)
            f->what = "a virtual dataset (its values live in other files)";
        else if (dcpl >= 0 && H5Pget_external_count(dcpl) != 0)
            f->what = "a dataset stored in external raw files";
        bp__h5_close(dcpl);
        H5Oclose(obj);
    } else {
        f->what = info->type == H5L_TYPE_SOFT       ? "a soft link"
                  : info->type == H5L_TYPE_EXTERNAL ? "an external link to another file"
                                                    : "a user-defined link";
    }
    if (f->what)
        snprintf(f->name, sizeof(f->name), "/%s", name);
    return f->what ? 1 : 0;
}

/* Everything a checkpoint holds must be in the file: a link or a dataset whose values
 * come from elsewhere would resume (or evaluate) weights that the file does not contain
 * and its checksums do not cover. */
static int refuse_foreign(const ck_reader *r)
{
    foreign_object f = {NULL, ""};
    herr_t rc = H5Lvisit(r->file, H5_INDEX_NAME, H5_ITER_NATIVE, find_foreign, &f);
    if (f.what)
        return refuse(r, BP_EFORMAT,
                      "%s is %s; a checkpoint holds everything in its own file (refused)", f.name,
                      f.what);
    if (rc < 0)
        return refuse(r, BP_EFORMAT, "cannot list its objects (file corrupted)");
    return 0;
}

static int read_header(const ck_reader *r, bp_checkpoint *ck)
{
    char format[64];
    int version = 0;
    if (H5Aexists(r->file, "format") <= 0)
        return refuse(r, BP_EFORMAT, "not a backprop checkpoint (no 'format' attribute)");
    if (bp__h5_read_string_attr(r->file, "format", format, sizeof(format)) < 0)
        return refuse(r, BP_EFORMAT, "not a backprop checkpoint ('format' is not a string)");
    if (strcmp(format, BP_CHECKPOINT_FORMAT) != 0)
        return refuse(r, BP_EFORMAT, "not a backprop checkpoint (format is '%s')", format);
    if (bp__h5_read_attr(r->file, "format_version", H5T_NATIVE_INT, 1, &version) < 0)
        return refuse(r, BP_EFORMAT, "no valid 'format_version' attribute");
    if (version > BP_CHECKPOINT_VERSION)
        return refuse(r, BP_EFORMAT,
                      "format version %d is newer than this backprop supports (%d); upgrade "
                      "backprop",
                      version, BP_CHECKPOINT_VERSION);
    if (version < 1)
        return refuse(r, BP_EFORMAT, "format version %d is not valid", version);
    ck->format_version = version;
    return 0;
}

static int parse_model_names(const ck_reader *r, char names[4][16], model_desc *d)
{
    if (bp_activation_parse(names[0], &d->hidden) < 0)
        return refuse(r, BP_EFORMAT, "/model: unknown hidden activation '%s'", names[0]);
    if (bp_activation_parse(names[1], &d->output) < 0)
        return refuse(r, BP_EFORMAT, "/model: unknown output activation '%s'", names[1]);
    if (bp_cost_parse(names[2], &d->cost) < 0)
        return refuse(r, BP_EFORMAT, "/model: unknown cost '%s'", names[2]);
    if (strcmp(names[3], "float") != 0 && strcmp(names[3], "double") != 0)
        return refuse(r, BP_EFORMAT, "/model: unknown scalar type '%s'", names[3]);
    memcpy(d->scalar, names[3], strlen(names[3]) + 1);
    return 0;
}

static int read_model_desc(const ck_reader *r, model_desc *d)
{
    static const char *const keys[4] = {"hidden", "output", "cost", "scalar"};
    char names[4][16], why[160];
    hid_t model = H5Gopen2(r->file, "/model", H5P_DEFAULT);
    int rc = 0;
    if (model < 0)
        return refuse(r, BP_EFORMAT, "/model is missing");
    hssize_t n = bp__h5_attr_npoints(model, "layers");
    if (n < 2 || n > MAX_SIZES ||
        bp__h5_read_attr(model, "layers", H5T_NATIVE_INT, n, d->sizes) < 0) {
        rc = refuse(r, BP_EFORMAT, "/model attribute 'layers' is missing or malformed");
        goto cleanup;
    }
    d->nsizes = (int)n;
    for (int i = 0; i < 4 && rc == 0; i++)
        if (bp__h5_read_string_attr(model, keys[i], names[i], sizeof(names[i])) < 0)
            rc = refuse(r, BP_EFORMAT, "/model attribute '%s' is missing or malformed", keys[i]);
    if (rc == 0)
        rc = parse_model_names(r, names, d);
    if (rc == 0 &&
        bp_net_validate(d->nsizes, d->sizes, d->hidden, d->output, d->cost, why, sizeof(why)) < 0)
        rc = refuse(r, BP_EFORMAT, "/model: %s", why);
cleanup:
    bp__h5_close(model);
    return rc;
}

/* "10x20" */
static const char *format_dims(char *buf, size_t len, const hsize_t *dims, int rank)
{
    if (rank <= 0) {
        snprintf(buf, len, "not an array");
        return buf;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < rank && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%llu", i ? "x" : "",
                                 (unsigned long long)dims[i]);
    return buf;
}

static herr_t find_fletcher32(unsigned n, const H5E_error2_t *e, void *found)
{
    if (e->desc && strstr(e->desc, "Fletcher32"))
        *(int *)found = 1;
    return 0;
}

/* Whether the last failed HDF5 call failed on a checksum: HDF5 reports it only as text. */
static int checksum_failed(void)
{
    int found = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_fletcher32, &found);
    return found;
}

/* Checks that name is a floating-point array of exactly dims and reads it into out as
 * bp_real, HDF5 converting float and double; with out NULL only checks. */
static int read_real(const ck_reader *r, const char *name, int rank, const hsize_t *dims,
                     bp_real *out)
{
    hid_t dset = H5Dopen2(r->file, name, H5P_DEFAULT);
    hid_t space = dset < 0 ? H5I_INVALID_HID : H5Dget_space(dset);
    hid_t type = dset < 0 ? H5I_INVALID_HID : H5Dget_type(dset);
    hsize_t got[H5S_MAX_RANK];
    int nd = space < 0 ? -1 : H5Sget_simple_extent_dims(space, got, NULL);
    int rc = 0;
    char a[64], b[64];
    if (dset < 0)
        rc = refuse(r, BP_EFORMAT, "%s is missing", name);
    else if (nd != rank || memcmp(got, dims, (size_t)rank * sizeof(*dims)) != 0)
        rc = refuse(r, BP_EFORMAT, "%s is %s, expected %s", name,
                    format_dims(a, sizeof(a), got, nd), format_dims(b, sizeof(b), dims, rank));
    else if (H5Tget_class(type) != H5T_FLOAT)
        rc = refuse(r, BP_EFORMAT, "%s is not floating-point", name);
    else if (out && H5Dread(dset, BP__H5_REAL, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        rc = checksum_failed()
                 ? refuse(r, BP_EFORMAT, "checksum mismatch in %s (file corrupted)", name)
                 : refuse(r, BP_EFORMAT, "cannot read %s (file corrupted)", name);
    bp__h5_close(type);
    bp__h5_close(space);
    bp__h5_close(dset);
    return rc;
}

/* Reads every layer of g into the params-shaped buf of net; with net and buf NULL, only
 * checks the shapes against sizes, before anything is allocated from them. */
static int read_layers(const ck_reader *r, const tensor_group *g, int nsizes, const int *sizes,
                       const bp_net *net, bp_real *buf)
{
    for (int l = 0; l + 1 < nsizes; l++) {
        hsize_t dims[2] = {(hsize_t)sizes[l + 1], (hsize_t)sizes[l]};
        const char *leaf[2] = {g->w, g->b};
        bp_real *out[2] = {NULL, NULL};
        if (buf) {
            out[0] = buf + bp_net_offset_W(net, l);
            out[1] = buf + bp_net_offset_b(net, l);
        }
        for (int k = 0; k < 2; k++) {
            char name[96];
            layer_name(name, sizeof(name), g->group, l, leaf[k]);
            int rc = read_real(r, name, 2 - k, dims, out[k]);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* A VECTORS item's rows as the file has them (count BP__AS_STORED): the dataset's first
 * dimension, its shape checked by read_real. */
static int stored_rows(const ck_reader *r, const char *path, size_t *rows)
{
    hid_t dset = H5Dopen2(r->file, path, H5P_DEFAULT);
    hid_t space = dset < 0 ? H5I_INVALID_HID : H5Dget_space(dset);
    hsize_t dims[H5S_MAX_RANK] = {0};
    int nd = space < 0 ? -1 : H5Sget_simple_extent_dims(space, dims, NULL);
    bp__h5_close(space);
    bp__h5_close(dset);
    if (dset < 0)
        return refuse(r, BP_EFORMAT, "%s is missing", path);
    if (nd != 2 || dims[0] == 0)
        return refuse(r, BP_EFORMAT, "%s is not a matrix of rows", path);
    *rows = (size_t)dims[0];
    return 0;
}

static int read_vectors(const ck_reader *r, const bp_net *net, bp_state_item *it)
{
    char path[160], what[BP__PATH_LEN];
    snprintf(path, sizeof(path), "/optimizer/%s", it->name);
    int rc = it->count == BP__AS_STORED ? stored_rows(r, path, &it->count) : 0;
    if (rc < 0)
        return rc;
    snprintf(what, sizeof(what), "%s: %s, %zu rows of %zu parameters", r->path, path,
             it->count ? it->count : 1, net->nparams);
    rc = bp__memory_check((double)(it->count ? it->count : 1) * (double)net->nparams *
                              sizeof(bp_real),
                          what, r->err, r->errlen);
    if (rc < 0)
        return rc;
    if (!(it->data = bp__calloc(1, bp__state_item_bytes(it, net->nparams))))
        return refuse(r, BP_ENOMEM, "out of memory for %s", path);
    hsize_t dims[2] = {(hsize_t)it->count, (hsize_t)net->nparams};
    return it->count ? read_real(r, path, 2, dims, it->data)
                     : read_real(r, path, 1, dims + 1, it->data);
}

/* An attribute item: its count as the spec says or, BP__AS_STORED, as the file has it (at
 * most MAX_ATTR_VALUES). */
#define MAX_ATTR_VALUES 1024
static int read_attr_item(const ck_reader *r, bp_state_item *it)
{
    char group[160];
    const char *leaf;
    attr_place(it, group, sizeof(group), &leaf);
    hid_t g = H5Gopen2(r->file, group, H5P_DEFAULT);
    int rc = 0;
    if (g < 0) {
        rc = refuse(r, BP_EFORMAT, "%s is missing", group);
        goto done;
    }
    if (it->count == BP__AS_STORED) {
        hssize_t n = bp__h5_attr_npoints(g, leaf);
        it->count = n >= 1 && n <= MAX_ATTR_VALUES ? (size_t)n : 0;
    }
    hssize_t n = it->count ? (hssize_t)it->count : 1;
    it->data = bp__calloc((size_t)n, it->kind == BP_STATE_INTS ? sizeof(int) : sizeof(double));
    if (!it->data)
        rc = refuse(r, BP_ENOMEM, "out of memory for %s", group);
    else if (bp__h5_read_attr(g, leaf, attr_mem_type(it->kind), n, it->data) < 0)
        rc = refuse(r, BP_EFORMAT, "%s attribute '%s' is missing or malformed", group, leaf);
done:
    bp__h5_close(g);
    return rc;
}

static int read_item(const ck_reader *r, const model_desc *d, const bp_net *net, bp_state_item *it)
{
    if (it->kind == BP_STATE_PARAMS) {
        char w[64], b[64];
        snprintf(w, sizeof(w), "%sW", it->name);
        snprintf(b, sizeof(b), "%sb", it->name);
        tensor_group g = {"optimizer", w, b};
        if (!(it->data = bp__calloc(net->nparams, sizeof(bp_real))))
            return refuse(r, BP_ENOMEM, "out of memory for /optimizer's %s", it->name);
        return read_layers(r, &g, d->nsizes, d->sizes, net, it->data);
    }
    return it->kind == BP_STATE_VECTORS ? read_vectors(r, net, it) : read_attr_item(r, it);
}

/* /optimizer's name into name[16]; files without one are sgd. */
static int read_optimizer_name(const ck_reader *r, char *name)
{
    snprintf(name, 16, "sgd");
    hid_t group = H5Gopen2(r->file, "optimizer", H5P_DEFAULT);
    int rc = 0;
    if (group >= 0 && H5Aexists(group, "name") > 0 &&
        bp__h5_read_string_attr(group, "name", name, 16) < 0)
        rc = refuse(r, BP_EFORMAT, "/optimizer: unreadable name");
    bp__h5_close(group);
    return rc;
}

/* The optimizer's name (none: a file from before optimizers had names, sgd) and the items
 * its spec lists, then whatever the optimizer checks of the whole. */
static int read_optimizer(const ck_reader *r, bp_checkpoint *ck, const model_desc *d)
{
    int rc = read_optimizer_name(r, ck->optimizer);
    const bp__opt_backend *be = rc == 0 ? bp__opt_backend_named(ck->optimizer) : NULL;
    if (rc == 0 && !be)
        return refuse(r, BP_EFORMAT, "/optimizer: unknown optimizer '%s' (from a newer backprop?)",
                      ck->optimizer);
    if (rc < 0)
        return rc;
    if (!(ck->opt_state = bp__calloc(be->nspec, sizeof(*ck->opt_state))))
        return refuse(r, BP_ENOMEM, "out of memory for the optimizer's state");
    for (size_t i = 0; i < be->nspec && rc == 0; i++) {
        ck->opt_state[i] = be->spec[i];
        ck->nopt_state = i + 1;
        rc = read_item(r, d, &ck->net, &ck->opt_state[i]);
    }
    char why[256];
    if (rc == 0 && be->check &&
        be->check(ck->opt_state, ck->nopt_state, ck->net.nparams, why, sizeof(why)) < 0)
        rc = refuse(r, BP_EFORMAT, "%s", why);
    return rc;
}

static int read_model(const ck_reader *r, bp_checkpoint *ck)
{
    model_desc d;
    int rc = read_model_desc(r, &d);
    if (rc == 0)
        rc = read_layers(r, &params_group, d.nsizes, d.sizes, NULL, NULL);
    if (rc == 0)
        rc = read_layers(r, &velocity_group, d.nsizes, d.sizes, NULL, NULL);
    if (rc < 0)
        return rc;
    double params = 0;
    for (int l = 0; l + 1 < d.nsizes; l++)
        params += (double)d.sizes[l + 1] * ((double)d.sizes[l] + 1);
    char what[BP__PATH_LEN];
    snprintf(what, sizeof(what), "%s: %.0f parameters and the optimizer's state", r->path, params);
    rc = bp__memory_check(3 * params * sizeof(bp_real), what, r->err, r->errlen);
    if (rc < 0)
        return rc;
    rc = bp_net_create(&ck->net, d.nsizes, d.sizes, d.hidden, d.output, d.cost);
    if (rc == BP_ENOMEM)
        return refuse(r, rc, "out of memory for the network");
    if (rc < 0)
        return refuse(r, BP_EFORMAT, "/model: the network is too large");
    memcpy(ck->scalar, d.scalar, sizeof(ck->scalar));
    rc = read_layers(r, &params_group, d.nsizes, d.sizes, &ck->net, ck->net.params);
    if (rc == 0)
        rc = read_optimizer(r, ck, &d);
    return rc;
}

/* The column of a metrics row holding a value no run writes, or NULL. A value that does not
 * apply is NaN (an empty CSV field); costs may be +inf (a diverged evaluation), accuracies are
 * fractions, rates and times finite and never negative. */
static const char *bad_metric(const bp_metrics_row *m)
{
    const double costs[3] = {m->train_cost, m->val_cost, m->test_cost};
    const double accs[3] = {m->train_accuracy, m->val_accuracy, m->test_accuracy};
    for (int i = 0; i < 3; i++) {
        if (costs[i] < 0)
            return bp_metric_columns[2 + 2 * i];
        if (accs[i] < 0 || accs[i] > 1)
            return bp_metric_columns[3 + 2 * i];
    }
    if (m->samples_per_s < 0 || isinf(m->samples_per_s))
        return "samples_per_s";
    if (!isfinite(m->elapsed_s) || m->elapsed_s < 0)
        return "elapsed_s";
    return NULL;
}

/* The table is stored as nmetrics x NCOLS doubles; an empty one may also come as a null
 * dataspace. Its storage must hold every row: a damaged row count cannot size the buffer. */
static int read_metrics(const ck_reader *r, bp_train_state *st)
{
    hid_t dset = H5Dopen2(r->file, "/train/metrics", H5P_DEFAULT);
    hid_t space = dset < 0 ? H5I_INVALID_HID : H5Dget_space(dset);
    hsize_t dims[H5S_MAX_RANK] = {0};
    double *rows = NULL;
    int rc = 0;
    char shape[64];
    if (space < 0) {
        rc = refuse(r, BP_EFORMAT, "/train/metrics is missing");
        goto cleanup;
    }
    if (H5Sget_simple_extent_type(space) == H5S_NULL)
        goto cleanup;
    int nd = H5Sget_simple_extent_dims(space, dims, NULL);
    if (nd != 2 || dims[1] != NCOLS) {
        rc = refuse(r, BP_EFORMAT, "/train/metrics is %s, expected Nx%d",
                    format_dims(shape, sizeof(shape), dims, nd), NCOLS);
        goto cleanup;
    }
    if (dims[0] == 0)
        goto cleanup;
    if (H5Dget_storage_size(dset) < bp__mul(dims[0], NCOLS * sizeof(double))) {
        rc = refuse(r, BP_EFORMAT, "/train/metrics is truncated (file corrupted)");
        goto cleanup;
    }
    rows = bp__calloc(bp__mul(dims[0], NCOLS), sizeof(double));
    st->metrics = bp__calloc(dims[0], sizeof(bp_metrics_row));
    if (!rows || !st->metrics) {
        rc = refuse(r, BP_ENOMEM, "out of memory for /train/metrics");
        goto cleanup;
    }
    if (H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0) {
        rc = refuse(r, BP_EFORMAT, "%s /train/metrics (file corrupted)",
                    checksum_failed() ? "checksum mismatch in" : "cannot read");
        goto cleanup;
    }
    st->nmetrics = dims[0];
    if (dims[0] > (hsize_t)st->epoch) {
        rc = refuse(r, BP_EFORMAT, "/train/metrics has %llu rows for %ld epochs (file corrupted)",
                    (unsigned long long)dims[0], st->epoch);
        goto cleanup;
    }
    for (size_t i = 0; i < st->nmetrics && rc == 0; i++) {
        bp_metrics_row *m = &st->metrics[i];
        const char *bad;
        if (doubles_to_metrics(rows + i * NCOLS, m) < 0)
            rc = refuse(r, BP_EFORMAT,
                        "/train/metrics row %zu: epoch and step must be whole numbers", i);
        else if (m->epoch < 1 || m->epoch > st->epoch || m->step < 0 || m->step > st->global_step)
            rc = refuse(r, BP_EFORMAT,
                        "/train/metrics row %zu: epoch %ld, step %ld is beyond where the run "
                        "stands (epoch %ld, global step %ld; file corrupted)",
                        i, m->epoch, m->step, st->epoch, st->global_step);
        else if ((bad = bad_metric(m)) != NULL)
            rc = refuse(r, BP_EFORMAT,
                        "/train/metrics row %zu (epoch %ld): %s is out of range (file corrupted)",
                        i, m->epoch, bad);
    }
cleanup:
    bp__free(rows);
    bp__h5_close(space);
    bp__h5_close(dset);
    return rc;
}

/* Early stopping's state, when the file has it: /train's counters and /early_stopping's
 * weights. */
static int read_early_stopping(const ck_reader *r, bp_checkpoint *ck)
{
    bp_train_state *st = &ck->state;
    hid_t train = H5Gopen2(r->file, "/train", H5P_DEFAULT);
    int has = train >= 0 && H5Aexists(train, "best_epoch") > 0, rc = 0;
    int64_t ints[3] = {0, 0, 0};
    const char *names[3] = {"best_epoch", "bad_epochs", "stopped_early"};
    for (int i = 0; has && rc == 0 && i < 3; i++)
        if (bp__h5_read_attr(train, names[i], H5T_NATIVE_INT64, 1, &ints[i]) < 0)
            rc = refuse(r, BP_EFORMAT, "/train attribute '%s' is missing or malformed", names[i]);
    if (has && rc == 0 &&
        bp__h5_read_attr(train, "best_val_cost", H5T_NATIVE_DOUBLE, 1, &st->best_val_cost) < 0)
        rc = refuse(r, BP_EFORMAT, "/train attribute 'best_val_cost' is missing or malformed");
    bp__h5_close(train);
    if (!has || rc < 0)
        return rc;
    if (ints[0] < 0 || ints[0] > st->epoch || ints[1] < 0 || ints[1] > st->epoch || ints[2] < 0 ||
        ints[2] > 1)
        return refuse(r, BP_EFORMAT,
                      "/train: early stopping's best_epoch = %lld, bad_epochs = %lld, "
                      "stopped_early = %lld do not fit epoch %ld (file corrupted)",
                      (long long)ints[0], (long long)ints[1], (long long)ints[2], st->epoch);
    st->best_epoch = (long)ints[0], st->bad_epochs = (long)ints[1];
    st->stopped_early = (int)ints[2];
    st->best_params = bp__calloc(ck->net.nparams, sizeof(bp_real));
    if (!st->best_params)
        return refuse(r, BP_ENOMEM, "out of memory for early stopping's weights");
    return read_layers(r, &best_group, ck->net.nlayers + 1, ck->net.sizes, &ck->net,
                       st->best_params);
}

/* Where the run stands must be a place a run can reach: each counter within what the code
 * computes with, and consistent with the others. lbfgs's epochs are iterations, whose
 * steps (cost evaluations) are not bounded by the batches of an epoch. */
static int check_position(const ck_reader *r, const int64_t *v, const int64_t *shape, int ranks,
                          int lbfgs)
{
    long long epoch = v[0], batch = v[1], step = v[2], n = shape[0], B = shape[1];
    if (epoch < 0 || epoch > MAX_EPOCHS)
        return refuse(r, BP_EFORMAT, "/train: epoch = %lld is out of range (0 to %lld)", epoch,
                      MAX_EPOCHS);
    if (step < 0 || step > MAX_COUNT)
        return refuse(r, BP_EFORMAT, "/train: global_step = %lld is out of range (0 to %lld)", step,
                      MAX_COUNT);
    if (batch < 0 || batch > step - epoch)
        return refuse(r, BP_EFORMAT,
                      "/train: batch_in_epoch = %lld after %lld epochs does not fit global_step = "
                      "%lld (every epoch takes a step; file corrupted)",
                      batch, epoch, step);
    if (ranks < 1)
        return refuse(r, BP_EFORMAT, "/train: ranks = %d is out of range (at least 1)", ranks);
    if (n < 0 || n > MAX_COUNT || B < 0 || B > MAX_COUNT)
        return refuse(r, BP_EFORMAT, "/train: n_train = %lld or batch_size = %lld is out of range",
                      n, B);
    long long steps = n > 0 && B > 0 ? (n + B - 1) / B : 0;
    if (!lbfgs && steps > 0 && batch >= steps)
        return refuse(r, BP_EFORMAT,
                      "/train: batch_in_epoch = %lld, but an epoch of %lld examples in batches of "
                      "%lld has %lld steps (file corrupted)",
                      batch, n, B, steps);
    return 0;
}

/* The epoch in progress's running sums (elapsed_s, epoch_cost_sum, epoch_correct, epoch_seen,
 * epoch_train_s) must be sums a run can reach: finite, times and counts never negative, whole
 * counts, no more correct than seen, and no more seen than the epoch's steps so far hold
 * (an lbfgs evaluation sees the whole set once). The cost sum is only finite: a cost of
 * targets outside [0, 1] may be negative. */
static int check_sums(const ck_reader *r, const double *v, const int64_t *ints,
                      const int64_t *shape, int lbfgs)
{
    for (int i = 0; i < 5; i++)
        if (!isfinite(v[i]) || (i != 1 && v[i] < 0))
            return refuse(r, BP_EFORMAT, "/train: %s = %g is out of range (file corrupted)",
                          train_real_names[i], v[i]);
    double correct = v[2], seen = v[3], n = (double)shape[0], B = (double)shape[1];
    if (correct != floor(correct) || seen != floor(seen) || correct > seen)
        return refuse(r, BP_EFORMAT,
                      "/train: epoch_correct = %g of epoch_seen = %g examples is not a count a "
                      "run reaches (file corrupted)",
                      correct, seen);
    if ((n > 0 && seen > n) || (!lbfgs && B > 0 && seen > (double)ints[1] * B) ||
        (!lbfgs && ints[1] == 0 && seen > 0))
        return refuse(r, BP_EFORMAT,
                      "/train: epoch_seen = %g examples after %lld steps of the epoch is more "
                      "than they hold (file corrupted)",
                      seen, (long long)ints[1]);
    return 0;
}

static int read_train(const ck_reader *r, bp_train_state *st, int lbfgs)
{
    int64_t ints[3], shape[2] = {0, 0};
    double reals[5];
    const char *bad = NULL;
    hid_t train = H5Gopen2(r->file, "/train", H5P_DEFAULT);
    if (train < 0)
        return refuse(r, BP_EFORMAT, "/train is missing");
    for (int i = 0; i < 3 && !bad; i++)
        if (bp__h5_read_attr(train, train_int_names[i], H5T_NATIVE_INT64, 1, &ints[i]) < 0)
            bad = train_int_names[i];
    for (int i = 0; i < 5 && !bad; i++)
        if (bp__h5_read_attr(train, train_real_names[i], H5T_NATIVE_DOUBLE, 1, &reals[i]) < 0)
            bad = train_real_names[i];
    if (!bad && bp__h5_read_attr(train, "seed", H5T_NATIVE_UINT64, 1, &st->seed) < 0)
        bad = "seed";
    if (!bad && bp__h5_read_attr(train, "rng_state", H5T_NATIVE_UINT64, 4, st->rng.s) < 0)
        bad = "rng_state";
    if (!bad && bp__h5_read_attr(train, "ranks", H5T_NATIVE_INT, 1, &st->ranks) < 0)
        bad = "ranks";
    for (int i = 0; i < 2 && !bad; i++) /* optional: files from before lack them */
        if (H5Aexists(train, train_shape_names[i]) > 0 &&
            bp__h5_read_attr(train, train_shape_names[i], H5T_NATIVE_INT64, 1, &shape[i]) < 0)
            bad = train_shape_names[i];
    bp__h5_close(train);
    if (bad)
        return refuse(r, BP_EFORMAT, "/train attribute '%s' is missing or malformed", bad);
    int rc = check_position(r, ints, shape, st->ranks, lbfgs);
    if (rc == 0)
        rc = check_sums(r, reals, ints, shape, lbfgs);
    if (rc < 0)
        return rc;
    st->n_train = (long)shape[0];
    st->batch_size = (long)shape[1];
    st->epoch = (long)ints[0];
    st->batch_in_epoch = (long)ints[1];
    st->global_step = (long)ints[2];
    st->elapsed_s = reals[0];
    st->epoch_cost_sum = reals[1];
    st->epoch_correct = reals[2];
    st->epoch_seen = reals[3];
    st->epoch_train_s = reals[4];
    return read_metrics(r, st);
}

/* The hash is checked when present: a file written by other tools may lack it. */
static int read_config(const ck_reader *r, bp_checkpoint *ck)
{
    hid_t dset = H5Dopen2(r->file, "/config", H5P_DEFAULT);
    uint64_t want = 0;
    int has_hash = dset >= 0 && H5Aexists(dset, "fnv1a64") > 0;
    int hash_ok = !has_hash || bp__h5_read_attr(dset, "fnv1a64", H5T_NATIVE_UINT64, 1, &want) == 0;
    ck->config_text = dset < 0 ? NULL : bp__h5_read_string(dset, 0);
    bp__h5_close(dset);
    if (!ck->config_text || !hash_ok)
        return refuse(r, BP_EFORMAT, "/config is missing or malformed");
    if (has_hash && bp__hash(ck->config_text, strlen(ck->config_text), FNV_OFFSET) != want)
        return refuse(r, BP_EFORMAT, "checksum mismatch in /config (file corrupted)");
    return 0;
}

/* Whether the named optimizer's epochs are iterations over the whole set (lbfgs). */
static int whole_set(const char *optimizer)
{
    const bp__opt_backend *be = bp__opt_backend_named(optimizer);
    return be && be->whole_set;
}

static int read_checkpoint(const char *path, bp_checkpoint *ck, char *err, size_t errlen)
{
    ck_reader r = {path, H5I_INVALID_HID, err, errlen};
    memset(ck, 0, sizeof(*ck));
    if (!path)
        return bp__fail(err, errlen, BP_EINVAL, "bp_checkpoint_read: no path");
    int rc = open_checkpoint(&r);
    if (rc == 0)
        rc = read_header(&r, ck);
    if (rc == 0)
        rc = refuse_foreign(&r);
    if (rc == 0)
        rc = read_model(&r, ck);
    if (rc == 0)
        rc = read_train(&r, &ck->state, whole_set(ck->optimizer));
    if (rc == 0)
        rc = read_early_stopping(&r, ck);
    if (rc == 0)
        rc = read_config(&r, ck);
    bp__h5_close(r.file);
    if (rc < 0)
        bp_checkpoint_free(ck);
    return rc;
}

/* libhdf5 1.10 does not bounds-check its global heap, where variable-length strings live:
 * one damaged byte there can crash or hang the library (50 of the 18728 single-byte flips
 * of a checkpoint did). So a child process reads the file first and takes that risk; if it
 * dies or hangs, the file is refused and this process never parses it. */
static int probe_in_child(const char *path, char *err, size_t errlen)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 0; /* no probe possible: the real read still checks everything it can */
    if (pid == 0) {
        bp_checkpoint ck;
        char ignored[64];
        alarm(60); /* a hang ends in SIGALRM */
        _exit(read_checkpoint(path, &ck, ignored, sizeof(ignored)) == 0 ? 0 : 1);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFSIGNALED(status))
        return 0; /* read or refused cleanly: the real read gives the reason */
    int sig = WTERMSIG(status);
    return bp__fail(err, errlen, BP_EFORMAT, "%s: corrupted (the HDF5 library %s reading it)", path,
                    sig == SIGALRM ? "hung" : "crashed");
}

/* Off unless the program asks (bp_checkpoint_isolate_reads): forking is its choice. */
static int isolate_reads;

void bp_checkpoint_isolate_reads(int on)
{
    isolate_reads = on;
}

int bp_checkpoint_read(const char *path, bp_checkpoint *ck, char *err, size_t errlen)
{
    memset(ck, 0, sizeof(*ck));
    if (!path)
        return bp__fail(err, errlen, BP_EINVAL, "bp_checkpoint_read: no path");
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = isolate_reads ? probe_in_child(path, err, errlen) : 0;
    if (rc == 0)
        rc = read_checkpoint(path, ck, err, errlen);
    bp__h5_quiet_end(&q);
    return rc;
}

/* /train alone: what the run directory's checks compare, without the cost of the weights. */
static int read_state(const char *path, bp_train_state *st, char *err, size_t errlen)
{
    ck_reader r = {path, H5I_INVALID_HID, err, errlen};
    bp_checkpoint head;
    memset(&head, 0, sizeof(head));
    int rc = open_checkpoint(&r);
    if (rc == 0)
        rc = read_header(&r, &head);
    if (rc == 0)
        rc = refuse_foreign(&r);
    if (rc == 0)
        rc = read_optimizer_name(&r, head.optimizer);
    if (rc == 0)
        rc = read_train(&r, st, whole_set(head.optimizer));
    bp__h5_close(r.file);
    return rc;
}

int bp__checkpoint_read_state(const char *path, bp_train_state *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    bp__h5_quiet q;
    bp__h5_quiet_begin(&q);
    int rc = isolate_reads ? probe_in_child(path, err, errlen) : 0;
    if (rc == 0)
        rc = read_state(path, st, err, errlen);
    bp__h5_quiet_end(&q);
    if (rc < 0) {
        bp__free(st->metrics);
        memset(st, 0, sizeof(*st));
    }
    return rc;
}

void bp_checkpoint_free(bp_checkpoint *ck)
{
    if (!ck)
        return;
    bp_net_free(&ck->net);
    for (size_t i = 0; i < ck->nopt_state; i++)
        bp__free(ck->opt_state[i].data);
    bp__free(ck->opt_state);
    bp__free(ck->state.metrics);
    bp__free(ck->state.best_params);
    bp__free(ck->config_text);
    memset(ck, 0, sizeof(*ck));
}

/* ---- matching ---- */

/* "784,100,10", cut short if it does not fit. */
static const char *join_sizes(char *buf, size_t len, const bp_net *net)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i <= net->nlayers && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%d", i ? "," : "", net->sizes[i]);
    return buf;
}

int bp_checkpoint_match(const bp_checkpoint *ck, const bp_net *net, char *err, size_t errlen)
{
    const bp_net *have = &ck->net;
    if (have->nlayers != net->nlayers ||
        memcmp(have->sizes, net->sizes, (size_t)(net->nlayers + 1) * sizeof(int)) != 0) {
        char a[256], b[256];
        return bp__fail(err, errlen, BP_EMISMATCH, "checkpoint has layers %s but the config has %s",
                        join_sizes(a, sizeof(a), have), join_sizes(b, sizeof(b), net));
    }
    if (have->hidden != net->hidden)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "checkpoint has hidden = %s but the config has %s",
                        bp_activation_name(have->hidden), bp_activation_name(net->hidden));
    if (have->output != net->output)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "checkpoint has output = %s but the config has %s",
                        bp_activation_name(have->output), bp_activation_name(net->output));
    if (have->cost != net->cost)
        return bp__fail(err, errlen, BP_EMISMATCH, "checkpoint has cost = %s but the config has %s",
                        bp_cost_name(have->cost), bp_cost_name(net->cost));
    return 0;
}
