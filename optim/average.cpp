#include <kiln/optim/average.h>

#include <algorithm>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/checks.h>

namespace kiln {

ExponentialAverage::ExponentialAverage(std::vector<Tensor> averages, double decay, bool warmup)
    : averages_(std::move(averages)), decay_(decay), warmup_(warmup) {
  KILN_CHECK(decay >= 0 && decay < 1, "ExponentialAverage: decay must lie in [0, 1), got ", decay);
  for (size_t i = 0; i < averages_.size(); ++i) {
    detail::check_defined("ExponentialAverage", averages_[i], "average");
    KILN_CHECK(is_floating(averages_[i].dtype()), "ExponentialAverage: average ", i, " must be floating, got ",
               describe(averages_[i]));
  }
}

double ExponentialAverage::next_decay() const {
  if (!warmup_) return decay_;
  const double t = static_cast<double>(count_);
  return std::min(decay_, (1 + t) / (10 + t));
}

void ExponentialAverage::update(const std::vector<Tensor>& values) {
  KILN_CHECK(values.size() == averages_.size(), "ExponentialAverage::update: ", values.size(),
             " tensors for ", averages_.size(), " averages");
  for (size_t i = 0; i < values.size(); ++i) {
    detail::check_defined("ExponentialAverage::update", values[i], "value");
    KILN_CHECK(values[i].sizes() == averages_[i].sizes() && values[i].device() == averages_[i].device(),
               "ExponentialAverage::update: tensor ", i, " is ", describe(values[i]), ", its average ",
               describe(averages_[i]));
  }
  const double d = next_decay();
  NoGradGuard no_grad;
  for (size_t i = 0; i < values.size(); ++i) {
    Tensor v = values[i].dtype() == averages_[i].dtype() ? values[i].detach() : values[i].detach().to(averages_[i].dtype());
    averages_[i].mul_(d).add_(v, 1 - d);
  }
  ++count_;
}

std::map<std::string, Tensor> ExponentialAverage::state_dict() const {
  return {{"count", scalar_tensor(static_cast<double>(count_), TensorOptions(DType::F64))}};
}

void ExponentialAverage::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto it = state.find("count");
  KILN_CHECK(it != state.end() && it->second.defined() && it->second.numel() == 1,
             "ExponentialAverage::load_state_dict: no \"count\" entry");
  const double c = it->second.to(kCPU).item<double>();
  KILN_CHECK(c >= 0, "ExponentialAverage::load_state_dict: count must be >= 0, got ", c);
  count_ = static_cast<int64_t>(c);
}

}  // namespace kiln
