// cuda/forward_registers.cu compiled for the host, for the emulation (ops.cpp).
#include "cuda/forward_registers.cu"
