/* Unit tests of the file layer (src/fileio.c) and the memory arithmetic (src/util.c): input
 * checks, publication that never replaces what it must not, appends cut back on failure,
 * the run lock across processes, and what memory cgroups leave, read from fake /proc and
 * /sys trees. The command-line side (full disks, FIFOs, concurrent runs) is in
 * tests/cli/test_robustness.sh. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fileio.h"
#include "internal.h"
#include "test_dir.h"

static const char *at(const char *name)
{
    static char paths[4][256];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *get(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_inputs_must_be_regular_files(void **state)
{
    char err[512];
    off_t size = 0;
    put(at("a.txt"), "hello");
    assert_int_equal(bp__input_check(at("a.txt"), &size, err, sizeof(err)), 0);
    assert_int_equal(size, 5);
    assert_int_equal(mkfifo(at("fifo"), 0644), 0);
    assert_int_equal(bp__input_check(at("fifo"), NULL, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "fifo: is a FIFO, not a file"));
    assert_int_equal(bp__input_check(dir, NULL, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, ": is a directory, not a file"));
    assert_int_equal(bp__input_check(at("none"), NULL, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "none: no such file"));
    int fd = bp__input_open(at("a.txt"), NULL, err, sizeof(err));
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* blocking again for the reader */
    close(fd);
}

static void test_output_check(void **state)
{
    char err[512];
    put(at("in.txt"), "input");
    assert_int_equal(bp__output_check(at("new.h5"), 0, NULL, err, sizeof(err)), 0);
    /* "exists" is a code of its own: which option replaces the file is the program's to say. */
    assert_int_equal(bp__output_check(at("in.txt"), 0, NULL, err, sizeof(err)), BP_EEXIST);
    assert_non_null(strstr(err, "in.txt: exists"));
    assert_null(strstr(err, "--"));
    assert_int_equal(bp__output_check(at("in.txt"), BP__OUT_REPLACE, NULL, err, sizeof(err)), 0);
    /* The same file under another name is still the input. */
    assert_int_equal(link(at("in.txt"), at("alias.txt")), 0);
    const char *inputs[] = {at("in.txt"), NULL};
    assert_int_equal(bp__output_check(at("alias.txt"), BP__OUT_REPLACE, inputs, err, sizeof(err)),
                     BP_EINVAL);
    assert_non_null(strstr(err, "alias.txt: is the input"));
    assert_int_equal(bp__output_check(at("nodir/x.h5"), 0, NULL, err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "cannot write there: directory"));
    assert_non_null(strstr(err, "No such file or directory"));
    assert_int_equal(symlink(at("in.txt"), at("link")), 0);
    assert_int_equal(bp__output_check(at("link"), BP__OUT_REPLACE, NULL, err, sizeof(err)),
                     BP_EINVAL);
    assert_non_null(strstr(err, "link: is a symbolic link"));
    assert_int_equal(bp__output_check(dir, BP__OUT_REPLACE, NULL, err, sizeof(err)), BP_EINVAL);
    assert_int_equal(bp__output_check("", 0, NULL, err, sizeof(err)), BP_EINVAL);
}

static void test_publish_replaces_only_when_asked(void **state)
{
    char err[512];
    assert_int_equal(bp__publish(at("p.txt"), "one", 3, 0, err, sizeof(err)), 0);
    assert_string_equal(get(at("p.txt")), "one");
    /* A file that appeared since the check is not replaced either. */
    assert_int_equal(bp__publish(at("p.txt"), "two", 3, 0, err, sizeof(err)), BP_EEXIST);
    assert_non_null(strstr(err, "p.txt: exists"));
    assert_null(strstr(err, "--"));
    assert_string_equal(get(at("p.txt")), "one");
    assert_int_equal(bp__publish(at("p.txt"), "three", 5, BP__OUT_REPLACE, err, sizeof(err)), 0);
    assert_string_equal(get(at("p.txt")), "three");
    /* No temporary is left, whatever happened. */
    char tmp[BP__PATH_LEN];
    assert_int_equal(bp__temp_name(at("p.txt"), tmp, sizeof(tmp)), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(bp__publish(at("nodir/p.txt"), "x", 1, 0, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "cannot create a temporary file (No such file or directory)"));
}

/* latest.h5's way: a second name for an existing file, replacing the old second name. */
static void test_publish_link(void **state)
{
    char err[512];
    put(at("ckpt-1.h5"), "one");
    put(at("ckpt-2.h5"), "two");
    assert_int_equal(bp__publish_link(at("ckpt-1.h5"), at("latest.h5"), err, sizeof(err)), 0);
    assert_string_equal(get(at("latest.h5")), "one");
    assert_int_equal(bp__publish_link(at("ckpt-2.h5"), at("latest.h5"), err, sizeof(err)), 0);
    assert_string_equal(get(at("latest.h5")), "two");
    struct stat a, b;
    assert_int_equal(stat(at("ckpt-2.h5"), &a), 0);
    assert_int_equal(stat(at("latest.h5"), &b), 0);
    assert_int_equal(a.st_ino, b.st_ino); /* the same file, not a copy */
    assert_string_equal(get(at("ckpt-1.h5")), "one");
    /* A target that cannot be linked: 1, for the caller to write a copy. */
    assert_int_equal(bp__publish_link(at("none.h5"), at("latest.h5"), err, sizeof(err)), 1);
    assert_string_equal(get(at("latest.h5")), "two");
}

static void test_temp_names(void **state)
{
    char tmp[BP__PATH_LEN], want[64];
    assert_int_equal(bp__temp_name("d/ckpt-5.h5", tmp, sizeof(tmp)), 0);
    snprintf(want, sizeof(want), "d/.ckpt-5.h5.tmp.%ld", (long)getpid());
    assert_string_equal(tmp, want);
    assert_true(bp__is_temp_name(".ckpt-5.h5.tmp.123"));
    assert_true(bp__is_temp_name(".metrics.csv.tmp.9"));
    assert_false(bp__is_temp_name("ckpt-5.h5.tmp.123")); /* not hidden: not ours */
    assert_false(bp__is_temp_name(".notes.tmp.txt"));
    assert_false(bp__is_temp_name(".x.tmp."));
    assert_int_equal(bp__temp_name("x", tmp, 4), -1);
}

static void test_append(void **state)
{
    char err[512];
    put(at("m.csv"), "h\n");
    assert_int_equal(bp__append(at("m.csv"), "1,2\n", 4, err, sizeof(err)), 0);
    assert_string_equal(get(at("m.csv")), "h\n1,2\n");
    assert_int_equal(bp__append(at("none.csv"), "x", 1, err, sizeof(err)), BP_EIO);
    assert_non_null(strstr(err, "none.csv: cannot append (No such file or directory)"));
}

/* A lock held by another process refuses; one whose process died does not. */
static void test_lock_between_processes(void **state)
{
    char err[512];
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        bp__lock lk;
        char c = bp__lock_take(&lk, at(".lock"), err, sizeof(err)) == 0 ? 'y' : 'n';
        (void)!write(ready[1], &c, 1);
        (void)!read(done[0], &c, 1); /* hold it until told */
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    bp__lock mine;
    assert_int_equal(bp__lock_take(&mine, at(".lock"), err, sizeof(err)), BP_EINVAL);
    char want[64];
    snprintf(want, sizeof(want), "held by pid %ld on ", (long)child);
    assert_non_null(strstr(err, want));
    /* The child dies without releasing anything: the kernel drops its lock. */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(bp__lock_take(&mine, at(".lock"), err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "pid %ld on ", (long)getpid());
    assert_non_null(strstr(get(at(".lock")), want));
    bp__lock_drop(&mine);
    assert_int_equal(access(at(".lock"), F_OK), -1);
    assert_int_equal(mine.fd, -1);
    bp__lock_drop(&mine); /* twice is harmless */
    close(ready[0]), close(ready[1]), close(done[0]), close(done[1]);
}

/* Two holders in one process exclude each other too (an in-process program may build two
 * trainers), and dropping one leaves the other's lock in force until its own drop. */
static void test_lock_within_a_process(void **state)
{
    char err[512];
    bp__lock first, second;
    assert_int_equal(bp__lock_take(&first, at(".lock"), err, sizeof(err)), 0);
    assert_int_equal(bp__lock_take(&second, at(".lock"), err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "held by pid"));
    bp__lock_drop(&first);
    assert_int_equal(bp__lock_take(&second, at(".lock"), err, sizeof(err)), 0);
    bp__lock_drop(&second);
}

/* A fake machine: /proc/meminfo, /proc/self/cgroup and cgroup files under dir/root. */
static void fake(const char *rel, const char *text)
{
    char path[512], cmd[600];
    snprintf(path, sizeof(path), "%s/root/%s", dir, rel);
    snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
    assert_int_equal(system(cmd), 0);
    put(path, text);
}

static void test_memory_available(void **state)
{
    char root[128];
    snprintf(root, sizeof(root), "%s/root", dir);
    fake("proc/meminfo", "MemTotal: 16000000 kB\nMemFree: 100 kB\nMemAvailable: 8000000 kB\n");
    fake("proc/self/cgroup", "1:cpu:/\n");
    assert_true(bp__memory_available_at(root) == 8000000.0 * 1024);
    /* cgroup v1: the job's limit minus its usage, and a tighter parent counts too. */
    fake("proc/self/cgroup", "5:memory:/slurm/job7\n1:cpu:/\n");
    fake("sys/fs/cgroup/memory/slurm/job7/memory.limit_in_bytes", "3221225472\n");
    fake("sys/fs/cgroup/memory/slurm/job7/memory.usage_in_bytes", "221225472\n");
    assert_true(bp__memory_available_at(root) == 3000000000.0);
    fake("sys/fs/cgroup/memory/slurm/memory.limit_in_bytes", "2000000000\n");
    fake("sys/fs/cgroup/memory/slurm/memory.usage_in_bytes", "500000000\n");
    assert_true(bp__memory_available_at(root) == 1500000000.0);
    /* Inactive page cache in the usage is room: the kernel reclaims it first. */
    fake("sys/fs/cgroup/memory/slurm/memory.stat",
         "cache 400000000\ntotal_inactive_file 300000000\n");
    assert_true(bp__memory_available_at(root) == 1800000000.0);
    /* cgroup v2: "max" is no limit; a path the container does not show falls back to the
     * mount's own files. */
    fake("proc/self/cgroup", "0::/user.slice/job\n");
    fake("sys/fs/cgroup/user.slice/job/memory.max", "max\n");
    fake("sys/fs/cgroup/user.slice/job/memory.current", "12345\n");
    assert_true(bp__memory_available_at(root) == 8000000.0 * 1024);
    fake("sys/fs/cgroup/user.slice/job/memory.max", "1000000\n");
    assert_true(bp__memory_available_at(root) == 1000000.0 - 12345);
    fake("sys/fs/cgroup/user.slice/job/memory.stat", "anon 2345\ninactive_file 10000\n");
    assert_true(bp__memory_available_at(root) == 1000000.0 - 2345);
    fake("proc/self/cgroup", "0::/host/only/path\n");
    fake("sys/fs/cgroup/memory.max", "5000000\n");
    fake("sys/fs/cgroup/memory.current", "1000000\n");
    assert_true(bp__memory_available_at(root) == 4000000.0);
    /* Resource limits are the process's own, apart: the soft limit on data less VmData, on
     * address space less VmSize. */
    assert_true(isinf(bp__rlimit_room_at(root)));
    fake("proc/self/limits",
         "Limit                     Soft Limit           Hard Limit           Units\n"
         "Max data size             3000000              unlimited            bytes\n"
         "Max address space         unlimited            unlimited            bytes\n");
    fake("proc/self/status", "Name:\tbackprop\nVmSize:\t    2000 kB\nVmData:\t    1000 kB\n");
    assert_true(bp__rlimit_room_at(root) == 3000000.0 - 1000 * 1024);
    assert_true(bp__memory_available_at(root) == 4000000.0); /* the node's: as it was */
    fake("proc/self/limits",
         "Max data size             unlimited            unlimited            bytes\n"
         "Max address space         3500000              3500000              bytes\n");
    assert_true(bp__rlimit_room_at(root) == 3500000.0 - 2000 * 1024);
    fake("proc/self/limits",
         "Max data size             1000                 unlimited            bytes\n");
    assert_true(bp__rlimit_room_at(root) == 0); /* already past it */
    fake("proc/self/limits",
         "Max data size             unlimited            unlimited            bytes\n");
    assert_true(isinf(bp__rlimit_room_at(root)));
    /* Nothing readable: no limit known. */
    snprintf(root, sizeof(root), "%s/nothing", dir);
    assert_true(isinf(bp__memory_available_at(root)));
}

static void test_memory_check_names_both_numbers(void **state)
{
    char err[256];
    assert_int_equal(bp__memory_check(1024, "a kilobyte", err, sizeof(err)), 0);
    assert_int_equal(bp__memory_check(4e13, "the table", err, sizeof(err)), BP_EINVAL);
    assert_non_null(strstr(err, "the table need 36.4 TiB of memory, but only "));
    assert_non_null(strstr(err, " is available"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_inputs_must_be_regular_files, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_output_check, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_publish_replaces_only_when_asked, make_dir,
                                        remove_dir),
        cmocka_unit_test_setup_teardown(test_publish_link, make_dir, remove_dir),
        cmocka_unit_test(test_temp_names),
        cmocka_unit_test_setup_teardown(test_append, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_lock_between_processes, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_lock_within_a_process, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_memory_available, make_dir, remove_dir),
        cmocka_unit_test(test_memory_check_names_both_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
