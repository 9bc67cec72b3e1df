/* What a step reports (src/step.h): its summed slots, and the clock of its phases. */
#include "step.h"

void bp__step_result_read(bp__step_result *s, const bp_real *extras)
{
    s->cost = (double)extras[BP__SLOT_COST];
    s->correct = (double)extras[BP__SLOT_CORRECT];
    s->stop = extras[BP__SLOT_STOP] > 0;
    s->orders = (int)extras[BP__SLOT_ORDERS];
    s->failed = extras[BP__SLOT_FAILED] > 0;
}

void bp__step_result_read_fixed(bp__step_result *s, const int64_t *extras, double cost_scale)
{
    s->cost = (double)extras[BP__SLOT_COST] / cost_scale;
    s->correct = (double)extras[BP__SLOT_CORRECT];
    s->stop = extras[BP__SLOT_STOP] > 0;
    s->orders = (int)extras[BP__SLOT_ORDERS];
    s->failed = extras[BP__SLOT_FAILED] > 0;
}

void bp__step_rows(const bp_config *cfg, size_t m, int rank, int size, size_t *lo, size_t *hi)
{
    if (!cfg->any_scale) {
        bp__shard(m, rank, size, lo, hi);
        return;
    }
    size_t u = (size_t)cfg->micro_batch, a, b;
    bp__shard((m + u - 1) / u, rank, size, &a, &b);
    *lo = a * u < m ? a * u : m;
    *hi = b * u < m ? b * u : m;
}

void bp__step_clock_add(bp__step_clock *c, double data_s, double compute_s, double exchange_s,
                        double busy_s, double update_s)
{
    c->data_s += data_s;
    c->compute_s += compute_s;
    c->exchange_s += exchange_s;
    c->exchange_busy_s += busy_s;
    c->update_s += update_s;
    c->steps++;
}

int bp__step_clock_report(const bp__step_clock *c, const bp_comm *comm, bp_step_times *times)
{
    double n = (double)c->steps, slowest = c->compute_s;
    int rc = bp__comm_max_double(comm, &slowest);
    double ms = n > 0 ? 1e3 / n : 0;
    *times = (bp_step_times){
        .steps = c->steps,
        .data_ms = ms * c->data_s,
        .compute_ms = ms * c->compute_s,
        .slowest_compute_ms = ms * (rc == 0 ? slowest : c->compute_s),
        .exchange_ms = ms * c->exchange_s,
        .hidden_ms =
            ms * (c->exchange_busy_s > c->exchange_s ? c->exchange_busy_s - c->exchange_s : 0),
        .update_ms = ms * c->update_s};
    return rc < 0 ? BP_ECOMM : 0;
}
