/* The update rule: one flat loop per layer over the parameter buffer. */
#ifdef _OPENMP
#include <omp.h>
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Below this many parameters, the update is too short to share between threads. */
#define BP_SHARED_UPDATE_MIN 65536

/* Each value the updates store is tested with bp__not_finite, on a value already in a
 * register. Under sgd a non-finite gradient or velocity always leaves a non-finite
 * parameter behind it (the learning rate is > 0), so the parameter's test covers them.
 * Adam's does not: a finite gradient of 6e20 (4e155 in double, with beta2 = 0.999)
 * overflows (1 - beta2) g * g, the second moment becomes infinite, and the step
 * m1 / sqrt(m2) is 0: the parameter stays finite and never trains again. Its moments are
 * tested too. */

/* 1 when some updated parameter is not finite. */
BP__VECTORIZE static int step_range(bp_real *restrict p, const bp_real *restrict g,
                                    bp_real *restrict v, size_t n, double eta_m, double decay,
                                    double mu, double l2)
{
    int bad = 0;
    if (!v) {
        bp_real d = (bp_real)decay, s = (bp_real)eta_m;
        for (size_t i = 0; i < n; i++) {
            bp_real x = d * p[i] - s * g[i];
            p[i] = x;
            bad |= bp__not_finite(x);
        }
        return bad;
    }
    bp_real m = (bp_real)mu, s = (bp_real)eta_m, w = (bp_real)l2;
    for (size_t i = 0; i < n; i++) {
        v[i] = m * v[i] - s * g[i] - w * p[i];
        bp_real x = p[i] + v[i];
        p[i] = x;
        bad |= bp__not_finite(x);
    }
    return bad;
}

/* One update kernel over params-shaped buffers at [o, o + n), all weights or all biases:
 * 1 when it left a parameter that is not finite. */
typedef int (*segment_fn)(const void *ctx, size_t o, size_t n, int weights);

/* Part `part` of `parts` of every layer's elements in [from, to): contiguous,
 * cache-line-aligned slices. Each element is updated by the same expression whoever updates
 * it and whatever the range, so the result depends on neither. */
static int for_part(const bp_net *net, size_t from, size_t to, int part, int parts, segment_fn fn,
                    const void *ctx)
{
    int bad = 0;
    for (int l = 0; l < net->nlayers; l++) {
        size_t off[2] = {bp_net_offset_W(net, l), bp_net_offset_b(net, l)};
        size_t len[2] = {(size_t)net->sizes[l] * (size_t)net->sizes[l + 1],
                         (size_t)net->sizes[l + 1]};
        for (int k = 0; k < 2; k++) {
            size_t first = from > off[k] ? from - off[k] : 0;
            size_t end = to < off[k] + len[k] ? (to > off[k] ? to - off[k] : 0) : len[k];
            if (first >= end)
                continue;
            size_t line = 64 / sizeof(bp_real), n = end - first;
            size_t slice = (n / (size_t)parts + line) / line * line;
            size_t lo = first + slice * (size_t)part, hi = lo + slice;
            lo = lo < end ? lo : end;
            hi = hi < end ? hi : end;
            bad |= fn(ctx, off[k] + lo, hi - lo, k == 0);
        }
    }
    return bad;
}

/* [from, to) of every layer through fn, on the threads of the products when there are
 * several and the range is long. */
static int for_range(const bp_net *net, size_t from, size_t to, segment_fn fn, const void *ctx)
{
#ifdef _OPENMP
    /* With several BLAS threads the gradient comes out of the products in several cores'
     * caches, and one core alone would stream the whole buffer: the threads share it.
     * (OpenMP only where the products run on OpenMP too, oneDNN's: one pool of threads.) */
    int threads = omp_get_max_threads();
    if (threads > 1 && to - from >= BP_SHARED_UPDATE_MIN) {
        int bad = 0;
#pragma omp parallel num_threads(threads) reduction(| : bad)
        bad |= for_part(net, from, to, omp_get_thread_num(), omp_get_num_threads(), fn, ctx);
        return bad;
    }
#endif
    return for_part(net, from, to, 0, 1, fn, ctx);
}

typedef struct {
    bp_real *p, *v;
    const bp_real *g;
    double eta_m, l2, mu;
} sgd_ctx;

static int sgd_segment(const void *ctx, size_t o, size_t n, int weights)
{
    const sgd_ctx *c = ctx;
    return step_range(c->p + o, c->g + o, c->v ? c->v + o : NULL, n, c->eta_m,
                      weights ? 1.0 - c->l2 : 1.0, c->mu, weights ? c->l2 : 0.0);
}

int bp__sgd_step_range(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity,
                       double m, size_t from, size_t to)
{
    sgd_ctx c = {net->params,
                 opt->momentum != 0 ? velocity : NULL,
                 grad,
                 opt->learning_rate / m,
                 opt->learning_rate * opt->lambda / opt->n_train, /* eta * lambda / n */
                 opt->momentum};
    return for_range(net, from, to, sgd_segment, &c);
}

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
    return for_range(net, from, to, adam_segment, &c);
}

void bp_sgd_step(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity, double m)
{
    (void)bp__sgd_step_range(opt, net, grad, velocity, m, 0, net->nparams);
}

double bp__learning_rate(const bp_config *c, long epoch, long step, long steps, double n)
{
    double eta = c->learning_rate;
    switch (c->lr_schedule) {
    case BP_LR_STEP:
        return eta * pow(c->lr_gamma, (double)(epoch / c->lr_step_epochs));
    case BP_LR_COSINE: {
        double progress = steps > 0 ? (double)step / (double)steps : 0;
        return c->lr_min + (eta - c->lr_min) * (1 + cos(acos(-1.0) * progress)) / 2;
    }
    case BP_LR_INVERSE_SCALING:
        return eta / pow((double)epoch * n + 1, c->lr_power);
    default:
        return eta;
    }
}
