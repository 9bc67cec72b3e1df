/* Rank 0's checkpoint writer: the state is copied (a memcpy of the parameters, the
 * optimizer's state items and the run state) and a thread of its own writes the copy, so training
 * goes on while HDF5 encodes, the file is fsync'ed and latest.h5 swapped. At most one write is in
 * flight. While it is, the thread is the only caller of libhdf5 in the process: the trainer
 * waits for it before any other HDF5 work. A write that fails leaves the previous
 * checkpoint as it was (rundir.c publishes atomically), and its status is kept until a
 * wait or the next start returns it. */
#ifndef BACKPROP_SAVER_H
#define BACKPROP_SAVER_H

#include "backprop/config.h"
#include "recorder.h"
#include "rundir.h"

typedef struct bp__saver bp__saver;

/* Allocates the copy for net's shape and starts the thread. cfg (the run directory, keep)
 * and config_text must outlive the saver. Returns 0 or BP_ENOMEM. */
int bp__saver_create(bp__saver **s, const bp_config *cfg, const bp_net *net,
                     const char *config_text, char *err, size_t errlen);

/* Waits for the write in flight; if it failed, returns its status (BP_EIO, BP_ENOMEM) with
 * its reason in err and starts nothing. Else copies snap (an item's NULL data is zeros, and
 * costs no copy; its config_text is ignored: the saver's own is written) and returns 0 while the
 * thread writes DIR/ckpt-<step>.h5 and latest.h5 and prunes. */
int bp__saver_start(bp__saver *s, const bp_run_snapshot *snap, char *err, size_t errlen);

/* Waits for the write in flight; returns its status, 0 or as above, and clears it. */
int bp__saver_wait(bp__saver *s, char *err, size_t errlen);

/* 1 when the last write finished and failed (wait returns why); never blocks. */
int bp__saver_failed(bp__saver *s);

/* Writes finished so far and the seconds they took in all. */
void bp__saver_stats(bp__saver *s, long *writes, double *write_s);

/* Waits for the write in flight, stops the thread, frees. NULL is fine. */
void bp__saver_free(bp__saver *s);

/* The writes are recorded in rec (src/recorder.h) from now on; NULL: no more. NULL s is
 * fine. */
void bp__saver_set_recorder(bp__saver *s, bp__rec *rec);

#endif
