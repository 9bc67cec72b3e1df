// Every public header, in a C++ program: each must compile as C++, and its functions must
// have C linkage (without extern "C" the calls below would not link against libbackprop).
#include "backprop/backprop.h"
#include "backprop/checkpoint.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "backprop/train.h"

#include <cstdio>
#include <cstring>

int main()
{
    bp_trainer_free(nullptr);
    bp_checkpoint_free(nullptr);
    bp_dataset ds = {};
    bp_dataset_free(&ds);
    bp_callbacks cb = {nullptr, nullptr, nullptr};
    (void)cb;
    const char *text = bp_strerror(BP_EINVAL);
    std::printf("bp_strerror(BP_EINVAL) = %s; %d metrics columns, the first '%s'\n", text,
                BP_METRIC_COLUMNS, bp_metric_columns[0]);
    return std::strcmp(text, "invalid argument") == 0 ? 0 : 1;
}
