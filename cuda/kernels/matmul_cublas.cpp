// Batched matrix products on cuBLASLt. kiln's operands are row-major (or transposed)
// views, cuBLAS is column-major: a row-major (R, C) matrix is the column-major (C, R)
// matrix of the same bytes, so out = a @ b is computed as out^T = b^T a^T with b as
// cuBLAS's first operand, and no data moves. Every dtype accumulates in its own float
// type (f32 for f32/f16/bf16, no TF32 unless cuda::allow_tf32(), so results track the CPU
// reference; f64 for f64).
// Descriptors and the heuristic's algorithm are cached per shape; when the heuristic
// offers nothing, cublasGemmStridedBatchedEx takes over. This fills the CUDA `matmul` slot
// (ops/op_list.h); a host-compiled .cpp beside the kernels, as it calls libraries only.
// The `matmul_bias` slot (a fused linear layer) is the same product with a cuBLASLt
// epilogue: BIAS, or GELU_BIAS / GELU_AUX_BIAS (the tanh GELU; AUX stores its input for
// backward); without an algorithm for it, the plain product and the elementwise kernels.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <cublasLt.h>
#include <cublas_v2.h>

#include <kiln/core/log.h>
#include <kiln/cuda/device.h>
#include <kiln/cuda/error.h>
#include <kiln/cuda/handles.h>
#include <kiln/cuda/runtime.h>
#include <kiln/ops/op_list.h>

namespace kiln::cuda {
namespace {

// One operand as cuBLAS sees it: the column-major matrix stored in the tensor's bytes,
// and the op that turns it into the factor the product needs.
struct Operand {
  const void* ptr;
  cublasOperation_t op;
  int64_t rows, cols, ld;
  int64_t batch_stride;
};

// t is (B, R, C) with unit stride in one of its last two dims and a valid leading
// dimension (ops/matmul.cpp's blas_layout sees to both). Row-major storage (stride(2) ==
// 1) is a column-major (C, R) matrix: the transpose of t, as out^T = b^T a^T wants, so op
// N. Column-major storage is t itself, so op T. Row-major is preferred when both strides
// are 1, as the CPU kernel does.
Operand describe(const TensorView& t) {
  int64_t R = t.size(1), C = t.size(2);
  Operand o{t.data, CUBLAS_OP_N, C, R, 0, t.stride(0)};
  if (t.stride(2) == 1 || C == 1) {
    o.ld = R == 1 ? std::max<int64_t>(C, 1) : t.stride(1);  // one column: ld is never stepped
  } else {
    o.op = CUBLAS_OP_T;
    o.rows = R;
    o.cols = C;
    o.ld = C == 1 ? std::max<int64_t>(R, 1) : t.stride(2);
  }
  return o;
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    case DType::F64: return CUDA_R_64F;
    default: throw Error(detail::str("CUDA matmul: unsupported dtype ", dtype_name(t)));
  }
}

// The alignment cuBLASLt may assume for every batch's pointer (it assumes 256 bytes
// unless told, and kernels chosen for that fault on views at odd offsets).
uint32_t alignment(const void* p, int64_t batch_stride_bytes, int64_t batch) {
  uint64_t bits = reinterpret_cast<uintptr_t>(p) | 256u;
  if (batch > 1) bits |= static_cast<uint64_t>(batch_stride_bytes);
  return static_cast<uint32_t>(bits & (~bits + 1));  // lowest set bit
}

struct PlanKey {
  int device;
  DType dtype;
  cublasOperation_t op_a, op_b;
  int64_t m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
  uint32_t align_a, align_b, align_c;
  size_t workspace_bytes;
  bool tf32;
  uint32_t epilogue;  // cublasLtEpilogue_t (CUBLASLT_EPILOGUE_DEFAULT: none)
  uint32_t align_bias, align_aux;
  int64_t aux_ld;
  bool operator==(const PlanKey& o) const {
    return device == o.device && dtype == o.dtype && tf32 == o.tf32 && epilogue == o.epilogue &&
           align_bias == o.align_bias && align_aux == o.align_aux && aux_ld == o.aux_ld && op_a == o.op_a && op_b == o.op_b && m == o.m && n == o.n &&
           k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc && batch == o.batch &&
           stride_a == o.stride_a && stride_b == o.stride_b && stride_c == o.stride_c && align_a == o.align_a &&
           align_b == o.align_b && align_c == o.align_c && workspace_bytes == o.workspace_bytes;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 0;
    auto mix = [&h](uint64_t v) { h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    mix(static_cast<uint64_t>(k.device));
    mix(static_cast<uint64_t>(k.dtype) << 1 | static_cast<uint64_t>(k.tf32));
    mix(static_cast<uint64_t>(k.op_a) << 8 | static_cast<uint64_t>(k.op_b));
    for (int64_t v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldc, k.batch, k.stride_a, k.stride_b, k.stride_c})
      mix(static_cast<uint64_t>(v));
    mix(static_cast<uint64_t>(k.align_a) << 40 | static_cast<uint64_t>(k.align_b) << 20 | k.align_c);
    mix(k.workspace_bytes);
    mix(static_cast<uint64_t>(k.epilogue) << 40 | static_cast<uint64_t>(k.align_bias) << 20 | k.align_aux);
    mix(static_cast<uint64_t>(k.aux_ld));
    return h;
  }
};

// Descriptors of one problem and the algorithm the heuristic chose for it. Shared
// ownership: a cache flush never frees a plan another thread is running.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;
  std::mutex pointers;  // an epilogue's bias and aux pointers are set on the shared desc per call
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    auto warn = [](cublasStatus_t s, const char* what) {
      if (s != CUBLAS_STATUS_SUCCESS) log_warn("cuBLASLt: ", what, " failed: ", cublasLtGetStatusString(s));
    };
    if (c) warn(cublasLtMatrixLayoutDestroy(c), "cublasLtMatrixLayoutDestroy");
    if (b) warn(cublasLtMatrixLayoutDestroy(b), "cublasLtMatrixLayoutDestroy");
    if (a) warn(cublasLtMatrixLayoutDestroy(a), "cublasLtMatrixLayoutDestroy");
    if (desc) warn(cublasLtMatmulDescDestroy(desc), "cublasLtMatmulDescDestroy");
  }
};

template <class T>
void set_attr(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr, T value) {
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, attr, &value, sizeof(value)));
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t batch_stride, cublasLtMatrixLayout_t* out) {
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(out, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    set_attr(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, static_cast<int32_t>(batch));
    set_attr(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, batch_stride);  // 0: broadcast
  }
  return *out;
}

// cuBLAS computes and scales in kiln's accumulation dtype (core/dtype.h): f32 without
// TF32 unless cuda::allow_tf32() (f32 operands only), f64 for f64.
cublasComputeType_t compute_type(DType t, bool tf32) {
  if (accumulate_dtype(t) == DType::F64) return CUBLAS_COMPUTE_64F;
  return t == DType::F32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}
cudaDataType_t scale_type(DType t) { return cuda_type(accumulate_dtype(t)); }

// The pointers an epilogue reads and writes (null without one).
struct EpiloguePointers {
  const void* bias = nullptr;
  void* aux = nullptr;
};

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, T value) {
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
}

void set_epilogue_pointers(cublasLtMatmulDesc_t d, const EpiloguePointers& e) {
  set_desc(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, e.bias);
  if (e.aux) set_desc(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, e.aux);
}

std::shared_ptr<Plan> make_plan(const PlanKey& key, cublasLtHandle_t handle, const Operand& a, const Operand& b,
                                const EpiloguePointers& epi) {
  auto plan = std::make_shared<Plan>();
  cudaDataType_t type = cuda_type(key.dtype);
  KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, compute_type(key.dtype, key.tf32), scale_type(key.dtype)));
  int32_t op_a = key.op_a, op_b = key.op_b;
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (key.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    // The heuristic reads the pointers' alignment (part of the key): this call's pointers.
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, key.epilogue);
    set_epilogue_pointers(plan->desc, epi);
    if (epi.aux) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, key.aux_ld);
  }
  make_layout(type, a.rows, a.cols, a.ld, key.batch, key.stride_a, &plan->a);
  make_layout(type, b.rows, b.cols, b.ld, key.batch, key.stride_b, &plan->b);
  make_layout(type, key.m, key.n, key.ldc, key.batch, key.stride_c, &plan->c);

  cublasLtMatmulPreference_t pref = nullptr;
  KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  // The preference is only needed for the query; release it on every path out.
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, void (*)(cublasLtMatmulPreference_t)> pref_guard(
      pref, [](cublasLtMatmulPreference_t p) { (void)cublasLtMatmulPreferenceDestroy(p); });
  auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attr, auto value) {
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
  };
  set_pref(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(key.workspace_bytes));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c);

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b, plan->c, plan->c, pref,
                                                         1, &result, &found);
  if (status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan->algo = result.algo;
    plan->has_algo = true;
  } else if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED) {
    throw_cublas_error(status, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  } else {
    log_debug("cuBLASLt has no algorithm for ", dtype_name(key.dtype), " m=", key.m, " n=", key.n, " k=", key.k,
              " batch=", key.batch, " epilogue ", key.epilogue, "; using ",
              key.epilogue == CUBLASLT_EPILOGUE_DEFAULT ? "cublasGemmStridedBatchedEx" : "the plain product and elementwise kernels");
  }
  return plan;
}

class PlanCache {
 public:
  std::shared_ptr<Plan> get(const PlanKey& key, cublasLtHandle_t handle, const Operand& a, const Operand& b,
                            const EpiloguePointers& epi) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = plans_.find(key);
      if (it != plans_.end()) return it->second;
    }
    // Built outside the lock: the heuristic query is slow, and two threads building the
    // same plan at once only waste a little work.
    std::shared_ptr<Plan> plan = make_plan(key, handle, a, b, epi);
    std::lock_guard<std::mutex> lock(mu_);
    // Programs with ever-changing shapes would grow the cache without bound; starting
    // over is cheap next to a heuristic query per call.
    if (plans_.size() >= kMaxPlans) plans_.clear();
    return plans_.emplace(key, std::move(plan)).first->second;
  }

 private:
  static constexpr size_t kMaxPlans = 4096;
  std::mutex mu_;
  std::unordered_map<PlanKey, std::shared_ptr<Plan>, PlanKeyHash> plans_;
};

PlanCache& plan_cache() {
  static auto* cache = new PlanCache();  // never destroyed: cuBLASLt may be gone at exit
  return *cache;
}



// out = a @ b, with the epilogue `epilogue` when it is not CUBLASLT_EPILOGUE_DEFAULT.
// Returns false when cuBLASLt has no algorithm for an epilogue (nothing was run then).
bool product(TV a, TV b, TV out, cublasLtEpilogue_t epilogue, const EpiloguePointers& epi) {
  int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  DeviceGuard guard(out.device);
  const int device = out.device.index;
  const DType dtype = a.dtype;
  const size_t es = dtype_size(dtype);
  if (K == 0) {  // an empty sum: zero bits are 0.0 in every floating dtype
    KILN_CUDA_CHECK(cudaMemsetAsync(out.data, 0, static_cast<size_t>(out.numel) * es, current_stream(out.device)));
    return true;
  }

  Operand oa = describe(a), ob = describe(b);
  // A weight shared by every batch (stride 0) against a row-major input whose batches
  // follow each other: one GEMM with B*M rows does the same work in one larger,
  // better-shaped kernel.
  if (batch > 1 && ob.batch_stride == 0 && oa.op == CUBLAS_OP_N && oa.batch_stride == M * oa.ld) {
    oa.cols = batch * M;
    M *= batch;
    batch = 1;
  }
  KILN_CHECK(batch <= INT32_MAX, "CUDA matmul: batch of ", batch, " exceeds cuBLAS's limit of ", INT32_MAX);

  // out^T (N, M) = op(b) (N, K) * op(a) (K, M), column-major.
  PlanKey key{};
  key.device = device;
  key.dtype = dtype;
  key.tf32 = allow_tf32();
  key.op_a = ob.op;
  key.op_b = oa.op;
  key.m = N;
  key.n = M;
  key.k = K;
  key.lda = ob.ld;
  key.ldb = oa.ld;
  key.ldc = N;
  key.batch = batch;
  key.stride_a = ob.batch_stride;
  key.stride_b = oa.batch_stride;
  key.stride_c = M * N;
  key.align_a = alignment(ob.ptr, ob.batch_stride * static_cast<int64_t>(es), batch);
  key.align_b = alignment(oa.ptr, oa.batch_stride * static_cast<int64_t>(es), batch);
  key.align_c = alignment(out.data, M * N * static_cast<int64_t>(es), batch);
  key.epilogue = epilogue;
  key.align_bias = epi.bias ? alignment(epi.bias, 0, 1) : 0;
  key.align_aux = epi.aux ? alignment(epi.aux, 0, 1) : 0;
  key.aux_ld = epi.aux ? N : 0;

  // alpha and beta in scale_type(dtype).
  const bool f64_scale = accumulate_dtype(dtype) == DType::F64;
  double alpha64 = 1.0, beta64 = 0.0;
  float alpha32 = 1.0f, beta32 = 0.0f;
  const void* alpha = f64_scale ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta = f64_scale ? static_cast<const void*>(&beta64) : &beta32;

  CublasLt lt = cublaslt(device);
  key.workspace_bytes = lt.workspace_bytes;
  std::shared_ptr<Plan> plan = plan_cache().get(key, lt.handle, ob, oa, epi);
  if (plan->has_algo) {
    std::unique_lock<std::mutex> lock(plan->pointers, std::defer_lock);
    if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) {  // the desc is shared: its pointers are set under a lock
      lock.lock();
      set_epilogue_pointers(plan->desc, epi);
    }
    KILN_CUBLAS_CHECK(cublasLtMatmul(lt.handle, plan->desc, alpha, ob.ptr, plan->a, oa.ptr, plan->b, beta,
                                     out.data, plan->c, out.data, plan->c, &plan->algo, lt.workspace,
                                     lt.workspace_bytes, lt.stream));
    return true;
  }
  if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) return false;
  cudaDataType_t type = cuda_type(dtype);
  KILN_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      cublas_handle(device), ob.op, oa.op, N, M, K, alpha, ob.ptr, type, ob.ld, ob.batch_stride, oa.ptr, type, oa.ld,
      oa.batch_stride, beta, out.data, type, N, M * N, batch, compute_type(dtype, key.tf32), CUBLAS_GEMM_DEFAULT));
  return true;
}

}  // namespace

void matmul(TV a, TV b, TV out) {
  if (out.numel == 0) return;
  (void)product(a, b, out, CUBLASLT_EPILOGUE_DEFAULT, {});
}

void matmul_bias(TV a, TV b, TV bias, TV out, TV pre, const MatmulBiasParams& p) {
  if (out.numel == 0) return;
  const bool gelu = p.activation == LinearActivation::GeluTanh;
  const cublasLtEpilogue_t epilogue =
      !gelu ? CUBLASLT_EPILOGUE_BIAS : (pre.defined ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS);
  EpiloguePointers epi;
  epi.bias = bias.data;
  epi.aux = gelu && pre.defined ? pre.data : nullptr;
  if (a.size(2) > 0 && product(a, b, out, epilogue, epi)) return;
  // No algorithm for the epilogue (or an empty sum): the product, then the bias and the
  // activation through the elementwise kernels, as the CPU reference does.
  (void)product(a, b, out, CUBLASLT_EPILOGUE_DEFAULT, {});  // (an empty sum: zeros)
  const int64_t M = out.size(1), N = out.size(2);
  const TensorView o = as_matrix(out, M, N, N);
  const TensorView sum = pre.defined ? as_matrix(pre, M, N, N) : o;
  binary(o, as_matrix(bias, M, N, 0), gelu ? sum : o, BinaryParams{BinaryOp::Add});
  if (gelu) unary(sum, o, UnaryParams{UnaryOp::GeluTanh, 0});
}

}  // namespace kiln::cuda
