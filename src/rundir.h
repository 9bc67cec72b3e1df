/* The run directory: checkpoint files, latest.h5, pruning, resuming, and the metrics CSV.
 * Only rank 0 touches files, except bp_rundir_resume, which every rank runs. */
#ifndef BACKPROP_RUNDIR_H
#define BACKPROP_RUNDIR_H

#include "train.h"

/* "latest" -> DIR/latest.h5 (which must exist); anything else is a path. */
int bp_rundir_resolve(const bp_config *cfg, const char *resume, char *out, size_t outlen, char *err,
                      size_t errlen);

/* Every rank: loads the checkpoint into t (parameters, velocity, state) after checking it
 * fits the configured network. */
int bp_rundir_resume(bp_trainer *t, const char *path, char *err, size_t errlen);

/* Rank 0, before any work: creates the directories, checks they are writable, takes the
 * run directory's lock (and the metrics file's, when it lives elsewhere) into t, and
 * refuses a fresh run over a directory that already holds one. BP_EINVAL when another run
 * holds a lock. Writes nothing that stays: bp_trainer_free drops the locks and removes
 * their files. */
int bp_rundir_prepare(bp_trainer *t, int resuming, char *err, size_t errlen);

/* Rank 0, once all ranks agreed to start: removes stale temporary files and starts the
 * metrics CSV (a header, or on resume the rows of the checkpoint, so none repeats). */
int bp_rundir_start(bp_trainer *t, char *err, size_t errlen);

/* Rank 0: appends one row and flushes it. */
int bp_rundir_append_metrics(const bp_trainer *t, const bp_metrics_row *row, char *err,
                             size_t errlen);

/* Every rank: checks the replicas are bit-identical, then rank 0 writes ckpt-<step>.h5 and
 * latest.h5 and prunes to `keep`; the outcome is agreed across ranks. */
int bp_rundir_checkpoint(bp_trainer *t, char *err, size_t errlen);

#endif
