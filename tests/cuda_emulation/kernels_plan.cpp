// cuda/plan.cu compiled for the host, for the emulation (ops.cpp).
#include "cuda/plan.cu"
