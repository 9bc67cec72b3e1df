/* Files in and out, the one way libbackprop does each (docs/robustness.md says what it
 * promises users):
 * - an input is a readable regular file, checked before any library opens it by name, so a
 *   FIFO or a device is refused instead of waited on;
 * - an output is written to a temporary beside its final name, fsync'ed, renamed into place
 *   and the directory fsync'ed: a reader sees the old file or the new one, never part of
 *   one, and a full disk leaves the old file as it was;
 * - a run directory has one owner at a time, through a lock the kernel drops when its
 *   process dies. */
#ifndef BACKPROP_FILEIO_H
#define BACKPROP_FILEIO_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Checks that path is a regular file this process can read, without blocking on a FIFO;
 * sets *size when size is not NULL. BP_EIO with "PATH: WHY" otherwise. */
int bp__input_check(const char *path, off_t *size, char *err, size_t errlen);

/* bp__input_check, then opens path for reading: a file descriptor >= 0, or a negative code. */
int bp__input_open(const char *path, off_t *size, char *err, size_t errlen);

enum {
    BP__OUT_REPLACE = 1, /* an existing regular file at path may be replaced */
};

/* Before any work: checks that an output file may be published at path. Its directory must
 * exist and be writable; path must not be anything but a regular file, nor one of the
 * NULL-terminated inputs (the same file under any name): BP_EINVAL with the reason; and
 * without BP__OUT_REPLACE it must not exist: BP_EEXIST, "PATH: exists" (the program says
 * how to allow it). That a checkpoint is never replaced is bp_output_check's (files.c):
 * this file knows nothing of HDF5. */
int bp__output_check(const char *path, int flags, const char *const *inputs, char *err,
                     size_t errlen);

/* ".<name>.tmp.<pid>" in path's directory: where an output is written before its rename.
 * Returns -1 when it does not fit in len. */
int bp__temp_name(const char *path, char *buf, size_t len);

/* Whether a directory entry's name is such a temporary, of any process. */
int bp__is_temp_name(const char *name);

/* Publishes len bytes as path: a new temporary (O_EXCL), every byte written and fsync'ed,
 * renamed into place, the directory fsync'ed. Without BP__OUT_REPLACE an existing path is
 * never replaced, even one that appears meanwhile (where the file system can rename
 * without replacing or make hard links; elsewhere a check comes just before the rename).
 * On error returns BP_EIO (or BP_EEXIST, "PATH: exists", for an existing file) with "PATH: WHAT
 * (WHY)", removes the temporary, and leaves path as it was, except after a failed directory fsync:
 * the rename has happened, path holds the new file, but its name may not survive a crash. */
int bp__publish(const char *path, const void *data, size_t len, int flags, char *err,
                size_t errlen);

/* Makes path a second name of the existing file target in one step (a hard link under the
 * temporary name, renamed over path, the directory fsync'ed): how latest.h5 follows the
 * newest checkpoint. 1 when the file system refuses the link (the caller writes a copy
 * instead), BP_EIO with the reason when the rename or fsync fails, else 0. */
int bp__publish_link(const char *target, const char *path, char *err, size_t errlen);

/* The directory part of path ("." when there is none, "/" for "/x"), into out. */
void bp__dir_of(const char *path, char *out, size_t len);

/* Appends len bytes to path in one write(2); on a failed or short write the file is cut
 * back to its old length, so it never ends in part of what was appended. */
int bp__append(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* A lock held on lockpath until bp__lock_drop or the process's death (fcntl record locks on
 * the open file description: served over NFS by the lock manager, dropped by the kernel
 * when the process dies, and exclusive also between two holders in one process). */
typedef struct {
    int fd;
    char path[1088];
} bp__lock;

/* Takes lk on lockpath, creating the file and writing "PID HOST" into it. When another
 * process holds it, BP_EINVAL with "held by pid P on HOST" in err; BP_EIO when the lock
 * file cannot be made. */
int bp__lock_take(bp__lock *lk, const char *lockpath, char *err, size_t errlen);

/* Removes the lock file and drops the lock; harmless on a lock never taken (fd < 0). */
void bp__lock_drop(bp__lock *lk);

/* Whether two stat results are one file (any of its names: hard links included). */
static inline int bp__same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

#endif
