/* The trainer's setup (bp__trainer_setup, from bp_trainer_create): the network built or
 * resumed, the memory a run needs checked before it is allocated, the data placed, the
 * buffers, and the agreements that every rank runs the same run from the same state. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agree.h"
#include "blas.h"
#include "fixed.h"
#include "exchange.h"
#include "internal.h"
#include "optimizer.h"
#include "rundir.h"
#include "train.h"

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
        return bp__resume_from(t, resume_path, err, errlen);
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
    if (t->cfg->any_scale) { /* whole micro-shards: rank 0 takes the most */
        size_t lo, hi;
        bp__step_rows(t->cfg, rows, 0, t->comm.size, &lo, &hi);
        t->batches.shard = hi - lo;
    }
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
    t->shard.X = bp__calloc(bp__mul(shard, d), sizeof(bp_real));
    t->shard.Y = bp__calloc(bp__mul(shard, k), sizeof(bp_real));
    t->shard.labels = bp__calloc(shard, sizeof(int));
    t->perm = bp__calloc(t->train.n, sizeof(size_t));
    if (!t->shard.X || !t->shard.Y || !t->shard.labels || !t->perm)
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
/* reproducible = any_scale: the fixed-point sum and what fills it (src/fixed.h). */
static int prepare_fixed(bp_trainer *t, char *err, size_t errlen)
{
    size_t T = BP__TENSORS(&t->net);
    t->fixed.block = bp__calloc(bp__fixed_block_reals(&t->net), sizeof(bp_real));
    t->fixed.bound = bp__calloc(T + 1, sizeof(double));
    t->fixed.scale = bp__calloc(T + 1, sizeof(double));
    if (!t->fixed.block || !t->fixed.bound || !t->fixed.scale)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the fixed-point sums");
    return 0;
}

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
    bp__trainer_rows p = {.t = t,
                          .X = t->place.Xe ? t->place.Xe : t->shard.X,
                          .Y = t->place.Xe ? t->place.Ye : t->shard.Y,
                          .labels = t->place.Xe ? t->place.Le : t->shard.labels};
    int rc = 0;
    for (int s = 0; s < BP__SETS && rc == 0; s++) {
        p.s = s;
        rc = bp__data_agree(&t->comm, t->sets[s], bp__trainer_read_rows, &p, names[s], paths[s],
                            err, errlen);
    }
    if (rc < 0) /* agreed */
        return rc;
    struct {
        uint64_t weights, position;
        int64_t step, epoch, batch;
    } mine = {bp__net_hash(&t->net, NULL), position_hash(t),
              t->resume.resumed ? t->st.global_step : -1, t->st.epoch, t->st.batch_in_epoch},
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

/* The flight recorder and straggler detection (src/recorder.h, src/straggler.h), after
 * the exchange (whose buckets size the ring): the ring in the node's shared memory where
 * there is room (the watchdog then writes the node's rings), else in this process's own.
 * Collective over the node. */
static int start_observing(bp_trainer *t, char *err, size_t errlen)
{
    const bp_config *cfg = t->cfg;
    int rc = 0;
    if (cfg->trace_steps > 0) {
        /* A step's events: its rows, forward, deltas, backward, each bucket's exchange, sum
         * across nodes, update and two waits on the node, a few collectives; and room for
         * an epoch's end. */
        size_t per_step = 16 + 5 * (size_t)bp__exchange_buckets(t->exchange);
        size_t capacity = (size_t)cfg->trace_steps * per_step + 64;
        rc = bp__comm_map_rings(&t->comm, bp__rec_bytes(capacity), &t->obs.ring);
        if (rc == 0 && !t->obs.ring) {
            t->obs.ring = bp__calloc(1, bp__rec_bytes(capacity));
            t->obs.owned = 1;
        }
        if (rc == 0 && t->obs.ring) {
            char host[72] = "";
            const char *known = bp__comm_host(&t->comm, t->comm.rank);
            if (known)
                snprintf(host, sizeof(host), "%s", known);
            else if (gethostname(host, sizeof(host) - 1) != 0)
                snprintf(host, sizeof(host), "unknown");
            bp__rec_init(t->obs.ring, capacity, t->comm.rank, host);
            bp__rec_set_step(t->obs.ring, t->st.global_step); /* resumed: the step reached */
        }
    }
    /* Without [log] trace, the watchdog still leaves the seconds before a hang in the run
     * directory: the one file a hang writes, at no cost before it. */
    char hang[BP_PATH_MAX + 16];
    snprintf(hang, sizeof(hang), "%s/trace.json", cfg->checkpoint_dir);
    bp__comm_set_recorder(&t->comm, t->obs.ring, cfg->trace[0] ? cfg->trace : hang,
                          cfg->trace_steps);
    bp__exchange_set_recorder(t->exchange, t->obs.ring);
    bp__saver_set_recorder(t->ckpt.saver, t->obs.ring);
    if (rc == 0 && t->comm.rank == 0) {
        t->obs.work = bp__calloc((size_t)t->comm.size, sizeof(double));
        rc = !t->obs.work
                 ? BP_ENOMEM
                 : bp__straggler_init(&t->obs.straggler, t->comm.size, cfg->straggler_factor);
    }
    if (rc == BP_ENOMEM)
        rc = bp__fail(err, errlen, rc, "no memory for the flight recorder");
    else if (rc < 0)
        rc = bp__fail(err, errlen, rc, "the flight recorder's shared memory failed");
    return bp__agree(&t->comm, rc, err, errlen);
}

/* Setup's protocol is three agreements on every rank, whatever fails where: one after the
 * run directory is claimed, one when the data and the network are in memory, one after the
 * gradient exchange (collective) is set up. */
int bp__trainer_setup(bp_trainer *t, const char *resume, char *err, size_t errlen)
{
    const bp_config *cfg = t->cfg;
    /* any_scale: every product one micro-shard's, on one thread, so that no BLAS splits a
     * sum differently with another thread count (docs/reproducibility.md) */
    if (cfg->any_scale)
        t->threads = 1;
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
        rc = bp__resume_check_examples(t, resume_path, err, errlen);
    }
    if (rc == 0)
        rc = alloc_buffers(t, err, errlen);
    if (rc == 0)
        rc = prepare_early_stopping(t, err, errlen);
    if (rc == 0 && cfg->bf16)
        rc = prepare_bf16(t, err, errlen);
    if (rc == 0 && cfg->any_scale)
        rc = prepare_fixed(t, err, errlen);
#ifdef BACKPROP_DOUBLE
    if (rc == 0 && cfg->comm_bf16)
        rc = bp__fail(err, errlen, BP_EINVAL,
                      "[comm] dtype = bf16 needs the float build (this backprop computes in "
                      "double)");
#endif
    if (rc == 0 && t->comm.rank == 0)
        rc = bp__saver_create(&t->ckpt.saver, cfg, &t->net, t->config_text, err, errlen);
    if (rc == 0)
        rc = bp__optimizer_prepare(t->opt, (double)t->train.n, t->resume.resumed, err, errlen);
    t->st.ranks = t->comm.size;
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc == 0) /* before the steps, whose number and rows depend on the data */
        rc = run_agree(t, err, errlen);
    if (rc < 0)
        return rc;
    t->nslots = BP__EXTRAS + (size_t)t->comm.size;
    rc = bp__exchange_create(&t->exchange, &t->comm, &t->net, t->net.nparams + t->nslots,
                             cfg->bucket_mb, cfg->overlap, t->net.nparams, cfg->comm_bf16,
                             cfg->any_scale, err, errlen);
    if (rc == 0 && cfg->any_scale)
        t->fixed.sum = bp__exchange_buffer_i64(t->exchange);
    else if (rc == 0)
        t->grad = bp__exchange_buffer(t->exchange);
    rc = bp__agree(&t->comm, rc, err, errlen);
    return rc == 0 ? start_observing(t, err, errlen) : rc;
}
