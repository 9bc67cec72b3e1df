/* The optimizer interface (optimizer.h): the backends' table and what every backend shares. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "optimizer.h"

/* By bp_optimizer value: a new optimizer is its file and its two lines here. */
extern const bp__opt_backend bp__opt_sgd, bp__opt_adam, bp__opt_lbfgs;
extern const bp__opt_backend bp__opt_nesterov;
static const bp__opt_backend *const backends[] = {
    [BP_OPT_SGD] = &bp__opt_sgd,
    [BP_OPT_ADAM] = &bp__opt_adam,
    [BP_OPT_LBFGS] = &bp__opt_lbfgs,
    [BP_OPT_NESTEROV] = &bp__opt_nesterov,
};
#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

const bp__opt_backend *bp__opt_backend_of(bp_optimizer kind)
{
    return (size_t)kind < NBACKENDS ? backends[kind] : NULL;
}

const bp__opt_backend *bp__opt_backend_named(const char *name)
{
    for (size_t i = 0; name && i < NBACKENDS; i++)
        if (backends[i] && strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

int bp__optimizer_create(bp__optimizer **out, const bp_config *cfg, const bp_net *net, char *err,
                         size_t errlen)
{
    *out = NULL;
    const bp__opt_backend *be = bp__opt_backend_of(cfg->optimizer);
    if (!be)
        return bp__fail(err, errlen, BP_EINVAL, "unknown optimizer %d", (int)cfg->optimizer);
    bp__optimizer *o = bp__calloc(1, sizeof(*o));
    if (!o)
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for the optimizer");
    *o = (bp__optimizer){.be = be, .cfg = cfg, .net = net, .learning_rate = cfg->learning_rate};
    if (be->create(o) < 0) {
        bp__optimizer_free(o);
        return bp__fail(err, errlen, BP_ENOMEM, "out of memory for %s's state of %zu parameters",
                        be->name, net->nparams);
    }
    *out = o;
    return 0;
}

void bp__optimizer_free(bp__optimizer *o)
{
    if (!o)
        return;
    o->be->destroy(o);
    bp__free(o);
}

int bp__optimizer_prepare(bp__optimizer *o, double n_train, int resumed, char *err, size_t errlen)
{
    o->n_train = n_train;
    return o->be->prepare ? o->be->prepare(o, resumed, err, errlen) : 0;
}

size_t bp__state_item_bytes(const bp_state_item *it, size_t nparams)
{
    size_t count = it->count ? it->count : 1;
    switch (it->kind) {
    case BP_STATE_PARAMS:
        return nparams * sizeof(bp_real);
    case BP_STATE_VECTORS:
        return bp__mul(bp__mul(count, nparams), sizeof(bp_real));
    case BP_STATE_INTS:
        return count * sizeof(int);
    default:
        return count * sizeof(double);
    }
}

int bp__optimizer_load(bp__optimizer *o, const bp_checkpoint *ck, const char *path, char *err,
                       size_t errlen)
{
    if (strcmp(ck->optimizer, o->be->name) != 0)
        return bp__fail(err, errlen, BP_EMISMATCH,
                        "%s was trained with optimizer = %s but the config has %s (its state "
                        "does not carry over: start a new run to change optimizers)",
                        path, ck->optimizer, o->be->name);
    if (o->be->fits && o->be->fits(o, ck, path, err, errlen) < 0)
        return BP_EMISMATCH;
    bp_state_item mine[BP__OPT_MAX_ITEMS];
    size_t n = o->be->items(o, mine), np = o->net->nparams;
    for (size_t i = 0; i < n; i++) {
        const bp_state_item *theirs = bp_checkpoint_item(ck, mine[i].name);
        size_t bytes = bp__state_item_bytes(&mine[i], np);
        if (!mine[i].data) /* zeros that stay zeros (lbfgs's velocity) */
            continue;
        if (!theirs || theirs->kind != mine[i].kind || bp__state_item_bytes(theirs, np) != bytes)
            return bp__fail(err, errlen, BP_EMISMATCH, "%s: /optimizer/%s does not fit this run",
                            path, mine[i].name);
        memcpy(mine[i].data, theirs->data, bytes);
    }
    if (o->be->loaded)
        o->be->loaded(o);
    return 0;
}

void bp__optimizer_begin(bp__optimizer *o, bp_net *net)
{
    if (o->be->begin)
        o->be->begin(o, net);
}

void bp__optimizer_set_step(bp__optimizer *o, double learning_rate, long t)
{
    o->learning_rate = learning_rate;
    o->t = t;
}

int bp__optimizer_applies(const bp__optimizer *o)
{
    return o->be->apply != NULL;
}

int bp__optimizer_apply(bp__optimizer *o, bp_net *net, const bp_real *sum, double m, size_t from,
                        size_t to)
{
    return o->be->apply ? o->be->apply(o, net, sum, m, from, to) : 0;
}

int bp__optimizer_evaluated(bp__optimizer *o, bp_net *net, const bp_real *sum, double cost,
                            double correct)
{
    return o->be->evaluated ? o->be->evaluated(o, net, sum, cost, correct) : BP__OPT_GO_ON;
}

int bp__optimizer_whole_set(const bp__optimizer *o)
{
    return o->be->whole_set;
}

int bp__optimizer_converged(const bp__optimizer *o)
{
    return o->be->converged ? o->be->converged(o) : 0;
}

void bp__optimizer_point(const bp__optimizer *o, double *cost, double *correct)
{
    if (o->be->point)
        o->be->point(o, cost, correct);
}

bp_optimizer_state bp__optimizer_state(bp__optimizer *o, bp_state_item *items)
{
    size_t n = o->be->items(o, items);
    return (bp_optimizer_state){o->be->name, n, items};
}

/* Each item hashed apart, then their hashes together with h: chained through the seed, a
 * small item's would cancel the seed's high bits (DEVELOPERS.md). */
uint64_t bp__optimizer_hash(bp__optimizer *o, uint64_t h)
{
    bp_state_item items[BP__OPT_MAX_ITEMS];
    uint64_t parts[BP__OPT_MAX_ITEMS + 1] = {h};
    size_t n = o->be->items(o, items);
    for (size_t i = 0; i < n; i++) /* zeros that stay zeros hash as 0 */
        parts[i + 1] =
            items[i].data
                ? bp__hash_words(items[i].data, bp__state_item_bytes(&items[i], o->net->nparams), 0)
                : 0;
    return bp__hash_words(parts, (n + 1) * sizeof(parts[0]), 0);
}

int bp__optimizer_nonfinite(const bp__optimizer *o, const bp_net *net, char *msg, size_t len)
{
    return o->be->nonfinite ? o->be->nonfinite(o, net, msg, len) : 0;
}

int bp__nonfinite_params(const bp_net *net, const bp_real *buf, const char *whose, char *msg,
                         size_t len)
{
    for (int l = 0; l < net->nlayers; l++) {
        size_t off[2] = {bp_net_offset_W(net, l), bp_net_offset_b(net, l)};
        size_t n[2] = {(size_t)net->sizes[l] * (size_t)net->sizes[l + 1],
                       (size_t)net->sizes[l + 1]};
        for (int k = 0; k < 2; k++) {
            size_t bad = 0;
            for (size_t i = 0; i < n[k]; i++)
                bad += !isfinite(buf[off[k] + i]);
            if (bad) {
                snprintf(msg, len, "%s%zu of layer %d's %zu %s %s not finite", whose, bad, l, n[k],
                         k ? "biases" : "weights", bad == 1 && !whose[0] ? "is" : "are");
                return 1;
            }
        }
    }
    snprintf(msg, len, "every weight is finite");
    return 0;
}

const bp_state_item *bp_checkpoint_item(const bp_checkpoint *ck, const char *name)
{
    for (size_t i = 0; ck && name && i < ck->nopt_state; i++)
        if (strcmp(ck->opt_state[i].name, name) == 0)
            return &ck->opt_state[i];
    return NULL;
}

void bp_checkpoint_describe_optimizer(const bp_checkpoint *ck, char *buf, size_t len)
{
    const bp__opt_backend *be = bp__opt_backend_named(ck->optimizer);
    int n = snprintf(buf, len, "%s", ck->optimizer);
    if (be && be->describe && n >= 0 && (size_t)n < len)
        be->describe(ck, buf + n, len - (size_t)n);
}
