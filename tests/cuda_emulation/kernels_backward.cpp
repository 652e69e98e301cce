// cuda/backward.cu compiled for the host, for the emulation (ops.cpp).
#include "cuda/backward.cu"
