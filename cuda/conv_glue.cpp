// The CUDA backend's convolution family: conv2d's three products on cuDNN's legacy
// convolution API, and the glue of the hand-written pad2d and pooling kernels
// (cuda/kernels/pad.cu, pool.cu).
//
// cuDNN: tensors are described with their real strides (cudnnSetTensor4dDescriptorEx),
// the filter as packed NCHW. Math: f32 runs with CUDNN_FMA_MATH, which rules out TF32
// (CUDNN_DEFAULT_MATH would let cuDNN use TF32 tensor cores for f32 on Ampere and later,
// and the results would no longer track the CPU reference to f32 tolerance); f16/bf16 use
// CUDNN_TENSOR_OP_MATH with f32 accumulation; f64 the default. Algorithms come from
// cuDNN's heuristics (cudnnGetConvolution*Algorithm_v7), or from timing every algorithm
// once per shape (cudnnFindConvolution*Algorithm) when KILN_CUDNN_BENCHMARK=1. Of the
// candidates, deterministic algorithms are preferred (runs are reproducible from their
// seed) unless KILN_CUDNN_DETERMINISTIC=0. The ranked candidates are cached per shape
// key; each call takes the first whose workspace (a u8 tensor from kiln's stream-ordered
// allocator, so freeing it after the launch is safe) can be allocated. Batches too large
// for cuDNN's 32-bit descriptors are split along N.
#include <kiln/cuda/cuda_backend.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cudnn.h>

#include <kiln/core/log.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/handles.h>
#include <kiln/cuda/kernels/launch.h>

namespace kiln::cuda {
namespace {

using Geom = Backend::Conv2dGeometry;

std::string describe_tensor(const Tensor& t) {
  return detail::str(dtype_name(t.dtype()), shape_str(t.sizes()), " on ", t.device().str());
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
cudnnDataType_t compute_type(DType t) { return t == DType::F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT; }
cudnnMathType_t math_type(DType t) {
  switch (t) {
    case DType::F16:
    case DType::BF16: return CUDNN_TENSOR_OP_MATH;
    case DType::F32: return CUDNN_FMA_MATH;
    default: return CUDNN_DEFAULT_MATH;
  }
}
// A math type whose kernels may round f32 operands (TF32 tensor cores).
bool lowers_f32(cudnnMathType_t m) { return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION; }

int to_int(int64_t v, const char* what, const Tensor& t) {
  KILN_CHECK(v >= 0 && v <= INT_MAX, "CUDA conv2d: ", what, " ", v, " of ", describe_tensor(t),
             " exceeds cuDNN's 32-bit descriptors");
  return static_cast<int>(v);
}

class TensorDesc {
 public:
  explicit TensorDesc(const Tensor& t) {
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
    const cudnnDataType_t type = data_type(t.dtype());
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

class FilterDesc {
 public:
  explicit FilterDesc(const Tensor& w) {
    KILN_CHECK(w.is_contiguous(), "CUDA conv2d: weight must be contiguous, got ", describe_tensor(w), " with strides ",
               shape_str(w.strides()));
    int k[4];
    for (int i = 0; i < 4; ++i) k[i] = to_int(w.size(i), "size", w);
    const cudnnDataType_t type = data_type(w.dtype());
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
        CUDNN_CROSS_CORRELATION, compute_type(dtype));
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

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0);
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

Problem make_problem(Kind kind, int device, const Tensor& x, const Tensor& w, const Tensor& y, const Geom& g) {
  Problem p;
  p.key = {static_cast<int64_t>(kind), device, static_cast<int64_t>(x.dtype()), g.stride_h, g.stride_w, g.pad_h,
           g.pad_w, g.dilation_h, g.dilation_w, g.groups, deterministic_mode(), benchmark_mode()};
  for (const Tensor* t : {&x, &w, &y}) {
    for (int i = 0; i < 4; ++i) p.key.push_back(t->size(i));
    for (int i = 0; i < 4; ++i) p.key.push_back(t->stride(i));
    // Pointer alignment (up to 16 bytes): vectorised kernels need it, and a view at an
    // odd offset may not get the algorithm an aligned tensor of the same shape got.
    const auto addr = reinterpret_cast<uintptr_t>(t->data_ptr());
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

// Descriptors of one call: x is the data tensor (dx for backward data), y the output
// side (dy for the backward passes).
struct Descs {
  TensorDesc x;
  FilterDesc w;
  ConvDesc conv;
  TensorDesc y;
  Descs(const Tensor& xt, const Tensor& wt, const Tensor& yt, const Geom& g)
      : x(xt), w(wt), conv(g, xt.dtype()), y(yt) {}
};

// The ranked perf results of one kind from the heuristics or from timing.
template <class Perf>
std::vector<Perf> query(Kind kind, cudnnHandle_t h, const Descs& d) {
  int max_count = 0;
  if constexpr (std::is_same_v<Perf, cudnnConvolutionFwdAlgoPerf_t>)
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
  else if constexpr (std::is_same_v<Perf, cudnnConvolutionBwdDataAlgoPerf_t>)
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
  else
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
  std::vector<Perf> perf(static_cast<size_t>(max_count > 0 ? max_count : 1));
  int n = 0;
  cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
  if (benchmark_mode()) {
    // Times each algorithm once (cuDNN allocates its own workspace for the trials); on
    // failure (no memory for the trials, say) the heuristics decide instead.
    if constexpr (std::is_same_v<Perf, cudnnConvolutionFwdAlgoPerf_t>)
      st = cudnnFindConvolutionForwardAlgorithm(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(), max_count, &n,
                                                perf.data());
    else if constexpr (std::is_same_v<Perf, cudnnConvolutionBwdDataAlgoPerf_t>)
      st = cudnnFindConvolutionBackwardDataAlgorithm(h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(), max_count, &n,
                                                     perf.data());
    else
      st = cudnnFindConvolutionBackwardFilterAlgorithm(h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(), max_count,
                                                       &n, perf.data());
    if (st != CUDNN_STATUS_SUCCESS)
      log_warn("cuDNN ", kind_name(kind), " benchmark failed (", cudnnGetErrorString(st), "); using heuristics");
  }
  if (st != CUDNN_STATUS_SUCCESS) {
    if constexpr (std::is_same_v<Perf, cudnnConvolutionFwdAlgoPerf_t>)
      KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                              max_count, &n, perf.data()));
    else if constexpr (std::is_same_v<Perf, cudnnConvolutionBwdDataAlgoPerf_t>)
      KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
                                                                   max_count, &n, perf.data()));
    else
      KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.get(), d.y.get(), d.conv.get(),
                                                                     d.w.get(), max_count, &n, perf.data()));
  }
  perf.resize(static_cast<size_t>(n < 0 ? 0 : n));
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

// The usable candidates in cuDNN's order: supported, no TF32 for f32, deterministic
// first when asked (falling back to any when none is), each with its workspace size.
template <class Perf>
std::vector<Candidate> rank(Kind kind, cudnnHandle_t h, const Descs& d, DType dtype) {
  const std::vector<Perf> perf = query<Perf>(kind, h, d);
  std::vector<Candidate> det, nondet;
  for (const Perf& p : perf) {
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    if (dtype == DType::F32 && lowers_f32(p.mathType)) continue;
    d.conv.set_math(p.mathType);
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    const size_t ws = workspace_size(kind, h, d, static_cast<int>(p.algo), &st);
    if (st != CUDNN_STATUS_SUCCESS) continue;
    Candidate c{static_cast<int>(p.algo), p.mathType, ws};
    const bool deterministic = p.determinism == CUDNN_DETERMINISTIC || known_deterministic(kind, c.algo);
    (deterministic ? det : nondet).push_back(c);
  }
  d.conv.set_math(math_type(dtype));
  std::vector<Candidate> out;
  if (deterministic_mode()) {
    out = det;
    if (out.empty()) {
      static std::once_flag warned;
      std::call_once(warned, [&] {
        log_warn("cuDNN offers no deterministic ", kind_name(kind), " algorithm for a ", dtype_name(dtype),
                 " convolution; using a non-deterministic one (warned once)");
      });
      out = nondet;
    }
  } else {
    // cuDNN's order, whatever the determinism.
    for (const Perf& p : perf) {
      for (const auto* list : {&det, &nondet})
        for (const Candidate& c : *list)
          if (c.algo == static_cast<int>(p.algo) && c.math == p.mathType) out.push_back(c);
    }
  }
  return out;
}

std::shared_ptr<const std::vector<Candidate>> candidates(Kind kind, int device, cudnnHandle_t h, const Descs& d,
                                                         const Tensor& x, const Tensor& w, const Tensor& y,
                                                         const Geom& g) {
  const Problem p = make_problem(kind, device, x, w, y, g);
  if (auto c = algo_cache().find(p)) return c;
  std::vector<Candidate> c;
  switch (kind) {
    case Kind::Forward: c = rank<cudnnConvolutionFwdAlgoPerf_t>(kind, h, d, x.dtype()); break;
    case Kind::BackwardData: c = rank<cudnnConvolutionBwdDataAlgoPerf_t>(kind, h, d, x.dtype()); break;
    case Kind::BackwardFilter: c = rank<cudnnConvolutionBwdFilterAlgoPerf_t>(kind, h, d, x.dtype()); break;
  }
  KILN_CHECK(!c.empty(), "CUDA conv2d ", kind_name(kind), ": cuDNN offers no algorithm for input ",
             describe_tensor(x), ", weight ", describe_tensor(w), ", output ", describe_tensor(y));
  return algo_cache().put(p, std::move(c));
}

// Runs one cuDNN call of `kind` on (x, w, y) with beta (0: write, 1: accumulate), trying
// the ranked algorithms until one gets its workspace.
void run(Kind kind, const Tensor& x, const Tensor& w, const Tensor& y, const Geom& g, double beta) {
  const int device = x.device().index;
  cudnnHandle_t h = cudnn_handle(device);
  Descs d(x, w, y, g);
  auto cands = candidates(kind, device, h, d, x, w, y, g);
  const DType dt = x.dtype();
  const Scale one = scale(1.0), b = scale(beta);
  for (size_t i = 0; i < cands->size(); ++i) {
    const Candidate& c = (*cands)[i];
    Tensor ws;
    if (c.workspace > 0) {
      try {
        ws = empty({static_cast<int64_t>(c.workspace)}, TensorOptions(DType::U8, x.device()));
      } catch (const OutOfMemory&) {
        if (i + 1 < cands->size()) continue;
        throw;
      }
    }
    void* wsp = ws.defined() ? ws.data_ptr() : nullptr;
    d.conv.set_math(c.math);
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    switch (kind) {
      case Kind::Forward:
        st = cudnnConvolutionForward(h, one.ptr(dt), d.x.get(), x.data_ptr(), d.w.get(), w.data_ptr(), d.conv.get(),
                                     static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), wsp, c.workspace, b.ptr(dt),
                                     d.y.get(), y.data_ptr());
        break;
      case Kind::BackwardData:
        st = cudnnConvolutionBackwardData(h, one.ptr(dt), d.w.get(), w.data_ptr(), d.y.get(), y.data_ptr(),
                                          d.conv.get(), static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), wsp,
                                          c.workspace, b.ptr(dt), d.x.get(), x.data_ptr());
        break;
      case Kind::BackwardFilter:
        st = cudnnConvolutionBackwardFilter(h, one.ptr(dt), d.x.get(), x.data_ptr(), d.y.get(), y.data_ptr(),
                                            d.conv.get(), static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), wsp,
                                            c.workspace, b.ptr(dt), d.w.get(), w.data_ptr());
        break;
    }
    if (st == CUDNN_STATUS_NOT_SUPPORTED && i + 1 < cands->size()) continue;
    if (st != CUDNN_STATUS_SUCCESS) {
      throw Error(detail::str("CUDA conv2d ", kind_name(kind), ": cuDNN failed (", cudnnGetErrorString(st),
                              ") with algorithm ", c.algo, " for input ", describe_tensor(x), ", weight ",
                              describe_tensor(w), ", output ", describe_tensor(y)));
    }
    return;
  }
}

// Samples per cuDNN call: cuDNN's legacy kernels index tensors with 32 bits.
int64_t batch_chunk(const Tensor& a, const Tensor& b) {
  const int64_t per = std::max(a.numel() / std::max<int64_t>(a.size(0), 1), b.numel() / std::max<int64_t>(b.size(0), 1));
  KILN_CHECK(per <= INT_MAX, "CUDA conv2d: one sample of ", describe_tensor(a), " / ", describe_tensor(b),
             " exceeds cuDNN's 32-bit indexing");
  return std::max<int64_t>(1, INT_MAX / std::max<int64_t>(per, 1));
}

void check_conv_operands(const char* op, const Tensor& a, const Tensor& w, const Tensor& c) {
  for (const Tensor* t : {&a, &w, &c}) {
    KILN_CHECK(t->device() == a.device(), "CUDA ", op, ": operands on different devices (", describe_tensor(*t),
               " vs ", describe_tensor(a), ")");
    KILN_CHECK(t->dtype() == a.dtype(), "CUDA ", op, ": operands must share a floating dtype, got ",
               describe_tensor(*t), " and ", describe_tensor(a));
    KILN_CHECK(t->dim() == 4, "CUDA ", op, ": operands must be 4-D, got ", describe_tensor(*t));
  }
  KILN_CHECK(is_floating(a.dtype()), "CUDA ", op, ": needs a floating dtype, got ", describe_tensor(a));
}

// ---- pad and pool helpers ----------------------------------------------------------------

void check_planes(const char* op, const Tensor& t, const Tensor& ref, DType dtype) {
  KILN_CHECK(t.device() == ref.device(), "CUDA ", op, ": operands on different devices (", describe_tensor(t), " vs ",
             describe_tensor(ref), ")");
  KILN_CHECK(t.dim() == 3 && t.is_contiguous(), "CUDA ", op, ": expects contiguous (B, H, W) planes, got ",
             describe_tensor(t), " with strides ", shape_str(t.strides()));
  KILN_CHECK(t.dtype() == dtype, "CUDA ", op, ": expects ", dtype_name(dtype), ", got ", describe_tensor(t));
}

Pool2dArgs pool_args(const Tensor& in, const Tensor& out, const Backend::Pool2dGeometry& g) {
  Pool2dArgs a{};
  a.B = in.size(0);
  a.H = in.size(1);
  a.W = in.size(2);
  a.Ho = out.size(1);
  a.Wo = out.size(2);
  a.kernel_h = g.kernel_h;
  a.kernel_w = g.kernel_w;
  a.stride_h = g.stride_h;
  a.stride_w = g.stride_w;
  a.pad_h = g.pad_h;
  a.pad_w = g.pad_w;
  a.dilation_h = g.dilation_h;
  a.dilation_w = g.dilation_w;
  a.count_include_pad = g.count_include_pad;
  a.divisor_override = g.divisor_override;
  return a;
}

}  // namespace

// ---- convolution -------------------------------------------------------------------------

void CudaBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
                                 const Conv2dGeometry& g) {
  check_conv_operands("conv2d", x, w, y);
  if (y.numel() == 0) return;
  DeviceGuard guard(x.device());
  const int64_t chunk = batch_chunk(x, y);
  for (int64_t n0 = 0; n0 < x.size(0); n0 += chunk) {
    const int64_t n = std::min(chunk, x.size(0) - n0);
    run(Kind::Forward, x.narrow(0, n0, n), w, y.narrow(0, n0, n), g, 0.0);
  }
  if (bias.defined()) {
    KILN_CHECK(bias.dim() == 1 && bias.size(0) == y.size(1) && bias.dtype() == y.dtype() &&
                   bias.device() == y.device(),
               "CUDA conv2d: bias ", describe_tensor(bias), " does not match output ", describe_tensor(y));
    // y += bias broadcast over (N, H, W), in place through the elementwise kernel.
    Tensor b = bias.as_strided_raw(y.sizes(), {0, bias.stride(0), 0, 0}, bias.offset());
    binary(BinaryOp::Add, y, b, y);
  }
}

void CudaBackend::conv2d_backward_data(const Tensor& gy, const Tensor& w, const Tensor& gx, const Conv2dGeometry& g) {
  check_conv_operands("conv2d backward data", gx, w, gy);
  if (gx.numel() == 0) return;
  DeviceGuard guard(gx.device());
  const int64_t chunk = batch_chunk(gx, gy);
  for (int64_t n0 = 0; n0 < gx.size(0); n0 += chunk) {
    const int64_t n = std::min(chunk, gx.size(0) - n0);
    run(Kind::BackwardData, gx.narrow(0, n0, n), w, gy.narrow(0, n0, n), g, 0.0);
  }
}

void CudaBackend::conv2d_backward_weight(const Tensor& x, const Tensor& gy, const Tensor& gw,
                                         const Conv2dGeometry& g) {
  check_conv_operands("conv2d backward weight", x, gw, gy);
  if (gw.numel() == 0) return;
  DeviceGuard guard(x.device());
  if (x.size(0) == 0) {
    fill(gw, 0);
    return;
  }
  const int64_t chunk = batch_chunk(x, gy);
  for (int64_t n0 = 0; n0 < x.size(0); n0 += chunk) {
    const int64_t n = std::min(chunk, x.size(0) - n0);
    run(Kind::BackwardFilter, x.narrow(0, n0, n), gw, gy.narrow(0, n0, n), g, n0 == 0 ? 0.0 : 1.0);
  }
}

// ---- pad2d -------------------------------------------------------------------------------

void CudaBackend::pad2d_forward(const Tensor& x, const Tensor& y, int64_t left, int64_t right, int64_t top,
                                int64_t bottom, PaddingMode mode) {
  check_planes("pad2d", x, y, y.dtype());
  check_planes("pad2d", y, y, y.dtype());
  KILN_CHECK(y.size(0) == x.size(0) && y.size(1) == x.size(1) + top + bottom && y.size(2) == x.size(2) + left + right,
             "CUDA pad2d: output ", describe_tensor(y), " does not match input ", describe_tensor(x), " padded by (",
             left, ", ", right, ", ", top, ", ", bottom, ")");
  if (y.numel() == 0) return;
  DeviceGuard guard(y.device());
  launch_pad2d_forward(x.data_ptr(), y.data_ptr(), x.dtype(), x.size(0), x.size(1), x.size(2), left, right, top,
                       bottom, mode, current_stream(y.device()));
}

void CudaBackend::pad2d_backward(const Tensor& gy, const Tensor& gx, int64_t left, int64_t right, int64_t top,
                                 int64_t bottom, PaddingMode mode) {
  check_planes("pad2d backward", gy, gx, gx.dtype());
  check_planes("pad2d backward", gx, gx, gx.dtype());
  KILN_CHECK(gy.size(0) == gx.size(0) && gy.size(1) == gx.size(1) + top + bottom &&
                 gy.size(2) == gx.size(2) + left + right,
             "CUDA pad2d backward: gradient ", describe_tensor(gy), " does not match input ", describe_tensor(gx));
  if (gx.numel() == 0) return;
  DeviceGuard guard(gx.device());
  launch_pad2d_backward(gy.data_ptr(), gx.data_ptr(), gx.dtype(), gx.size(0), gx.size(1), gx.size(2), left, right,
                        top, bottom, mode, current_stream(gx.device()));
}

// ---- pooling -----------------------------------------------------------------------------

void CudaBackend::max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices,
                                     const Pool2dGeometry& g) {
  check_planes("max_pool2d", x, y, y.dtype());
  check_planes("max_pool2d", y, y, y.dtype());
  check_planes("max_pool2d", indices, y, DType::I64);
  KILN_CHECK(indices.sizes() == y.sizes() && x.size(0) == y.size(0), "CUDA max_pool2d: shapes do not match: input ",
             describe_tensor(x), ", output ", describe_tensor(y), ", indices ", describe_tensor(indices));
  if (y.numel() == 0) return;
  DeviceGuard guard(y.device());
  launch_max_pool2d_forward(x.data_ptr(), y.data_ptr(), indices.data<int64_t>(), x.dtype(), pool_args(x, y, g),
                            current_stream(y.device()));
}

void CudaBackend::max_pool2d_backward(const Tensor& gy, const Tensor& indices, const Tensor& gx,
                                      const Pool2dGeometry& g) {
  check_planes("max_pool2d backward", gy, gx, gx.dtype());
  check_planes("max_pool2d backward", gx, gx, gx.dtype());
  check_planes("max_pool2d backward", indices, gx, DType::I64);
  KILN_CHECK(indices.sizes() == gy.sizes() && gx.size(0) == gy.size(0),
             "CUDA max_pool2d backward: shapes do not match: gradient ", describe_tensor(gy), ", indices ",
             describe_tensor(indices), ", input ", describe_tensor(gx));
  if (gx.numel() == 0) return;
  DeviceGuard guard(gx.device());
  launch_max_pool2d_backward(gy.data_ptr(), indices.data<int64_t>(), gx.data_ptr(), gx.dtype(),
                             pool_args(gx, gy, g), current_stream(gx.device()));
}

void CudaBackend::avg_pool2d_forward(const Tensor& x, const Tensor& y, const Pool2dGeometry& g) {
  check_planes("avg_pool2d", x, y, y.dtype());
  check_planes("avg_pool2d", y, y, y.dtype());
  KILN_CHECK(x.size(0) == y.size(0), "CUDA avg_pool2d: shapes do not match: input ", describe_tensor(x), ", output ",
             describe_tensor(y));
  if (y.numel() == 0) return;
  DeviceGuard guard(y.device());
  launch_avg_pool2d_forward(x.data_ptr(), y.data_ptr(), x.dtype(), pool_args(x, y, g), current_stream(y.device()));
}

void CudaBackend::avg_pool2d_backward(const Tensor& gy, const Tensor& gx, const Pool2dGeometry& g) {
  check_planes("avg_pool2d backward", gy, gx, gx.dtype());
  check_planes("avg_pool2d backward", gx, gx, gx.dtype());
  KILN_CHECK(gx.size(0) == gy.size(0), "CUDA avg_pool2d backward: shapes do not match: gradient ",
             describe_tensor(gy), ", input ", describe_tensor(gx));
  if (gx.numel() == 0) return;
  DeviceGuard guard(gx.device());
  launch_avg_pool2d_backward(gy.data_ptr(), gx.data_ptr(), gx.dtype(), pool_args(gx, gy, g),
                             current_stream(gx.device()));
}

void CudaBackend::adaptive_avg_pool2d_forward(const Tensor& x, const Tensor& y) {
  check_planes("adaptive_avg_pool2d", x, y, y.dtype());
  check_planes("adaptive_avg_pool2d", y, y, y.dtype());
  KILN_CHECK(x.size(0) == y.size(0) && x.size(1) > 0 && x.size(2) > 0, "CUDA adaptive_avg_pool2d: shapes do not match: input ",
             describe_tensor(x), ", output ", describe_tensor(y));
  if (y.numel() == 0) return;
  DeviceGuard guard(y.device());
  launch_adaptive_avg_pool2d_forward(x.data_ptr(), y.data_ptr(), x.dtype(), x.size(0), x.size(1), x.size(2),
                                     y.size(1), y.size(2), current_stream(y.device()));
}

void CudaBackend::adaptive_avg_pool2d_backward(const Tensor& gy, const Tensor& gx) {
  check_planes("adaptive_avg_pool2d backward", gy, gx, gx.dtype());
  check_planes("adaptive_avg_pool2d backward", gx, gx, gx.dtype());
  KILN_CHECK(gx.size(0) == gy.size(0) && gy.size(1) > 0 && gy.size(2) > 0,
             "CUDA adaptive_avg_pool2d backward: shapes do not match: gradient ", describe_tensor(gy), ", input ",
             describe_tensor(gx));
  if (gx.numel() == 0) return;
  DeviceGuard guard(gx.device());
  launch_adaptive_avg_pool2d_backward(gy.data_ptr(), gx.data_ptr(), gx.dtype(), gx.size(0), gx.size(1), gx.size(2),
                                      gy.size(1), gy.size(2), current_stream(gx.device()));
}

}  // namespace kiln::cuda
