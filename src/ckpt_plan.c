/* The checkpoint schedule of a run (src/ckpt_plan.h): when a checkpoint is due, the
 * replica check before it, rank 0's snapshot for the writer thread, and the orders by which
 * rank 0 tells the others about a checkpoint or a failed write. */
#include "agree.h"
#include "ckpt_plan.h"
#include "internal.h"
#include "train.h"

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
    t->ckpt.pause_s += bp__now_s() - began;
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
    if (bp__trainer_nonfinite(t, where, sizeof(where)))
        return bp__fail(err, errlen, BP_EDIVERGED,
                        "not writing a checkpoint at step %ld: %s (training diverged)",
                        t->st.global_step, where);
    double began = bp__now_s();
    t->st.elapsed_s = t->elapsed_base + began - t->run_started;
    t->st.ranks = t->comm.size;
    bp_state_item items[BP__OPT_MAX_ITEMS];
    bp_run_snapshot snap = {&t->net, bp__optimizer_state(t->opt, items), &t->st, t->config_text};
    int64_t id = bp__rec_begin(t->obs.ring, BP__REC_CKPT_COPY, 0, NULL);
    int rc = bp__saver_start(t->ckpt.saver, &snap, err, errlen);
    bp__rec_end(t->obs.ring, id);
    t->ckpt.last_at = began;
    t->ckpt.taken++;
    t->ckpt.pause_s += bp__now_s() - began;
    return rc;
}

/* A checkpoint of where the run stands, on every rank: the replica check, then rank 0's
 * snapshot (and with wait, its write); the outcome so far is agreed. */
int bp__ckpt_take(bp_trainer *t, int wait, char *err, size_t errlen)
{
    int rc = check_replicas(t, err, errlen);
    if (rc < 0)
        return rc;
    if (t->comm.rank == 0) {
        rc = snapshot(t, err, errlen);
        if (rc == 0 && wait)
            rc = bp__saver_wait(t->ckpt.saver, err, errlen);
    }
    rc = bp__agree(&t->comm, rc, err, errlen);
    if (rc == 0)
        t->ckpt.last_step = t->st.global_step;
    return rc;
}

/* Rank 0 waits for the write in flight; agreed. */
static int saver_wait(bp_trainer *t, char *err, size_t errlen)
{
    int rc = t->comm.rank == 0 ? bp__saver_wait(t->ckpt.saver, err, errlen) : 0;
    return bp__agree(&t->comm, rc, err, errlen);
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
 * others (bp__ckpt_confirm), who then check the replicas with it. */
int bp__ckpt_at_boundary(bp_trainer *t, int epoch_ended, char *err, size_t errlen)
{
    if (want_checkpoint(t, epoch_ended))
        return bp__ckpt_take(t, 0, err, errlen);
    double every = t->cfg->every_seconds;
    if (t->comm.rank != 0 || every <= 0 || bp__now_s() - t->ckpt.last_at < every)
        return 0;
    if (snapshot(t, err, errlen) < 0)
        t->ckpt.write_failed = 1; /* err holds why; the next step tells the others */
    else
        t->ckpt.told = 1;
    return 0;
}

int bp__ckpt_last(bp_trainer *t, int force, char *err, size_t errlen)
{
    return force || t->ckpt.last_step != t->st.global_step ? bp__ckpt_take(t, 1, err, errlen)
                                                           : saver_wait(t, err, errlen);
}

int bp__ckpt_orders(const bp__ckpt_plan *p)
{
    int orders = 0;
    if (p->told)
        orders |= BP__ORDER_CHECKPOINT;
    if (p->write_failed || bp__saver_failed(p->saver))
        orders |= BP__ORDER_WRITE_FAILED;
    return orders;
}

int bp__ckpt_write_failed(bp_trainer *t, char *err, size_t errlen)
{
    if (t->comm.rank != 0)
        return bp__fail(err, errlen, BP_EIO, "the checkpoint write on rank 0 failed");
    if (!t->ckpt.write_failed) /* else err already says why */
        bp__saver_wait(t->ckpt.saver, err, errlen);
    return BP_EIO;
}

int bp__ckpt_confirm(bp_trainer *t, char *err, size_t errlen)
{
    t->ckpt.told = 0;
    int rc = check_replicas(t, err, errlen);
    if (rc < 0)
        return rc;
    t->ckpt.last_step = t->st.global_step - 1;
    return 0;
}

void bp__ckpt_times(const bp__ckpt_plan *p, bp_step_times *times)
{
    if (p->saver && p->taken > 0) {
        long writes;
        double write_s;
        bp__saver_stats(p->saver, &writes, &write_s);
        times->checkpoints = p->taken;
        times->checkpoint_pause_ms = 1e3 * p->pause_s / (double)p->taken;
        times->checkpoint_write_ms = writes > 0 ? 1e3 * write_s / (double)writes : 0;
    }
}
