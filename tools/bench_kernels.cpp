// kiln_bench_kernels: how fast kiln's kernels run, next to what bounds them. A benchmark,
// not a test: it asserts nothing and prints what it measured.
//
// Memory-bound families (copy/cast, fill, unary, binary, where, reduce, softmax,
// index_select) report achieved GB/s = (bytes read + bytes written) / time and the ratio to
// the device's measured copy bandwidth: a device-to-device cudaMemcpyAsync on CUDA,
// std::memcpy on the CPU, of the same number of bytes as one f32 tensor of --numel
// elements. Matrix products report TFLOP/s (GFLOP/s on the CPU) next to the vendor library
// called directly on the same buffers: cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx,
// f32 compute, default math mode, so no TF32 for f32) on CUDA, OpenBLAS' cblas_sgemm on
// the CPU.
//
// kiln's side goes through the public API, as a user would call it, so times include
// output allocation (the stream-ordered pool on CUDA) and the ops' checks. Each
// measurement is the median over --reps repetitions after a warm-up call; on CUDA a
// repetition is a batch of calls long enough (>= 2 ms) that launch and synchronisation
// latency do not dominate, with the device synchronised before and after.
//
// usage: kiln_bench_kernels [--device cpu|cuda] [--numel N] [--reps N] [--only a,b]
//                           [--mm-sizes 1024,2048] [--json] [--json-out FILE]
// (flags parsed by CLI11 through tools/cli.h: --help, and a bad value exits 2 naming it)
#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <cblas.h>

#include <kiln/kiln.h>

#include "cli.h"

#if KILN_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

namespace {

using kiln::Device;
using kiln::DType;
using kiln::Shape;
using kiln::Tensor;
using Clock = std::chrono::steady_clock;

// A failure of the benchmark's own machinery (CUDA, cuBLAS, its output file): kiln_main
// reports it as "kiln_bench_kernels: error: ..." and exits 1.
[[noreturn]] void die(const std::string& msg) { throw std::runtime_error(msg); }

#if KILN_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) die(std::string(what) + ": " + cudaGetErrorString(e));
}
void cublas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) die(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}
#endif

struct Options {
  Device dev = kiln::kCPU;
  int64_t numel = 0;  // 0: the device's default
  int reps = 0;       // 0: the device's default
  bool json = false;  // JSON lines on stdout instead of the table
  std::string json_out;
  std::vector<std::string> only;
  std::vector<int64_t> mm_sizes;
  bool wants(const std::string& family) const {
    return only.empty() || std::find(only.begin(), only.end(), family) != only.end();
  }
};

// Seconds per call of f: median over `reps` repetitions of a batch of calls, after a
// warm-up call. The batch size grows until a repetition lasts at least min_rep_s.
double seconds_per_call(const std::function<void()>& f, const std::function<void()>& sync, int reps,
                        double min_rep_s) {
  auto since = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  f();
  sync();
  auto t0 = Clock::now();
  f();
  sync();
  double est = std::max(since(t0), 1e-9);
  int batch = static_cast<int>(std::clamp(std::ceil(min_rep_s / est), 1.0, 1000.0));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    for (int i = 0; i < batch; ++i) f();
    sync();
    t.push_back(since(t0) / batch);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

// ---- the measuring context: kiln's device plus the reference's stream/handle ----------

class Bench {
 public:
  explicit Bench(const Options& opt) : opt_(opt), dev_(opt.dev) {
    if (!opt_.json_out.empty()) {
      jsonf_ = std::make_unique<std::ofstream>(opt_.json_out);
      if (!*jsonf_) die("--json-out: cannot write " + opt_.json_out + ": " + std::strerror(errno));
    }
#if KILN_CUDA
    if (dev_.is_cuda()) {
      cuda_check(cudaSetDevice(dev_.index), "cudaSetDevice");
      cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      cublas_check(cublasCreate(&cublas_), "cublasCreate");
      cublas_check(cublasSetStream(cublas_, stream_), "cublasSetStream");
    }
#endif
  }
  ~Bench() {
#if KILN_CUDA
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) cudaStreamDestroy(stream_);
#endif
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  const Options& opt() const { return opt_; }
  Device dev() const { return dev_; }
  bool gpu() const { return dev_.is_cuda(); }
  int reps() const { return opt_.reps; }

  // Times a kiln call: device synchronised through kiln's backend.
  double time_kiln(const std::function<void()>& f, int reps = 0) {
    auto sync = [this] { kiln::synchronize(dev_); };
    return seconds_per_call(f, sync, reps ? reps : opt_.reps, gpu() ? 2e-3 : 0.0);
  }
  // Times a reference call queued on the reference stream (CUDA) or run inline (CPU).
  double time_ref(const std::function<void()>& f, int reps = 0) {
    auto sync = [this] {
#if KILN_CUDA
      if (gpu()) cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
#endif
    };
    kiln::synchronize(dev_);  // nothing of kiln's still running
    return seconds_per_call(f, sync, reps ? reps : opt_.reps, gpu() ? 2e-3 : 0.0);
  }

  // Device copy bandwidth in bytes/s: copies `nbytes` between two device buffers.
  double copy_bandwidth(int64_t nbytes) {
    Tensor src = kiln::empty({nbytes}, kiln::TensorOptions(DType::U8, dev_));
    Tensor dst = kiln::empty({nbytes}, kiln::TensorOptions(DType::U8, dev_));
    src.fill_(1);
    void* d = dst.data_ptr();
    const void* s = src.data_ptr();
    double t;
    if (gpu()) {
#if KILN_CUDA
      t = time_ref([&] {
        cuda_check(cudaMemcpyAsync(d, s, static_cast<size_t>(nbytes), cudaMemcpyDeviceToDevice, stream_),
                   "cudaMemcpyAsync");
      });
#else
      die("unreachable: CUDA device without CUDA support");
#endif
    } else {
      t = time_ref([&] { std::memcpy(d, s, static_cast<size_t>(nbytes)); });
    }
    copy_bw_ = 2.0 * static_cast<double>(nbytes) / t;
    return copy_bw_;
  }

  // C = A @ B by the vendor library on kiln's buffers: row-major (batch, m, k) @ (batch, k, n).
  void ref_gemm(const Tensor& a, const Tensor& b, const Tensor& c, int64_t batch, int64_t m, int64_t k, int64_t n) {
    if (!gpu()) {
      const float* pa = a.data<float>();
      const float* pb = b.data<float>();
      float* pc = c.data<float>();
      for (int64_t i = 0; i < batch; ++i)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                    static_cast<int>(k), 1.0f, pa + i * m * k, static_cast<int>(k), pb + i * k * n,
                    static_cast<int>(n), 0.0f, pc + i * m * n, static_cast<int>(n));
      return;
    }
#if KILN_CUDA
    // Row-major C = A B is column-major C^T = B^T A^T: swap the operands.
    cudaDataType_t t = a.dtype() == DType::F16 ? CUDA_R_16F : a.dtype() == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const float one = 1.0f, zero = 0.0f;
    int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
    if (batch == 1) {
      cublas_check(cublasGemmEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, in, im, ik, &one, b.data_ptr(), t, in,
                                a.data_ptr(), t, ik, &zero, c.data_ptr(), t, in, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx");
    } else {
      cublas_check(cublasGemmStridedBatchedEx(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, in, im, ik, &one, b.data_ptr(), t,
                                              in, k * n, a.data_ptr(), t, ik, m * k, &zero, c.data_ptr(), t, in,
                                              m * n, static_cast<int>(batch), CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT),
                   "cublasGemmStridedBatchedEx");
    }
#endif
  }

  // ---- output ----
  void header_memory() {
    if (opt_.json) return;
    std::printf("\n%-8s %-22s %-6s %-22s %11s %9s %8s\n", "family", "op", "dtype", "shape", "time(us)", "GB/s",
                "of copy");
    std::printf("%s\n", std::string(90, '-').c_str());
  }
  void row_memory(const std::string& family, const std::string& op, DType dt, const Shape& shape, double bytes,
                  double t) {
    double bw = bytes / t;
    if (!opt_.json)
      std::printf("%-8s %-22s %-6s %-22s %11.1f %9.2f %7.0f%%\n", family.c_str(), op.c_str(), kiln::dtype_name(dt),
                  kiln::shape_str(shape).c_str(), t * 1e6, bw * 1e-9, 100.0 * bw / copy_bw_);
    std::fflush(stdout);
    std::ostringstream j;
    j << "{\"family\":\"" << family << "\",\"op\":\"" << json_escape(op) << "\",\"dtype\":\"" << kiln::dtype_name(dt)
      << "\",\"shape\":\"" << kiln::shape_str(shape) << "\",\"device\":\"" << dev_.str() << "\",\"time_us\":"
      << t * 1e6 << ",\"bytes\":" << static_cast<int64_t>(bytes) << ",\"gbps\":" << bw * 1e-9
      << ",\"copy_gbps\":" << copy_bw_ * 1e-9 << ",\"frac_of_copy\":" << bw / copy_bw_ << "}";
    emit_json(j.str());
  }
  void header_matmul() {
    if (opt_.json) return;
    const char* unit = gpu() ? "TFLOP/s" : "GFLOP/s";
    std::printf("\n%-8s %-22s %-6s %-22s %11s %9s %9s %7s   (reference: %s)\n", "family", "op", "dtype",
                "shape (B,M,K,N)", "time(us)", unit, "ref", "of ref",
                gpu() ? "cuBLAS cublasGemmEx, f32 compute" : "OpenBLAS cblas_sgemm");
    std::printf("%s\n", std::string(98, '-').c_str());
  }
  void row_matmul(const std::string& op, DType dt, const Shape& bmkn, double flops, double t, double t_ref) {
    double scale = gpu() ? 1e-12 : 1e-9;
    if (!opt_.json)
      std::printf("%-8s %-22s %-6s %-22s %11.1f %9.2f %9.2f %6.0f%%\n", "matmul", op.c_str(), kiln::dtype_name(dt),
                  kiln::shape_str(bmkn).c_str(), t * 1e6, flops / t * scale, flops / t_ref * scale,
                  100.0 * t_ref / t);
    std::fflush(stdout);
    std::ostringstream j;
    j << "{\"family\":\"matmul\",\"op\":\"" << op << "\",\"dtype\":\"" << kiln::dtype_name(dt) << "\",\"shape\":\""
      << kiln::shape_str(bmkn) << "\",\"device\":\"" << dev_.str() << "\",\"time_us\":" << t * 1e6
      << ",\"flops\":" << flops << ",\"tflops\":" << flops / t * 1e-12 << ",\"ref\":\""
      << (gpu() ? "cublasGemmEx" : "cblas_sgemm") << "\",\"ref_time_us\":" << t_ref * 1e6
      << ",\"ref_tflops\":" << flops / t_ref * 1e-12 << ",\"frac_of_ref\":" << t_ref / t << "}";
    emit_json(j.str());
  }
  void emit_json(const std::string& line) {
    if (opt_.json) std::printf("%s\n", line.c_str());
    if (jsonf_) *jsonf_ << line << "\n";
  }
  // Flushes and closes --json-out; a write that failed (a full disk) is an error.
  void close_json() {
    if (!jsonf_) return;
    jsonf_->flush();
    const bool ok = static_cast<bool>(*jsonf_);
    jsonf_->close();
    if (!ok || jsonf_->fail()) die("--json-out: cannot write " + opt_.json_out + " (disk full?): the file is incomplete");
    jsonf_.reset();
  }

 private:
  Options opt_;
  Device dev_;
  double copy_bw_ = 0;
  std::unique_ptr<std::ofstream> jsonf_;
#if KILN_CUDA
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
#endif
};

// ---- the memory-bound families --------------------------------------------------------

void bench_memory(Bench& B, int64_t n) {
  bool any = false;
  for (const char* f : {"copy", "fill", "unary", "binary", "where", "reduce", "softmax", "index"}) any |= B.opt().wants(f);
  if (!any) return;
  Device dev = B.dev();
  kiln::manual_seed(1);
  const int64_t C = 1024, R = n / C;            // rows of 1024
  Tensor x = kiln::randn({n}, dev);             // f32
  Tensor y = kiln::randn({n}, dev);
  Tensor x2 = x.view({R, C});
  const double f4 = 4.0 * static_cast<double>(n);  // bytes of one f32 tensor of n elements
  B.header_memory();

  if (B.opt().wants("copy")) {
    B.row_memory("copy", "clone", DType::F32, {n}, 2 * f4, B.time_kiln([&] { x.clone(); }));
    Tensor xb = x.to(DType::BF16);
    B.row_memory("copy", "cast f32->bf16", DType::F32, {n}, 1.5 * f4, B.time_kiln([&] { x.to(DType::BF16); }));
    B.row_memory("copy", "cast bf16->f32", DType::BF16, {n}, 1.5 * f4, B.time_kiln([&] { xb.to(DType::F32); }));
    Tensor xt = x.view({n / 4096, 4096});
    B.row_memory("copy", "transpose .contiguous", DType::F32, xt.sizes(), 2 * f4,
                 B.time_kiln([&] { xt.t().contiguous(); }));
  }
  if (B.opt().wants("fill")) {
    Tensor o = kiln::empty({n}, dev);
    B.row_memory("fill", "fill_(1.5)", DType::F32, {n}, f4, B.time_kiln([&] { o.fill_(1.5); }));
  }
  if (B.opt().wants("unary")) {
    B.row_memory("unary", "relu", DType::F32, {n}, 2 * f4, B.time_kiln([&] { kiln::relu(x); }));
    B.row_memory("unary", "exp", DType::F32, {n}, 2 * f4, B.time_kiln([&] { kiln::exp(x); }));
    B.row_memory("unary", "gelu", DType::F32, {n}, 2 * f4, B.time_kiln([&] { kiln::gelu(x); }));
    Tensor xb = x.to(DType::BF16);
    B.row_memory("unary", "gelu", DType::BF16, {n}, f4, B.time_kiln([&] { kiln::gelu(xb); }));
  }
  if (B.opt().wants("binary")) {
    B.row_memory("binary", "add", DType::F32, {n}, 3 * f4, B.time_kiln([&] { kiln::add(x, y); }));
    B.row_memory("binary", "mul", DType::F32, {n}, 3 * f4, B.time_kiln([&] { kiln::mul(x, y); }));
    Tensor row = kiln::randn({C}, dev), col = kiln::randn({R, 1}, dev);
    B.row_memory("binary", "add [R,C]+[C]", DType::F32, {R, C}, 2 * f4 + 4.0 * C,
                 B.time_kiln([&] { kiln::add(x2, row); }));
    B.row_memory("binary", "mul [R,C]*[R,1]", DType::F32, {R, C}, 2 * f4 + 4.0 * R,
                 B.time_kiln([&] { kiln::mul(x2, col); }));
    Tensor xb = x.to(DType::BF16), yb = y.to(DType::BF16);
    B.row_memory("binary", "add", DType::BF16, {n}, 1.5 * f4, B.time_kiln([&] { kiln::add(xb, yb); }));
  }
  if (B.opt().wants("where")) {
    Tensor cond = kiln::gt(x, 0.0);
    B.row_memory("where", "where(c, x, y)", DType::F32, {n}, 3.25 * f4, B.time_kiln([&] { kiln::where(cond, x, y); }));
  }
  if (B.opt().wants("reduce")) {
    B.row_memory("reduce", "sum (all)", DType::F32, {n}, f4, B.time_kiln([&] { kiln::sum(x); }));
    B.row_memory("reduce", "max (all)", DType::F32, {n}, f4, B.time_kiln([&] { kiln::max(x); }));
    B.row_memory("reduce", "sum (last dim)", DType::F32, {R, C}, f4 + 4.0 * R,
                 B.time_kiln([&] { kiln::sum(x2, {1}); }));
    B.row_memory("reduce", "max (last dim)", DType::F32, {R, C}, f4 + 4.0 * R,
                 B.time_kiln([&] { kiln::max(x2, {1}); }));
    Tensor xc = x.view({C, R});
    B.row_memory("reduce", "sum (first dim)", DType::F32, {C, R}, f4 + 4.0 * R,
                 B.time_kiln([&] { kiln::sum(xc, {0}); }));
  }
  if (B.opt().wants("softmax")) {
    for (int64_t c : {int64_t{1024}, int64_t{4096}}) {
      Tensor xs = x.view({n / c, c});
      B.row_memory("softmax", "softmax (last dim)", DType::F32, xs.sizes(), 2 * f4,
                   B.time_kiln([&] { kiln::softmax(xs, -1); }));
    }
    Tensor xs = x.view({R, C}).to(DType::BF16);
    B.row_memory("softmax", "softmax (last dim)", DType::BF16, xs.sizes(), f4,
                 B.time_kiln([&] { kiln::softmax(xs, -1); }));
  }
  if (B.opt().wants("index")) {
    // R random rows of 1024 floats (with repetition): reads the rows and the index,
    // writes an output as large as the input.
    Tensor idx = kiln::randint(0, R, {R}, kiln::TensorOptions(DType::I64, dev));
    B.row_memory("index", "index_select rows", DType::F32, {R, C}, 2 * f4 + 8.0 * R,
                 B.time_kiln([&] { kiln::index_select(x2, 0, idx); }));
  }
}

// ---- matrix products -------------------------------------------------------------------

void bench_matmul(Bench& B) {
  Device dev = B.dev();
  kiln::manual_seed(2);
  std::vector<DType> dtypes{DType::F32};
  if (B.gpu()) dtypes = {DType::F32, DType::F16, DType::BF16};
  // (batch, M, K, N); the batched case is attention-score-shaped: (batch*heads, T, hd) @ (.., hd, T).
  std::vector<Shape> shapes;
  for (int64_t s : B.opt().mm_sizes) shapes.push_back({1, s, s, s});
  shapes.push_back(B.gpu() ? Shape{48, 1024, 64, 1024} : Shape{12, 512, 64, 512});
  // CPU products of 2048 take a good fraction of a second: fewer repetitions there.
  int reps = B.gpu() ? B.reps() : std::min(B.reps(), 3);
  B.header_matmul();
  for (DType dt : dtypes) {
    for (const Shape& s : shapes) {
      int64_t b = s[0], m = s[1], k = s[2], n = s[3];
      Tensor a = kiln::randn({b, m, k}, dev).to(dt), w = kiln::randn({b, k, n}, dev).to(dt);
      Tensor c = kiln::empty({b, m, n}, kiln::TensorOptions(dt, dev));
      Tensor a2 = b == 1 ? a.view({m, k}) : a, w2 = b == 1 ? w.view({k, n}) : w;
      double flops = 2.0 * static_cast<double>(b) * static_cast<double>(m) * static_cast<double>(n) *
                     static_cast<double>(k);
      double t = B.time_kiln([&] { kiln::matmul(a2, w2); }, reps);
      double tr = B.time_ref([&] { B.ref_gemm(a, w, c, b, m, k, n); }, reps);
      B.row_matmul(b == 1 ? "matmul" : "bmm", dt, s, flops, t, tr);
      // The two must agree; a benchmark of wrong results is worth nothing.
      Tensor diff = kiln::max(kiln::abs(kiln::sub(kiln::matmul(a2, w2).reshape({b, m, n}).to(DType::F32),
                                                 c.to(DType::F32))));
      double tol = (dt == DType::F32 ? 1e-3 : 0.25) * std::sqrt(static_cast<double>(k));
      double d = diff.item<double>();
      if (!(d <= tol))
        std::fprintf(stderr, "warning: kiln and the reference differ by %g (tolerance %g) for %s %s\n", d, tol,
                     kiln::dtype_name(dt), kiln::shape_str(s).c_str());
    }
  }
}

const std::vector<std::string> kFamilies{"copy",   "fill",    "unary", "binary", "where",
                                         "reduce", "softmax", "index", "matmul"};

int run(Options opt, const std::string& device_arg) {
  if (device_arg.empty()) opt.dev = kiln::cuda_is_available() ? kiln::cuda_device(0) : kiln::kCPU;
  else opt.dev = Device(device_arg);
  kiln::runtime(opt.dev);  // throws with the reason when the device is not usable
  bool gpu = opt.dev.is_cuda();
  if (opt.numel <= 0) opt.numel = int64_t{1} << (gpu ? 26 : 24);
  opt.numel = std::max<int64_t>(4096, opt.numel / 4096 * 4096);
  if (opt.reps <= 0) opt.reps = gpu ? 20 : 5;
  if (opt.mm_sizes.empty()) opt.mm_sizes = gpu ? std::vector<int64_t>{1024, 2048, 4096} : std::vector<int64_t>{512, 1024, 2048};

  Bench B(opt);
  std::string where = opt.dev.str();
#if KILN_CUDA
  if (gpu) {
    cudaDeviceProp p{};
    cuda_check(cudaGetDeviceProperties(&p, opt.dev.index), "cudaGetDeviceProperties");
    where += std::string(" (") + p.name + ")";
  }
#endif
  double bw = B.copy_bandwidth(4 * opt.numel);
  if (!opt.json) {
    std::printf("kiln %s kernel benchmark on %s; CUDA compiled in: %s\n", KILN_VERSION, where.c_str(),
                KILN_CUDA ? "yes" : "no");
    std::printf("memory-bound: %lld elements, median of %d reps after a warm-up; GB/s = (read + written) / time\n",
                static_cast<long long>(opt.numel), opt.reps);
    std::printf("copy bandwidth: %s of %.1f MiB: %.2f GB/s\n",
                gpu ? "cudaMemcpyAsync device-to-device" : "std::memcpy (one thread)",
                4.0 * static_cast<double>(opt.numel) / (1 << 20), bw * 1e-9);
    std::printf("kiln's times include allocating each output, as a caller would see them\n");
    if (!gpu) std::printf("note: kiln's CPU backend is a single-threaded reference, except matmul (OpenBLAS)\n");
  }
  {
    std::ostringstream j;
    j << "{\"family\":\"config\",\"kiln\":\"" << KILN_VERSION << "\",\"device\":\"" << json_escape(where)
      << "\",\"numel\":" << opt.numel << ",\"reps\":" << opt.reps << ",\"copy_gbps\":" << bw * 1e-9 << "}";
    B.emit_json(j.str());
  }
  bench_memory(B, opt.numel);
  if (opt.wants("matmul")) bench_matmul(B);
  B.close_json();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_kernels: how fast kiln's kernels run, next to what bounds them (the device's copy "
               "bandwidth; cuBLAS or OpenBLAS for matmul). Prints a table, or JSON lines with --json.",
               "kiln_bench_kernels"};
  Options opt;
  std::string device_arg;
  app.add_option("--device", device_arg, "default: cuda:0 when usable, else cpu")->check(kiln::tools::device_spec());
  app.add_option("--numel", opt.numel,
                 "elements of the memory-bound benchmarks (default 2^26 on CUDA, 2^24 on CPU; rounded down to a "
                 "multiple of 4096)")
      ->check(kiln::tools::integer_range(1, int64_t{1} << 40));
  app.add_option("--reps", opt.reps, "repetitions whose median is reported (default 20 on CUDA, 5 on CPU)")
      ->check(kiln::tools::positive<int>());
  app.add_option("--only", opt.only, "comma-separated families to run (default all): copy,fill,unary,binary,where,"
                                     "reduce,softmax,index,matmul")
      ->delimiter(',')
      ->check(CLI::IsMember(kFamilies))
      ->type_name("FAMILIES");
  app.add_option("--mm-sizes", opt.mm_sizes,
                 "comma-separated square matmul sizes (default 1024,2048,4096 on CUDA, 512,1024,2048 on CPU)")
      ->delimiter(',')
      ->check(kiln::tools::integer_range(1, 65536))
      ->type_name("N,N,...");
  app.add_flag("--json", opt.json, "JSON lines on stdout instead of the table");
  app.add_option("--json-out", opt.json_out, "also write JSON lines to FILE")->type_name("FILE");
  return kiln::tools::kiln_main(app, argc, argv, [&] { return run(opt, device_arg); });
}
