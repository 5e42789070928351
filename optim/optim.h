// kiln's optimizer layer in one include: the Optimizer base and its state dict, SGD,
// Adam and AdamW, LARS, LAMB, AdamS, SRSGD, Apollo and gradient noise, ProxGen's ProxAdam,
// the SAM/ASAM and Entropy-SGD wrappers, exponential parameter averages, the fused multi-tensor update
// entry points, gradient clipping by global norm, and learning-rate schedules.
#pragma once
#include <kiln/optim/adam.h>
#include <kiln/optim/average.h>
#include <kiln/optim/clip.h>
#include <kiln/optim/entropy_sgd.h>
#include <kiln/optim/fused.h>
#include <kiln/optim/optimizer.h>
#include <kiln/optim/proximal.h>
#include <kiln/optim/research.h>
#include <kiln/optim/sam.h>
#include <kiln/optim/schedule.h>
#include <kiln/optim/sgd.h>
