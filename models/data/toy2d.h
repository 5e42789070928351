// 2-D Gaussian mixtures, the toy data of mode-collapse research: 8 Gaussians on a ring
// (Metz et al., "Unrolled GANs", ICLR 2017: radius 2, std 0.02) and 25 on a 5 x 5 grid
// (Srivastava et al., VEEGAN, 2017: centres at {-4, -2, 0, 2, 4}^2, std 0.05). Equal
// weights. Samples are drawn fresh for every batch from a Generator, so the data set is
// infinite and a run is a pure function of its seed and step.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <kiln/core/generator.h>
#include <kiln/core/tensor.h>

namespace kiln::data {

struct Mixture2d {
  std::string name;
  std::vector<std::array<double, 2>> centers;
  double std = 0.02;
};

Mixture2d ring8();
Mixture2d grid25();
// "ring8" or "grid25"; anything else is a kiln::Error listing them.
Mixture2d mixture2d(const std::string& name);

// n samples (n, 2) f32 on the CPU: a uniformly chosen centre plus N(0, std^2) noise.
Tensor sample_mixture(const Mixture2d& m, int64_t n, Generator& gen);

}  // namespace kiln::data
