/* The trainer: setup, the distributed step, epochs, evaluation, metrics, and every point
 * where the ranks agree. All collectives of a run are called from here (through comm.c);
 * rundir.c does rank 0's file work on what this file hands it. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agree.h"
#include "blas.h"
#include "exchange.h"
#include "internal.h"
#include "rundir.h"
#include "train.h"
#include "optimizer.h"

/* "[network] layers = 784,100,10" into buf; its length. */
static int layers_text(const bp_config *c, char *buf, size_t len)
{
    int n = snprintf(buf, len, "[network] layers =");
    for (int l = 0; l < c->nsizes; l++)
        n += snprintf(buf + n, len - (size_t)n, "%s%d", l ? "," : " ", c->sizes[l]);
    return n;
}

/* Refuses a network that cannot fit before allocating it: parameters, gradient and
 * momentum, and an evaluation's workspace (activations, pre-activations and deltas of
 * BP__EVAL_ROWS rows). The batch's part is alloc_buffers', once the data says how many rows a
 * batch really has. */
static int net_fits(const bp_config *c, char *err, size_t errlen)
{
    /* Per parameter: the weights, gradient and the optimizer's state, as it counts them. */
    const bp__opt_backend *opt = bp__opt_backend_of(c->optimizer);
    double per_param = opt->per_param(c);
    double params = 0, units = 0;
    char what[64 + 12 * BP_MAX_LAYERS];
    int n = layers_text(c, what, sizeof(what));
    for (int l = 0; l < c->nsizes; l++) {
        if (l + 1 < c->nsizes)
            params += (double)c->sizes[l + 1] * ((double)c->sizes[l] + 1);
        units += c->sizes[l];
    }
    snprintf(what + n, sizeof(what) - (size_t)n, ": %.0f parameters, their gradient and %s", params,
             opt->state_what);
    double bytes = (per_param * params + 3 * (double)BP__EVAL_ROWS * units) * sizeof(bp_real);
    return bp__memory_check(bytes, what, err, errlen);
}

/* Refuses a batch that cannot fit before allocating its buffers: rows rows of the
 * workspace (activations, pre-activations and deltas) and the shard's examples. Sized by
 * the rows a step really takes, min(batch_size, examples) over the ranks. */
static int batch_fits(const bp_trainer *t, size_t shard, size_t rows, char *err, size_t errlen)
{
    const bp_config *c = t->cfg;
    double units = 0;
    for (int l = 0; l < c->nsizes; l++)
        units += c->sizes[l];
    char what[128 + 12 * BP_MAX_LAYERS];
    int n = snprintf(what, sizeof(what), "[train] batch_size = %ld: %zu rows on each rank through ",
                     c->batch_size, shard);
    n += layers_text(c, what + n, sizeof(what) - (size_t)n);
    snprintf(what + n, sizeof(what) - (size_t)n, " (activations, pre-activations, deltas)");
    double shard_bytes =
        (double)shard * ((double)(t->train.d + t->train.k) * sizeof(bp_real) + sizeof(int));
    double bytes = 3 * (double)rows * units * sizeof(bp_real) + shard_bytes;
    return bp__memory_check(bytes, what, err, errlen);
}

/* Where a run stopped mid-epoch, the rest of the epoch visits perm[s·B ..) of the epoch's
 * order over n examples: it continues exactly only with the same batch_size and the same
 * n training examples (the first n rows, limit and validation_split being what decide n).
 * The order's seed is the checkpoint's: [train] seed cannot change it. An optimizer that
 * takes the whole set in every step (lbfgs) checks its examples in its prepare.
 *
 * "KEY = OLD in the checkpoint's run and NEW here" for the first of the keys (from
 * index `from` on) that changed, into buf; NULL when none did. */
static const char *changed_key(const bp_config *was, const bp_config *now, int from, char *buf,
                               size_t len)
{
    static const char *const names[3] = {"[train] batch_size", "[data] limit",
                                         "[data] validation_split"};
    const long olds[3] = {was->batch_size, was->limit, was->validation_split};
    const long news[3] = {now->batch_size, now->limit, now->validation_split};
    for (int i = from; i < 3; i++)
        if (olds[i] != news[i]) {
            snprintf(buf, len, "%s = %ld in the checkpoint's run and %ld here", names[i], olds[i],
                     news[i]);
            return buf;
        }
    return NULL;
}

static int refuse_mid_epoch(const bp_trainer *t, const char *path, const char *what, char *err,
                            size_t errlen)
{
    return bp__fail(err, errlen, BP_EMISMATCH,
                    "%s was taken mid-epoch (step %ld of epoch %ld), and which examples the rest "
                    "of the epoch visits depends on what changed: %s; resume with the "
                    "checkpoint's setting, or change it at an epoch boundary (from a checkpoint "
                    "taken at the end of an epoch)",
                    path, t->st.batch_in_epoch, t->st.epoch + 1, what);
}

/* Every rank, from the checkpoint's own config: a mid-epoch resume needs its batch_size.
 * The data keys that changed are kept for check_resume_examples, which counts the
 * examples once the data is in (a limit beyond the rows changes none). A config that no
 * longer parses names no key. */
static int check_resume_keys(bp_trainer *t, const char *path, const char *text, char *err,
                             size_t errlen)
{
    if (t->st.batch_in_epoch == 0 || bp__optimizer_whole_set(t->opt))
        return 0;
    bp_config *was = bp__calloc(1, sizeof(*was));
    char why[256], what[160];
    const char *changed = NULL;
    if (!was)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory");
    if (bp_config_parse(was, path, text, NULL, 0, why, sizeof(why)) == 0) {
        changed = changed_key(was, t->cfg, 0, what, sizeof(what));
        if (changed && was->batch_size == t->cfg->batch_size) { /* a data key: counted later */
            snprintf(t->resume_changed, sizeof(t->resume_changed), "%s", changed);
            changed = NULL;
        }
    }
    if (!changed && t->st.batch_size > 0 && t->st.batch_size != t->cfg->batch_size) {
        snprintf(what, sizeof(what),
                 "[train] batch_size = %ld in the checkpoint's run and %ld here", t->st.batch_size,
                 t->cfg->batch_size);
        changed = what;
    }
    bp__free(was);
    return changed ? refuse_mid_epoch(t, path, changed, err, errlen) : 0;
}

/* Every rank, once the data is in: a resume mid-epoch needs the examples of the
 * checkpoint's epoch (a data set of another row count, under the same keys, changes them),
 * and its step must lie inside an epoch of this run's batches. Then the state records this
 * run's, for the checkpoints it writes. */
static int check_resume_examples(bp_trainer *t, const char *path, char *err, size_t errlen)
{
    bp_train_state *st = &t->st;
    size_t n = t->train.n, B = (size_t)t->cfg->batch_size, steps = t->batches.epoch_steps;
    char what[400];
    if (t->resumed && st->batch_in_epoch > 0 && !bp__optimizer_whole_set(t->opt)) {
        if (st->n_train > 0 && (size_t)st->n_train != n) {
            snprintf(what, sizeof(what),
                     "the training set has %ld examples in the checkpoint's run and %zu here (%s)",
                     st->n_train, n,
                     t->resume_changed[0] ? t->resume_changed : "[data] train has other rows");
            return refuse_mid_epoch(t, path, what, err, errlen);
        }
        if ((size_t)st->batch_in_epoch >= steps)
            return bp__fail(err, errlen, BP_EMISMATCH,
                            "%s stands at step %ld of epoch %ld, but an epoch of %zu examples in "
                            "batches of %zu has %zu steps (was it written by another run?)",
                            path, st->batch_in_epoch, st->epoch + 1, n, B, steps);
    }
    st->n_train = (long)n;
    st->batch_size = t->cfg->batch_size;
    return 0;
}

/* The first non-finite value of everything the run goes on from and a checkpoint holds:
 * the weights and the optimizer's state (an overflowing Adam moment stops training as
 * surely as a NaN weight, only silently). 0 when all are finite. */
static int nonfinite_state(const bp_trainer *t, char *msg, size_t len)
{
    return bp__nonfinite_params(&t->net, t->net.params, "", msg, len) ||
           bp__optimizer_nonfinite(t->opt, &t->net, msg, len);
}

/* Every rank: loads the checkpoint into t (parameters, the optimizer's state, the run's)
 * after checking it fits the configured network and optimizer. */
static int resume_from(bp_trainer *t, const char *path, char *err, size_t errlen)
{
    bp_checkpoint ck;
    int rc = bp_checkpoint_read(path, &ck, err, errlen);
    if (rc < 0)
        return rc;
    rc = bp_checkpoint_match(&ck, &t->net, err, errlen);
    if (rc == 0)
        rc = bp__optimizer_load(t->opt, &ck, path, err, errlen);
    if (rc == 0) {
        memcpy(t->net.params, ck.net.params, t->net.nparams * sizeof(bp_real));
        t->st = ck.state; /* takes over the metrics array and the best weights */
        ck.state.metrics = NULL;
        ck.state.nmetrics = 0;
        ck.state.best_params = NULL;
        t->last_ckpt_step = t->st.global_step;
        t->resumed = 1;
        rc = check_resume_keys(t, path, ck.config_text, err, errlen);
    }
    char where[128];
    if (rc == 0 && nonfinite_state(t, where, sizeof(where))) {
        /* Such state trains no further, or not at all (an infinite second moment freezes
         * its weight): the run it comes from had diverged. */
        rc = bp__fail(err, errlen, BP_EFORMAT,
                      "%s holds values that are not finite: %s (the run that wrote it had "
                      "diverged; resume from an earlier checkpoint, or start a new run)",
                      path, where);
    }
    bp_checkpoint_free(&ck);
    return rc;
}

static int build_net(bp_trainer *t, const char *resume_path, char *err, size_t errlen)
{
    const bp_config *c = t->cfg;
    if (net_fits(c, err, errlen) < 0)
        return BP_EINVAL;
    int rc = bp_net_create(&t->net, c->nsizes, c->sizes, c->hidden, c->output, c->cost);
    if (rc < 0)
        return bp__fail(err, errlen, rc, "cannot build the network: %s", bp_strerror(rc));
    rc = bp__optimizer_create(&t->opt, c, &t->net, err, errlen);
    if (rc < 0)
        return rc;
    if (resume_path)
        return resume_from(t, resume_path, err, errlen);
    /* Every rank draws the same weights from the same seed: no broadcast needed. */
    bp_rng_seed(&t->st.rng, c->seed);
    bp_net_init(&t->net, c->init, c->init_epsilon, &t->st.rng);
    t->st.seed = c->seed;
    return 0;
}

/* What [train] batch_size means for this run's data and ranks, once, when the data is in. */
static void derive_batches(bp_trainer *t)
{
    size_t n = t->train.n, B = (size_t)t->cfg->batch_size, rows = B < n ? B : n;
    t->batches.rows = rows;
    t->batches.shard = (rows + (size_t)t->comm.size - 1) / (size_t)t->comm.size;
    t->batches.epoch_steps = (n + B - 1) / B;
    t->batches.total_steps = t->cfg->epochs * (long)t->batches.epoch_steps;
}

static int alloc_buffers(bp_trainer *t, char *err, size_t errlen)
{
    size_t B = t->batches.rows, shard = t->batches.shard;
    size_t rows = shard > BP__EVAL_ROWS ? shard : BP__EVAL_ROWS;
    size_t d = t->train.d, k = t->train.k;
    if (batch_fits(t, shard, rows, err, errlen) < 0)
        return BP_EINVAL;
    if (bp_workspace_create(&t->ws, &t->net, rows) < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the workspace (%zu rows)", rows);
    t->Xb = bp__calloc(bp__mul(shard, d), sizeof(bp_real));
    t->Yb = bp__calloc(bp__mul(shard, k), sizeof(bp_real));
    t->Lb = bp__calloc(shard, sizeof(int));
    t->perm = bp__calloc(t->train.n, sizeof(size_t));
    if (!t->Xb || !t->Yb || !t->Lb || !t->perm)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for batch buffers");
    /* stream: evaluation reads a workspace of rows at a time, into the batch's buffers when
     * they are as large; the next step's rows are read ahead when an epoch has one. */
    int eval_own = t->place.kind == BP_PLACE_STREAM && rows > shard;
    if (eval_own) {
        t->place.Xe = bp__calloc(bp__mul(rows, d), sizeof(bp_real));
        t->place.Ye = bp__calloc(bp__mul(rows, k), sizeof(bp_real));
        t->place.Le = bp__calloc(rows, sizeof(int));
    }
    int ahead = t->place.kind == BP_PLACE_STREAM && B < t->train.n;
    if ((eval_own && (!t->place.Xe || !t->place.Ye || !t->place.Le)) ||
        (ahead && bp__place_ahead_buffers(&t->place, shard, d, k) < 0))
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the rows of stream");
    return 0;
}

/* The data, where [data] placement puts it. Every rank goes through every agreement here
 * (each one that fails ends it on all ranks alike): the placement is agreed (the most
 * frugal any rank chose), then the reading, and only then may the node's ranks share what
 * their rank 0 read. rc: how setup went so far on this rank. */
static int place_data(bp_trainer *t, int rc, char *err, size_t errlen)
{
    const bp_config *c = t->cfg;
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc < 0)
        return rc;
    int k = t->net.sizes[t->net.nlayers], kind, who;
    const bp_dataset *given[BP__SETS] = {t->in.train, t->in.validation, t->in.test};
    rc = bp__place_choose(&t->place, c, k, given, &t->comm, err, errlen);
    if (bp_comm_agree(&t->comm, rc == 0 ? (int)t->place.kind : 0, &kind, &who) < 0)
        rc = bp__fail(err, errlen, BP_ECOMM, "the ranks could not agree on [data] placement");
    if (rc == 0)
        rc = bp__place_set(&t->place, (bp_placement)kind, c, err, errlen);
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc == 0)
        rc = bp__place_load(&t->place, t->sets, c, &t->net, &t->comm, t->in.load_progress,
                            t->in.load_ctx, err, errlen);
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc == 0)
        rc = bp__place_share(&t->place, t->sets, err, errlen);
    return rc;
}

/* [train] early_stopping needs validation data, and room for the best weights (kept from
 * a resumed checkpoint, else none yet). Off, a resumed run's best weights are dropped. */
static int prepare_early_stopping(bp_trainer *t, char *err, size_t errlen)
{
    bp_train_state *st = &t->st;
    if (!t->cfg->early_stopping) {
        bp__free(st->best_params);
        st->best_params = NULL;
        return 0;
    }
    if (t->val.n == 0)
        return bp__fail(err, errlen, BP_EINVAL,
                        "[train] early_stopping needs validation data: set [data] validation or "
                        "validation_split");
    if (!st->best_params && !(st->best_params = bp__calloc(t->net.nparams, sizeof(bp_real))))
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for early stopping's weights");
    return 0;
}

/* [train] precision = bf16: the float build on a CPU with bf16 instructions (every rank
 * checks its own: a cluster may mix CPUs), and bf16 operands in the workspace. */
static int prepare_bf16(bp_trainer *t, char *err, size_t errlen)
{
#ifdef BACKPROP_DOUBLE
    (void)t;
    return bp__fail(err, errlen, BP_EINVAL,
                    "[train] precision = bf16 needs the float build (this backprop computes in "
                    "double)");
#else
    char why[256];
    if (bp__bf16_check(why, sizeof(why)) < 0)
        return bp__fail(err, errlen, BP_EINVAL, "[train] precision = bf16 on rank %d: %s",
                        t->comm.rank, why);
    if (bp__workspace_bf16(&t->ws, &t->net) < 0)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the bf16 operands");
    return 0;
#endif
}

/* stream: a workspace of set s's rows, read into the trainer's buffers (bp_rows_fn). */
typedef struct {
    bp_trainer *t;
    int s;
    bp_real *X, *Y;
    int *labels;
} place_rows;

static int read_place_rows(void *ctx, size_t first, size_t count, const bp_real **X,
                           const bp_real **Y, const int **labels, char *err, size_t errlen)
{
    place_rows *p = ctx;
    int rc = bp__place_rows(&p->t->place, p->t->sets, p->s, NULL, count, first, p->X, p->Y,
                            p->labels, err, errlen);
    *X = p->X, *Y = p->Y;
    *labels = p->t->sets[p->s]->labels ? p->labels : NULL;
    return rc;
}

/* ---- the same run on every rank ----
 * mpirun's MPMD form (-np 1 -wdir A backprop train c.ini : -np 1 -wdir B ...) starts ranks
 * with configs and data of their own. Before any collective that depends on them, every
 * rank compares its effective config, its data and the state it starts from with rank
 * 0's: one allreduce of a hash when they agree, and when they do not, rank 0's copy
 * broadcast so that each rank names what differs. */

/* Everything a step depends on besides the weights: where the run stands (the position,
 * the rng, the epoch's sums, early stopping's counters and weights) and the optimizer's
 * whole state. Ranks that differ in any of it would take other steps, or end the run at
 * other points, and wait for each other. */
static uint64_t position_hash(const bp_trainer *t)
{
    const bp_train_state *st = &t->st;
    size_t bytes = t->net.nparams * sizeof(bp_real);
    const int64_t counts[] = {st->epoch,         st->batch_in_epoch,   st->global_step,
                              (int64_t)st->seed, st->best_epoch,       st->bad_epochs,
                              st->stopped_early, (int64_t)st->nmetrics};
    const double reals[] = {st->epoch_cost_sum, st->epoch_correct, st->epoch_seen,
                            st->best_val_cost};
    uint64_t parts[5] = {bp__hash_words(counts, sizeof(counts), 0),
                         bp__hash_words(reals, sizeof(reals), 0),
                         bp__hash_words(st->rng.s, sizeof(st->rng.s), 0),
                         st->best_params ? bp__hash_words(st->best_params, bytes, 0) : 0,
                         bp__optimizer_hash(t->opt, 0)};
    return bp__hash_words(parts, sizeof(parts), 0);
}

/* Every rank trains on rank 0's sets, from rank 0's state (the same initial weights, or
 * the same checkpoint, whatever --resume called it). */
static int run_agree(bp_trainer *t, char *err, size_t errlen)
{
    static const char *const names[BP__SETS] = {"[data] train", "validation set", "[data] test"};
    const char *paths[BP__SETS] = {
        t->cfg->train, t->cfg->validation[0] ? t->cfg->validation : t->cfg->train, t->cfg->test};
    if (t->place.given[BP__SET_TRAIN]) /* bp_trainer_options: no file was read */
        for (int s = 0; s < BP__SETS; s++)
            paths[s] = "given in memory";
    place_rows p = {.t = t,
                    .X = t->place.Xe ? t->place.Xe : t->Xb,
                    .Y = t->place.Xe ? t->place.Ye : t->Yb,
                    .labels = t->place.Xe ? t->place.Le : t->Lb};
    int rc = 0;
    for (int s = 0; s < BP__SETS && rc == 0; s++) {
        p.s = s;
        rc = bp__data_agree(&t->comm, t->sets[s], read_place_rows, &p, names[s], paths[s], err,
                            errlen);
    }
    if (rc < 0) /* agreed */
        return rc;
    struct {
        uint64_t weights, position;
        int64_t step, epoch, batch;
    } mine = {bp__net_hash(&t->net, NULL), position_hash(t), t->resumed ? t->st.global_step : -1,
              t->st.epoch, t->st.batch_in_epoch},
      rank0;
    rc = bp__differs_from_rank0(&t->comm, &mine, &rank0, sizeof(mine));
    if (rc == 1 && mine.weights == rank0.weights && mine.step == rank0.step) {
        rc = bp__fail(err, errlen, BP_EMISMATCH,
                      "rank %d resumes from another state than rank 0, with the same weights at "
                      "global step %lld: epoch %lld, step %lld of it on rank %d, epoch %lld, step "
                      "%lld on rank 0, or other optimizer, early stopping or rng state (every "
                      "rank must resume from the same checkpoint)",
                      t->comm.rank, (long long)mine.step, (long long)mine.epoch + 1,
                      (long long)mine.batch, t->comm.rank, (long long)rank0.epoch + 1,
                      (long long)rank0.batch);
    } else if (rc == 1) {
        char at[2][64];
        int64_t steps[2] = {mine.step, rank0.step};
        for (int i = 0; i < 2; i++)
            snprintf(at[i], sizeof(at[i]),
                     steps[i] < 0 ? "a fresh start" : "a checkpoint of global step %lld",
                     (long long)steps[i]);
        rc = bp__fail(err, errlen, BP_EMISMATCH,
                      "rank %d starts from other weights than rank 0: %s on rank %d, %s on rank "
                      "0 (every rank must resume from the same checkpoint)",
                      t->comm.rank, at[0], t->comm.rank, at[1]);
    } else if (rc < 0) {
        rc = bp__fail(err, errlen, rc, "comparing the ranks' weights failed");
    }
    return bp__agree(&t->comm, rc, err, errlen);
}

/* Setup's protocol is three agreements on every rank, whatever fails where: one after the
 * run directory is claimed, one when the data and the network are in memory, one after the
 * gradient exchange (collective) is set up. */
static int setup(bp_trainer *t, const char *resume, char *err, size_t errlen)
{
    const bp_config *cfg = t->cfg;
    int rc = bp_comm_watch(&t->comm, cfg->comm_timeout, NULL, NULL) < 0
                 ? bp__fail(err, errlen, BP_ENOMEM, "cannot start the watchdog")
                 : bp__blas_setup(&t->threads, err, errlen);
    /* The run directory first: a second run started on it ends here, before any work. */
    if (rc == 0 && t->comm.rank == 0)
        rc = bp__rundir_prepare(cfg, resume, &t->dir_lock, &t->metrics_lock, err, errlen);
    rc = bp__agree(&t->comm, rc, err, errlen);
    /* Before the first collective that depends on the config (known to all ranks: rc is). */
    if (rc == 0)
        rc = bp__config_agree(&t->comm, cfg, err, errlen);
    int setup_failed = rc < 0;
    char resume_path[BP_PATH_MAX + 32] = "";
    if (rc == 0 && resume)
        rc = bp__rundir_resolve(cfg, resume, resume_path, sizeof(resume_path), err, errlen);
    if (rc == 0)
        rc = build_net(t, resume ? resume_path : NULL, err, errlen);
    double loading = bp__now_s();
    if (!setup_failed) /* known to all ranks: the agreements in it are for all or none */
        rc = place_data(t, rc, err, errlen);
    t->load_s = bp__now_s() - loading;
    if (rc == 0) {
        derive_batches(t);
        rc = check_resume_examples(t, resume_path, err, errlen);
    }
    if (rc == 0)
        rc = alloc_buffers(t, err, errlen);
    if (rc == 0)
        rc = prepare_early_stopping(t, err, errlen);
    if (rc == 0 && cfg->bf16)
        rc = prepare_bf16(t, err, errlen);
#ifdef BACKPROP_DOUBLE
    if (rc == 0 && cfg->comm_bf16)
        rc = bp__fail(err, errlen, BP_EINVAL,
                      "[comm] dtype = bf16 needs the float build (this backprop computes in "
                      "double)");
#endif
    if (rc == 0 && t->comm.rank == 0)
        rc = bp__saver_create(&t->saver, cfg, &t->net, t->config_text, err, errlen);
    if (rc == 0)
        rc = bp__optimizer_prepare(t->opt, (double)t->train.n, t->resumed, err, errlen);
    t->st.ranks = t->comm.size;
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc == 0) /* before the steps, whose number and rows depend on the data */
        rc = run_agree(t, err, errlen);
    if (rc < 0)
        return rc;
    rc = bp__exchange_create(&t->exchange, &t->comm, &t->net, t->net.nparams + BP__EXTRAS,
                             cfg->bucket_mb, cfg->overlap, t->net.nparams, cfg->comm_bf16, err,
                             errlen);
    if (rc == 0)
        t->grad = bp__exchange_buffer(t->exchange);
    return bp__agree(&t->comm, rc, err, errlen);
}

int bp_trainer_create(bp_trainer **out, const bp_config *cfg, const char *config_text,
                      const bp_comm *comm, const char *resume, char *err, size_t errlen)
{
    bp_trainer_options opts = {.config_text = config_text, .resume = resume};
    return bp_trainer_create_with(out, cfg, comm, &opts, err, errlen);
}

const bp_net *bp_trainer_net(const bp_trainer *t)
{
    return &t->net;
}

int bp_trainer_create_with(bp_trainer **out, const bp_config *cfg, const bp_comm *comm,
                           const bp_trainer_options *opts, char *err, size_t errlen)
{
    static const bp_trainer_options none;
    if (!opts)
        opts = &none;
    const char *config_text = opts->config_text, *resume = opts->resume;
    if (err && errlen)
        err[0] = 0;
    *out = NULL;
    bp_trainer *t = bp__calloc(1, sizeof(*t));
    size_t need = config_text ? strlen(config_text) + 1 : bp_config_format(cfg, NULL, 0) + 1;
    char *text = t ? bp__calloc(need, 1) : NULL;
    int rc = text ? 0 : bp__fail(err, errlen, BP_ENOMEM, "out of memory");
    if (text && config_text)
        memcpy(text, config_text, need);
    else if (text)
        bp_config_format(cfg, text, need);
    if (t) {
        t->dir_lock.fd = t->metrics_lock.fd = -1;
        t->sets[BP__SET_TRAIN] = &t->train;
        t->sets[BP__SET_VAL] = &t->val;
        t->sets[BP__SET_TEST] = &t->test;
        t->cfg = cfg;
        t->config_text = text;
        t->comm = *comm;
        t->last_ckpt_step = -1;
        t->threads = cfg->threads ? cfg->threads : bp__auto_threads(comm); /* setup sets it */
        t->in = *opts;
    }
    if (t && text)
        rc = setup(t, resume, err, errlen);
    if (t) /* the caller's, copied by now */
        t->in = (bp_trainer_options){0};
    else /* setup's first two agreements: the others return after the second */
        rc = bp__agree(comm, bp__agree(comm, rc, err, errlen), err, errlen);
    if (rc < 0) {
        if (t)
            bp_trainer_free(t);
        else
            bp__free(text);
        return rc;
    }
    *out = t;
    return 0;
}

void bp_trainer_free(bp_trainer *t)
{
    if (!t)
        return;
    bp__saver_free(t->saver); /* the write in flight ends first, under the lock */
    bp__lock_drop(&t->metrics_lock);
    bp__lock_drop(&t->dir_lock);
    bp_workspace_free(&t->ws);
    bp_net_free(&t->net);
    bp__exchange_free(t->exchange); /* its thread's MPI calls end before the windows go */
    bp__place_free(&t->place, t->sets);
    bp__optimizer_free(t->opt);
    bp__free(t->Xb);
    bp__free(t->Yb);
    bp__free(t->Lb);
    bp__free(t->perm);
    bp__free(t->st.metrics);
    bp__free(t->st.best_params);
    bp__free(t->config_text);
    bp__free(t);
}

void bp_trainer_get_info(const bp_trainer *t, bp_trainer_info *info)
{
    *info = (bp_trainer_info){.nparams = t->net.nparams,
                              .n_train = t->train.n,
                              .n_val = t->val.n,
                              .n_test = t->test.n,
                              .ranks = t->comm.size,
                              .threads = t->threads,
                              .resumed = t->resumed,
                              .load_s = t->load_s,
                              .epoch = t->st.epoch,
                              .batch_in_epoch = t->st.batch_in_epoch,
                              .global_step = t->st.global_step,
                              .stop_signal = t->stop_signal,
                              .stopped_early = t->st.stopped_early,
                              .best_epoch = t->st.best_epoch,
                              .best_val_cost = t->st.best_val_cost,
                              .converged = t->opt ? bp__optimizer_converged(t->opt) : 0,
                              .bf16 = t->ws.bf16 != NULL};
    bp__exchange_describe(t->exchange, info->exchange, sizeof(info->exchange));
    const bp__place *p = &t->place;
    snprintf(info->placement, sizeof(info->placement), "%s%s%s%s", bp_placement_names[p->kind],
             p->why[0] ? " (auto: " : "", p->why, p->why[0] ? ")" : "");
}

int bp_trainer_step_times(const bp_trainer *t, bp_step_times *times)
{
    double n = (double)t->timed_steps, slowest = t->compute_s;
    int rc = bp__comm_max_double(&t->comm, &slowest);
    double ms = n > 0 ? 1e3 / n : 0;
    *times = (bp_step_times){
        .steps = t->timed_steps,
        .data_ms = ms * t->data_s,
        .compute_ms = ms * t->compute_s,
        .slowest_compute_ms = ms * (rc == 0 ? slowest : t->compute_s),
        .exchange_ms = ms * t->exchange_s,
        .hidden_ms =
            ms * (t->exchange_busy_s > t->exchange_s ? t->exchange_busy_s - t->exchange_s : 0),
        .update_ms = ms * t->update_s};
    if (t->saver && t->ckpts > 0) {
        long writes;
        double write_s;
        bp__saver_stats(t->saver, &writes, &write_s);
        times->checkpoints = t->ckpts;
        times->checkpoint_pause_ms = 1e3 * t->ckpt_pause_s / (double)t->ckpts;
        times->checkpoint_write_ms = writes > 0 ? 1e3 * write_s / (double)writes : 0;
    }
    return rc < 0 ? BP_ECOMM : 0;
}

/* Asks for this rank's rows of the batch at perm[first ..] ahead of the next gather: into
 * the caches while the current step computes, or from the file under stream. */
static void ask_ahead(bp_trainer *t, size_t first)
{
    size_t n = t->train.n, B = (size_t)t->cfg->batch_size, lo, hi;
    if (first >= n)
        return;
    size_t m = n - first < B ? n - first : B;
    bp__shard(m, t->comm.rank, t->comm.size, &lo, &hi);
    bp__place_ahead(&t->place, t->sets, t->perm + first + lo, hi - lo);
}

/* Copies this rank's rows of the global batch perm[first .. first + m) into Xb, Yb, Lb,
 * and sets *rows to how many. A failure to read them is in err. */
static int gather_shard(bp_trainer *t, size_t first, size_t m, size_t *rows, char *err,
                        size_t errlen)
{
    size_t lo, hi;
    bp__shard(m, t->comm.rank, t->comm.size, &lo, &hi);
    *rows = hi - lo;
    int rc = 0;
    if (!bp__place_take_ahead(&t->place, t->perm + first + lo, hi - lo, &t->Xb, &t->Yb, &t->Lb))
        rc = bp__place_rows(&t->place, t->sets, BP__SET_TRAIN, t->perm + first + lo, hi - lo, 0,
                            t->Xb, t->Yb, t->Lb, err, errlen);
    ask_ahead(t, first + m);
    return rc;
}

/* Set by bp_request_stop, from a signal handler or another thread: the signal, or 0.
 * A lock-free atomic, so both are safe. */
static atomic_int stop_requested;

void bp_request_stop(int signo)
{
    int none = 0;
    if (signo == 0)
        atomic_store(&stop_requested, 0);
    else
        atomic_compare_exchange_strong(&stop_requested, &none, signo);
}

/* What this rank tells the others with its gradients: whether it was asked to stop, and on
 * rank 0, the checkpoint it took before the step for [checkpoint] every_seconds, or that a
 * background write failed. */
static void post_extras(bp_trainer *t, bp_real *extra)
{
    extra[BP__SLOT_STOP] = atomic_load_explicit(&stop_requested, memory_order_relaxed) != 0;
    int orders = 0;
    if (t->comm.rank == 0) {
        if (t->told_checkpoint)
            orders |= BP__ORDER_CHECKPOINT;
        if (t->write_failed || bp__saver_failed(t->saver))
            orders |= BP__ORDER_WRITE_FAILED;
    }
    extra[BP__SLOT_ORDERS] = (bp_real)orders;
    extra[BP__SLOT_FAILED] = t->read_failed;
}

/* One step: this rank's gradient sums, summed over the ranks bucket by bucket from the
 * last layer back while the backward pass goes on (the extra slots ride in the first
 * bucket), and the same update on every rank, applied to each bucket as its sum arrives.
 * Returns 0, BP_ECOMM or BP_EDIVERGED. */
static int train_step(bp_trainer *t, size_t first, size_t m, char *err, size_t errlen)
{
    size_t np = t->net.nparams;
    bp_real *extra = t->grad + np;
    double exposed0, busy0;
    bp__exchange_times(t->exchange, &exposed0, &busy0);
    double started = bp__now_s();
    bp__optimizer_begin(t->opt, &t->net); /* lbfgs: to the trial this step evaluates */
    bp__bf16_weights(&t->net, &t->ws);    /* once per step; nothing unless precision = bf16 */
    size_t rows;
    /* A rank that cannot read its rows joins the exchange idle and says so there. */
    t->read_failed = gather_shard(t, first, m, &rows, err, errlen) < 0;
    if (t->read_failed)
        rows = 0;
    double gathered = bp__now_s();
    bp__exchange_begin(t->exchange);
    if (rows > 0) {
        bp_forward(&t->net, &t->ws, t->Xb, rows);
        extra[BP__SLOT_COST] = (bp_real)bp_cost_sum(&t->net, &t->ws, t->Yb, rows);
        extra[BP__SLOT_CORRECT] =
            t->train.labels ? (bp_real)bp_count_correct(&t->net, &t->ws, t->Lb, rows) : 0;
        /* As late as the slots can be read: a request that comes during the forward pass
         * still stops this step. */
        post_extras(t, extra);
        /* overwrites: no memset */
        bp__backward_ready(&t->net, &t->ws, t->Yb, rows, t->grad, 0, bp__exchange_ready,
                           t->exchange);
    } else {
        /* An idle rank still joins the exchange, with zeros. */
        memset(t->grad, 0, np * sizeof(bp_real));
        extra[BP__SLOT_COST] = extra[BP__SLOT_CORRECT] = 0;
        post_extras(t, extra);
        bp__exchange_ready(t->exchange, 0);
    }
    double computed = bp__now_s(), updating = 0, exposed_backward, busy;
    bp__exchange_times(t->exchange, &exposed_backward, &busy);
    bp__comm_set_step(&t->comm, t->st.global_step + 1);
    size_t lo, hi;
    const bp_real *sum;
    int rc, diverged = 0, nonfinite = 0;
    /* Adam's step count is this update's: global_step + 1. */
    bp__optimizer_set_step(t->opt,
                           bp__learning_rate(t->cfg, t->st.epoch, t->st.global_step,
                                             t->batches.total_steps, (double)t->train.n),
                           t->st.global_step + 1);
    int applies = bp__optimizer_applies(t->opt);
    while ((rc = bp__exchange_next(t->exchange, &lo, &hi, &sum)) == 1) {
        double u = bp__now_s();
        if (hi == np + BP__EXTRAS) { /* the first bucket: check the cost before any update */
            t->step_cost = (double)sum[np + BP__SLOT_COST];
            t->step_correct = (double)sum[np + BP__SLOT_CORRECT];
            t->step_stop = sum[np + BP__SLOT_STOP] > 0;
            t->step_orders = (int)sum[np + BP__SLOT_ORDERS];
            t->step_failed = sum[np + BP__SLOT_FAILED] > 0;
            diverged = !isfinite(t->step_cost) && applies;
        }
        /* Diverged: every rank still takes every bucket, and stops after. The updates say
         * whether they left a weight that is not finite: the same on every rank (the same
         * sums), so every rank stops after this step, with no collective. An optimizer that
         * does not apply ranges (lbfgs) takes the whole sum, below. */
        if (!diverged && applies)
            nonfinite |=
                bp__optimizer_apply(t->opt, &t->net, sum, (double)m, lo, hi < np ? hi : np);
        updating += bp__now_s() - u;
    }
    if (rc == 0) {
        double u = bp__now_s();
        if (!diverged) /* else the line search copes: only its first cost can diverge */
            t->outcome =
                bp__optimizer_evaluated(t->opt, &t->net, sum, t->step_cost, t->step_correct);
        diverged |= t->outcome == BP__OPT_DIVERGED;
        updating += bp__now_s() - u;
    }
    double ended = bp__now_s();
    if (rc < 0)
        return BP_ECOMM;
    if (t->step_failed)
        return BP_EIO;
    t->step_nonfinite = nonfinite;
    if (diverged || nonfinite)
        return BP_EDIVERGED;
    bp__exchange_times(t->exchange, NULL, &busy); /* the waits after it are timed here */
    /* Time the backward pass spent in the exchange is not computing. */
    double in_backward = exposed_backward - exposed0;
    t->data_s += gathered - started;
    t->compute_s += computed - gathered - in_backward;
    t->exchange_s += in_backward + (ended - computed - updating);
    t->exchange_busy_s += busy - busy0;
    t->update_s += updating;
    t->timed_steps++;
    if (bp__optimizer_whole_set(t->opt)) { /* the metrics of the point an iteration ends at */
        bp__optimizer_point(t->opt, &t->st.epoch_cost_sum, &t->st.epoch_correct);
        t->st.epoch_seen = (double)m;
        return 0;
    }
    t->st.epoch_cost_sum += t->step_cost;
    t->st.epoch_correct += t->step_correct;
    t->st.epoch_seen += (double)m;
    return 0;
}

/* bp__evaluate over set s wherever its rows are: under stream, read a workspace at a time
 * (the chunks it takes from memory, so the sums come out the same). */
static int evaluate(bp_trainer *t, int s, double *out, char *err, size_t errlen)
{
    /* the batch's buffers when they hold a workspace of rows (alloc_buffers) */
    place_rows p = {.t = t,
                    .s = s,
                    .X = t->place.Xe ? t->place.Xe : t->Xb,
                    .Y = t->place.Xe ? t->place.Ye : t->Yb,
                    .labels = t->place.Xe ? t->place.Le : t->Lb};
    int stream = t->place.kind == BP_PLACE_STREAM;
    int rc = bp__evaluate(&t->net, &t->ws, t->sets[s], stream ? read_place_rows : NULL, &p,
                          &t->comm, 0, out, err, errlen);
    return rc < 0 ? rc : out[3] > 0 ? BP_EIO : 0; /* the rank that could not read says why */
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : NAN;
}

/* Validation and test after an epoch of `steps` steps, then the metrics row every rank
 * keeps. */
static int end_epoch(bp_trainer *t, long steps, bp_metrics_row *row, char *err, size_t errlen)
{
    double v[BP__EVAL_OUT];
    const bp_dataset *sets[2] = {&t->val, &t->test};
    double *costs[2] = {&row->val_cost, &row->test_cost};
    double *accs[2] = {&row->val_accuracy, &row->test_accuracy};
    int has_labels = t->train.labels != NULL;
    row->epoch = t->st.epoch;
    row->step = t->st.global_step;
    row->train_cost = ratio(t->st.epoch_cost_sum, t->st.epoch_seen);
    row->train_accuracy = has_labels ? ratio(t->st.epoch_correct, t->st.epoch_seen) : NAN;
    for (int i = 0; i < 2; i++) {
        *costs[i] = *accs[i] = NAN;
        if (sets[i]->n == 0)
            continue;
        int rc = evaluate(t, i ? BP__SET_TEST : BP__SET_VAL, v, err, errlen);
        if (rc < 0)
            return rc;
        *costs[i] = ratio(v[0], v[2]);
        *accs[i] = sets[i]->labels ? ratio(v[1], v[2]) : NAN;
    }
    /* lbfgs: each of the epoch's evaluations went over the whole set */
    double seen =
        bp__optimizer_whole_set(t->opt) ? t->st.epoch_seen * (double)steps : t->st.epoch_seen;
    row->samples_per_s = ratio(seen, t->st.epoch_train_s);
    row->elapsed_s = t->elapsed_base + bp__now_s() - t->run_started;
    return 0;
}

/* Early stopping after an epoch, the same on every rank (the validation cost is summed
 * over them): a better validation cost keeps this epoch's weights; `early_stopping`
 * epochs in a row without one stop the run. */
static void track_best(bp_trainer *t, const bp_metrics_row *row)
{
    bp_train_state *st = &t->st;
    if (!st->best_params)
        return;
    if (st->best_epoch == 0 || row->val_cost < st->best_val_cost) {
        st->best_val_cost = row->val_cost;
        st->best_epoch = row->epoch;
        st->bad_epochs = 0;
        memcpy(st->best_params, t->net.params, t->net.nparams * sizeof(bp_real));
    } else if (++st->bad_epochs >= t->cfg->early_stopping) {
        st->stopped_early = 1;
    }
}

/* Ends an epoch on every rank: evaluation, the metrics row every rank keeps, rank 0's CSV
 * row and callback, and the agreement on how rank 0's write went. */
static int finish_epoch(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen)
{
    long steps = t->st.batch_in_epoch;
    t->st.epoch++;
    t->st.batch_in_epoch = 0;
    bp_metrics_row row;
    /* Every path ends in the one agreement below: a rank that failed alone must not skip
     * it, or the others would wait there for it. */
    int rc = end_epoch(t, steps, &row, err, errlen);
    bp_metrics_row *grown =
        rc == 0 ? bp__realloc(t->st.metrics, t->st.nmetrics + 1, sizeof(row)) : NULL;
    if (rc == 0 && !grown)
        rc = bp__fail(err, errlen, BP_ENOMEM, "out of memory for metrics");
    if (rc == 0) {
        t->st.metrics = grown;
        t->st.metrics[t->st.nmetrics++] = row;
        t->st.epoch_cost_sum = t->st.epoch_correct = t->st.epoch_seen = t->st.epoch_train_s = 0;
        track_best(t, &row);
    }
    if (rc == 0 && t->comm.rank == 0) {
        if (cb && cb->epoch)
            cb->epoch(cb->ctx, &row, t->cfg->epochs);
        rc = bp__rundir_append_metrics(t->cfg, &row, err, errlen);
    }
    return bp__agree(&t->comm, rc, err, errlen);
}

/* Every rank: the replicas must still be bit-identical (trust, then verify). 0 or BP_ECOMM
 * on every rank, agreed. */
static int check_replicas(bp_trainer *t, char *err, size_t errlen)
{
    double began = bp__now_s();
    size_t bytes = t->net.nparams * sizeof(bp_real);
    uint64_t h = bp__optimizer_hash(t->opt, bp__hash_words(t->net.params, bytes, 0));
    int same = bp_comm_same(&t->comm, h);
    int rc = 0;
    if (same == BP_ECOMM)
        rc = bp__fail(err, errlen, BP_ECOMM, "comparing the replicas at step %ld failed",
                      t->st.global_step);
    else if (!same)
        rc = bp__fail(err, errlen, BP_ECOMM,
                      "replicas differ at step %ld: the ranks' weights are no longer "
                      "bit-identical",
                      t->st.global_step);
    t->ckpt_pause_s += bp__now_s() - began;
    return bp__agree(&t->comm, rc, err, errlen);
}

/* Rank 0: the state copied for the writer thread, which writes it while training goes on.
 * 0, or the failure of the previous write. */
static int snapshot(bp_trainer *t, char *err, size_t errlen)
{
    /* Never a checkpoint of weights or optimizer state that are not finite: the steps stop
     * on them, and this holds for every other way they change too (lbfgs, early stopping's
     * best). */
    char where[128];
    if (nonfinite_state(t, where, sizeof(where)))
        return bp__fail(err, errlen, BP_EDIVERGED,
                        "not writing a checkpoint at step %ld: %s (training diverged)",
                        t->st.global_step, where);
    double began = bp__now_s();
    t->st.elapsed_s = t->elapsed_base + began - t->run_started;
    t->st.ranks = t->comm.size;
    bp_state_item items[BP__OPT_MAX_ITEMS];
    bp_run_snapshot snap = {&t->net, bp__optimizer_state(t->opt, items), &t->st, t->config_text};
    int rc = bp__saver_start(t->saver, &snap, err, errlen);
    t->last_ckpt_at = began;
    t->ckpts++;
    t->ckpt_pause_s += bp__now_s() - began;
    return rc;
}

/* A checkpoint of where the run stands, on every rank: the replica check, then rank 0's
 * snapshot (and with wait, its write); the outcome so far is agreed. */
static int checkpoint(bp_trainer *t, int wait, char *err, size_t errlen)
{
    int rc = check_replicas(t, err, errlen);
    if (rc < 0)
        return rc;
    if (t->comm.rank == 0) {
        rc = snapshot(t, err, errlen);
        if (rc == 0 && wait)
            rc = bp__saver_wait(t->saver, err, errlen);
    }
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc == 0)
        t->last_ckpt_step = t->st.global_step;
    return rc;
}

/* Rank 0 waits for the write in flight; agreed. */
static int saver_wait(bp_trainer *t, char *err, size_t errlen)
{
    int rc = t->comm.rank == 0 ? bp__saver_wait(t->saver, err, errlen) : 0;
    return bp__agree(&t->comm, rc, err, errlen);
}

int bp_trainer_checkpoint(bp_trainer *t, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    return checkpoint(t, 1, err, errlen);
}

static int want_checkpoint(const bp_trainer *t, int epoch_ended)
{
    const bp_config *c = t->cfg;
    if (c->every_steps && t->st.global_step % c->every_steps == 0)
        return 1;
    return epoch_ended && c->every_epochs && t->st.epoch % c->every_epochs == 0;
}

/* At a step boundary, the checkpoint that is due. every_steps and every_epochs are known to
 * every rank. every_seconds is rank 0's clock alone: rank 0 takes the checkpoint at once,
 * at the first boundary after the time has passed, and the next step's exchange tells the
 * others (after_step), who then check the replicas with it. */
static int at_boundary(bp_trainer *t, int epoch_ended, char *err, size_t errlen)
{
    if (want_checkpoint(t, epoch_ended))
        return checkpoint(t, 0, err, errlen);
    double every = t->cfg->every_seconds;
    if (t->comm.rank != 0 || every <= 0 || bp__now_s() - t->last_ckpt_at < every)
        return 0;
    if (snapshot(t, err, errlen) < 0)
        t->write_failed = 1; /* err holds why; the next step tells the others */
    else
        t->told_checkpoint = 1;
    return 0;
}

/* What the step's extra slots said, once it is counted: a failed write (every rank
 * returns BP_EIO), a checkpoint rank 0 took before the step (every rank checks the
 * replicas), a stop (taken at the end of the step, or of the epoch when it ends one). */
static int after_step(bp_trainer *t, char *err, size_t errlen)
{
    if (t->step_orders & BP__ORDER_WRITE_FAILED) {
        if (t->comm.rank != 0)
            return bp__fail(err, errlen, BP_EIO, "the checkpoint write on rank 0 failed");
        if (!t->write_failed) /* else err already says why */
            bp__saver_wait(t->saver, err, errlen);
        return BP_EIO;
    }
    t->stopping |= t->step_stop;
    if (t->step_orders & BP__ORDER_CHECKPOINT) {
        t->told_checkpoint = 0;
        int rc = check_replicas(t, err, errlen);
        if (rc < 0)
            return rc;
        t->last_ckpt_step = t->st.global_step - 1;
    }
    return 0;
}

/* The steps of one epoch from where the state says it stands. Under lbfgs an epoch is one
 * iteration: its steps are the line search's evaluations, each of the whole set (in its
 * order: a point's cost comes out the same whenever it is evaluated). */
static int run_epoch(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen)
{
    int lbfgs = bp__optimizer_whole_set(t->opt);
    size_t n = t->train.n, B = t->batches.rows;
    size_t nb = lbfgs ? SIZE_MAX : t->batches.epoch_steps;
    if (lbfgs)
        for (size_t i = 0; i < n; i++)
            t->perm[i] = i;
    else
        bp_epoch_permutation(t->st.seed, t->st.epoch, n, t->perm);
    double started = bp__now_s();
    for (size_t s = (size_t)t->st.batch_in_epoch; s < nb; s++) {
        size_t first = s * B % n, m = n - first < B ? n - first : B;
        int rc = train_step(t, first, m, err, errlen);
        if (rc == BP_EDIVERGED && lbfgs)
            return bp__fail(err, errlen, rc,
                            "the cost or its gradient at the initial weights is not finite (%g): "
                            "check the data and [network] init",
                            t->step_cost);
        if (rc == BP_EDIVERGED && t->step_nonfinite) {
            char where[128];
            nonfinite_state(t, where, sizeof(where));
            return bp__fail(err, errlen, rc,
                            "training diverged at epoch %ld, step %ld: %s after the update "
                            "(the cost was %g; check the data, or try a smaller learning_rate)",
                            t->st.epoch + 1, t->st.global_step + 1, where, t->step_cost);
        }
        if (rc == BP_EDIVERGED)
            return bp__fail(err, errlen, rc,
                            "training diverged at epoch %ld, step %ld: the cost is %g (try a "
                            "smaller learning_rate)",
                            t->st.epoch + 1, t->st.global_step + 1, t->step_cost);
        if (rc == BP_EIO && !t->read_failed) /* the rank that could not read says why */
            return rc;
        if (rc < 0 && rc != BP_EIO)
            return bp__fail(err, errlen, rc, "the gradient exchange failed at step %ld",
                            t->st.global_step + 1);
        if (rc < 0)
            return rc;
        t->st.batch_in_epoch = (long)s + 1;
        t->st.global_step++;
        int last = t->outcome != BP__OPT_GO_ON || s + 1 == nb;
        if (cb && cb->progress) {
            double seen = lbfgs ? (double)(n * (s + 1)) : t->st.epoch_seen;
            double rate = seen / (t->st.epoch_train_s + bp__now_s() - started + 1e-9);
            cb->progress(cb->ctx, t->st.epoch + 1, t->cfg->epochs, s + 1, lbfgs ? s + 1 : nb, rate);
        }
        rc = after_step(t, err, errlen);
        if (rc == 0 && t->stopping && !last)
            rc = BP_ESTOPPED;
        if (rc == 0 && !last) {
            t->st.epoch_train_s += bp__now_s() - started;
            rc = at_boundary(t, 0, err, errlen);
            started = bp__now_s();
        }
        if (rc < 0) {
            t->st.epoch_train_s += bp__now_s() - started;
            return rc;
        }
        if (last)
            break;
    }
    t->st.epoch_train_s += bp__now_s() - started;
    return 0;
}

/* A stop that every rank saw in a step's exchange: the signal is agreed (the one extra
 * collective, on this path only), then a checkpoint of the step reached, written before
 * the stop is reported. */
static int stop(bp_trainer *t, char *err, size_t errlen)
{
    int signo, who;
    if (bp_comm_agree(&t->comm, atomic_load(&stop_requested), &signo, &who) < 0)
        return bp__fail(err, errlen, BP_ECOMM, "the ranks could not agree on the stop");
    t->stop_signal = signo;
    t->stopping = 0;
    atomic_store(&stop_requested, 0); /* consumed: a later run of the process goes on */
    int rc = t->last_ckpt_step != t->st.global_step ? checkpoint(t, 1, err, errlen)
                                                    : saver_wait(t, err, errlen);
    return rc < 0 ? rc : BP_ESTOPPED;
}

/* Where a run goes wrong, the ranks leave together: rank 0's file errors are agreed where
 * they happen, and the others (divergence, a failed exchange, a stop) are the same on
 * every rank. The last agreement picks the one rank that reports. */
static int run(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen)
{
    t->run_started = t->last_ckpt_at = bp__now_s();
    t->elapsed_base = t->st.elapsed_s;
    int rc = t->comm.rank == 0 ? bp__rundir_start(t->cfg, &t->st, err, errlen) : 0;
    rc = bp__agree(&t->comm, rc, err, errlen);
    int stopped_before = t->st.stopped_early;
    while (rc == 0 && t->st.epoch < t->cfg->epochs && !t->st.stopped_early &&
           !bp__optimizer_converged(t->opt)) {
        rc = run_epoch(t, cb, err, errlen);
        if (rc == 0)
            rc = finish_epoch(t, cb, err, errlen);
        int more = t->st.epoch < t->cfg->epochs && !t->st.stopped_early &&
                   !bp__optimizer_converged(t->opt);
        if (rc == 0 && t->stopping && more)
            rc = BP_ESTOPPED; /* a stop in the last step of the run is no stop: it ended */
        /* (the end of the run has a checkpoint of its own) */
        if (rc == 0 && more)
            rc = at_boundary(t, 1, err, errlen);
    }
    if (rc == BP_ESTOPPED) {
        rc = stop(t, err, errlen);
    } else if (rc == 0) {
        if (t->stopping) { /* asked to stop in the last step: the run ended anyway */
            t->stopping = 0;
            atomic_store(&stop_requested, 0);
        }
        /* Stopped early in this run: the best epoch's weights are the result. */
        int restored = t->st.stopped_early && !stopped_before;
        if (restored)
            memcpy(t->net.params, t->st.best_params, t->net.nparams * sizeof(bp_real));
        /* The end of training always leaves a checkpoint of the final state. */
        rc = restored || t->last_ckpt_step != t->st.global_step ? checkpoint(t, 1, err, errlen)
                                                                : saver_wait(t, err, errlen);
    }
    /* A failure returns after the write in flight too: the caller may use libhdf5 next. */
    if (rc < 0 && t->comm.rank == 0)
        bp__saver_wait(t->saver, NULL, 0);
    return rc;
}

int bp_trainer_run(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    return bp__agree(&t->comm, run(t, cb, err, errlen), err, errlen);
}
