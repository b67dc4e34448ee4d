/* test_taskflow_central.c - the run tests of test_taskflow.c again, every run with
 * TF_DISPATCH_CENTRAL: ready tasks go out by pool_apply_async and completion callbacks
 * release the successors, as on a process pool. */
#define TF_TEST_CENTRAL 1
#include "test_taskflow.c"
