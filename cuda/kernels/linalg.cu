// Device helpers of spd_logdet's cuSOLVER glue (cuda/kernels/linalg.h): the log-determinant
// from a Cholesky factor's diagonal (one block per matrix, a tree sum in the matrix's
// float type), and batched identities (the right-hand side whose solution is A^{-1}).
#include <kiln/cuda/kernels/common.cuh>
#include <kiln/cuda/kernels/linalg.h>

namespace kiln::cuda::linalg {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void logdet_kernel(const T* factor, T* out, int64_t n) {
  __shared__ T part[kThreads];
  const T* f = factor + static_cast<int64_t>(blockIdx.x) * n * n;
  T s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += log(f[i * n + i]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = T(2) * part[0];
}

template <class T>
__global__ void identity_kernel(T* a, int64_t total, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ij = k % (n * n);
    a[k] = ij / n == ij % n ? T(1) : T(0);
  }
}

template <class T>
void logdet_launch(const T* factor, T* out, int64_t batch, int64_t n, cudaStream_t stream) {
  for (int64_t b0 = 0; b0 < batch; b0 += 65535) {  // grid.x limit of older launch paths
    const int64_t nb = batch - b0 < 65535 ? batch - b0 : 65535;
    logdet_kernel<T><<<static_cast<unsigned>(nb), kThreads, 0, stream>>>(factor + b0 * n * n, out + b0, n);
    KILN_CUDA_CHECK_LAUNCH();
  }
}

template <class T>
void identity_launch(T* a, int64_t batch, int64_t n, cudaStream_t stream) {
  const int64_t total = batch * n * n;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  identity_kernel<T><<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), kThreads, 0, stream>>>(a, total, n);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void cholesky_logdet(const float* f, float* out, int64_t batch, int64_t n, cudaStream_t s) { logdet_launch(f, out, batch, n, s); }
void cholesky_logdet(const double* f, double* out, int64_t batch, int64_t n, cudaStream_t s) { logdet_launch(f, out, batch, n, s); }
void fill_identity(float* a, int64_t batch, int64_t n, cudaStream_t s) { identity_launch(a, batch, n, s); }
void fill_identity(double* a, int64_t batch, int64_t n, cudaStream_t s) { identity_launch(a, batch, n, s); }

}  // namespace kiln::cuda::linalg
