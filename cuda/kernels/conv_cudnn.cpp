// conv2d's three products on cuDNN's legacy convolution API: the CUDA halves of the
// conv2d_forward, conv2d_backward_data and conv2d_backward_weight slots (ops/op_list.h;
// contract: Conv2dGeometry in ops/conv.h). A host-compiled .cpp beside the kernels, as it
// calls a library only.
//
// Tensors are described with their real strides (cudnnSetTensor4dDescriptorEx), the
// filter as packed NCHW. Math: f32 runs with CUDNN_FMA_MATH only, which rules out TF32
// (CUDNN_DEFAULT_MATH lets cuDNN use TF32 tensor cores for f32 on Ampere and later, and
// the results would no longer track the CPU reference to f32 tolerance) unless the user
// asked for TF32 (cuda::allow_tf32(), KILN_ALLOW_TF32=1); f16/bf16 may use
// CUDNN_TENSOR_OP_MATH, accumulating in f32; f64 the default. Algorithms come from cuDNN's
// heuristics (cudnnGetConvolution*Algorithm_v7), or from timing every algorithm once per
// shape (cudnnFindConvolution*AlgorithmEx) when KILN_CUDNN_BENCHMARK=1. Of the candidates,
// deterministic algorithms are preferred (runs are reproducible from their seed) unless
// KILN_CUDNN_DETERMINISTIC=0. The ranked candidates are cached per shape key; each call
// takes the first whose workspace can be allocated. Every workspace (and the timing runs'
// scratch) is a DeviceScratch (scratch.h) from kiln's stream-ordered allocator, so freeing
// it right after the launch is safe and cuDNN never calls cudaMalloc itself. Batches too large for
// cuDNN's 32-bit descriptors are split along N.
#include <algorithm>
#include <climits>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <cudnn.h>

#include <kiln/core/log.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/handles.h>
#include <kiln/cuda/runtime.h>
#include <kiln/cuda/kernels/scratch.h>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

using Geom = Conv2dGeometry;

Shape sizes_of(const TensorView& t) { return Shape(t.sizes, t.sizes + t.ndim); }

// "f32 input [N, C, H, W], weight [...], output [...]" for error messages.
std::string problem_str(const TensorView& x, const TensorView& w, const TensorView& y) {
  return detail::str(dtype_name(x.dtype), " input ", shape_str(sizes_of(x)), ", weight ", shape_str(sizes_of(w)),
                     ", output ", shape_str(sizes_of(y)), " on ", x.device.str());
}

// Samples [n0, n0 + n) of a 4-D view.
TensorView samples(TensorView t, int64_t n0, int64_t n) {
  t.data = static_cast<char*>(t.data) + n0 * t.strides[0] * static_cast<int64_t>(dtype_size(t.dtype));
  t.numel = t.sizes[0] == 0 ? 0 : t.numel / t.sizes[0] * n;
  t.sizes[0] = n;
  return t;
}

// ---- cuDNN types and descriptors ---------------------------------------------------

cudnnDataType_t data_type(DType t) {
  switch (t) {
    case DType::F16: return CUDNN_DATA_HALF;
    case DType::BF16: return CUDNN_DATA_BFLOAT16;
    case DType::F32: return CUDNN_DATA_FLOAT;
    case DType::F64: return CUDNN_DATA_DOUBLE;
    default: throw Error(detail::str("CUDA conv2d: unsupported dtype ", dtype_name(t)));
  }
}
// The math type a convolution of dtype t asks for (see the file comment).
cudnnMathType_t math_type(DType t) {
  switch (t) {
    case DType::F16:
    case DType::BF16: return CUDNN_TENSOR_OP_MATH;
    case DType::F32: return CUDNN_FMA_MATH;
    default: return CUDNN_DEFAULT_MATH;
  }
}

int to_int(int64_t v, const char* what, const TensorView& t) {
  KILN_CHECK(v >= 0 && v <= INT_MAX, "CUDA conv2d: ", what, " ", v, " of a ", dtype_name(t.dtype),
             shape_str(sizes_of(t)), " operand exceeds cuDNN's 32-bit descriptors");
  return static_cast<int>(v);
}

class TensorDesc {
 public:
  explicit TensorDesc(const TensorView& t) {
    int n[4], s[4];
    for (int i = 0; i < 4; ++i) {
      n[i] = to_int(t.size(i), "size", t);
      // A dim of size 1 may carry any stride; cuDNN wants strides it can walk.
      s[i] = to_int(t.size(i) == 1 ? 1 : t.stride(i), "stride", t);
    }
    if (t.size(3) == 1) s[3] = 1;
    if (t.size(2) == 1) s[2] = n[3] * s[3];
    if (t.size(1) == 1) s[1] = n[2] * s[2];
    if (t.size(0) == 1) s[0] = n[1] * s[1];
    const cudnnDataType_t type = data_type(t.dtype);
    KILN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d_));
    const cudnnStatus_t st =
        cudnnSetTensor4dDescriptorEx(d_, type, n[0], n[1], n[2], n[3], s[0], s[1], s[2], s[3]);
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroyTensorDescriptor(d_);
      throw_cudnn_error(static_cast<int>(st), "cudnnSetTensor4dDescriptorEx", __FILE__, __LINE__);
    }
  }
  ~TensorDesc() { (void)cudnnDestroyTensorDescriptor(d_); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

// w is contiguous (ops/conv.cpp makes it so).
class FilterDesc {
 public:
  explicit FilterDesc(const TensorView& w) {
    int k[4];
    for (int i = 0; i < 4; ++i) k[i] = to_int(w.size(i), "size", w);
    const cudnnDataType_t type = data_type(w.dtype);
    KILN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d_));
    cudnnStatus_t st = cudnnSetFilter4dDescriptor(d_, type, CUDNN_TENSOR_NCHW, k[0], k[1], k[2], k[3]);
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroyFilterDescriptor(d_);
      throw_cudnn_error(static_cast<int>(st), "cudnnSetFilter4dDescriptor", __FILE__, __LINE__);
    }
  }
  ~FilterDesc() { (void)cudnnDestroyFilterDescriptor(d_); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  cudnnFilterDescriptor_t get() const { return d_; }

 private:
  cudnnFilterDescriptor_t d_ = nullptr;
};

class ConvDesc {
 public:
  ConvDesc(const Geom& g, DType dtype) {
    KILN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d_));
    auto fits = [](int64_t v) { return v >= 0 && v <= INT_MAX; };
    if (!(fits(g.pad_h) && fits(g.pad_w) && fits(g.stride_h) && fits(g.stride_w) && fits(g.dilation_h) &&
          fits(g.dilation_w) && fits(g.groups))) {
      cudnnDestroyConvolutionDescriptor(d_);
      throw Error("CUDA conv2d: stride, padding, dilation or groups exceed cuDNN's 32-bit descriptors");
    }
    cudnnStatus_t st = cudnnSetConvolution2dDescriptor(
        d_, static_cast<int>(g.pad_h), static_cast<int>(g.pad_w), static_cast<int>(g.stride_h),
        static_cast<int>(g.stride_w), static_cast<int>(g.dilation_h), static_cast<int>(g.dilation_w),
        CUDNN_CROSS_CORRELATION, data_type(accumulate_dtype(dtype)));
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetConvolutionGroupCount(d_, static_cast<int>(g.groups));
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetConvolutionMathType(d_, math_type(dtype));
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroyConvolutionDescriptor(d_);
      throw_cudnn_error(static_cast<int>(st), "cudnnSetConvolution2dDescriptor", __FILE__, __LINE__);
    }
  }
  ~ConvDesc() { (void)cudnnDestroyConvolutionDescriptor(d_); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  cudnnConvolutionDescriptor_t get() const { return d_; }
  void set_math(cudnnMathType_t m) const { KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(d_, m)); }

 private:
  cudnnConvolutionDescriptor_t d_ = nullptr;
};

// alpha = 1, beta = 0 or 1, in the scaling type cuDNN reads for the data type.
struct Scale {
  double d;
  float f;
  const void* ptr(DType t) const { return t == DType::F64 ? static_cast<const void*>(&d) : static_cast<const void*>(&f); }
};
Scale scale(double v) { return {v, static_cast<float>(v)}; }

// ---- algorithm choice ----------------------------------------------------------------

enum class Kind { Forward, BackwardData, BackwardFilter };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Forward: return "forward";
    case Kind::BackwardData: return "backward data";
    case Kind::BackwardFilter: return "backward filter";
  }
  return "?";
}

bool benchmark_mode() {
  static const bool on = env_flag("KILN_CUDNN_BENCHMARK", false);
  return on;
}
bool deterministic_mode() {
  static const bool on = env_flag("KILN_CUDNN_DETERMINISTIC", true);
  return on;
}

struct Candidate {
  int algo;
  cudnnMathType_t math;
  size_t workspace;
};

// One problem: the tensors' geometry, dtype, device and kind.
struct Problem {
  std::vector<int64_t> key;
  bool operator==(const Problem& o) const { return key == o.key; }
};
struct ProblemHash {
  size_t operator()(const Problem& p) const {
    size_t h = 0;
    for (int64_t v : p.key) h ^= std::hash<int64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
  }
};

// The operands of one call: x is the data tensor (dx for backward data), y the output
// side (dy for the backward passes), w the filter (dw for backward filter).
struct Operands {
  TensorView x, w, y;
};

Problem make_problem(Kind kind, const Operands& o, const Geom& g) {
  Problem p;
  p.key = {static_cast<int64_t>(kind), o.x.device.index, static_cast<int64_t>(o.x.dtype), g.stride_h, g.stride_w,
           g.pad_h, g.pad_w, g.dilation_h, g.dilation_w, g.groups, deterministic_mode(), benchmark_mode(),
           allow_tf32()};
  for (const TensorView* t : {&o.x, &o.w, &o.y}) {
    for (int i = 0; i < 4; ++i) p.key.push_back(t->size(i));
    for (int i = 0; i < 4; ++i) p.key.push_back(t->stride(i));
    // Pointer alignment (up to 16 bytes): vectorised kernels need it, and a view at an
    // odd offset may not get the algorithm an aligned tensor of the same shape got.
    const auto addr = reinterpret_cast<uintptr_t>(t->data);
    p.key.push_back(static_cast<int64_t>((addr | 16u) & (~(addr | 16u) + 1)));
  }
  return p;
}

class AlgoCache {
 public:
  std::shared_ptr<const std::vector<Candidate>> find(const Problem& p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(p);
    return it == map_.end() ? nullptr : it->second;
  }
  std::shared_ptr<const std::vector<Candidate>> put(const Problem& p, std::vector<Candidate> c) {
    auto v = std::make_shared<const std::vector<Candidate>>(std::move(c));
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMax) map_.clear();  // ever-changing shapes: start over rather than grow
    map_[p] = v;
    return v;
  }

 private:
  static constexpr size_t kMax = 4096;
  std::mutex mu_;
  std::unordered_map<Problem, std::shared_ptr<const std::vector<Candidate>>, ProblemHash> map_;
};
AlgoCache& algo_cache() {
  static auto* cache = new AlgoCache();  // never destroyed: cuDNN may be gone at exit
  return *cache;
}

// Descriptors of one call.
struct Descs {
  TensorDesc x;
  FilterDesc w;
  ConvDesc conv;
  TensorDesc y;
  Descs(const Operands& o, const Geom& g) : x(o.x), w(o.w), conv(g, o.x.dtype), y(o.y) {}
};

template <class Perf>
inline constexpr bool kIsForward = std::is_same_v<Perf, cudnnConvolutionFwdAlgoPerf_t>;
template <class Perf>
inline constexpr bool kIsBackwardData = std::is_same_v<Perf, cudnnConvolutionBwdDataAlgoPerf_t>;

// Times every algorithm on the operands (cudnnFind*Ex) with a workspace from kiln's
// allocator as large as the heuristics' hungriest candidate (or the largest that can be
// had). The timed runs write the output operand: x and y are written afterwards anyway,
// but a filter gradient may hold earlier chunks' sums, so it gets a scratch buffer.
template <class Perf>
cudnnStatus_t benchmark(cudnnHandle_t h, const Descs& d, const Operands& o, const std::vector<Perf>& heuristic,
                        std::vector<Perf>& perf, int* n) {
  std::vector<size_t> sizes{0};
  for (const Perf& p : heuristic)
    if (p.status == CUDNN_STATUS_SUCCESS) sizes.push_back(p.memory);
  std::sort(sizes.rbegin(), sizes.rend());
  DeviceScratch ws;
  for (size_t bytes : sizes) {
    try {
      ws = DeviceScratch(bytes, o.x.device);
      break;
    } catch (const OutOfMemory&) {
    }
  }
  void* wsp = ws.get();
  const size_t ws_bytes = ws.bytes();
  const int requested = static_cast<int>(perf.size());
  if constexpr (kIsForward<Perf>) {
    return cudnnFindConvolutionForwardAlgorithmEx(h, d.x.get(), o.x.data, d.w.get(), o.w.data, d.conv.get(),
                                                  d.y.get(), o.y.data, requested, n, perf.data(), wsp, ws_bytes);
  } else if constexpr (kIsBackwardData<Perf>) {
    return cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w.get(), o.w.data, d.y.get(), o.y.data, d.conv.get(),
                                                       d.x.get(), o.x.data, requested, n, perf.data(), wsp,
                                                       ws_bytes);
  } else {
    const DeviceScratch scratch(static_cast<size_t>(o.w.numel) * dtype_size(o.w.dtype), o.w.device);
    return cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x.get(), o.x.data, d.y.get(), o.y.data, d.conv.get(),
                                                         d.w.get(), scratch.get(), requested, n, perf.data(),
                                                         wsp, ws_bytes);
  }
}

// The ranked perf results of one kind from the heuristics or from timing.
template <class Perf>
std::vector<Perf> query(Kind kind, cudnnHandle_t h, const Descs& d, const Operands& o) {
  int max_count = 0;
  if constexpr (kIsForward<Perf>)
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
  else if constexpr (kIsBackwardData<Perf>)
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
  else
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
  std::vector<Perf> perf(static_cast<size_t>(max_count > 0 ? max_count : 1));
  const int requested = static_cast<int>(perf.size());
  int n = 0;
  if constexpr (kIsForward<Perf>)
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                            requested, &n, perf.data()));
  else if constexpr (kIsBackwardData<Perf>)
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
                                                                 requested, &n, perf.data()));
  else
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(),
                                                                   requested, &n, perf.data()));
  perf.resize(static_cast<size_t>(n < 0 ? 0 : n));
  if (benchmark_mode()) {
    // On failure (no memory for the trials, say) the heuristics decide.
    std::vector<Perf> timed(static_cast<size_t>(requested));
    int m = 0;
    const cudnnStatus_t st = benchmark<Perf>(h, d, o, perf, timed, &m);
    if (st == CUDNN_STATUS_SUCCESS) {
      timed.resize(static_cast<size_t>(m < 0 ? 0 : m));
      return timed;
    }
    log_warn("cuDNN ", kind_name(kind), " benchmark failed (", cudnnGetErrorString(st), "); using heuristics");
  }
  return perf;
}

// The workspace one algorithm needs with the descriptors' current math type.
size_t workspace_size(Kind kind, cudnnHandle_t h, const Descs& d, int algo, cudnnStatus_t* status) {
  size_t bytes = 0;
  switch (kind) {
    case Kind::Forward:
      *status = cudnnGetConvolutionForwardWorkspaceSize(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                        static_cast<cudnnConvolutionFwdAlgo_t>(algo), &bytes);
      break;
    case Kind::BackwardData:
      *status = cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
                                                             static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), &bytes);
      break;
    case Kind::BackwardFilter:
      *status = cudnnGetConvolutionBackwardFilterWorkspaceSize(
          h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(), static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), &bytes);
      break;
  }
  return bytes;
}

// Algorithms that cuDNN documents as deterministic (every forward one; all backward ones
// but those that accumulate with atomics), for when the perf results leave the field unset.
bool known_deterministic(Kind kind, int algo) {
  switch (kind) {
    case Kind::Forward: return true;
    case Kind::BackwardData: return algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
    case Kind::BackwardFilter:
      return algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 && algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  }
  return false;
}

// The math type a candidate runs with: f32 with FMA math (a result offered under the
// default math runs as FMA; tensor-op results, TF32, are dropped: kNone) unless
// cuda::allow_tf32(), then as offered; other dtypes as cuDNN offers.
constexpr int kNone = -1;
int candidate_math(DType dtype, cudnnMathType_t offered) {
  if (dtype != DType::F32 || allow_tf32()) return offered;
  if (offered == CUDNN_TENSOR_OP_MATH || offered == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return kNone;
  return CUDNN_FMA_MATH;
}

// The usable candidates in cuDNN's order: supported, no TF32 for f32, deterministic
// only when asked (falling back to any when none is), each with its workspace size.
template <class Perf>
std::vector<Candidate> rank(Kind kind, cudnnHandle_t h, const Descs& d, const Operands& o) {
  const DType dtype = o.x.dtype;
  const std::vector<Perf> perf = query<Perf>(kind, h, d, o);
  std::vector<Candidate> all, det;
  for (const Perf& p : perf) {
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    const int math = candidate_math(dtype, p.mathType);
    if (math == kNone) continue;
    const int algo = static_cast<int>(p.algo);
    const bool seen = std::any_of(all.begin(), all.end(),
                                  [&](const Candidate& c) { return c.algo == algo && c.math == math; });
    if (seen) continue;  // f32: the default-math and FMA results of one algorithm
    d.conv.set_math(static_cast<cudnnMathType_t>(math));
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    const size_t ws = workspace_size(kind, h, d, algo, &st);
    if (st != CUDNN_STATUS_SUCCESS) continue;
    const Candidate c{algo, static_cast<cudnnMathType_t>(math), ws};
    all.push_back(c);
    if (p.determinism == CUDNN_DETERMINISTIC || known_deterministic(kind, algo)) det.push_back(c);
  }
  d.conv.set_math(math_type(dtype));
  if (!deterministic_mode()) return all;
  if (det.empty() && !all.empty()) {
    static std::once_flag warned;
    std::call_once(warned, [&] {
      log_warn("cuDNN offers no deterministic ", kind_name(kind), " algorithm for a ", dtype_name(dtype),
               " convolution; using a non-deterministic one (warned once)");
    });
    return all;
  }
  return det;
}

std::shared_ptr<const std::vector<Candidate>> candidates(Kind kind, cudnnHandle_t h, const Descs& d,
                                                         const Operands& o, const Geom& g) {
  const Problem p = make_problem(kind, o, g);
  if (auto c = algo_cache().find(p)) return c;
  std::vector<Candidate> c;
  switch (kind) {
    case Kind::Forward: c = rank<cudnnConvolutionFwdAlgoPerf_t>(kind, h, d, o); break;
    case Kind::BackwardData: c = rank<cudnnConvolutionBwdDataAlgoPerf_t>(kind, h, d, o); break;
    case Kind::BackwardFilter: c = rank<cudnnConvolutionBwdFilterAlgoPerf_t>(kind, h, d, o); break;
  }
  KILN_CHECK(!c.empty(), "CUDA conv2d ", kind_name(kind), ": cuDNN offers no algorithm for ",
             problem_str(o.x, o.w, o.y));
  return algo_cache().put(p, std::move(c));
}

// Runs one cuDNN call of `kind` on the operands with beta (0: write, 1: accumulate),
// trying the ranked algorithms until one gets its workspace. The device is current.
void run(Kind kind, const Operands& o, const Geom& g, double beta) {
  cudnnHandle_t h = cudnn_handle(o.x.device.index);
  Descs d(o, g);
  auto cands = candidates(kind, h, d, o, g);
  const DType dt = o.x.dtype;
  const Scale one = scale(1.0), b = scale(beta);
  for (size_t i = 0; i < cands->size(); ++i) {
    const Candidate& c = (*cands)[i];
    DeviceScratch ws;
    try {
      ws = DeviceScratch(c.workspace, o.x.device);
    } catch (const OutOfMemory&) {
      if (i + 1 < cands->size()) continue;
      throw;
    }
    void* wsp = ws.get();
    d.conv.set_math(c.math);
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    switch (kind) {
      case Kind::Forward:
        st = cudnnConvolutionForward(h, one.ptr(dt), d.x.get(), o.x.data, d.w.get(), o.w.data, d.conv.get(),
                                     static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), wsp, c.workspace, b.ptr(dt),
                                     d.y.get(), o.y.data);
        break;
      case Kind::BackwardData:
        st = cudnnConvolutionBackwardData(h, one.ptr(dt), d.w.get(), o.w.data, d.y.get(), o.y.data, d.conv.get(),
                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), wsp, c.workspace,
                                          b.ptr(dt), d.x.get(), o.x.data);
        break;
      case Kind::BackwardFilter:
        st = cudnnConvolutionBackwardFilter(h, one.ptr(dt), d.x.get(), o.x.data, d.y.get(), o.y.data, d.conv.get(),
                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), wsp, c.workspace,
                                            b.ptr(dt), d.w.get(), o.w.data);
        break;
    }
    if (st == CUDNN_STATUS_NOT_SUPPORTED && i + 1 < cands->size()) continue;
    if (st != CUDNN_STATUS_SUCCESS) {
      throw Error(detail::str("CUDA conv2d ", kind_name(kind), ": cuDNN failed (", cudnnGetErrorString(st),
                              ") with algorithm ", c.algo, " for ", problem_str(o.x, o.w, o.y)));
    }
    return;
  }
}

// Samples per cuDNN call: cuDNN's legacy kernels index tensors with 32 bits. a and b are
// the batched operands (N > 0).
int64_t batch_chunk(const TensorView& a, const TensorView& b) {
  const int64_t per = std::max(a.numel / a.size(0), b.numel / b.size(0));
  KILN_CHECK(per <= INT_MAX, "CUDA conv2d: one sample of ", shape_str(sizes_of(a)), " / ", shape_str(sizes_of(b)),
             " exceeds cuDNN's 32-bit indexing");
  return std::max<int64_t>(1, INT_MAX / std::max<int64_t>(per, 1));
}

}  // namespace

void conv2d_forward(const TensorView& x, const TensorView& w, const TensorView& bias, const TensorView& y,
                    const Conv2dGeometry& g) {
  if (y.numel == 0) return;
  DeviceGuard guard(y.device);
  const int64_t chunk = batch_chunk(x, y);
  for (int64_t n0 = 0; n0 < x.size(0); n0 += chunk) {
    const int64_t n = std::min(chunk, x.size(0) - n0);
    run(Kind::Forward, {samples(x, n0, n), w, samples(y, n0, n)}, g, 0.0);
  }
  if (bias.defined) {
    // y += bias broadcast over (N, H, W), in place through the elementwise kernel.
    TensorView b = y;
    b.data = bias.data;
    b.storage = bias.storage;
    b.contiguous = false;
    b.strides[0] = 0;
    b.strides[1] = bias.strides[0];
    b.strides[2] = 0;
    b.strides[3] = 0;
    BinaryParams add;
    add.op = BinaryOp::Add;
    binary(y, b, y, add);
  }
}

void conv2d_backward_data(const TensorView& gy, const TensorView& w, const TensorView& gx, const Conv2dGeometry& g) {
  if (gx.numel == 0) return;
  DeviceGuard guard(gx.device);
  const int64_t chunk = batch_chunk(gx, gy);
  for (int64_t n0 = 0; n0 < gx.size(0); n0 += chunk) {
    const int64_t n = std::min(chunk, gx.size(0) - n0);
    run(Kind::BackwardData, {samples(gx, n0, n), w, samples(gy, n0, n)}, g, 0.0);
  }
}

void conv2d_backward_weight(const TensorView& x, const TensorView& gy, const TensorView& gw,
                            const Conv2dGeometry& g) {
  if (gw.numel == 0) return;
  DeviceGuard guard(gw.device);
  if (x.size(0) == 0) {  // no samples: a zero gradient (all-zero bytes in every float dtype)
    KILN_CUDA_CHECK(cudaMemsetAsync(gw.data, 0, static_cast<size_t>(gw.numel) * dtype_size(gw.dtype),
                                    current_stream(gw.device)));
    return;
  }
  const int64_t chunk = batch_chunk(x, gy);
  for (int64_t n0 = 0; n0 < x.size(0); n0 += chunk) {
    const int64_t n = std::min(chunk, x.size(0) - n0);
    run(Kind::BackwardFilter, {samples(x, n0, n), gw, samples(gy, n0, n)}, g, n0 == 0 ? 0.0 : 1.0);
  }
}

}  // namespace kiln::cuda
