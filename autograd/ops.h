// The differentiable ops: everything a model is written with. Each op is one autograd node
// over one forward and one backward kernel (kernels/<family>.h). Include this one header.
#pragma once

#include "autograd/engine.h"
#include "autograd/ops/activation.h"
#include "autograd/ops/attention.h"
#include "autograd/ops/conv1d.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/matmul.h"
#include "autograd/ops/meta_tokens.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/rope.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/shape.h"
#include "autograd/ops/softmax_xent.h"
