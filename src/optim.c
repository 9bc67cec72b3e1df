/* The update rule: one flat loop per layer over the parameter buffer. */
#ifdef _OPENMP
#include <omp.h>
#endif

#include <math.h>

#include "internal.h"

/* Below this many parameters, the update is too short to share between threads. */
#define BP_SHARED_UPDATE_MIN 65536

BP__VECTORIZE static void step_range(bp_real *restrict p, const bp_real *restrict g,
                                     bp_real *restrict v, size_t n, double eta_m, double decay,
                                     double mu, double l2)
{
    if (!v) {
        bp_real d = (bp_real)decay, s = (bp_real)eta_m;
        for (size_t i = 0; i < n; i++)
            p[i] = d * p[i] - s * g[i];
        return;
    }
    bp_real m = (bp_real)mu, s = (bp_real)eta_m, w = (bp_real)l2;
    for (size_t i = 0; i < n; i++) {
        v[i] = m * v[i] - s * g[i] - w * p[i];
        p[i] += v[i];
    }
}

/* Part `part` of `parts` of every layer's elements in [from, to): contiguous,
 * cache-line-aligned slices. Each element is updated by the same expression whoever updates
 * it and whatever the range, so the result depends on neither. */
static void step_part(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *v, double eta_m,
                      double l2, size_t from, size_t to, int part, int parts)
{
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
            size_t o = off[k] + lo;
            step_range(net->params + o, grad + o, v ? v + o : NULL, hi - lo, eta_m,
                       k == 0 ? 1.0 - l2 : 1.0, opt->momentum, k == 0 ? l2 : 0.0);
        }
    }
}

void bp__sgd_step_range(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity,
                        double m, size_t from, size_t to)
{
    double eta_m = opt->learning_rate / m;
    double l2 = opt->learning_rate * opt->lambda / opt->n_train; /* eta * lambda / n */
    bp_real *v = opt->momentum != 0 ? velocity : NULL;
#ifdef _OPENMP
    /* With several BLAS threads the gradient comes out of the products in several cores'
     * caches, and one core alone would stream the whole buffer: the threads share it.
     * (OpenMP only where the products run on OpenMP too, oneDNN's: one pool of threads.) */
    int threads = omp_get_max_threads();
    if (threads > 1 && to - from >= BP_SHARED_UPDATE_MIN) {
#pragma omp parallel num_threads(threads)
        step_part(opt, net, grad, v, eta_m, l2, from, to, omp_get_thread_num(),
                  omp_get_num_threads());
        return;
    }
#endif
    step_part(opt, net, grad, v, eta_m, l2, from, to, 0, 1);
}

void bp_sgd_step(const bp_sgd *opt, bp_net *net, const bp_real *grad, bp_real *velocity, double m)
{
    bp__sgd_step_range(opt, net, grad, velocity, m, 0, net->nparams);
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
