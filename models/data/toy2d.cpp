#include <kiln/models/data/toy2d.h>

#include <cmath>
#include <numbers>

#include <kiln/core/error.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/index.h>

namespace kiln::data {

Mixture2d ring8() {
  Mixture2d m{"ring8", {}, 0.02};
  for (int k = 0; k < 8; ++k) {
    const double a = 2 * std::numbers::pi * k / 8;
    m.centers.push_back({2 * std::cos(a), 2 * std::sin(a)});
  }
  return m;
}

Mixture2d grid25() {
  Mixture2d m{"grid25", {}, 0.05};
  for (int i = -2; i <= 2; ++i)
    for (int j = -2; j <= 2; ++j) m.centers.push_back({2.0 * i, 2.0 * j});
  return m;
}

Mixture2d mixture2d(const std::string& name) {
  if (name == "ring8") return ring8();
  if (name == "grid25") return grid25();
  throw Error(kiln::detail::str("unknown 2-D data set '", name, "' (expected ring8 or grid25)"));
}

Tensor sample_mixture(const Mixture2d& m, int64_t n, Generator& gen) {
  KILN_CHECK(n >= 0, "sample_mixture: n must be >= 0, got ", n);
  KILN_CHECK(!m.centers.empty(), "sample_mixture: the mixture '", m.name, "' has no centres");
  std::vector<float> c;
  for (auto& p : m.centers) c.insert(c.end(), {static_cast<float>(p[0]), static_cast<float>(p[1])});
  Tensor centers = from_vector<float>(c).reshape({static_cast<int64_t>(m.centers.size()), 2});
  Tensor k = randint(0, static_cast<int64_t>(m.centers.size()), {n}, DType::I64, &gen);
  Tensor noise = randn({n, 2}, DType::F32, &gen);
  return add(index_select(centers, 0, k), mul(noise, m.std));
}

}  // namespace kiln::data
