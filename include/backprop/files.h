/* Files as a program around the library reads and writes them, the way the library does
 * (docs/robustness.md says what each promises): an input is a readable regular file, never
 * a FIFO waited on; an output is checked before any work (bp_output_check: never an input
 * or a checkpoint), and is published whole (a temporary, fsync, rename), never in part.
 * bp_publish writes where it is told: call bp_output_check on the path first. */
#ifndef BACKPROP_FILES_H
#define BACKPROP_FILES_H

#include <stddef.h>

#include "backprop/config.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    BP_OUT_REPLACE = 1, /* an existing regular file at the output's path may be replaced */
};

/* Opens path for reading after checking it is a regular file this process can read
 * (without blocking on a FIFO): a file descriptor >= 0, or BP_EIO with "PATH: WHY". */
int bp_input_open(const char *path, char *err, size_t errlen);

/* Before any work: whether an output may be published at path. Its directory must exist
 * and be writable; path must not be anything but a regular file, nor a backprop checkpoint,
 * nor one of the NULL-terminated inputs (the same file under any name). BP_EEXIST with
 * "PATH: exists" when path exists and flags lacks BP_OUT_REPLACE; BP_EINVAL with the
 * reason for the rest. */
int bp_output_check(const char *path, int flags, const char *const *inputs, char *err,
                    size_t errlen);

/* Publishes len bytes as path (checked by bp_output_check before the work that made
 * them): written to a temporary beside it, fsync'ed, renamed into place, the directory
 * fsync'ed. Without BP_OUT_REPLACE an existing path is never replaced
 * (BP_EEXIST); BP_EIO with "PATH: WHAT (WHY)" when the write fails, path left as it was. */
int bp_publish(const char *path, const void *data, size_t len, int flags, char *err, size_t errlen);

/* ".NAME.tmp.PID" in path's directory: where a program writes an output of its own (one a
 * child process fills) before renaming it over path. -1 when it does not fit in len. */
int bp_temp_name(const char *path, char *buf, size_t len);

/* 1 when two paths name one existing file (hard links included), else 0. */
int bp_same_file(const char *a, const char *b);

/* Before a run: BP_EINVAL when the file at path, `what` (e.g. "the config c.ini"), sits
 * under a name a run of cfg writes or sweeps in its [checkpoint] dir (checkpoints,
 * latest.h5, the step times, temporaries), under any of its names; else 0. */
int bp_run_input_check(const bp_config *cfg, const char *path, const char *what, char *err,
                       size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
