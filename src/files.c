/* include/backprop/files.h: fileio.c's inputs and outputs for programs, with the one policy
 * fileio.c does not know: a checkpoint (h5util.c tells one) is never an output's victim.
 * Kept here so that fileio.c, which h5util.c publishes through, needs nothing of HDF5. */
#include <sys/stat.h>

#include "backprop/files.h"
#include "fileio.h"
#include "h5util.h"
#include "internal.h"
#include "rundir.h"

int bp_input_open(const char *path, char *err, size_t errlen)
{
    return bp__input_open(path, NULL, err, errlen);
}

int bp_output_check(const char *path, int flags, const char *const *inputs, char *err,
                    size_t errlen)
{
    /* Everything but "it exists" first: a checkpoint or an input is refused even with
     * BP_OUT_REPLACE, and is named as such without it. */
    int rc = bp__output_check(path, BP__OUT_REPLACE, inputs, err, errlen);
    if (rc == 0 && bp__h5_is_checkpoint(path))
        rc = bp__fail(err, errlen, BP_EINVAL,
                      "%s: is a checkpoint; an output never replaces one, write elsewhere", path);
    if (rc == 0 && !(flags & BP_OUT_REPLACE))
        rc = bp__output_check(path, 0, inputs, err, errlen);
    return rc;
}

int bp_publish(const char *path, const void *data, size_t len, int flags, char *err, size_t errlen)
{
    return bp__publish(path, data, len, flags & BP_OUT_REPLACE ? BP__OUT_REPLACE : 0, err, errlen);
}

int bp_temp_name(const char *path, char *buf, size_t len)
{
    return bp__temp_name(path, buf, len);
}

int bp_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && bp__same_file(&sa, &sb);
}

int bp_run_input_check(const bp_config *cfg, const char *path, const char *what, char *err,
                       size_t errlen)
{
    return bp__rundir_check_input(cfg, path, what, err, errlen);
}
