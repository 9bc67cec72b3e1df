#define _GNU_SOURCE /* renameat2's RENAME_NOREPLACE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "internal.h"

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode) || S_ISBLK(mode))
        return "a device";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "not a regular file";
}

int bp__input_open(const char *path, off_t *size, char *err, size_t errlen)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer forever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return bp__fail(err, errlen, BP_EIO, "%s: no such file", path);
    if (fd < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return bp__fail(err, errlen, BP_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return bp__fail(err, errlen, BP_EIO, "%s: is %s, not a file", path, file_kind(st.st_mode));
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (size)
        *size = st.st_size;
    return fd;
}

int bp__input_check(const char *path, off_t *size, char *err, size_t errlen)
{
    int fd = bp__input_open(path, size, err, errlen);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

void bp__dir_of(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, len, ".");
    else
        slash[slash == out] = 0; /* "/x" -> "/" */
}

int bp__temp_name(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int n = snprintf(buf, len, "%.*s.%s.tmp.%ld", (int)(base - path), path, base, (long)getpid());
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int bp__is_temp_name(const char *name)
{
    const char *tmp = strstr(name, ".tmp.");
    if (name[0] != '.' || !tmp)
        return 0;
    tmp += 5;
    if (!*tmp)
        return 0;
    for (; *tmp; tmp++)
        if (*tmp < '0' || *tmp > '9')
            return 0;
    return 1;
}

int bp__output_check(const char *path, int flags, const char *const *inputs, char *err,
                     size_t errlen)
{
    const char *slash = strrchr(path, '/');
    if (!*path || !*(slash ? slash + 1 : path))
        return bp__fail(err, errlen, BP_EINVAL, "%s: not a file name", path);
    char dir[BP__PATH_LEN];
    bp__dir_of(path, dir, sizeof(dir));
    struct stat st;
    if (stat(dir, &st) != 0)
        return bp__fail(err, errlen, BP_EINVAL, "%s: cannot write there: directory %s: %s", path,
                        dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return bp__fail(err, errlen, BP_EINVAL, "%s: cannot write there: %s is not a directory",
                        path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return bp__fail(err, errlen, BP_EINVAL, "%s: cannot write there: directory %s: %s", path,
                        dir, strerror(errno));
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0
                               : bp__fail(err, errlen, BP_EINVAL, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return bp__fail(err, errlen, BP_EINVAL, "%s: is %s; an output only replaces a file", path,
                        file_kind(st.st_mode));
    for (size_t i = 0; inputs && inputs[i]; i++) {
        struct stat in;
        if (stat(inputs[i], &in) == 0 && bp__same_file(&in, &st))
            return bp__fail(err, errlen, BP_EINVAL, "%s: is the input %s; write elsewhere", path,
                            inputs[i]);
    }
    if (!(flags & BP__OUT_REPLACE))
        return bp__fail(err, errlen, BP_EEXIST, "%s: exists", path);
    return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = ENOSPC;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    char dir[BP__PATH_LEN];
    bp__dir_of(path, dir, sizeof(dir));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    /* Some file systems cannot fsync a directory (EINVAL): the rename is as durable as
     * they make it. */
    int rc = fsync(fd) == 0 || errno == EINVAL ? 0 : -1;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* rename without replacing: renameat2 where the file system has it, else link + unlink,
 * which fails on an existing name just as atomically. */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (link(from, to) == 0) {
        unlink(from);
        return 0;
    }
    if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP)
        return -1;
    /* Neither (FAT, SMB, some FUSE file systems): check, then rename. A file created in
     * between would be replaced; nothing better exists there. */
    struct stat st;
    if (lstat(to, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

int bp__publish(const char *path, const void *data, size_t len, int flags, char *err, size_t errlen)
{
    char tmp[BP__PATH_LEN];
    const char *slash = strrchr(path, '/');
    if (!*path || !*(slash ? slash + 1 : path))
        return bp__fail(err, errlen, BP_EIO, "%s: not a file name", path);
    if (bp__temp_name(path, tmp, sizeof(tmp)) < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: path too long", path);
    const char *what = "cannot create a temporary file";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) { /* left by a killed process that had our pid */
        unlink(tmp);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: %s (%s)", path, what, strerror(errno));
    int rc = write_all(fd, data, len);
    if (rc < 0)
        what = "cannot write";
    if (rc == 0 && (rc = fsync(fd)) < 0)
        what = "cannot fsync";
    int saved = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1, saved = errno;
        what = "cannot write";
    }
    errno = saved;
    if (rc == 0) {
        what = "cannot move the temporary file into place";
        rc = flags & BP__OUT_REPLACE ? rename(tmp, path) : rename_noreplace(tmp, path);
    }
    if (rc < 0) {
        saved = errno;
        unlink(tmp);
        if (saved == EEXIST)
            return bp__fail(err, errlen, BP_EEXIST, "%s: exists", path);
        return bp__fail(err, errlen, BP_EIO, "%s: %s (%s)", path, what, strerror(saved));
    }
    if (fsync_dir(path) < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot fsync its directory (%s)", path,
                        strerror(errno));
    return 0;
}

int bp__publish_link(const char *target, const char *path, char *err, size_t errlen)
{
    char tmp[BP__PATH_LEN];
    if (bp__temp_name(path, tmp, sizeof(tmp)) < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: path too long", path);
    unlink(tmp); /* left by a killed process that had our pid */
    if (link(target, tmp) != 0)
        return 1;
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return bp__fail(err, errlen, BP_EIO, "%s: cannot rename (%s)", path, strerror(e));
    }
    if (fsync_dir(path) < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot fsync its directory (%s)", path,
                        strerror(errno));
    return 0;
}

int bp__append(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot append (%s)", path, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st), st_ok = rc == 0;
    if (rc == 0) {
        ssize_t n;
        do
            n = write(fd, data, len);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)len) {
            rc = -1;
            if (n >= 0)
                errno = ENOSPC; /* a short write to a regular file: the disk is full */
        }
    }
    int saved = errno;
    if (rc < 0 && st_ok)
        (void)!ftruncate(fd, st.st_size); /* no partial row stays behind */
    close(fd);
    if (rc < 0)
        return bp__fail(err, errlen, BP_EIO, "%s: cannot append (%s)", path, strerror(saved));
    return 0;
}

static void read_owner(int fd, char *buf, size_t len)
{
    ssize_t n = pread(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
}

int bp__lock_take(bp__lock *lk, const char *lockpath, char *err, size_t errlen)
{
    lk->fd = -1;
    if (snprintf(lk->path, sizeof(lk->path), "%s", lockpath) >= (int)sizeof(lk->path))
        return bp__fail(err, errlen, BP_EINVAL, "%s: path too long", lockpath);
    /* A lock file is removed by its owner on release, so the file opened may be one that
     * has just been unlinked: locking it would prove nothing. Lock, then check that the
     * name still leads to the locked file; otherwise try again with the new one. */
    for (int tries = 0; tries < 100; tries++) {
        int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return bp__fail(err, errlen, BP_EIO, "%s: cannot create the lock file (%s)", lockpath,
                            strerror(errno));
        /* Open-file-description locks: unlike classic POSIX record locks they also exclude
         * a second trainer in the same process, and closing another descriptor of the file
         * does not drop them. Kernels before 3.15 lack them: classic locks there. */
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        int locked = fcntl(fd, F_OFD_SETLK, &fl);
        if (locked != 0 && errno == EINVAL)
            locked = fcntl(fd, F_SETLK, &fl);
        if (locked != 0) {
            int e = errno;
            char owner[256];
            read_owner(fd, owner, sizeof(owner));
            close(fd);
            if (e == EACCES || e == EAGAIN)
                return bp__fail(err, errlen, BP_EINVAL, "held by %s",
                                *owner ? owner : "another process");
            return bp__fail(err, errlen, BP_EIO, "%s: cannot lock (%s)", lockpath, strerror(e));
        }
        struct stat held, named;
        if (fstat(fd, &held) == 0 && stat(lockpath, &named) == 0 && held.st_dev == named.st_dev &&
            held.st_ino == named.st_ino) {
            char host[128] = "";
            gethostname(host, sizeof(host) - 1);
            char line[256];
            int n = snprintf(line, sizeof(line), "pid %ld on %s\n", (long)getpid(), host);
            if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n) {
                /* The lock holds without the note; only the message of a loser is poorer. */
            }
            lk->fd = fd;
            return 0;
        }
        close(fd);
    }
    return bp__fail(err, errlen, BP_EIO, "%s: cannot lock (the file keeps being replaced)",
                    lockpath);
}

void bp__lock_drop(bp__lock *lk)
{
    if (lk->fd < 0)
        return;
    /* While still held, so that a waiting process retries the new name; and only if the
     * name still leads to this lock (someone may have removed the file and another run
     * made a new one). */
    struct stat held, named;
    if (fstat(lk->fd, &held) == 0 && stat(lk->path, &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino)
        unlink(lk->path);
    close(lk->fd);
    lk->fd = -1;
}
