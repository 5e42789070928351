// The nn layer in one include: Module, initialisation and the layers.
#pragma once
#include <kiln/models/nn/activation.h>
#include <kiln/models/nn/containers.h>
#include <kiln/models/nn/conv.h>
#include <kiln/models/nn/dropout.h>
#include <kiln/models/nn/embedding.h>
#include <kiln/models/nn/init.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/module.h>
#include <kiln/models/nn/norm.h>
#include <kiln/models/nn/pool.h>
#include <kiln/models/nn/spectral_norm.h>
