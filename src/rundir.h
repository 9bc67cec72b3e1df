/* The run directory: its lock, checkpoint files, latest.h5, pruning, and the metrics CSV.
 * Rank 0's file work only, on what it is handed: no collectives, no trainer. The trainer
 * (train.c) decides when, and agrees the outcome across ranks. */
#ifndef BACKPROP_RUNDIR_H
#define BACKPROP_RUNDIR_H

#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "fileio.h"

/* What a checkpoint holds, borrowed from the trainer for one write. */
typedef struct {
    const bp_net *net;
    bp_optimizer_state opt; /* NULL buffers: zeros */
    const bp_train_state *st;
    const char *config_text;
} bp_run_snapshot;

/* "latest" -> DIR/latest.h5 (BP_ENOENT when it does not exist); anything else is a path. */
int bp__rundir_resolve(const bp_config *cfg, const char *resume, char *out, size_t outlen,
                       char *err, size_t errlen);

/* Before any work: creates the directories, checks they are writable, takes the run
 * directory's lock into dir_lock and the metrics file's into metrics_lock, and refuses to
 * replace another run's files. A fresh run (resume NULL) refuses a directory that holds a run
 * (latest.h5) and a metrics CSV with rows. A resume (resume as --resume gave it) refuses a
 * directory whose latest.h5 is another run's (the resumed checkpoint is not latest.h5 nor a
 * file of that directory, and their /train/metrics histories share no first epochs), and a
 * metrics CSV whose rows are not this run's history. BP_EEXIST when a fresh run finds a run
 * in the directory (latest.h5), BP_ENOENT when "latest" is resumed and there is none,
 * BP_EINVAL when another run holds a lock or owns a file. Creates the directories; writes no file
 * that stays (bp__lock_drop removes the lock files). */
int bp__rundir_prepare(const bp_config *cfg, const char *resume, bp__lock *dir_lock,
                       bp__lock *metrics_lock, char *err, size_t errlen);

/* Before any work: BP_EINVAL when the file at path, `what` (e.g. "the config c.ini"), sits
 * under a name the run writes or sweeps in [checkpoint] dir (checkpoints, latest.h5, the step
 * times, temporaries), under any of its names. */
int bp__rundir_check_input(const bp_config *cfg, const char *path, const char *what, char *err,
                           size_t errlen);

/* checkpoint.c: /train of the checkpoint at path alone (position, seed, metrics rows),
 * verified as bp_checkpoint_read verifies it; st->metrics is the caller's to free. */
int bp__checkpoint_read_state(const char *path, bp_train_state *st, char *err, size_t errlen);

/* Once all ranks agreed to start: removes stale temporary files and starts the metrics
 * CSV (a header, or on resume the rows in st, so none repeats). */
int bp__rundir_start(const bp_config *cfg, const bp_train_state *st, char *err, size_t errlen);

/* Appends one row, whole or not at all. */
int bp__rundir_append_metrics(const bp_config *cfg, const bp_metrics_row *row, char *err,
                              size_t errlen);

/* Writes ckpt-<global step>.h5 and latest.h5, then prunes to [checkpoint] keep. */
int bp__rundir_write_checkpoint(const bp_config *cfg, const bp_run_snapshot *s, char *err,
                                size_t errlen);

#endif
