// An exponential moving average of parameters ("weight averaging"): after every update
//   avg = d * avg + (1 - d) * param,   d = min(decay, (1 + t) / (10 + t)) with warm-up,
// where t counts the updates before this one (without warm-up d = decay throughout).
// Yazici et al. (ICLR 2019, "The Unusual Effectiveness of Averaging in GAN Training")
// sample GANs from such an average of G; the same average serves any model (Polyak
// averaging). kiln_train_gan's --g-ema keeps one of G.
//
// The averages are tensors the caller owns — typically the parameters of a copy of the
// model, so that the copy *is* the averaged model — and the update runs under NoGradGuard,
// in place, in the averages' dtype (f32 or f64 for f32 params).
//
// State dict: "count" (0-d f64, updates so far); the averages themselves belong to the
// caller's model (save that model's state dict beside it).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>

namespace kiln {

class ExponentialAverage {
 public:
  // averages[i] is the average of the i-th tensor given to update(); it starts as it is
  // (copy the params into it first). decay in [0, 1). Throws kiln::Error for an undefined
  // or non-floating average or a decay outside [0, 1).
  ExponentialAverage(std::vector<Tensor> averages, double decay, bool warmup = false);

  // Folds `values` (the same count, shapes and device as the averages) into the averages.
  void update(const std::vector<Tensor>& values);
  // The weight d the next update gives the old average.
  double next_decay() const;
  double decay() const { return decay_; }
  int64_t count() const { return count_; }
  const std::vector<Tensor>& averages() const { return averages_; }

  std::map<std::string, Tensor> state_dict() const;
  // Throws kiln::Error when "count" is missing or negative.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  std::vector<Tensor> averages_;
  double decay_;
  bool warmup_;
  int64_t count_ = 0;
};

}  // namespace kiln
