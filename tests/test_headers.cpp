// Every public header, in a C++ program: each must compile as C++, and its functions must
// have C linkage (without extern "C" the calls below would not link against libbackprop).
#include "backprop/backprop.h"
#include "backprop/checkpoint.h"
#include "backprop/comm.h"
#include "backprop/eval.h"
#include "backprop/files.h"
#include "backprop/gradcheck.h"
#include "backprop/runtime.h"
#include "backprop/config.h"
#include "backprop/data.h"
#include "backprop/train.h"

#include <cstdio>
#include <cstring>

int main()
{
    bp_trainer_free(nullptr);
    bp_checkpoint_free(nullptr);
    // The optimizer's state as a list of named items, found by name.
    bp_checkpoint ck = {};
    bp_state_item none = {"v", BP_STATE_PARAMS, 0, nullptr};
    bp_optimizer_state opt = {"sgd", 1, &none};
    (void)opt;
    if (bp_checkpoint_item(&ck, "v") != nullptr)
        return 1;
    bp_dataset ds = {};
    bp_dataset_free(&ds);
    bp_eval_result res = {};
    bp_eval_result_free(&res);
    bp_gradcheck_report rep = {};
    bp_gradcheck_report_free(&rep);
    bp_runtime_info rt;
    bp_runtime_get_info(&rt);
    (void)bp_same_file("/", "/");
    bp_callbacks cb = {nullptr, nullptr, nullptr, nullptr};
    (void)cb;
    const char *text = bp_strerror(BP_EINVAL);
    std::printf("bp_strerror(BP_EINVAL) = %s; %d metrics columns, the first '%s'\n", text,
                BP_METRIC_COLUMNS, bp_metric_columns[0]);
    return std::strcmp(text, "invalid argument") == 0 ? 0 : 1;
}
