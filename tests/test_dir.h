/* The unit tests' one fixture: a fresh directory under /tmp per test (make_dir, in `dir`),
 * removed with everything in it after (remove_dir). Links in it are removed, never followed.
 * For cmocka_unit_test_setup_teardown; include once per test program. */
#ifndef BACKPROP_TEST_DIR_H
#define BACKPROP_TEST_DIR_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

/* path and, when it is a directory (not a link to one), everything under it. 0 or -1. */
static int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int rc = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        rc |= remove_tree(sub);
    }
    closedir(d);
    return rmdir(path) | rc;
}

static int make_dir(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/bp-test.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    return remove_tree(dir);
}

#endif
