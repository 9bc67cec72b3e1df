/* optimizer = adam (Kingma and Ba), with the L2 term coupled (the seeds' cost) or decoupled
 * ([train] weight_decay = decoupled: AdamW). Each value it stores is tested with
 * bp__not_finite: a finite gradient of 6e20 (4e155 in double, with beta2 = 0.999) overflows
 * (1 - beta2) g * g, the second moment becomes infinite, and the step m1 / sqrt(m2) is 0:
 * the parameter stays finite and never trains again, so the moments are tested too. */
#include <math.h>

#include "optimizer.h"

/* Adam over n elements: g = the batch mean gradient plus, coupled, the L2 term's gradient
 * l2c p; then the moments, and the step with the bias corrections c1, c2 and, decoupled,
 * the weight decay l2d p (AdamW). beta: beta1, beta2, and 1 - each computed in double (in
 * float, 1 - 0.999f is off by 1.3e-5 relative: 0.999 is not a float). 1 when some updated
 * parameter or moment is not finite. */
BP__VECTORIZE static int adam_range(bp_real *restrict p, const bp_real *restrict grad,
                                    bp_real *restrict m1, bp_real *restrict m2, size_t n,
                                    bp_real inv_m, bp_real l2c, bp_real l2d, bp_real lr,
                                    const bp_real *beta, bp_real c1, bp_real c2, bp_real eps)
{
    bp_real b1 = beta[0], b2 = beta[1], a1 = beta[2], a2 = beta[3];
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bp_real g = grad[i] * inv_m + l2c * p[i];
        m1[i] = b1 * m1[i] + a1 * g;
        m2[i] = b2 * m2[i] + a2 * g * g;
        bp_real denom = BP__SQRT(m2[i] * c2) + eps;
        bp_real x = p[i] - lr * (m1[i] * c1 / denom + l2d * p[i]);
        p[i] = x;
        bad |= bp__not_finite(x) | bp__not_finite(m1[i]) | bp__not_finite(m2[i]);
    }
    return bad;
}

typedef struct {
    bp_real *p, *m1, *m2;
    const bp_real *g;
    bp_real inv_m, l2, lr, beta[4], c1, c2, eps;
    int decoupled;
} adam_ctx;

static int adam_segment(const void *ctx, size_t o, size_t n, int weights)
{
    const adam_ctx *c = ctx;
    bp_real l2 = weights ? c->l2 : 0;
    return adam_range(c->p + o, c->g + o, c->m1 + o, c->m2 + o, n, c->inv_m, c->decoupled ? 0 : l2,
                      c->decoupled ? l2 : 0, c->lr, c->beta, c->c1, c->c2, c->eps);
}

int bp__adam_step_range(const bp__adam *opt, bp_net *net, const bp_real *grad, bp_real *m1,
                        bp_real *m2, double m, long t, size_t from, size_t to)
{
    adam_ctx c = {.p = net->params,
                  .m1 = m1,
                  .m2 = m2,
                  .g = grad,
                  .inv_m = (bp_real)(1 / m),
                  .l2 = (bp_real)(opt->lambda / opt->n_train),
                  .lr = (bp_real)opt->learning_rate,
                  .beta = {(bp_real)opt->beta1, (bp_real)opt->beta2, (bp_real)(1 - opt->beta1),
                           (bp_real)(1 - opt->beta2)},
                  .c1 = (bp_real)(1 / (1 - pow(opt->beta1, (double)t))),
                  .c2 = (bp_real)(1 / (1 - pow(opt->beta2, (double)t))),
                  .eps = (bp_real)opt->epsilon,
                  .decoupled = opt->decoupled};
    return bp__opt_for_range(net, from, to, adam_segment, &c);
}

typedef struct {
    bp_real *m1, *m2;
} adam_state;

/* The first moment where sgd keeps its velocity (vW, vb), the second as sW, sb. */
static const bp_state_item spec[] = {{"v", BP_STATE_PARAMS, 0, NULL},
                                     {"s", BP_STATE_PARAMS, 0, NULL}};

static double per_param(const bp_config *c)
{
    (void)c;
    return 3;
}

static int create(bp__optimizer *o)
{
    adam_state *s = bp__calloc(1, sizeof(*s));
    o->s = s;
    if (!s || !(s->m1 = bp__calloc(o->net->nparams, sizeof(bp_real))) ||
        !(s->m2 = bp__calloc(o->net->nparams, sizeof(bp_real))))
        return BP_ENOMEM;
    return 0;
}

static void destroy(bp__optimizer *o)
{
    adam_state *s = o->s;
    if (s) {
        bp__free(s->m1);
        bp__free(s->m2);
    }
    bp__free(s);
}

/* The step count is the update's, o->t: the global step + 1, so a resume continues it. */
static int apply(bp__optimizer *o, bp_net *net, const bp_real *sum, double m, size_t from,
                 size_t to)
{
    const bp_config *c = o->cfg;
    adam_state *s = o->s;
    bp__adam opt = {.learning_rate = o->learning_rate,
                    .lambda = c->lambda,
                    .n_train = o->n_train,
                    .beta1 = c->beta1,
                    .beta2 = c->beta2,
                    .epsilon = c->adam_epsilon,
                    .decoupled = c->decoupled};
    return bp__adam_step_range(&opt, net, sum, s->m1, s->m2, m, o->t, from, to);
}

static size_t items(bp__optimizer *o, bp_state_item *out)
{
    adam_state *s = o->s;
    out[0] = spec[0];
    out[0].data = s->m1;
    out[1] = spec[1];
    out[1].data = s->m2;
    return 2;
}

static int nonfinite(const bp__optimizer *o, const bp_net *net, char *msg, size_t len)
{
    adam_state *s = o->s;
    return bp__nonfinite_params(net, s->m1, "the Adam first moments of ", msg, len) ||
           bp__nonfinite_params(net, s->m2, "the Adam second moments of ", msg, len);
}

const bp__opt_backend bp__opt_adam = {.name = "adam",
                                      .state_what = "momentum",
                                      .per_param = per_param,
                                      .spec = spec,
                                      .nspec = sizeof(spec) / sizeof(spec[0]),
                                      .create = create,
                                      .destroy = destroy,
                                      .apply = apply,
                                      .items = items,
                                      .nonfinite = nonfinite};
