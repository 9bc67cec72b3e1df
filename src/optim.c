/* What every optimizer's update shares: its ranges cut into one flat loop per layer, on
 * the products' threads; and the learning rate's schedule. */
#ifdef _OPENMP
#include <omp.h>
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "optimizer.h"

/* Below this many parameters, the update is too short to share between threads. */
#define BP_SHARED_UPDATE_MIN 65536

/* Part `part` of `parts` of every layer's elements in [from, to): contiguous,
 * cache-line-aligned slices. Each element is updated by the same expression whoever updates
 * it and whatever the range, so the result depends on neither. */
static int for_part(const bp_net *net, size_t from, size_t to, int part, int parts,
                    bp__segment_fn fn, const void *ctx)
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
int bp__opt_for_range(const bp_net *net, size_t from, size_t to, bp__segment_fn fn, const void *ctx)
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
