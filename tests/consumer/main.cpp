// The consumer test's program: a few ops through the installed headers and library,
// checked against values worked out by hand. Exits non-zero on any mismatch.
#include <cstdio>

#include <kiln/kiln.h>

int main() {
  try {
    kiln::Tensor a = kiln::arange(0, 6, 1, kiln::DType::F32).reshape({2, 3});  // [[0 1 2] [3 4 5]]
    double s = kiln::sum(a * 2.0 + 1.0).item<double>();                          // 2 * 15 + 6
    double m = kiln::sum(kiln::matmul(a, a.t())).item<double>();                 // [[5 14] [14 50]]
    if (s != 36.0 || m != 83.0) {
      std::fprintf(stderr, "kiln_consumer: got sum %g (want 36) and matmul sum %g (want 83)\n", s, m);
      return 1;
    }
    // Process groups are registered explicitly too (a static link has no initialisers to
    // rely on): the built-in names resolve, and a world of one all-reduces in place.
    if (!kiln::dist::has_process_group_backend("gloo") || !kiln::dist::has_process_group_backend("local")) {
      std::fprintf(stderr, "kiln_consumer: the built-in process groups gloo/local are not registered\n");
      return 1;
    }
    auto pg = kiln::dist::new_process_group("local", nullptr, 0, 1);
    kiln::Tensor r = kiln::full({3}, 2.5);
    pg->all_reduce(r)->wait();
    if (kiln::sum(r).item<double>() != 7.5) {
      std::fprintf(stderr, "kiln_consumer: all_reduce over a world of one changed the tensor\n");
      return 1;
    }
    std::printf("kiln_consumer: OK (kiln %s, CUDA compiled in: %s, CUDA devices: %d)\n", KILN_VERSION,
                KILN_CUDA ? "yes" : "no", kiln::cuda_device_count());
    return 0;
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "kiln_consumer: %s\n", e.what());
    return 1;
  }
}
