// Views share storage and read the right elements: view/reshape, permute/transpose/t,
// slice/narrow/select, expand, squeeze/unsqueeze, flatten; contiguous() and clone();
// writes through a view reach the base; bad geometry throws kiln::Error naming the op.
#include "test_util.h"

using namespace kiln;

namespace {
// x[i, j, k] = 12 i + 4 j + k, shape [2, 3, 4], i64.
Tensor base234() { return arange(24).view({2, 3, 4}); }
int64_t v234(int64_t i, int64_t j, int64_t k) { return 12 * i + 4 * j + k; }
}  // namespace

TEST_CASE("tensor geometry of a fresh tensor", "[core][tensor]") {
  Tensor x = empty({2, 3, 4});
  CHECK(x.defined());
  CHECK(x.dim() == 3);
  CHECK(x.sizes() == Shape{2, 3, 4});
  CHECK(x.shape() == Shape{2, 3, 4});
  CHECK(x.strides() == Shape{12, 4, 1});
  CHECK(x.numel() == 24);
  CHECK(x.size(-1) == 4);
  CHECK(x.stride(0) == 12);
  CHECK(x.dtype() == DType::F32);
  CHECK(x.element_size() == 4);
  CHECK(x.device() == kCPU);
  CHECK_FALSE(x.is_cuda());
  CHECK(x.is_contiguous());
  CHECK(x.offset() == 0);
  CHECK(x.storage()->nbytes() == 24 * 4);
  CHECK_FALSE(Tensor().defined());
  CHECK_THROWS_AS(Tensor().dim(), Error);
  CHECK_KILN_ERROR(x.size(3), "size");
  CHECK_KILN_ERROR(x.data<double>(), "data");
  Tensor s = scalar_tensor(2.5);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item<float>() == 2.5f);
  CHECK(empty({0, 3}).numel() == 0);
  CHECK(shape_str({2, 3}) == "[2, 3]");
  CHECK(contiguous_strides({2, 3, 4}) == Shape{12, 4, 1});
  CHECK(broadcast_shapes({3, 1}, {4}, "t") == Shape{3, 4});
  CHECK_KILN_ERROR(broadcast_shapes({3}, {4}, "myop"), "myop");
}

TEST_CASE("view and reshape", "[core][views]") {
  Tensor x = base234();
  Tensor v = x.view({6, 4});
  CHECK(v.sizes() == Shape{6, 4});
  CHECK(v.shares_storage(x));
  CHECK(v.to_vector<int64_t>() == x.to_vector<int64_t>());
  CHECK(x.view({-1}).sizes() == Shape{24});
  CHECK(x.view({4, -1}).sizes() == Shape{4, 6});
  CHECK(x.view({2, 1, 3, 1, 4}).strides() == Shape{12, 12, 4, 4, 1});

  Tensor r = x.reshape({3, 8});
  CHECK(r.shares_storage(x));
  CHECK(r.to_vector<int64_t>() == x.to_vector<int64_t>());

  // A transposed tensor cannot be viewed flat: reshape copies, view throws.
  Tensor tr = x.transpose(1, 2);  // [2, 4, 3], tr[i, k, j] = x[i, j, k]
  REQUIRE_FALSE(tr.is_contiguous());
  CHECK_KILN_ERROR(tr.view({24}), "view");
  Tensor flat = tr.reshape({24});
  CHECK_FALSE(flat.shares_storage(x));
  std::vector<int64_t> want;
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 3; ++j) want.push_back(v234(i, j, k));
  CHECK(flat.to_vector<int64_t>() == want);
  // Merging only dims that are contiguous among themselves is still a view.
  Tensor p = x.permute({1, 0, 2});  // [3, 2, 4]: last dim stays contiguous
  Tensor pv = p.view({3, 2, 2, 2});
  CHECK(pv.shares_storage(x));
  CHECK(pv.to_vector<int64_t>() == p.contiguous().to_vector<int64_t>());
}

TEST_CASE("permute, transpose and t", "[core][views]") {
  Tensor x = base234();
  Tensor p = x.permute({2, 0, 1});  // p[a, b, c] = x[b, c, a]
  CHECK(p.sizes() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(p.shares_storage(x));
  std::vector<int64_t> got = p.to_vector<int64_t>(), want;
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 3; ++c) want.push_back(v234(b, c, a));
  CHECK(got == want);
  CHECK(x.permute({-1, 0, 1}).sizes() == Shape{4, 2, 3});

  Tensor t = x.transpose(0, 2);  // [4, 3, 2]
  CHECK(t.sizes() == Shape{4, 3, 2});
  CHECK(t.select(0, 3).select(0, 1).to_vector<int64_t>() == std::vector<int64_t>{v234(0, 1, 3), v234(1, 1, 3)});
  CHECK(x.transpose(-1, -2).sizes() == Shape{2, 4, 3});

  Tensor m = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(m.t().sizes() == Shape{3, 2});
  CHECK(m.t().to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(m.t().t().is_contiguous());
  CHECK(from_vector<float>({1, 2}).t().sizes() == Shape{2});
  CHECK_KILN_ERROR(x.t(), "t:");
}

TEST_CASE("slice, narrow and select", "[core][views]") {
  Tensor x = base234();
  Tensor s = x.slice(2, 1, 4, 2);  // k in {1, 3}
  CHECK(s.sizes() == Shape{2, 3, 2});
  CHECK(s.strides() == Shape{12, 4, 2});
  CHECK(s.shares_storage(x));
  std::vector<int64_t> want;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k : {1, 3}) want.push_back(v234(i, j, k));
  CHECK(s.to_vector<int64_t>() == want);

  CHECK(x.slice(1, -2, 3).sizes() == Shape{2, 2, 4});
  CHECK(x.slice(1, -2, 3).select(1, 0).select(0, 0).to_vector<int64_t>() ==
        std::vector<int64_t>{4, 5, 6, 7});
  CHECK(x.slice(2, 0, 100).sizes() == Shape{2, 3, 4});  // end clamps
  CHECK(x.slice(2, 3, 1).numel() == 0);                 // empty
  CHECK(x.slice(0, 0, 2, 3).sizes() == Shape{1, 3, 4});
  Tensor ss = x.slice(2, 0, 4, 2).slice(1, 1, 3);  // slice of a slice
  CHECK(ss.to_vector<int64_t>() == std::vector<int64_t>{4, 6, 8, 10, 16, 18, 20, 22});
  CHECK_KILN_ERROR(x.slice(0, 0, 2, 0), "slice");

  Tensor n = x.narrow(1, 1, 2);  // j in {1, 2}
  CHECK(n.sizes() == Shape{2, 2, 4});
  CHECK(n.offset() == 4);
  CHECK(n.select(0, 1).select(0, 1).to_vector<int64_t>() == std::vector<int64_t>{20, 21, 22, 23});
  CHECK(x.narrow(2, -2, 2).select(0, 0).select(0, 0).to_vector<int64_t>() == std::vector<int64_t>{2, 3});
  CHECK(x.narrow(0, 2, 0).numel() == 0);

  Tensor sel = x.select(1, 2);  // [2, 4]: 12 i + 8 + k
  CHECK(sel.sizes() == Shape{2, 4});
  CHECK(sel.to_vector<int64_t>() == std::vector<int64_t>{8, 9, 10, 11, 20, 21, 22, 23});
  CHECK(x.select(-1, -1).to_vector<int64_t>() == std::vector<int64_t>{3, 7, 11, 15, 19, 23});
  CHECK(x[1][2][3].item<int64_t>() == 23);
  CHECK(x[1][2][3].dim() == 0);
}

TEST_CASE("expand, squeeze, unsqueeze and flatten", "[core][views]") {
  Tensor c = from_vector<float>({1, 2, 3}, {3, 1});
  Tensor e = c.expand({3, 4});
  CHECK(e.sizes() == Shape{3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(e.shares_storage(c));
  CHECK(e.to_vector<float>() == std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});
  CHECK(c.expand({-1, 2}).sizes() == Shape{3, 2});
  Tensor e2 = from_vector<float>({1, 2, 3}).expand({2, 3});  // new leading dim
  CHECK(e2.strides() == Shape{0, 1});
  CHECK(e2.to_vector<float>() == std::vector<float>{1, 2, 3, 1, 2, 3});
  CHECK(scalar_tensor(5).expand({2, 2}).to_vector<int64_t>() == std::vector<int64_t>{5, 5, 5, 5});
  CHECK(e.expand_as(zeros({2, 3, 4})).sizes() == Shape{2, 3, 4});

  Tensor q = zeros({1, 3, 1, 2});
  CHECK(q.squeeze().sizes() == Shape{3, 2});
  CHECK(q.squeeze(0).sizes() == Shape{3, 1, 2});
  CHECK(q.squeeze(2).sizes() == Shape{1, 3, 2});
  CHECK(q.squeeze(1).sizes() == Shape{1, 3, 1, 2});  // size 3: unchanged
  CHECK(q.squeeze(-2).sizes() == Shape{1, 3, 2});
  CHECK(q.squeeze().shares_storage(q));
  Tensor a = arange(6).view({2, 3});
  CHECK(a.unsqueeze(0).sizes() == Shape{1, 2, 3});
  CHECK(a.unsqueeze(1).sizes() == Shape{2, 1, 3});
  CHECK(a.unsqueeze(-1).sizes() == Shape{2, 3, 1});
  CHECK(a.unsqueeze(2).to_vector<int64_t>() == a.to_vector<int64_t>());
  CHECK(a.unsqueeze(1).is_contiguous());
  CHECK(scalar_tensor(1.0).unsqueeze(0).sizes() == Shape{1});
  CHECK_KILN_ERROR(a.unsqueeze(4), "unsqueeze");

  Tensor x = base234();
  CHECK(x.flatten().sizes() == Shape{24});
  CHECK(x.flatten().shares_storage(x));
  CHECK(x.flatten(1).sizes() == Shape{2, 12});
  CHECK(x.flatten(0, 1).sizes() == Shape{6, 4});
  CHECK(x.flatten(-2, -1).sizes() == Shape{2, 12});
  CHECK(scalar_tensor(3.0).flatten().sizes() == Shape{1});
  Tensor tf = x.transpose(0, 1).flatten();  // copies
  std::vector<int64_t> want;
  for (int j = 0; j < 3; ++j)
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 4; ++k) want.push_back(v234(i, j, k));
  CHECK(tf.to_vector<int64_t>() == want);
  CHECK_KILN_ERROR(x.flatten(2, 1), "flatten");
}

TEST_CASE("contiguous and clone", "[core][views]") {
  Tensor x = base234();
  CHECK(x.contiguous().is_same(x));
  Tensor t = x.transpose(0, 2);
  Tensor c = t.contiguous();
  CHECK(c.is_contiguous());
  CHECK_FALSE(c.shares_storage(x));
  CHECK(c.sizes() == t.sizes());
  CHECK(c.to_vector<int64_t>() == t.to_vector<int64_t>());
  CHECK(c.strides() == contiguous_strides(c.sizes()));

  Tensor k = x.clone();
  CHECK(k.is_contiguous());
  CHECK_FALSE(k.shares_storage(x));
  CHECK(k.to_vector<int64_t>() == x.to_vector<int64_t>());
  k.fill_(0);  // independent of x
  CHECK(x.to_vector<int64_t>()[5] == 5);
  x.fill_(1);
  CHECK(k.to_vector<int64_t>()[5] == 0);
  Tensor kt = t.clone();
  CHECK(kt.is_contiguous());
  CHECK(kt.dtype() == DType::I64);
}

TEST_CASE("writes through a view change the base", "[core][views]") {
  Tensor x = zeros({3, 4});
  x.select(0, 1).fill_(7);
  x.slice(1, 0, 4, 2).select(0, 2).fill_(5);  // x[2, 0] and x[2, 2]
  x.t().select(0, 3).narrow(0, 0, 1).fill_(-1);  // x[0, 3]
  CHECK(x.to_vector<float>() == std::vector<float>{0, 0, 0, -1, 7, 7, 7, 7, 5, 0, 5, 0});

  Tensor y = zeros({2, 3}, DType::I32);
  y.select(1, 2).copy_(from_vector<int32_t>({8, 9}));
  y.view({6}).narrow(0, 0, 1).fill_(1);
  CHECK(y.to_vector<int32_t>() == std::vector<int32_t>{1, 0, 8, 0, 0, 9});

  Tensor z = arange(6, DType::F32);
  Tensor zv = z.view({2, 3});
  zv.select(1, 0).fill_(100);
  CHECK(z.to_vector<float>() == std::vector<float>{100, 1, 2, 100, 4, 5});
  // A chunk of a split is a view too.
  z.unsqueeze(0).squeeze(0).narrow(0, 5, 1).fill_(-5);
  CHECK(z.to_vector<float>()[5] == -5);
}

TEST_CASE("bad view geometry throws kiln::Error naming the op", "[core][views][errors]") {
  Tensor x = base234();
  REQUIRE_KILN_ERROR(x.view({5, 5}), "view");
  REQUIRE_KILN_ERROR(x.view({-1, -1}), "view");
  REQUIRE_KILN_ERROR(x.view({7, -1}), "view");
  REQUIRE_KILN_ERROR(x.reshape({25}), "reshape");
  REQUIRE_KILN_ERROR(x.expand({2, 3, 5}), "expand");
  REQUIRE_KILN_ERROR(x.expand({3, 4}), "expand");
  REQUIRE_KILN_ERROR(from_vector<float>({1, 2}, {2, 1}).expand({3, 4}), "expand");
  REQUIRE_KILN_ERROR(x.permute({0, 0, 1}), "permute");
  REQUIRE_KILN_ERROR(x.permute({0, 1}), "permute");
  REQUIRE_KILN_ERROR(x.permute({0, 1, 3}), "permute");
  REQUIRE_KILN_ERROR(x.narrow(1, 2, 2), "narrow");
  REQUIRE_KILN_ERROR(x.narrow(1, 4, 0), "narrow");
  REQUIRE_KILN_ERROR(x.narrow(1, 0, -1), "narrow");
  REQUIRE_KILN_ERROR(x.narrow(3, 0, 1), "narrow");
  REQUIRE_KILN_ERROR(x.select(0, 2), "select");
  REQUIRE_KILN_ERROR(x.select(2, -5), "select");
  REQUIRE_KILN_ERROR(x.select(3, 0), "select");
  REQUIRE_KILN_ERROR(scalar_tensor(1).select(0, 0), "select");
  REQUIRE_KILN_ERROR(x.transpose(0, 3), "transpose");
  REQUIRE_KILN_ERROR(x.squeeze(3), "squeeze");
  // Views must stay inside their storage.
  REQUIRE_KILN_ERROR(x.as_strided({5, 5}, {5, 1}, 0), "storage");
  REQUIRE_KILN_ERROR(x.as_strided({2}, {1}, 23), "storage");
  CHECK(x.as_strided({2}, {1}, 22).to_vector<int64_t>() == std::vector<int64_t>{22, 23});
}

TEST_CASE("tensors of more than 8 dims: contiguous ones reach kernels flat, others are refused clearly",
          "[core][tensor][errors]") {
  CHECK(kMaxDims == 8);
  // 10 dims: ops run on contiguous operands (the kernels see one flat dim).
  Shape s10{2, 1, 3, 1, 2, 1, 1, 2, 1, 2};
  Tensor a = arange(48, DType::F32).reshape(s10);
  CHECK(a.dim() == 10);
  Tensor b = add(mul(a, 2.0), a);
  CHECK(b.sizes() == s10);
  CHECK(b.to_vector<float>()[47] == 141.0f);
  CHECK(exp(zeros(s10)).to_vector<float>() == std::vector<float>(48, 1.0f));
  CHECK(kiln::sum(a).item<double>() == 47.0 * 48 / 2);
  CHECK(kiln::sum(a, {0}).sizes() == Shape{1, 3, 1, 2, 1, 1, 2, 1, 2});
  // Views whose dims merge down to 8 or fewer reach the kernels too (size-1 dims drop out).
  Tensor t = a.transpose(0, 9);
  CHECK_CLOSE(exp(t), exp(t.contiguous()));
  // A 10-dim view that no merging brings to 8 dims: a clear error, not a crash.
  Tensor c = arange(1024, DType::F32).reshape(Shape(10, 2));
  Tensor p = c.permute({9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  REQUIRE_KILN_ERROR(exp(p), "contiguous()");
  // ... which works: copies go slice by slice when one launch cannot take the layout.
  Tensor pc = p.contiguous();
  CHECK(pc.is_contiguous());
  CHECK(pc.to_vector<float>()[1] == 512.0f);  // p[0,...,0,1] = c[1,0,...,0]
  CHECK_CLOSE(exp(pc), exp(pc.clone()));
  // The tensor limit itself is 64 dims.
  CHECK(zeros(Shape(64, 1)).dim() == 64);
  REQUIRE_THROWS_WITH(zeros(Shape(65, 1)), Catch::Contains("64"));
  REQUIRE_THROWS_AS(zeros(Shape(64, 1)).unsqueeze(0), Error);
  REQUIRE_KILN_ERROR(empty({2, -1}), "empty");
}
