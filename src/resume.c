/* Resuming from a checkpoint (src/resume.h): loading it, and refusing a resume that would
 * not continue the checkpoint's run exactly. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "resume.h"
#include "train.h"

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

/* What decides the bits of a run but not which examples it visits: [train] reproducible
 * and, under any_scale, micro_batch. A resume may change them (a run moving to any_scale
 * before it moves to another cluster), but then the run as a whole repeats in neither
 * setting: said in t->resume.note, in words. */
static void note_bits_keys(bp_trainer *t, const bp_config *was)
{
    const bp_config *now = t->cfg;
    static const char *const modes[2] = {"same_ranks", "any_scale"};
    if (was->any_scale != now->any_scale)
        snprintf(t->resume.note, sizeof(t->resume.note),
                 "the checkpoint's run had [train] reproducible = %s, this one %s: from here on "
                 "%s, but the run as a whole repeats in neither",
                 modes[was->any_scale != 0], modes[now->any_scale != 0],
                 modes[now->any_scale != 0]);
    else if (now->any_scale && was->micro_batch != now->micro_batch)
        snprintf(t->resume.note, sizeof(t->resume.note),
                 "the checkpoint's run had [train] micro_batch = %ld, this one %ld: the run as a "
                 "whole repeats with neither",
                 was->micro_batch, now->micro_batch);
}

/* Every rank, from the checkpoint's own config: a mid-epoch resume needs its batch_size.
 * The data keys that changed are kept for bp__resume_check_examples, which counts the
 * examples once the data is in (a limit beyond the rows changes none). A config that no
 * longer parses names no key. */
static int check_resume_keys(bp_trainer *t, const char *path, const char *text, char *err,
                             size_t errlen)
{
    bp_config *was = bp__calloc(1, sizeof(*was));
    char why[256], what[160];
    const char *changed = NULL;
    if (!was)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory");
    int parsed = bp_config_parse(was, path, text, NULL, 0, why, sizeof(why)) == 0;
    if (parsed)
        note_bits_keys(t, was);
    if (t->st.batch_in_epoch == 0 || bp__optimizer_whole_set(t->opt)) {
        bp__free(was);
        return 0;
    }
    if (parsed) {
        changed = changed_key(was, t->cfg, 0, what, sizeof(what));
        if (changed && was->batch_size == t->cfg->batch_size) { /* a data key: counted later */
            snprintf(t->resume.changed, sizeof(t->resume.changed), "%s", changed);
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
int bp__resume_check_examples(bp_trainer *t, const char *path, char *err, size_t errlen)
{
    bp_train_state *st = &t->st;
    size_t n = t->train.n, B = (size_t)t->cfg->batch_size, steps = t->batches.epoch_steps;
    char what[400];
    if (t->resume.resumed && st->batch_in_epoch > 0 && !bp__optimizer_whole_set(t->opt)) {
        if (st->n_train > 0 && (size_t)st->n_train != n) {
            snprintf(what, sizeof(what),
                     "the training set has %ld examples in the checkpoint's run and %zu here (%s)",
                     st->n_train, n,
                     t->resume.changed[0] ? t->resume.changed : "[data] train has other rows");
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

/* Every rank: loads the checkpoint into t (parameters, the optimizer's state, the run's)
 * after checking it fits the configured network and optimizer. */
int bp__resume_from(bp_trainer *t, const char *path, char *err, size_t errlen)
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
        t->ckpt.last_step = t->st.global_step;
        t->resume.resumed = 1;
        rc = check_resume_keys(t, path, ck.config_text, err, errlen);
    }
    char where[128];
    if (rc == 0 && bp__trainer_nonfinite(t, where, sizeof(where))) {
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
