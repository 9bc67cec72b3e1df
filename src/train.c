/* The trainer: it orchestrates a run. Creating and freeing it (setup.c does the setup),
 * the distributed step, the epochs and their metrics rows, a stop, and the order of every
 * collective and agreement point of a run: the others are called from here, in that order
 * on every rank (setup.c's at creation; ckpt_plan.c's checkpoints; resume.c's checks;
 * step.c's slots and clock). rundir.c does rank 0's file work on what they hand it. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agree.h"
#include "blas.h"
#include "exchange.h"
#include "fixed.h"
#include "internal.h"
#include "rundir.h"
#include "train.h"
#include "optimizer.h"

/* Whether a step of m rows (its bounds finite) sends each rank's gradient as floats: no more
 * micro-shards than ranks, so each rank holds one at most, and a node's ranks that sum each
 * other's buffers (the float build). */
static int sends_floats(const bp_trainer *t, size_t m)
{
#ifdef BACKPROP_DOUBLE
    (void)t, (void)m;
    return 0;
#else
    size_t u = (size_t)t->cfg->micro_batch;
    return (m + u - 1) / u <= (size_t)t->comm.size && bp__exchange_takes_floats(t->exchange);
#endif
}

/* The first non-finite value of everything the run goes on from and a checkpoint holds:
 * the weights and the optimizer's state (an overflowing Adam moment stops training as
 * surely as a NaN weight, only silently). 0 when all are finite. */
int bp__trainer_nonfinite(const bp_trainer *t, char *msg, size_t len)
{
    return bp__nonfinite_params(&t->net, t->net.params, "", msg, len) ||
           bp__optimizer_nonfinite(t->opt, &t->net, msg, len);
}

int bp__trainer_read_rows(void *ctx, size_t first, size_t count, const bp_real **X,
                          const bp_real **Y, const int **labels, char *err, size_t errlen)
{
    bp__trainer_rows *p = ctx;
    int rc = bp__place_rows(&p->t->place, p->t->sets, p->s, NULL, count, first, p->X, p->Y,
                            p->labels, err, errlen);
    *X = p->X, *Y = p->Y;
    *labels = p->t->sets[p->s]->labels ? p->labels : NULL;
    return rc;
}

int bp_trainer_create(bp_trainer **out, const bp_config *cfg, const char *config_text,
                      const bp_comm *comm, const char *resume, char *err, size_t errlen)
{
    bp_trainer_options opts = {.config_text = config_text, .resume = resume};
    return bp_trainer_create_with(out, cfg, comm, &opts, err, errlen);
}

const bp_net *bp_trainer_net(const bp_trainer *t)
{
    return t ? &t->net : NULL;
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
        bp__comm_retain(comm);
        t->ckpt.last_step = -1;
        t->threads = cfg->threads ? cfg->threads : bp__auto_threads(comm); /* setup sets it */
        t->in = *opts;
    }
    if (t && text)
        rc = bp__trainer_setup(t, resume, err, errlen);
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
    bp__saver_free(t->ckpt.saver); /* the write in flight ends first, under the lock */
    bp__comm_set_recorder(&t->comm, NULL, NULL, 0);
    bp__lock_drop(&t->metrics_lock);
    bp__lock_drop(&t->dir_lock);
    bp_workspace_free(&t->ws);
    bp_net_free(&t->net);
    bp__exchange_free(t->exchange); /* its thread's MPI calls end before the windows go */
    if (t->obs.owned)
        bp__free(t->obs.ring);
    bp__free(t->obs.work);
    bp__straggler_free(&t->obs.straggler);
    bp__place_free(&t->place, t->sets);
    bp__optimizer_free(t->opt);
    bp__free(t->fixed.block);
    bp__free(t->fixed.bound);
    bp__free(t->fixed.scale);
    bp__free(t->shard.X);
    bp__free(t->shard.Y);
    bp__free(t->shard.labels);
    bp__free(t->perm);
    bp__free(t->st.metrics);
    bp__free(t->st.best_params);
    bp__free(t->config_text);
    bp__comm_release(&t->comm); /* last: the exchange and the placement used it */
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
                              .resumed = t->resume.resumed,
                              .load_s = t->load_s,
                              .epoch = t->st.epoch,
                              .batch_in_epoch = t->st.batch_in_epoch,
                              .global_step = t->st.global_step,
                              .stop_signal = t->stop.signal,
                              .stopped_early = t->st.stopped_early,
                              .best_epoch = t->st.best_epoch,
                              .best_val_cost = t->st.best_val_cost,
                              .converged = t->opt ? bp__optimizer_converged(t->opt) : 0,
                              .bf16 = t->ws.bf16 != NULL};
    bp__exchange_describe(t->exchange, info->exchange, sizeof(info->exchange));
    info->any_scale_floats = t->cfg->any_scale && sends_floats(t, (size_t)t->cfg->batch_size);
    snprintf(info->resume_note, sizeof(info->resume_note), "%s", t->resume.note);
    const bp__place *p = &t->place;
    snprintf(info->placement, sizeof(info->placement), "%s%s%s%s", bp_placement_names[p->kind],
             p->why[0] ? " (auto: " : "", p->why, p->why[0] ? ")" : "");
}

int bp_trainer_step_times(const bp_trainer *t, bp_step_times *times)
{
    int rc = bp__step_clock_report(&t->clock, &t->comm, times);
    bp__ckpt_times(&t->ckpt, times);
    times->slow_rank = t->obs.straggler.worst_rank;
    times->slow_factor = t->obs.straggler.worst_factor;
    return rc;
}

/* Asks for this rank's rows of the batch at perm[first ..] ahead of the next gather: into
 * the caches while the current step computes, or from the file under stream. */
static void ask_ahead(bp_trainer *t, size_t first)
{
    size_t n = t->train.n, B = (size_t)t->cfg->batch_size, lo, hi;
    if (first >= n)
        return;
    size_t m = n - first < B ? n - first : B;
    bp__step_rows(t->cfg, m, t->comm.rank, t->comm.size, &lo, &hi);
    bp__place_ahead(&t->place, t->sets, t->perm + first + lo, hi - lo);
}

/* Copies this rank's rows of the global batch perm[first .. first + m) into t->shard,
 * and sets *rows to how many. A failure to read them is in err. */
static int gather_shard(bp_trainer *t, size_t first, size_t m, size_t *rows, char *err,
                        size_t errlen)
{
    size_t lo, hi;
    bp__step_rows(t->cfg, m, t->comm.rank, t->comm.size, &lo, &hi);
    *rows = hi - lo;
    int rc = 0;
    if (!bp__place_take_ahead(&t->place, t->perm + first + lo, hi - lo, &t->shard.X, &t->shard.Y,
                              &t->shard.labels))
        rc = bp__place_rows(&t->place, t->sets, BP__SET_TRAIN, t->perm + first + lo, hi - lo, 0,
                            t->shard.X, t->shard.Y, t->shard.labels, err, errlen);
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
    int orders = t->comm.rank == 0 ? bp__ckpt_orders(&t->ckpt) : 0;
    extra[BP__SLOT_ORDERS] = (bp_real)orders;
    extra[BP__SLOT_FAILED] = t->step.read_failed;
    memset(extra + BP__SLOT_WORK, 0, (size_t)t->comm.size * sizeof(bp_real));
    extra[BP__SLOT_WORK + t->comm.rank] = (bp_real)rint(t->obs.work_s * 1e6);
}

/* The step every event and wait from here on belongs to: the watchdog's message names it,
 * the trace tags it (a wait inside the backward pass is this step's too). */
static void begin_step(bp_trainer *t)
{
    bp__comm_set_step(&t->comm, t->st.global_step + 1);
    bp__rec_set_step(t->obs.ring, t->st.global_step + 1);
}

/* After a step that ended at `ended`: this rank's work in it (its rows, forward, backward
 * and update: the step less the time it waited in the exchange; plus the time it stood
 * still inside the exchange's waits, from stalled0 on, which others may have waited for),
 * which the next step sends; and on rank 0, the ranks' work in the step before, which this
 * one brought, to straggler detection. */
static void observe_step(bp_trainer *t, double work_s, double stalled0, double ended)
{
    work_s += bp__exchange_stalled(t->exchange) - stalled0;
    t->obs.work_s = work_s > 0 ? work_s : 0;
    double wall = t->obs.last_end > 0 ? ended - t->obs.last_end : 0;
    t->obs.last_end = ended;
    int any = 0;
    for (int r = 0; t->obs.work && r < t->comm.size; r++)
        any |= t->obs.work[r] > 0;
    /* The first step of a process brings no work (none was timed before it). */
    if (any && bp__straggler_add(&t->obs.straggler, t->obs.work, wall, t->st.global_step))
        t->obs.changed = 1;
}

/* reproducible = any_scale, before the exchange: this rank's micro-shards through the
 * forward pass and the deltas, and the bounds every rank then agrees on: the gradients',
 * and bound[T], the largest of the micro-shards' costs (infinite when one is not finite:
 * the step diverged). */
static void fixed_compute(bp_trainer *t, size_t rows)
{
    size_t u = (size_t)t->cfg->micro_batch, T = BP__TENSORS(&t->net);
    for (size_t i = 0; i <= T; i++)
        t->fixed.bound[i] = 0;
    if (rows == 0)
        return;
    int64_t ev = bp__rec_begin(t->obs.ring, BP__REC_FORWARD, 0, NULL);
    bp__forward_micro(&t->net, &t->ws, t->shard.X, rows, u);
    for (size_t r0 = 0; r0 < rows; r0 += u) {
        double c =
            fabs(bp__cost_part(&t->net, &t->ws, t->shard.Y, r0, rows - r0 < u ? rows - r0 : u));
        c = isnan(c) ? INFINITY : c;
        t->fixed.bound[T] = c > t->fixed.bound[T] ? c : t->fixed.bound[T];
    }
    if (t->train.labels)
        t->fixed.sum[t->net.nparams + BP__SLOT_CORRECT] =
            (int64_t)bp_count_correct(&t->net, &t->ws, t->shard.labels, rows);
    bp__rec_end(t->obs.ring, ev);
    ev = bp__rec_begin(t->obs.ring, BP__REC_DELTAS, 0, NULL);
    bp__deltas_micro(&t->net, &t->ws, t->shard.Y, rows, u, t->fixed.bound);
    bp__rec_end(t->obs.ring, ev);
}

/* The micro-shards' costs in fixed point at the scale agreed for them (each rounded to it
 * on its own, then summed exactly): computed again from the forward pass's outputs, the
 * same bits as in fixed_compute, rather than kept for every micro-shard. */
static int64_t fixed_cost(bp_trainer *t, size_t rows, double scale)
{
    size_t u = (size_t)t->cfg->micro_batch;
    int64_t sum = 0;
    for (size_t r0 = 0; r0 < rows; r0 += u)
        sum += (int64_t)llrint(
            bp__cost_part(&t->net, &t->ws, t->shard.Y, r0, rows - r0 < u ? rows - r0 : u) * scale);
    return sum;
}

/* bp__exchange_convert_fn: the parameters of [lo, hi) back to bp_real at their tensors'
 * scales (the slots after them are read as integers). */
static void fixed_convert(void *ctx, const int64_t *const *v, int k, bp_real *real, size_t lo,
                          size_t hi)
{
    bp_trainer *t = ctx;
    size_t np = t->net.nparams;
    if (lo < np)
        bp__fixed_to_real(&t->net, v, k, t->fixed.scale, lo, hi < np ? hi : np, real);
}

#ifndef BACKPROP_DOUBLE
/* bp__exchange_floats_fn: the micro-shards' float gradients of [lo, hi), quantized and
 * summed, to the node's int64 sums or to bp_real. */
static void fixed_floats(void *ctx, const float *const *v, int k, int64_t *sum, bp_real *real,
                         size_t lo, size_t hi)
{
    bp_trainer *t = ctx;
    size_t np = t->net.nparams;
    if (lo < np)
        bp__fixed_floats(&t->net, v, k, t->fixed.scale, lo, hi < np ? hi : np, sum, real);
}
#endif

/* The slots every rank fills (src/step.h), in fixed point. */
static void fixed_slots(bp_trainer *t, int64_t *slot)
{
    slot[BP__SLOT_STOP] = atomic_load_explicit(&stop_requested, memory_order_relaxed) != 0;
    slot[BP__SLOT_ORDERS] = t->comm.rank == 0 ? bp__ckpt_orders(&t->ckpt) : 0;
    slot[BP__SLOT_FAILED] = t->step.read_failed;
    slot[BP__SLOT_WORK + t->comm.rank] = (int64_t)llrint(t->obs.work_s * 1e6);
}

/* This rank's part of an any_scale step up to the exchange: its micro-shards computed, the
 * bounds agreed (before the exchange begins: no bucket in flight then), the scales, the
 * slots, and its fixed-point gradient handed to the exchange bucket by bucket. Returns 1
 * when the scales are finite (the same on every rank), 0 when the step diverged, or
 * BP_ECOMM. */
static int fixed_send(bp_trainer *t, size_t rows, size_t m)
{
    size_t np = t->net.nparams, u = (size_t)t->cfg->micro_batch, T = BP__TENSORS(&t->net);
    memset(t->fixed.sum + np, 0, t->nslots * sizeof(int64_t));
    fixed_compute(t, rows);
    double asked = bp__now_s();
    if (bp__comm_max_doubles(&t->comm, t->fixed.bound, T + 1) < 0)
        return BP_ECOMM;
    /* Waiting there for a slower rank is exchange, not this rank's work. */
    t->fixed.agree_s = bp__now_s() - asked;
    int finite = bp__fixed_scales(t->fixed.bound, T + 1, (m + u - 1) / u, t->fixed.scale) == 0;
    fixed_slots(t, t->fixed.sum + np);
    if (finite)
        t->fixed.sum[np + BP__SLOT_COST] = fixed_cost(t, rows, t->fixed.scale[T]);
    /* Where every rank holds one micro-shard at most, each sends its gradient as floats,
     * quantized where the node sums them: the same integers, half the bytes (the float
     * build; the ranks of a node summing in shared memory). */
    bp__exchange_floats_fn floats = NULL;
#ifndef BACKPROP_DOUBLE
    if (finite && sends_floats(t, m))
        floats = fixed_floats;
#endif
    bp__exchange_begin_i64(t->exchange, finite ? fixed_convert : NULL, floats, t);
    if (finite && rows > 0) {
        int64_t ev = bp__rec_begin(t->obs.ring, BP__REC_BACKWARD, 0, NULL);
        bp__grad_fixed(&t->net, &t->ws, rows, u, t->fixed.scale, t->fixed.sum,
                       floats ? (float *)t->fixed.sum : NULL, t->fixed.block, bp__exchange_ready,
                       t->exchange);
        bp__rec_end(t->obs.ring, ev);
    } else { /* an idle rank, or a step every rank knows diverged: zeros */
        memset(t->fixed.sum, 0, np * sizeof(int64_t));
        bp__exchange_ready(t->exchange, 0);
    }
    return finite;
}

/* The summed buckets as they arrive, already converted back to bp_real where they were
 * summed: the slots from the first (its cost checked before any update), then the update.
 * Returns 0 or BP_ECOMM; *diverged, *nonfinite as in train_step, *updating its seconds. */
static int fixed_apply(bp_trainer *t, size_t m, int finite, int *diverged, int *nonfinite,
                       double *updating)
{
    size_t np = t->net.nparams, lo, hi;
    const int64_t *sum;
    const bp_real *real = NULL;
    int rc;
    while ((rc = bp__exchange_next_i64(t->exchange, &lo, &hi, &sum, &real)) == 1) {
        double at = bp__now_s();
        int64_t ev =
            bp__rec_begin(t->obs.ring, BP__REC_UPDATE, bp__exchange_taken(t->exchange) - 1, NULL);
        if (hi == np + t->nslots) {
            for (int r = 0; t->obs.work && r < t->comm.size; r++)
                t->obs.work[r] = (double)sum[np + BP__SLOT_WORK + r] * 1e-6;
            bp__step_result_read_fixed(&t->step, sum + np,
                                       finite ? t->fixed.scale[BP__TENSORS(&t->net)] : 1);
            if (!finite)
                t->step.cost = NAN;
            *diverged = !isfinite(t->step.cost);
        }
        if (!*diverged)
            *nonfinite |=
                bp__optimizer_apply(t->opt, &t->net, real, (double)m, lo, hi < np ? hi : np);
        bp__rec_end(t->obs.ring, ev);
        *updating += bp__now_s() - at;
    }
    if (rc == 0 && !*diverged)
        t->step.outcome =
            bp__optimizer_evaluated(t->opt, &t->net, real, t->step.cost, t->step.correct);
    return rc < 0 ? BP_ECOMM : 0;
}

/* One step under reproducible = any_scale (src/fixed.h): this rank's micro-shards, the
 * bounds' maximum over the ranks (a few doubles), every micro-shard's gradient summed in
 * int64 fixed point into the exchange's buffer, whose buckets are summed exactly over the
 * ranks while the rest is computed, then each bucket converted back (one rounding) and
 * updated as train_step does. Integer sums: neither the buckets, nor overlap, nor the
 * nodes change a bit. Returns 0, BP_ECOMM, BP_EIO or BP_EDIVERGED. */
static int fixed_step(bp_trainer *t, size_t first, size_t m, char *err, size_t errlen)
{
    double exposed0, busy0;
    bp__exchange_times(t->exchange, &exposed0, &busy0);
    double started = bp__now_s(), stalled0 = bp__exchange_stalled(t->exchange);
    begin_step(t);
    bp__optimizer_begin(t->opt, &t->net);
    size_t rows;
    int64_t ev = bp__rec_begin(t->obs.ring, BP__REC_DATA, 0, NULL);
    t->step.read_failed = gather_shard(t, first, m, &rows, err, errlen) < 0;
    bp__rec_end(t->obs.ring, ev);
    if (t->step.read_failed)
        rows = 0;
    double gathered = bp__now_s();
    int finite = fixed_send(t, rows, m);
    if (finite < 0)
        return BP_ECOMM;
    double computed = bp__now_s(), updating = 0, exposed_backward, busy;
    bp__exchange_times(t->exchange, &exposed_backward, &busy);
    bp__optimizer_set_step(t->opt,
                           bp__learning_rate(t->cfg, t->st.epoch, t->st.global_step,
                                             t->batches.total_steps, (double)t->train.n),
                           t->st.global_step + 1);
    int diverged = 0, nonfinite = 0;
    int rc = fixed_apply(t, m, finite, &diverged, &nonfinite, &updating);
    double ended = bp__now_s();
    if (rc < 0)
        return rc;
    if (t->step.failed)
        return BP_EIO;
    t->step.nonfinite = nonfinite;
    if (diverged || nonfinite)
        return BP_EDIVERGED;
    bp__exchange_times(t->exchange, NULL, &busy);
    /* The bounds' maximum waited for the other ranks like the exchange. */
    double in_backward = exposed_backward - exposed0 + t->fixed.agree_s;
    bp__step_clock_add(&t->clock, gathered - started, computed - gathered - in_backward,
                       in_backward + (ended - computed - updating), busy - busy0 + t->fixed.agree_s,
                       updating);
    observe_step(t, computed - started - in_backward + updating, stalled0, ended);
    t->st.epoch_cost_sum += t->step.cost;
    t->st.epoch_correct += t->step.correct;
    t->st.epoch_seen += (double)m;
    return 0;
}

/* One step: this rank's gradient sums, summed over the ranks bucket by bucket from the
 * last layer back while the backward pass goes on (the extra slots ride in the first
 * bucket), and the same update on every rank, applied to each bucket as its sum arrives.
 * Returns 0, BP_ECOMM or BP_EDIVERGED. */
static int train_step(bp_trainer *t, size_t first, size_t m, char *err, size_t errlen)
{
    if (t->cfg->any_scale)
        return fixed_step(t, first, m, err, errlen);
    size_t np = t->net.nparams;
    bp_real *extra = t->grad + np;
    double exposed0, busy0;
    bp__exchange_times(t->exchange, &exposed0, &busy0);
    double started = bp__now_s(), stalled0 = bp__exchange_stalled(t->exchange);
    begin_step(t);
    bp__optimizer_begin(t->opt, &t->net); /* lbfgs: to the trial this step evaluates */
    bp__bf16_weights(&t->net, &t->ws);    /* once per step; nothing unless precision = bf16 */
    size_t rows;
    /* A rank that cannot read its rows joins the exchange idle and says so there. */
    int64_t ev = bp__rec_begin(t->obs.ring, BP__REC_DATA, 0, NULL);
    t->step.read_failed = gather_shard(t, first, m, &rows, err, errlen) < 0;
    bp__rec_end(t->obs.ring, ev);
    if (t->step.read_failed)
        rows = 0;
    double gathered = bp__now_s();
    bp__exchange_begin(t->exchange);
    if (rows > 0) {
        ev = bp__rec_begin(t->obs.ring, BP__REC_FORWARD, 0, NULL);
        bp_forward(&t->net, &t->ws, t->shard.X, rows);
        extra[BP__SLOT_COST] = (bp_real)bp_cost_sum(&t->net, &t->ws, t->shard.Y, rows);
        extra[BP__SLOT_CORRECT] =
            t->train.labels ? (bp_real)bp_count_correct(&t->net, &t->ws, t->shard.labels, rows) : 0;
        bp__rec_end(t->obs.ring, ev);
        /* As late as the slots can be read: a request that comes during the forward pass
         * still stops this step. */
        post_extras(t, extra);
        /* overwrites: no memset */
        ev = bp__rec_begin(t->obs.ring, BP__REC_BACKWARD, 0, NULL);
        bp__backward_ready(&t->net, &t->ws, t->shard.Y, rows, t->grad, 0, bp__exchange_ready,
                           t->exchange);
        bp__rec_end(t->obs.ring, ev);
    } else {
        /* An idle rank still joins the exchange, with zeros. */
        memset(t->grad, 0, np * sizeof(bp_real));
        extra[BP__SLOT_COST] = extra[BP__SLOT_CORRECT] = 0;
        post_extras(t, extra);
        bp__exchange_ready(t->exchange, 0);
    }
    double computed = bp__now_s(), updating = 0, exposed_backward, busy;
    bp__exchange_times(t->exchange, &exposed_backward, &busy);
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
        ev = bp__rec_begin(t->obs.ring, BP__REC_UPDATE, bp__exchange_taken(t->exchange) - 1, NULL);
        if (hi == np + t->nslots) { /* the first bucket: check the cost before any update */
            for (int r = 0; t->obs.work && r < t->comm.size; r++)
                t->obs.work[r] = (double)sum[np + BP__SLOT_WORK + r] * 1e-6;
            bp__step_result_read(&t->step, sum + np);
            diverged = !isfinite(t->step.cost) && applies;
        }
        /* Diverged: every rank still takes every bucket, and stops after. The updates say
         * whether they left a weight that is not finite: the same on every rank (the same
         * sums), so every rank stops after this step, with no collective. An optimizer that
         * does not apply ranges (lbfgs) takes the whole sum, below. */
        if (!diverged && applies)
            nonfinite |=
                bp__optimizer_apply(t->opt, &t->net, sum, (double)m, lo, hi < np ? hi : np);
        bp__rec_end(t->obs.ring, ev);
        updating += bp__now_s() - u;
    }
    if (rc == 0) {
        double u = bp__now_s();
        if (!diverged) /* else the line search copes: only its first cost can diverge */
            t->step.outcome =
                bp__optimizer_evaluated(t->opt, &t->net, sum, t->step.cost, t->step.correct);
        diverged |= t->step.outcome == BP__OPT_DIVERGED;
        updating += bp__now_s() - u;
    }
    double ended = bp__now_s();
    if (rc < 0)
        return BP_ECOMM;
    if (t->step.failed)
        return BP_EIO;
    t->step.nonfinite = nonfinite;
    if (diverged || nonfinite)
        return BP_EDIVERGED;
    bp__exchange_times(t->exchange, NULL, &busy); /* the waits after it are timed here */
    /* Time the backward pass spent in the exchange is not computing. */
    double in_backward = exposed_backward - exposed0;
    bp__step_clock_add(&t->clock, gathered - started, computed - gathered - in_backward,
                       in_backward + (ended - computed - updating), busy - busy0, updating);
    observe_step(t, computed - started - in_backward + updating, stalled0, ended);
    if (bp__optimizer_whole_set(t->opt)) { /* the metrics of the point an iteration ends at */
        bp__optimizer_point(t->opt, &t->st.epoch_cost_sum, &t->st.epoch_correct);
        t->st.epoch_seen = (double)m;
        return 0;
    }
    t->st.epoch_cost_sum += t->step.cost;
    t->st.epoch_correct += t->step.correct;
    t->st.epoch_seen += (double)m;
    return 0;
}

/* bp__evaluate over set s wherever its rows are: under stream, read a workspace at a time
 * (the chunks it takes from memory, so the sums come out the same). */
static int evaluate(bp_trainer *t, int s, double *out, char *err, size_t errlen)
{
    /* the batch's buffers when they hold a workspace of rows (setup.c's alloc_buffers) */
    bp__trainer_rows p = {.t = t,
                          .s = s,
                          .X = t->place.Xe ? t->place.Xe : t->shard.X,
                          .Y = t->place.Xe ? t->place.Ye : t->shard.Y,
                          .labels = t->place.Xe ? t->place.Le : t->shard.labels};
    int stream = t->place.kind == BP_PLACE_STREAM;
    bp_rows_fn read = stream ? bp__trainer_read_rows : NULL;
    int64_t ev = bp__rec_begin(t->obs.ring, BP__REC_EVALUATION, s, NULL);
    int rc =
        t->cfg->any_scale
            ? bp__evaluate_exact(&t->net, &t->ws, t->sets[s], read, &p, &t->comm, out, err, errlen)
            : bp__evaluate(&t->net, &t->ws, t->sets[s], read, &p, &t->comm, 0, out, err, errlen);
    bp__rec_end(t->obs.ring, ev);
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

int bp_trainer_checkpoint(bp_trainer *t, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    return bp__ckpt_take(t, 1, err, errlen);
}

/* Rank 0: the slow set changed; the program hears it. */
static void report_stragglers(bp_trainer *t, const bp_callbacks *cb)
{
    const bp__straggler *g = &t->obs.straggler;
    t->obs.changed = 0;
    bp_straggler_report r = {.from_step = g->from_step, .to_step = g->to_step, .rank = -1};
    bp__rank_host *slow = calloc((size_t)t->comm.size, sizeof(*slow));
    for (int q = 0; q < t->comm.size; q++) {
        if (!g->in[q])
            continue;
        const char *host = bp__comm_host(&t->comm, q);
        if (slow)
            slow[r.nslow] = (bp__rank_host){q, host ? host : "unknown"};
        r.nslow++;
        if (r.rank < 0 || g->mean[q] > g->mean[r.rank])
            r.rank = q;
    }
    if (r.rank < 0) /* none any more: the figures of the one that was worst */
        r.rank = g->worst_rank;
    if (r.rank >= 0)
        r.work_ms = 1e3 * g->mean[r.rank], r.others_ms = 1e3 * bp__straggler_others(g, r.rank);
    FILE *f = slow && r.nslow ? fmemopen(r.who, sizeof(r.who) - 1, "w") : NULL;
    if (f) {
        bp__print_ranks(f, slow, r.nslow);
        fclose(f);
    }
    free(slow);
    if (cb && cb->straggler)
        cb->straggler(cb->ctx, &r);
}

/* What the step's extra slots said, once it is counted: a failed write (every rank
 * returns BP_EIO), a checkpoint rank 0 took before the step (every rank checks the
 * replicas), a stop (taken at the end of the step, or of the epoch when it ends one). */
static int after_step(bp_trainer *t, char *err, size_t errlen)
{
    if (t->step.orders & BP__ORDER_WRITE_FAILED)
        return bp__ckpt_write_failed(t, err, errlen);
    t->stop.asked |= t->step.stop;
    if (t->step.orders & BP__ORDER_CHECKPOINT)
        return bp__ckpt_confirm(t, err, errlen);
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
                            t->step.cost);
        if (rc == BP_EDIVERGED && t->step.nonfinite) {
            char where[128];
            bp__trainer_nonfinite(t, where, sizeof(where));
            return bp__fail(err, errlen, rc,
                            "training diverged at epoch %ld, step %ld: %s after the update "
                            "(the cost was %g; check the data, or try a smaller learning_rate)",
                            t->st.epoch + 1, t->st.global_step + 1, where, t->step.cost);
        }
        if (rc == BP_EDIVERGED)
            return bp__fail(err, errlen, rc,
                            "training diverged at epoch %ld, step %ld: the cost is %g (try a "
                            "smaller learning_rate)",
                            t->st.epoch + 1, t->st.global_step + 1, t->step.cost);
        if (rc == BP_EIO && !t->step.read_failed) /* the rank that could not read says why */
            return rc;
        if (rc < 0 && rc != BP_EIO)
            return bp__fail(err, errlen, rc, "the gradient exchange failed at step %ld",
                            t->st.global_step + 1);
        if (rc < 0)
            return rc;
        t->st.batch_in_epoch = (long)s + 1;
        t->st.global_step++;
        int last = t->step.outcome != BP__OPT_GO_ON || s + 1 == nb;
        if (cb && cb->progress) {
            double seen = lbfgs ? (double)(n * (s + 1)) : t->st.epoch_seen;
            double rate = seen / (t->st.epoch_train_s + bp__now_s() - started + 1e-9);
            cb->progress(cb->ctx, t->st.epoch + 1, t->cfg->epochs, s + 1, lbfgs ? s + 1 : nb, rate);
        }
        if (t->obs.changed)
            report_stragglers(t, cb);
        rc = after_step(t, err, errlen);
        if (rc == 0 && t->stop.asked && !last)
            rc = BP_ESTOPPED;
        if (rc == 0 && !last) {
            t->st.epoch_train_s += bp__now_s() - started;
            rc = bp__ckpt_at_boundary(t, 0, err, errlen);
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
    t->stop.signal = signo;
    t->stop.asked = 0;
    atomic_store(&stop_requested, 0); /* consumed: a later run of the process goes on */
    int rc = bp__ckpt_last(t, 0, err, errlen);
    return rc < 0 ? rc : BP_ESTOPPED;
}

/* Where a run goes wrong, the ranks leave together: rank 0's file errors are agreed where
 * they happen, and the others (divergence, a failed exchange, a stop) are the same on
 * every rank. The last agreement picks the one rank that reports. */
static int run(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen)
{
    t->run_started = t->ckpt.last_at = bp__now_s();
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
        if (rc == 0 && t->stop.asked && more)
            rc = BP_ESTOPPED; /* a stop in the last step of the run is no stop: it ended */
        /* (the end of the run has a checkpoint of its own) */
        if (rc == 0 && more)
            rc = bp__ckpt_at_boundary(t, 1, err, errlen);
    }
    if (rc == BP_ESTOPPED) {
        rc = stop(t, err, errlen);
    } else if (rc == 0) {
        if (t->stop.asked) { /* asked to stop in the last step: the run ended anyway */
            t->stop.asked = 0;
            atomic_store(&stop_requested, 0);
        }
        /* Stopped early in this run: the best epoch's weights are the result. */
        int restored = t->st.stopped_early && !stopped_before;
        if (restored)
            memcpy(t->net.params, t->st.best_params, t->net.nparams * sizeof(bp_real));
        /* The end of training always leaves a checkpoint of the final state. */
        rc = bp__ckpt_last(t, restored, err, errlen);
    }
    /* A failure returns after the write in flight too: the caller may use libhdf5 next. */
    if (rc < 0 && t->comm.rank == 0)
        bp__saver_wait(t->ckpt.saver, NULL, 0);
    return rc;
}

int bp_trainer_run(bp_trainer *t, const bp_callbacks *cb, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    return bp__agree(&t->comm, run(t, cb, err, errlen), err, errlen);
}
