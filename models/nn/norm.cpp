// BatchNorm2d, LayerNorm, GroupNorm.
#include <kiln/models/nn/norm.h>

#include <kiln/core/autograd.h>
#include <kiln/models/nn/init.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/norm.h>

namespace kiln::nn {

namespace {
const char* bool_str(bool b) { return b ? "true" : "false"; }
}  // namespace

BatchNorm2d::BatchNorm2d(int64_t n, double eps_, std::optional<double> momentum_, bool affine_, bool track,
                         TensorOptions options)
    : Module("BatchNorm2d"), num_features(n), eps(eps_), momentum(momentum_), affine(affine_),
      track_running_stats(track) {
  KILN_CHECK(n > 0, "BatchNorm2d: num_features must be positive, got ", n);
  KILN_CHECK(is_floating(options.dtype), "BatchNorm2d: parameters need a floating dtype, got ",
             dtype_name(options.dtype));
  if (affine) {
    weight = register_parameter("weight", empty({n}, options));
    bias = register_parameter("bias", empty({n}, options));
  }
  if (track_running_stats) {
    running_mean = register_buffer("running_mean", zeros({n}, options));
    running_var = register_buffer("running_var", ones({n}, options));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, TensorOptions(DType::I64, options.device)));
  }
  reset_parameters();
}

void BatchNorm2d::reset_running_stats() {
  if (!track_running_stats) return;
  init::zeros_(running_mean);
  init::ones_(running_var);
  init::zeros_(num_batches_tracked);
}

void BatchNorm2d::reset_parameters() {
  reset_running_stats();
  if (affine) {
    init::ones_(weight);
    init::zeros_(bias);
  }
}

Tensor BatchNorm2d::forward(const Tensor& input) {
  kiln::detail::check_defined("BatchNorm2d", input);
  KILN_CHECK(input.dim() == 4, "BatchNorm2d: expects a 4-D input (N, C, H, W), got ", describe(input));
  double factor = momentum.value_or(0.0);
  if (is_training() && track_running_stats) {
    NoGradGuard no_grad;
    add_(num_batches_tracked, 1);
    if (!momentum) factor = 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());  // reads back
  }
  // Batch statistics in training, and in eval when there are no running ones; the running
  // ones (undefined without track_running_stats) are updated in training, used in eval.
  bool use_batch_stats = is_training() || !track_running_stats;
  return batch_norm(input, running_mean, running_var, weight, bias, use_batch_stats, factor, eps);
}

std::string BatchNorm2d::extra_repr() const {
  return kiln::detail::str(num_features, ", eps=", detail::repr_double(eps),
                           ", momentum=", momentum ? detail::repr_double(*momentum) : std::string("none"),
                           ", affine=", bool_str(affine), ", track_running_stats=", bool_str(track_running_stats));
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool affine, bool with_bias, TensorOptions options)
    : Module("LayerNorm"), normalized_shape(std::move(shape)), eps(eps_), elementwise_affine(affine) {
  KILN_CHECK(!normalized_shape.empty(), "LayerNorm: normalized_shape must name at least one dim");
  for (int64_t s : normalized_shape)
    KILN_CHECK(s > 0, "LayerNorm: normalized_shape must be positive, got ", shape_str(normalized_shape));
  KILN_CHECK(is_floating(options.dtype), "LayerNorm: parameters need a floating dtype, got ",
             dtype_name(options.dtype));
  if (elementwise_affine) {
    weight = register_parameter("weight", empty(normalized_shape, options));
    if (with_bias) bias = register_parameter("bias", empty(normalized_shape, options));
  }
  reset_parameters();
}

void LayerNorm::reset_parameters() {
  if (weight.defined()) init::ones_(weight);
  if (bias.defined()) init::zeros_(bias);
}

Tensor LayerNorm::forward(const Tensor& input) { return layer_norm(input, normalized_shape, weight, bias, eps); }

std::string LayerNorm::extra_repr() const {
  // Python's tuple repr: "(64,)" for one dim.
  std::string shape = "(";
  for (size_t i = 0; i < normalized_shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(normalized_shape[i]);
  shape += normalized_shape.size() == 1 ? ",)" : ")";
  return kiln::detail::str(shape, ", eps=", detail::repr_double(eps),
                           ", elementwise_affine=", bool_str(elementwise_affine));
}

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps_, bool affine_, TensorOptions options)
    : Module("GroupNorm"), num_groups(groups), num_channels(channels), eps(eps_), affine(affine_) {
  KILN_CHECK(groups > 0 && channels > 0, "GroupNorm: num_groups and num_channels must be positive, got ", groups,
             " and ", channels);
  KILN_CHECK(channels % groups == 0, "GroupNorm: num_channels (", channels, ") must be divisible by num_groups (",
             groups, ")");
  KILN_CHECK(is_floating(options.dtype), "GroupNorm: parameters need a floating dtype, got ",
             dtype_name(options.dtype));
  if (affine) {
    weight = register_parameter("weight", empty({channels}, options));
    bias = register_parameter("bias", empty({channels}, options));
  }
  reset_parameters();
}

void GroupNorm::reset_parameters() {
  if (!affine) return;
  init::ones_(weight);
  init::zeros_(bias);
}

Tensor GroupNorm::forward(const Tensor& input) { return group_norm(input, num_groups, weight, bias, eps); }

std::string GroupNorm::extra_repr() const {
  return kiln::detail::str(num_groups, ", ", num_channels, ", eps=", detail::repr_double(eps),
                           ", affine=", bool_str(affine));
}

}  // namespace kiln::nn
