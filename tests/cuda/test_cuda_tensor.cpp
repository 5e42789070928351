// CUDA tensors: copies between host and device (bit-exact round trips, casts,
// broadcasting, non-contiguous sides), factories, views, fill, item(), printing,
// out-of-memory recovery, and mixing devices in one op.
#include "test_util.h"

using namespace kiln;
using test::cuda0;

// The message names both devices (a macro: Catch's combined matchers hold references to
// their parts, so they must live in the assertion's own full-expression).
#define KILN_NAMES_BOTH (Catch::Contains("cpu") && Catch::Contains("cuda:0"))

TEST_CASE("cuda: the device is visible", "[cuda][device]") {
  REQUIRE(cuda_is_available());
  CHECK(cuda_device_count() >= 1);
  Tensor t = empty({3}, cuda0());
  CHECK(t.is_cuda());
  CHECK(t.device() == Device("cuda:0"));
  CHECK(t.device().str() == "cuda:0");
  CHECK(std::string(runtime(cuda0()).name()) == "cuda");
  CHECK_THROWS_AS(empty({2}, cuda_device(cuda_device_count())), DeviceError);
}

TEST_CASE("cuda: cpu <-> cuda copies round-trip bit-exact", "[cuda][copy]") {
  for (DType t : test::all_dtypes()) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1023 * 257}, int64_t{(1 << 20) + 3}}) {
      INFO(dtype_name(t) << " n=" << n);
      Tensor h = test::random_tensor({n}, t, 1000 + n);
      Tensor g = h.to(cuda0());
      CHECK(g.is_cuda());
      CHECK(g.dtype() == t);
      CHECK(g.sizes() == h.sizes());
      Tensor back = g.to(kCPU);
      CHECK_FALSE(back.is_cuda());
      CHECK(test::bit_equal(back, h));
      CHECK(test::bit_equal(g.cpu(), h));
    }
  }
  // Special float values survive: NaN payload, infinities, -0, subnormals.
  Tensor sp = from_vector<float>({NAN, INFINITY, -INFINITY, -0.0f, 1e-40f, 3.4e38f});
  CHECK(test::bit_equal(sp.to(cuda0()).cpu(), sp));
  // cuda -> cuda copy.
  Tensor a = test::random_tensor({33, 65}, DType::F32, 5).to(cuda0());
  Tensor b = a.clone();
  CHECK(b.is_cuda());
  CHECK_FALSE(b.shares_storage(a));
  CHECK(test::bit_equal(b, a));
  Tensor c = empty({33, 65}, cuda0());
  c.copy_(a);
  CHECK(test::bit_equal(c, a));
}

TEST_CASE("cuda: non-contiguous copies and casts across devices", "[cuda][copy]") {
  Tensor h = test::random_tensor({33, 65}, DType::F32, 6);
  Tensor g = h.to(cuda0());
  // A transposed / strided CUDA tensor read back in logical order.
  CHECK(test::bit_equal(g.t().cpu(), h.t().contiguous()));
  CHECK(test::bit_equal(g.slice(1, 1, 65, 3).cpu(), h.slice(1, 1, 65, 3).contiguous()));
  CHECK(test::bit_equal(g.t().contiguous().cpu(), h.t().contiguous()));
  CHECK(g.t().contiguous().is_contiguous());
  // A non-contiguous CPU tensor copied to CUDA.
  CHECK(test::bit_equal(h.t().to(cuda0()).cpu(), h.t().contiguous()));
  CHECK(test::bit_equal(test::strided_copy(h).to(cuda0()).cpu(), h));
  // Into a non-contiguous CUDA destination.
  Tensor dst = zeros({65, 33}, cuda0());
  dst.t().copy_(h);
  CHECK(test::bit_equal(dst.cpu(), h.t().contiguous()));

  // Cross-device copy_ with a cast, both directions, with broadcasting.
  Tensor gh = empty({33, 65}, TensorOptions(DType::F16, cuda0()));
  gh.copy_(h);
  CHECK(test::bit_equal(gh.cpu(), h.to(DType::F16)));
  Tensor hd = empty({33, 65}, DType::F64);
  hd.copy_(gh);
  CHECK(test::bit_equal(hd, h.to(DType::F16).to(DType::F64)));
  Tensor gi = empty({4, 3}, TensorOptions(DType::I32, cuda0()));
  gi.copy_(from_vector<float>({1.7f, -2.7f, 3.2f}));
  CHECK(gi.cpu().to_vector<int32_t>() == std::vector<int32_t>{1, -2, 3, 1, -2, 3, 1, -2, 3, 1, -2, 3});
  Tensor hb = empty({3}, DType::Bool);
  hb.copy_(from_vector<float>({0, 2, -0.0f}, {3}, cuda0()));
  CHECK(hb.to_vector<bool>() == std::vector<bool>{false, true, false});
  // to(device, dtype) in one step.
  Tensor gbf = h.to(cuda0(), DType::BF16);
  CHECK(gbf.dtype() == DType::BF16);
  CHECK(test::bit_equal(gbf.cpu(), h.to(DType::BF16)));
  // Casts between all dtypes on the device agree with the CPU's.
  for (DType from : test::all_dtypes())
    for (DType to : test::all_dtypes()) {
      INFO(dtype_name(from) << " -> " << dtype_name(to));
      Tensor src = test::random_tensor({1027}, from, 7);
      if (is_floating(from) && to == DType::U8) src = abs(src);  // negative float -> u8 is undefined
      CHECK(test::bit_equal(src.to(cuda0()).to(to).cpu(), src.to(to)));
      CHECK(test::bit_equal(test::strided_copy(src.to(cuda0())).to(to).cpu(), src.to(to)));
    }
  // Float -> int truncation and NaN -> bool on the device.
  Tensor f = from_vector<float>({-2.7f, -0.5f, 0.5f, 2.7f, NAN}, {5}, cuda0());
  CHECK(f.narrow(0, 0, 4).to(DType::I64).cpu().to_vector<int64_t>() == std::vector<int64_t>{-2, 0, 0, 2});
  CHECK(f.to(DType::Bool).cpu().to_vector<bool>() == std::vector<bool>{true, true, true, true, true});
  REQUIRE_KILN_ERROR(gi.copy_(zeros({5})), "copy_");
}

TEST_CASE("cuda: factories and fill", "[cuda][factories]") {
  for (DType t : test::all_dtypes()) {
    INFO(dtype_name(t));
    CHECK(test::values(zeros({5, 3}, TensorOptions(t, cuda0()))) == std::vector<double>(15, 0));
    CHECK(test::values(ones({1027}, TensorOptions(t, cuda0()))) == std::vector<double>(1027, 1));
    CHECK(test::values(full({3}, 1, TensorOptions(t, cuda0()))) == std::vector<double>(3, 1));
  }
  CHECK(test::bit_equal(full({7}, 0.1, TensorOptions(DType::F16, cuda0())).cpu(), full({7}, 0.1, DType::F16)));
  CHECK(test::bit_equal(full({7}, 0.1, TensorOptions(DType::BF16, cuda0())).cpu(), full({7}, 0.1, DType::BF16)));
  CHECK(full({2}, int64_t{1} << 62, TensorOptions(DType::I64, cuda0())).cpu().to_vector<int64_t>() ==
        std::vector<int64_t>{int64_t{1} << 62, int64_t{1} << 62});
  CHECK(test::bit_equal(arange(0, 100, 3, TensorOptions(DType::I64, cuda0())).cpu(), arange(0, 100, 3)));
  CHECK(test::bit_equal(linspace(-1, 1, 101, cuda0()).cpu(), linspace(-1, 1, 101)));
  CHECK(test::bit_equal(eye(5, 7, cuda0()).cpu(), eye(5, 7)));
  Tensor fv = from_vector<double>({1, 2, 3, 4}, {2, 2}, cuda0());
  CHECK(fv.is_cuda());
  CHECK(fv.cpu().to_vector<double>() == std::vector<double>{1, 2, 3, 4});
  Tensor g = test::random_tensor({4, 5}, DType::F32, 9).to(cuda0());
  for (Tensor l : {empty_like(g), zeros_like(g), ones_like(g), full_like(g, 2), rand_like(g), randn_like(g)}) {
    CHECK(l.is_cuda());
    CHECK(l.sizes() == Shape{4, 5});
  }
  CHECK(test::values(full_like(g, 2)) == std::vector<double>(20, 2));
  // fill_ on a non-contiguous view writes only the view.
  Tensor z = zeros({4, 6}, cuda0());
  z.slice(1, 1, 6, 2).fill_(3);
  z.select(0, 2).fill_(-1);
  Tensor zc = zeros({4, 6});
  zc.slice(1, 1, 6, 2).fill_(3);
  zc.select(0, 2).fill_(-1);
  CHECK(test::bit_equal(z.cpu(), zc));
  Tensor e = zeros({0, 3}, cuda0());
  e.fill_(1);
  CHECK(e.numel() == 0);
}

TEST_CASE("cuda: views share storage and read the right elements", "[cuda][views]") {
  Tensor h = arange(24, DType::F32).view({2, 3, 4});
  Tensor g = h.to(cuda0());
  CHECK(test::bit_equal(g.permute({2, 0, 1}).cpu(), h.permute({2, 0, 1}).contiguous()));
  CHECK(test::bit_equal(g.slice(2, 1, 4, 2).cpu(), h.slice(2, 1, 4, 2).contiguous()));
  CHECK(test::bit_equal(g.select(1, 2).cpu(), h.select(1, 2).contiguous()));
  CHECK(test::bit_equal(g.narrow(0, 1, 1).expand({3, 3, 4}).cpu(), h.narrow(0, 1, 1).expand({3, 3, 4}).contiguous()));
  CHECK(test::bit_equal(g.transpose(0, 1).reshape({-1}).cpu(), h.transpose(0, 1).reshape({-1})));
  CHECK(g.view({6, 4}).shares_storage(g));
  Tensor v = g.select(0, 1);
  v.fill_(0);
  CHECK(g.cpu().to_vector<float>()[12] == 0);
  CHECK(g.cpu().to_vector<float>()[11] == 11);
}

TEST_CASE("cuda: item, to_vector and printing", "[cuda][print]") {
  CHECK(scalar_tensor(2.5, cuda0()).item<float>() == 2.5f);
  CHECK(full({1, 1}, 7, TensorOptions(DType::I64, cuda0())).item<int64_t>() == 7);
  CHECK(full({1}, -1.5, TensorOptions(DType::BF16, cuda0())).item<double>() == -1.5);
  CHECK(full({1}, true, TensorOptions(DType::Bool, cuda0())).item<bool>());
  Tensor g = arange(10, TensorOptions(DType::F32, cuda0()));
  CHECK(g[7].item<float>() == 7);
  CHECK(sum(g).item<float>() == 45);
  REQUIRE_KILN_ERROR(g.item(), "item");
  CHECK(g.to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(g.slice(0, 1, 10, 4).to_vector<int32_t>() == std::vector<int32_t>{1, 5, 9});

  std::string s = from_vector<float>({1.5f, -2.25f}, {2}, cuda0()).str();
  CHECK_THAT(s, Catch::Contains("cuda:0"));
  CHECK_THAT(s, Catch::Contains("f32"));
  CHECK_THAT(s, Catch::Contains("[2]"));
  CHECK_THAT(s, Catch::Contains("1.5"));
  CHECK_THAT(s, Catch::Contains("-2.25"));
  std::string big = arange(1 << 20, TensorOptions(DType::I64, cuda0())).view({1024, 1024}).str();
  CHECK_THAT(big, Catch::Contains("..."));
  CHECK_THAT(big, Catch::Contains("1048575"));
  CHECK_THAT(big, Catch::Contains("cuda:0"));
  CHECK(big.size() < 2000);
  CHECK_THAT(scalar_tensor(3.0, cuda0()).str(), Catch::Contains("3"));
}

TEST_CASE("cuda: out of memory throws OutOfMemory and the device keeps working", "[cuda][memory]") {
  const int64_t absurd = int64_t{1} << 50;  // 1 PiB
  REQUIRE_THROWS_AS(empty({absurd}, TensorOptions(DType::U8, cuda0())), OutOfMemory);
  REQUIRE_THROWS_AS(empty({absurd}, TensorOptions(DType::U8, cuda0())), Error);
  REQUIRE_THROWS_AS(zeros({absurd / 4}, cuda0()), OutOfMemory);
  Tensor small = ones({1000}, cuda0());
  CHECK(sum(small).item<float>() == 1000);
  Tensor again = test::random_tensor({1 << 16}, DType::F32, 3).to(cuda0());
  CHECK(test::bit_equal(again.cpu(), test::random_tensor({1 << 16}, DType::F32, 3)));
  // Freed memory is reused: many allocations of the same size do not grow without bound.
  MemoryStats before = runtime(cuda0()).allocator().stats(cuda0());
  for (int i = 0; i < 100; ++i) {
    Tensor t = empty({1 << 20}, cuda0());
    (void)t;
  }
  MemoryStats after = runtime(cuda0()).allocator().stats(cuda0());
  CHECK(after.allocated == before.allocated);
}

TEST_CASE("cuda: mixing a cpu and a cuda tensor throws kiln::Error naming both devices", "[cuda][errors]") {
  Tensor h = ones({3}), g = ones({3}, cuda0());
  REQUIRE_THROWS_AS(add(h, g), Error);
  REQUIRE_THROWS_WITH(add(h, g), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(mul(g, h), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(lt(g, h), KILN_NAMES_BOTH);
  Tensor gi = g.clone();
  REQUIRE_THROWS_WITH(add_(gi, h), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(where(gt(g, 0), g, h), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(where(gt(h, 0), g, g), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(matmul(ones({2, 3}), ones({3, 2}, cuda0())), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(bmm(ones({1, 2, 3}, cuda0()), ones({1, 3, 2})), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(cat({h, g}), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(stack({g, h}), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(index_select(g, 0, from_vector<int64_t>({0})), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(gather(g, 0, from_vector<int64_t>({0})), KILN_NAMES_BOTH);
  Tensor tgt = zeros({3}, cuda0());
  REQUIRE_THROWS_WITH(scatter_add_(tgt, 0, from_vector<int64_t>({0}, {1}, cuda0()), ones({1})), KILN_NAMES_BOTH);
  REQUIRE_THROWS_WITH(scatter_add(g, 0, from_vector<int64_t>({0}), ones({1}, cuda0())), KILN_NAMES_BOTH);
  // The op's name is in the message too.
  REQUIRE_THROWS_WITH(add(h, g), Catch::Contains("add"));
  REQUIRE_THROWS_WITH(matmul(ones({2, 3}), ones({3, 2}, cuda0())), Catch::Contains("matmul"));
  // Nothing was broken.
  CHECK(sum(g).item<float>() == 3);
}
