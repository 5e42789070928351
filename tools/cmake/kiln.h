// kiln's public API in one include.
#pragma once
#include <kiln/config.h>
#include <kiln/core/autograd.h>
#include <kiln/core/backend.h>
#include <kiln/core/device.h>
#include <kiln/core/dtype.h>
#include <kiln/core/error.h>
#include <kiln/core/generator.h>
#include <kiln/core/log.h>
#include <kiln/core/tensor.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/index.h>
#include <kiln/ops/matmul.h>
#include <kiln/ops/reduce.h>
#include <kiln/ops/softmax.h>
#include <kiln/ops/unary.h>
