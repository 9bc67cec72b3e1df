/* What a run shows of itself beyond its metrics: every rank's step times, and the flight
 * recorder's trace (src/recorder.h) at the end of a run or on a stop. The watchdog's
 * trace is src/comm.c's: no collective can be trusted then. */
#include <stdlib.h>
#include <string.h>

#include "backprop/train.h"
#include "comm.h"
#include "fileio.h"
#include "internal.h"
#include "recorder.h"
#include "train.h"

int bp_trainer_rank_times(const bp_trainer *t, bp_rank_times *out)
{
    const bp__step_clock *c = &t->clock;
    double ms = c->steps > 0 ? 1e3 / (double)c->steps : 0;
    double mine[4] = {ms * c->data_s, ms * c->compute_s, ms * c->exchange_s, ms * c->update_s};
    double *all = t->comm.rank == 0 ? calloc((size_t)t->comm.size * 4, sizeof(double)) : NULL;
    int rc = t->comm.rank == 0 && !all ? BP_ENOMEM : 0;
    /* A rank 0 without the memory still takes part: into its own four. */
    if (bp__comm_gather_doubles(&t->comm, mine, 4, all ? all : mine) < 0)
        rc = BP_ECOMM;
    if (rc == 0 && all)
        for (int r = 0; r < t->comm.size; r++)
            out[r] = (bp_rank_times){all[4 * r], all[4 * r + 1], all[4 * r + 2], all[4 * r + 3]};
    free(all);
    return rc;
}

const char *bp_trainer_rank_host(const bp_trainer *t, int rank)
{
    const char *host = bp__comm_host(&t->comm, rank);
    if (!host && rank == t->comm.rank && t->obs.ring)
        host = t->obs.ring->host;
    return host ? host : "";
}

int bp_trainer_write_trace(bp_trainer *t, const char *why, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    const bp_config *cfg = t->cfg;
    if (!cfg->trace[0] || !t->obs.ring)
        return 0;
    bp__rec_gathered g;
    int rc = bp__comm_gather_rings(&t->comm, t->obs.ring, &g);
    if (rc < 0 || t->comm.rank != 0) {
        bp__rec_gathered_free(&g);
        return rc < 0 ? bp__fail(err, errlen, rc,
                                 "the trace: the ranks' events could not be "
                                 "gathered")
                      : 0;
    }
    char *text = NULL;
    size_t bytes = 0;
    FILE *f = open_memstream(&text, &bytes);
    bp__rec_about about = {why, BP_VERSION, cfg->trace_steps, t->comm.size, bp__rec_now()};
    int ok = f && g.n > 0 && bp__rec_write_json(f, g.views, g.n, &about) == 0;
    if (f && fclose(f) != 0)
        ok = 0;
    bp__rec_gathered_free(&g);
    if (!ok)
        rc = bp__fail(err, errlen, BP_ENOMEM, "the trace: out of memory");
    else
        rc = bp__publish(cfg->trace, text, bytes, BP__OUT_REPLACE, err, errlen);
    free(text);
    return rc;
}
