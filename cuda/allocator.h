// The CUDA device allocator: stream-ordered allocation (cudaMallocAsync) from each
// device's default memory pool, whose release threshold is raised so that freed blocks
// stay cached for reuse instead of going back to the driver at every synchronisation.
// Memory is allocated and freed on the device's current stream, so a block freed by one
// step is reused by the next without any host synchronisation. A block that other
// streams used (the communication stream, say) must be ordered before its release on the
// current stream by the code that used it there: an event the current stream waits on.
#pragma once
#include <cuda_runtime_api.h>

#include <kiln/core/allocator.h>

namespace kiln::cuda {

// The allocator behind CudaBackend::allocator(). A failed allocation synchronises the
// device, releases the pool's cache and tries once more before throwing
// kiln::OutOfMemory (naming the request, the free bytes, and kiln's allocated and
// reserved bytes); the process can go on after it.
Allocator& cuda_allocator();

// Tells the allocator that the block starting at `block` (a tensor's storage data) is
// used by work queued on `stream` as well as on the stream it was allocated on: its free
// then waits for the work queued on `stream` up to that moment (PyTorch's
// Tensor.record_stream). Needed when a tensor is handed to another stream (communication)
// and may die before that stream is done with it.
void record_stream(void* block, int device, cudaStream_t stream);

// allocated / peak_allocated / num_allocs count kiln's tensors on the device; reserved is
// what the device's pool holds from the driver (live blocks plus the cache).
MemoryStats memory_stats(int device);
// Restarts peak_allocated (and the pool's own high-water marks) from the current state.
void reset_peak_memory_stats(int device);
// Waits for the device, then returns every cached, unused block to the driver.
void empty_cache(int device);

}  // namespace kiln::cuda
