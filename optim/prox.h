// Proximal maps of the L_p penalties ProxGen uses (Yun, Lozano & Yang, "Adaptive proximal
// gradient methods for structured neural networks", NeurIPS 2021), one element at a time:
//
//   prox(z, eta) = argmin_x  1/2 (x - z)^2 + eta * |x|^p          (eta >= 0)
//
//   p = 1    soft thresholding: sign(z) * max(|z| - eta, 0)
//   p = 0    (|x|^0 = [x != 0]) hard thresholding: z when |z| > sqrt(2 eta), else 0
//   p = 1/2  the half-thresholding formula of Xu et al. 2012 (IEEE TNNLS 23(7)), written
//            for argmin (x - z)^2 + lam |x|^(1/2), so lam = 2 eta:
//            0 when |z| <= 54^(1/3)/4 * lam^(2/3), else
//            2/3 z (1 + cos(2 pi/3 - 2/3 phi)),  phi = arccos(lam/8 * (|z|/3)^(-3/2))
//   p = 2/3  the closed form of Cao, Sun & Xu 2013 (J. Vis. Commun. Image R. 24(1)), for
//            argmin (x - z)^2 + lam |x|^(2/3), lam = 2 eta:
//            0 when |z| <= 2/3 (3 lam^3)^(1/4), else
//            sign(z) ((A + sqrt(2|z|/A - A^2)) / 2)^3,
//            A = 2/sqrt(3) lam^(1/4) sqrt(cosh(phi/3)),  phi = arccosh(27/16 z^2 lam^(-3/2))
//   At the thresholds both 0 and the non-zero root are minimisers; these maps return 0.
// tests/optim/test_proximal.cpp checks each against a brute-force minimisation.
//
// Host and device code (the CUDA optimizer kernel includes this header); F is float or
// double.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define KILN_PROX_HD __host__ __device__ __forceinline__
#else
#define KILN_PROX_HD inline
#endif

namespace kiln {

// The penalties: |x|^p for p = 0, 1/2, 2/3, 1.
enum class LpPenalty : int { L0 = 0, LHalf = 1, LTwoThirds = 2, L1 = 3 };

namespace detail {

template <class F>
KILN_PROX_HD F prox_lp(F z, F eta, LpPenalty penalty) {
  using std::abs, std::acos, std::acosh, std::cos, std::cosh, std::sqrt, std::cbrt;
  if (!(eta > F(0))) return z;  // no penalty (and NaN eta leaves z)
  const F a = abs(z);
  const F sign = z < F(0) ? F(-1) : F(1);
  switch (penalty) {
    case LpPenalty::L1:
      return a > eta ? sign * (a - eta) : F(0);
    case LpPenalty::L0:
      return a > sqrt(F(2) * eta) ? z : F(0);
    case LpPenalty::LHalf: {
      const F lam = F(2) * eta;
      const F threshold = cbrt(F(54)) / F(4) * cbrt(lam * lam);
      if (!(a > threshold)) return F(0);
      const F r = a / F(3);
      F c = lam / F(8) / (r * sqrt(r));
      c = c > F(1) ? F(1) : c;  // rounding just above the threshold
      const F phi = acos(c);
      return F(2) / F(3) * z * (F(1) + cos(F(2.0943951023931954923) - F(2) / F(3) * phi));
    }
    case LpPenalty::LTwoThirds: {
      const F lam = F(2) * eta;
      const F lam_quarter = sqrt(sqrt(lam));
      const F threshold = F(2) / F(3) * sqrt(sqrt(F(3) * lam * lam * lam));
      if (!(a > threshold)) return F(0);
      F c = F(27) / F(16) * z * z / (lam * sqrt(lam));
      c = c < F(1) ? F(1) : c;
      const F phi = acosh(c);
      const F A = F(2) / sqrt(F(3)) * lam_quarter * sqrt(cosh(phi / F(3)));
      F inner = F(2) * a / A - A * A;
      inner = inner < F(0) ? F(0) : inner;
      const F h = (A + sqrt(inner)) / F(2);
      return sign * h * h * h;
    }
  }
  return z;
}

}  // namespace detail
}  // namespace kiln
