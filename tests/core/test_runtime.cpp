// The device runtime and the kernel slots (core/runtime.h, core/kernel.h): slots are
// filled by the explicit loaders, can be replaced, and name the op when empty; the host-
// synchronisation counter's bookkeeping (checked with a stand-in device that runs on host
// memory, so it runs without a GPU); shape overflow; accumulate_dtype.
#include <kiln/ops/cpu/onednn.h>

#include "test_util.h"

#include <cstring>

#include <kiln/core/kernel_list.h>
#include <kiln/ops/op_list.h>
#include <kiln/optim/op_list.h>

using namespace kiln;
using kiln::test::values;

TEST_CASE("kernel slots are filled by the lists' loaders", "[core][kernel]") {
  CHECK(kernel<op::fill>(kCPU) == &cpu::fill);
  CHECK(kernel<op::copy>(kCPU) == &cpu::copy);
  CHECK(kernel<op::reduce>(kCPU) == &cpu::reduce);
  CHECK(kernel<op::unary>(kCPU) == &cpu::unary);
  CHECK(kernel<op::softmax>(kCPU) == &cpu::softmax);
  // oneDNN's convolutions take the conv slots over kiln's loops unless KILN_ONEDNN=0.
  CHECK(kernel<op::conv2d_forward>(kCPU) == (onednn::enabled() ? &onednn::conv2d_forward : &cpu::conv2d_forward));
  CHECK(kernel<op::adam_update>(kCPU) == &cpu::adam_update);
  CHECK(std::string(op::unary::kName) == "unary");
}

namespace {
int g_fake_unary_calls = 0;
void fake_unary(const TensorView& x, const TensorView& y, const UnaryParams& p) {
  ++g_fake_unary_calls;
  cpu::unary(x, y, p);
}
}  // namespace

TEST_CASE("a kernel slot can be replaced (plug-in kernels, instrumentation)", "[core][kernel]") {
  auto* original = kernel<op::unary>(kCPU);
  set_kernel<op::unary>(DeviceType::CPU, &fake_unary);
  g_fake_unary_calls = 0;
  Tensor y = exp(ones({4}));
  set_kernel<op::unary>(DeviceType::CPU, original);
  CHECK(g_fake_unary_calls == 1);
  CHECK(y.to_vector<float>()[0] == Approx(2.718281828));
  exp(ones({4}));
  CHECK(g_fake_unary_calls == 1);  // restored
}

TEST_CASE("an empty slot or an unusable device names the op and the reason", "[core][kernel][errors]") {
  auto* original = kernel<op::softmax>(kCPU);
  set_kernel<op::softmax>(DeviceType::CPU, nullptr);
  CHECK_KILN_ERROR(softmax(ones({2, 3}), 1), "softmax: no kernel for cpu");
  set_kernel<op::softmax>(DeviceType::CPU, original);
  if (!cuda_is_available()) CHECK_THROWS_AS(kernel<op::unary>(cuda_device(0)), DeviceError);
}

namespace {
// A stand-in CUDA device whose memory is host memory and whose kernels are the CPU ones:
// enough to check core's bookkeeping of host synchronisations without a GPU.
class HostBackedRuntime final : public DeviceRuntime {
 public:
  const char* name() const override { return "fake-cuda"; }
  int device_count() override { return 1; }
  Allocator& allocator() override { return runtime(kCPU).allocator(); }
  void copy_bytes(void* dst, Device, const void* src, Device, size_t n) override { std::memcpy(dst, src, n); }
  void synchronize(Device) override { ++syncs; }
  int syncs = 0;
};

struct FakeCudaScope {
  DeviceRuntime* prev_runtime = nullptr;
  op::fill::Fn* prev_fill = nullptr;
  op::copy::Fn* prev_copy = nullptr;
  op::unary::Fn* prev_unary = nullptr;
  HostBackedRuntime fake;
  FakeCudaScope() {
    if (has_runtime(DeviceType::CUDA)) prev_runtime = &runtime(DeviceType::CUDA);
    prev_fill = detail::kernel_slot<op::fill>[1];
    prev_copy = detail::kernel_slot<op::copy>[1];
    prev_unary = detail::kernel_slot<op::unary>[1];
    register_runtime(DeviceType::CUDA, &fake);
    set_kernel<op::fill>(DeviceType::CUDA, &cpu::fill);
    set_kernel<op::copy>(DeviceType::CUDA, &cpu::copy);
    set_kernel<op::unary>(DeviceType::CUDA, &cpu::unary);
  }
  ~FakeCudaScope() {
    register_runtime(DeviceType::CUDA, prev_runtime);
    set_kernel<op::fill>(DeviceType::CUDA, prev_fill);
    set_kernel<op::copy>(DeviceType::CUDA, prev_copy);
    set_kernel<op::unary>(DeviceType::CUDA, prev_unary);
  }
};
}  // namespace

TEST_CASE("host synchronisations are counted where the host waits for a device", "[core][runtime]") {
  if (cuda_is_available()) {
    WARN("a real GPU is present: its synchronisations are counted by the CUDA tests");
    return;
  }
  FakeCudaScope scope;
  const Device dev = cuda_device(0);
  const int64_t s0 = host_sync_count();

  Tensor x = from_vector<float>({1, 2, 3}).to(dev);  // host -> device: no wait
  Tensor y = exp(x);                                   // a kernel: no wait
  y.fill_(2.0f);
  Tensor z = y.to(dev);                                // same device: no copy at all
  CHECK(host_sync_count() == s0);

  CHECK(y.cpu().to_vector<float>() == std::vector<float>{2, 2, 2});  // device -> host: one
  CHECK(host_sync_count() == s0 + 1);
  CHECK(x[1].item<float>() == 2.0f);  // item() reads back: one more
  CHECK(host_sync_count() == s0 + 2);
  synchronize(dev);
  CHECK(host_sync_count() == s0 + 3);
  CHECK(scope.fake.syncs == 1);
  synchronize(kCPU);  // the CPU never waits
  (void)sum(ones({2})).item<float>();
  CHECK(host_sync_count() == s0 + 3);
}

TEST_CASE("shape products and byte sizes that overflow int64 are refused", "[core][errors]") {
  const int64_t big = int64_t{1} << 40;
  CHECK_KILN_ERROR(shape_numel({big, big}), "more elements than an int64");
  CHECK(shape_numel({big, big, 0}) == 0);
  CHECK_KILN_ERROR(empty({big, big}), "more elements than an int64");
  CHECK_KILN_ERROR(empty({int64_t{1} << 61, 2}, DType::F64), "more bytes than an int64");
}

TEST_CASE("accumulate_dtype: f64 stays f64, everything else computes in f32", "[core][dtype]") {
  CHECK(accumulate_dtype(DType::F64) == DType::F64);
  CHECK(accumulate_dtype(DType::F32) == DType::F32);
  CHECK(accumulate_dtype(DType::F16) == DType::F32);
  CHECK(accumulate_dtype(DType::BF16) == DType::F32);
}

TEST_CASE("in-place writes into elements that share memory are refused", "[core][errors]") {
  Tensor base = zeros({3, 1});
  Tensor e = base.expand({3, 4});
  CHECK_KILN_ERROR(e.fill_(1), "share");
  CHECK_KILN_ERROR(e.copy_(ones({3, 4})), "share");
  CHECK_KILN_ERROR(e += 1.0, "share");
  CHECK_KILN_ERROR(e.mul_(2.0), "share");
  Tensor s = zeros({4}).as_strided({2, 2}, {0, 1}, 0);
  CHECK_KILN_ERROR(s.add_(ones({2, 2})), "share");
  CHECK(values(base) == std::vector<double>{0, 0, 0});  // nothing was written
  // Writing through a normal view is fine.
  Tensor b = zeros({2, 3});
  b.t().add_(1.0);
  CHECK(values(b) == std::vector<double>(6, 1.0));
}

TEST_CASE("Tensor in-place arithmetic members", "[core][ops]") {
  Tensor x = from_vector<float>({1, 2, 3});
  x.mul_(2).add_(1);  // chains, like libtorch
  CHECK(values(x) == std::vector<double>{3, 5, 7});
  x.sub_(from_vector<float>({1, 1, 1})).div_(2);
  CHECK(values(x) == std::vector<double>{1, 2, 3});
  x.add_(from_vector<float>({1, 1, 1}), 2.0);  // x += alpha * other
  CHECK(values(x) == std::vector<double>{3, 4, 5});
}
