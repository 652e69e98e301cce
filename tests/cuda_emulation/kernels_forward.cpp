// cuda/forward.cu compiled for the host, for the emulation (ops.cpp).
#include "cuda/forward.cu"
