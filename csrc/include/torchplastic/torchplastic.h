// Umbrella header of the torchplastic C++ API.
#pragma once

#include "torchplastic/options.h"
#include "torchplastic/ops.h"
#include "torchplastic/nn.h"
#include "torchplastic/version.h"
