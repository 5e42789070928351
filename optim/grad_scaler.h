// Dynamic loss scaling for f16 mixed precision (PyTorch's torch.cuda.amp.GradScaler;
// Micikevicius et al., "Mixed Precision Training", ICLR 2018): f16's smallest normal number
// is 6e-5, so small gradients vanish unless the loss is multiplied by a large factor S
// before backward and the gradients divided by S before the step. S starts high, is halved
// whenever the gradients overflow (that step is skipped), and doubled after growth_interval
// steps in a row without overflow:
//
//   kiln::GradScaler scaler;
//   { kiln::AutocastGuard ac(DType::F16); loss = ...; }
//   scaler.scale(loss).backward();
//   scaler.unscale_(opt);                 // optional: before clipping, which needs true gradients
//   clip_grad_norm_(params, 1.0);
//   scaler.step(opt);                     // skipped when a gradient is inf or NaN
//   scaler.update();
//
// step() reads one flag back from the device (whether any gradient overflowed), as
// PyTorch's does. bf16 has f32's exponent range and needs no scaler; enabled = false makes
// every call a pass-through (scale 1, step always taken), so one loop serves both.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <kiln/core/tensor.h>
#include <kiln/optim/optimizer.h>

namespace kiln {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

class GradScaler {
 public:
  explicit GradScaler(const GradScalerOptions& options = {});
  // loss * scale (the loss itself when disabled).
  Tensor scale(const Tensor& loss) const;
  // Divides every gradient of opt's params by the scale, in place, and records whether any
  // is inf or NaN. Once per step (a second call before update() is an error).
  void unscale_(Optimizer& opt);
  // unscale_ if not done yet, then opt.step() unless a gradient overflowed. Returns whether
  // the step was taken.
  bool step(Optimizer& opt);
  // Adjusts the scale after the step: backoff on overflow, growth after growth_interval
  // clean steps.
  void update();
  double get_scale() const { return scale_; }
  bool enabled() const { return options_.enabled; }
  int64_t skipped_steps() const { return skipped_; }
  // "scale" and "growth_tracker" (0-d f64 / i64), for checkpoints.
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0, skipped_ = 0;
  bool unscaled_ = false, found_inf_ = false;
};

}  // namespace kiln
