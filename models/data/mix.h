// Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) on a training batch,
// and the mixed loss:
//   mixup:  x' = lam x + (1 - lam) x[perm]                 lam ~ Beta(alpha, alpha)
//   cutmix: x' = x with a box pasted from x[perm]: its side ratio sqrt(1 - lam), its centre
//           uniform over the image, clipped to it; lam is then 1 - (the box's area) / (H W)
//   loss:   lam CE(f(x'), y) + (1 - lam) CE(f(x'), y[perm])
// perm is a uniform random permutation of the batch. Every draw comes from the Generator
// the caller passes (kiln_train_cnn seeds one per step from --seed, the step and the rank,
// so a resumed run mixes exactly as the uninterrupted one).
#pragma once
#include <cstdint>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln::data {

struct MixedBatch {
  Tensor x;          // the mixed images (B, C, H, W)
  Tensor y_a, y_b;   // labels of x and of x[perm] (B)
  double lam = 1.0;  // the weight of y_a
};

// A Beta(a, b) draw (Marsaglia & Tsang's gamma sampler, on the host). a, b > 0.
double sample_beta(double a, double b, Generator& gen);

// x (B, C, H, W) on any device, y (B) i64. Throws kiln::Error for alpha <= 0 or bad shapes.
MixedBatch mixup(const Tensor& x, const Tensor& y, double alpha, Generator& gen);
MixedBatch cutmix(const Tensor& x, const Tensor& y, double alpha, Generator& gen);

// lam CE(logits, y_a) + (1 - lam) CE(logits, y_b) (mean over the batch).
Tensor mixed_cross_entropy(const Tensor& logits, const MixedBatch& b);

}  // namespace kiln::data
