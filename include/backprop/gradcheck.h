/* A run's gradient checked: the network a config builds from its seed, its gradient computed
 * as training computes it (each rank its shard of the examples, summed over the ranks)
 * against centred differences of the cost (bp_gradcheck, backprop.h). */
#ifndef BACKPROP_GRADCHECK_H
#define BACKPROP_GRADCHECK_H

#include <stddef.h>

#include "backprop/backprop.h"
#include "backprop/comm.h"
#include "backprop/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double epsilon; /* the differences' step */
    long examples;  /* the cost is the mean over the first `examples` training rows (fewer
                     * when the set has fewer), plus the L2 term */
    /* The caller's options that every rank must share, as "KEY = VALUE\n" lines (NULL: none),
     * what messages call them ("command line") and what to check when they differ. */
    const char *options, *options_what, *options_hint;
} bp_gradcheck_run_opts;

typedef struct {
    int nlayers;
    int sizes[BP_MAX_LAYERS];   /* the network's layer sizes, input first */
    bp_gradcheck_layer *layers; /* nlayers results, bp_gradcheck's; the report's own */
    /* On an error: 1 when it came from the computation (memory, the ranks' sum), 0 from the
     * setup (the data, the ranks' agreement). */
    int during_work;
} bp_gradcheck_report;

/* Collective over comm: cfg's training set loaded on every rank and checked to be the same
 * set on every rank (by contents), as cfg and opts's options are; cfg's network built and
 * initialised from its seed; its gradient summed over the ranks' shards and compared with
 * centred differences, every rank computing the same report. BLAS threads are [train]
 * threads (0: the node's cores shared among its ranks). opts is required: BP_EINVAL unless
 * epsilon is finite and > 0 and examples >= 1. Every rank returns the same code;
 * err holds the reason on one rank and is empty on the others. */
int bp_gradcheck_run(const bp_comm *comm, const bp_config *cfg, const bp_gradcheck_run_opts *opts,
                     bp_gradcheck_report *report, char *err, size_t errlen);

/* Frees what a report holds and zeroes it; harmless on a zeroed one. */
void bp_gradcheck_report_free(bp_gradcheck_report *report);

#ifdef __cplusplus
}
#endif

#endif
