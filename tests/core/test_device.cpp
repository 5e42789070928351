// Device parsing and printing, and asking for a CUDA tensor where none can be had:
// a kiln::DeviceError, never a crash.
#include "test_util.h"

using namespace kiln;

TEST_CASE("device parsing and printing", "[core][device]") {
  Device c("cpu");
  CHECK(c.is_cpu());
  CHECK_FALSE(c.is_cuda());
  CHECK(c == kCPU);
  CHECK(c.str() == "cpu");

  Device g("cuda");
  CHECK(g.is_cuda());
  CHECK(g.index == 0);
  CHECK(g.str() == "cuda:0");
  CHECK(g == cuda_device(0));

  Device g1("cuda:1");
  CHECK(g1.is_cuda());
  CHECK(g1.index == 1);
  CHECK(g1.str() == "cuda:1");
  CHECK(g1 != g);
  CHECK(Device("cuda:12").index == 12);
  CHECK(Device(std::string("cuda:3")) == cuda_device(3));
  CHECK(Device(g1.str()) == g1);
}

TEST_CASE("bad device strings throw kiln::Error", "[core][device][errors]") {
  for (const char* bad : {"", "gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda1", "cuda:1x", "cuda:0:1", " cpu",
                          "cudaa", "mps", "cuda: 1", "cuda:+1", "cuda:1 "}) {
    INFO("spec '" << bad << "'");
    CHECK_THROWS_AS(Device(bad), Error);
    CHECK_THROWS_WITH(Device(bad), Catch::Contains("device"));
  }
  CHECK_THROWS_WITH(Device("gpu:0"), Catch::Contains("gpu:0"));
}

TEST_CASE("a CUDA tensor where no CUDA device is usable throws DeviceError", "[core][device][errors]") {
  // An index past the visible devices is never usable: built without CUDA, without a
  // GPU or with one.
  CHECK_THROWS_AS(empty({2}, Device("cuda:97")), DeviceError);
  CHECK_THROWS_AS(zeros({2}, Device("cuda:97")), Error);
  if (cuda_is_available()) {
    CHECK(cuda_device_count() > 0);
    SUCCEED("CUDA is usable here; the CUDA test binary covers cuda tensors");
    return;
  }
  CHECK(cuda_device_count() == 0);
  CHECK_THROWS_AS(empty({2, 3}, "cuda"), DeviceError);
  CHECK_THROWS_AS(zeros({2}, TensorOptions(DType::F16, cuda_device(0))), DeviceError);
  CHECK_THROWS_AS(ones({4}).to(Device("cuda")), DeviceError);
  CHECK_THROWS_AS(from_vector<float>({1, 2}, {2}, cuda_device()), DeviceError);
  CHECK_THROWS_AS(rand({3}, Device("cuda:0")), DeviceError);
  CHECK_THROWS_WITH(empty({2}, "cuda"), Catch::Contains("CUDA"));
  Tensor x = ones({3});
  CHECK_THROWS_AS(x.to(Device("cuda")), Error);
  CHECK_THROWS_AS(runtime(Device("cuda")), DeviceError);
  // The CPU keeps working afterwards.
  CHECK(ones({3}).to_vector<float>() == std::vector<float>{1, 1, 1});
}
