// Measures of generative models, as a library (trainers and notebooks call the same
// code). Formulas:
//
// MODE score (Che et al., "Mode Regularized GANs", ICLR 2017), for class probabilities
// p(y|x) of N generated samples from a classifier, p(y) = E_x p(y|x) their average and
// p*(y) the class distribution of the training data:
//   MODE = exp( E_x KL(p(y|x) || p*(y)) - KL(p(y) || p*(y)) )
// Inception score (Salimans et al. 2016): exp( E_x KL(p(y|x) || p(y)) ).
// Both lie in [1, K]; a generator of confident, evenly spread classes scores K.
//
// Fréchet distance (Heusel et al. 2017) between Gaussians fitted to two feature sets:
//   ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)),
// with tr (S_a S_b)^(1/2) = sum_i sqrt(lambda_i(S_a^(1/2) S_b S_a^(1/2))), the symmetric
// eigenproblems solved by LAPACK's dsyev (OpenBLAS). Covariances unbiased (N - 1).
//
// Class coverage: the histogram of the predicted classes of N samples, how many classes
// it hits, and max / min over the classes (inf when a class is missed).
//
// 2-D mixtures (Metz et al. 2017; Srivastava et al. 2017): a sample is high quality when
// it lies within `sigmas` standard deviations of its nearest centre; a mode is covered
// when at least min_share of all samples are high-quality samples of it (0.008: 20 of
// 2,500, VEEGAN's and PacGAN's count).
#pragma once
#include <cstdint>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/data/toy2d.h>

namespace kiln::eval {

// probs (N, K) rows summing to 1; prior (K) summing to 1 (undefined: uniform).
double mode_score(const Tensor& probs, const Tensor& prior = Tensor());
double inception_score(const Tensor& probs);

// features (N, F) and (M, F), N, M >= 2.
double frechet_distance(const Tensor& features_a, const Tensor& features_b);

struct ClassCoverage {
  std::vector<int64_t> histogram;  // samples per class
  int64_t classes_covered = 0;     // classes with at least one sample
  double max_min_ratio = 0;        // max / min of the histogram (inf when a class has none)
};
// predicted: integer class indices (N) in [0, num_classes).
ClassCoverage class_coverage(const Tensor& predicted, int64_t num_classes);

struct ModeCoverage {
  std::vector<int64_t> high_quality_per_mode;
  int64_t modes_covered = 0;
  double high_quality = 0;  // share of the samples that are high quality
};
ModeCoverage mode_coverage(const Tensor& samples, const data::Mixture2d& mixture, double sigmas = 3.0,
                           double min_share = 0.008);

}  // namespace kiln::eval
