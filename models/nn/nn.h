// The nn layer in one include: Module, initialisation and the layers.
#pragma once
#include <kiln/models/nn/activation.h>
#include <kiln/models/nn/containers.h>
#include <kiln/models/nn/init.h>
#include <kiln/models/nn/linear.h>
#include <kiln/models/nn/module.h>
