/* Straggler detection (src/straggler.h). */
#include <stdlib.h>
#include <string.h>

#include "backprop/backprop.h"
#include "straggler.h"

int bp__straggler_init(bp__straggler *s, int ranks, double factor)
{
    memset(s, 0, sizeof(*s));
    s->ranks = ranks, s->factor = factor, s->first_step = -1, s->worst_rank = -1;
    if (factor <= 0 || ranks < 2)
        return 0;
    size_t n = (size_t)ranks;
    s->sum = calloc(n, sizeof(double));
    s->mean = calloc(n, sizeof(double));
    s->sorted = calloc(n, sizeof(double));
    s->slow = calloc(n, 1);
    s->in = calloc(n, 1);
    if (!s->sum || !s->mean || !s->sorted || !s->slow || !s->in) {
        bp__straggler_free(s);
        return BP_ENOMEM;
    }
    return 0;
}

void bp__straggler_free(bp__straggler *s)
{
    free(s->sum);
    free(s->mean);
    free(s->sorted);
    free(s->slow);
    free(s->in);
    s->sum = s->mean = s->sorted = NULL;
    s->slow = s->in = NULL;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bp__straggler_others(const bp__straggler *s, int r)
{
    /* The median of sorted without one copy of r's mean: the others' median. */
    int n = s->ranks - 1, skip = 0;
    while (skip < s->ranks && s->sorted[skip] != s->mean[r])
        skip++;
    int lo = (n - 1) / 2, hi = n / 2;
    double a = s->sorted[lo + (lo >= skip)], b = s->sorted[hi + (hi >= skip)];
    return (a + b) / 2;
}

/* The window ended: which ranks were slow in it, and the slow set after it. */
static int close_window(bp__straggler *s)
{
    for (int r = 0; r < s->ranks; r++)
        s->mean[r] = s->sum[r] / (double)s->steps, s->sorted[r] = s->mean[r];
    qsort(s->sorted, (size_t)s->ranks, sizeof(double), by_value);
    int changed = 0;
    s->n_in = 0;
    for (int r = 0; r < s->ranks; r++) {
        double others = bp__straggler_others(s, r);
        int slow =
            s->mean[r] > s->factor * others && s->mean[r] - others > BP__STRAGGLER_MIN_MS / 1e3;
        s->slow[r] = (unsigned char)(((s->slow[r] << 1) | slow) & 3);
        int in = s->in[r] ? s->slow[r] != 0 : s->slow[r] == 3;
        changed |= in != s->in[r];
        s->in[r] = (unsigned char)in;
        s->n_in += in;
        if (in && others > 0 && s->mean[r] / others > s->worst_factor)
            s->worst_factor = s->mean[r] / others, s->worst_rank = r;
    }
    s->warned_any |= s->n_in > 0;
    return changed;
}

int bp__straggler_add(bp__straggler *s, const double *work, double wall, long step)
{
    if (!s->sum)
        return 0;
    if (s->steps == 0)
        s->first_step = step;
    for (int r = 0; r < s->ranks; r++)
        s->sum[r] += work[r];
    s->steps++, s->seconds += wall;
    if (s->steps < BP__STRAGGLER_STEPS || s->seconds < BP__STRAGGLER_SECONDS)
        return 0;
    int changed = close_window(s);
    s->from_step = s->first_step, s->to_step = step;
    memset(s->sum, 0, (size_t)s->ranks * sizeof(double));
    s->steps = 0, s->seconds = 0;
    return changed;
}
