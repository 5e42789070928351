// Normalisation layers over ops/norm.h: BatchNorm2d, LayerNorm, GroupNorm, with
// PyTorch's parameters, buffers, defaults (weight 1, bias 0) and printout.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <kiln/core/tensor.h>
#include <kiln/models/nn/module.h>

namespace kiln::nn {

// Parameters weight, bias (num_features) when affine; buffers running_mean (0),
// running_var (1) and num_batches_tracked (i64 0) when track_running_stats. Training
// normalises with the batch statistics and updates the running ones with `momentum`
// (nullopt: a cumulative average, 1 / num_batches_tracked); eval uses the running ones
// (the batch ones without track_running_stats). Input (N, C, H, W).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, std::optional<double> momentum = 0.1,
                       bool affine = true, bool track_running_stats = true, TensorOptions options = {});
  void reset_running_stats();
  void reset_parameters();  // running stats, weight 1, bias 0
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  int64_t num_features;  // channel pruning (models/prune) shrinks the tensors and updates it
  const double eps;
  const std::optional<double> momentum;
  const bool affine, track_running_stats;
  Tensor weight, bias;                                   // undefined unless affine
  Tensor running_mean, running_var, num_batches_tracked;  // undefined unless track_running_stats
};

// Normalises over the trailing normalized_shape dims; weight (1) and bias (0) of that
// shape when elementwise_affine (bias only with `bias`).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true, bool bias = true,
                     TensorOptions options = {});
  void reset_parameters();
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const Shape normalized_shape;
  const double eps;
  const bool elementwise_affine;
  Tensor weight, bias;
};

// num_channels must be divisible by num_groups; weight (1) and bias (0) of shape
// (num_channels) when affine. Input (N, C, *).
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true,
            TensorOptions options = {});
  void reset_parameters();
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  const int64_t num_groups, num_channels;
  const double eps;
  const bool affine;
  Tensor weight, bias;
};

}  // namespace kiln::nn
