// DataLoader: batches over an in-memory u8 image set and its i64 labels, with a
// per-epoch shuffle, sharding across data-parallel ranks, and CPU augmentation (random
// crop with zero padding, horizontal flip). Every random choice is a pure function of
// (seed, epoch, batch): the permutation of epoch e comes from Philox keyed by (seed, e),
// and the augmentation of a sample from Philox keyed by (seed, e) at the sample's data-set
// index as counter, so it depends on neither the batch size nor the number of ranks. Any
// batch can be produced on its own (get(epoch, b)), and a run resumed from state() sees
// exactly the batches an uninterrupted run would.
//
// Sharding follows PyTorch's DistributedSampler: the epoch's permutation is made a
// multiple of world_size long, then rank r takes positions r, r + world_size, ...
//  - drop_last = false: the permutation is padded by repeating its first elements (at
//    most world_size - 1 samples are seen twice in an epoch); each rank then has
//    ceil(per_rank / batch_size) batches, the last one possibly smaller.
//  - drop_last = true: the permutation's tail is dropped (at most world_size - 1 samples
//    skipped per epoch, different ones each epoch when shuffling); each rank then has
//    floor(per_rank / batch_size) full batches.
// Either way the ranks' shards of an epoch are disjoint (up to the padding) and every
// rank has the same number of batches, so collectives line up.
#pragma once
#include <cstdint>
#include <vector>

#include <kiln/core/device.h>
#include <kiln/core/tensor.h>
#include <kiln/models/data/fashion_mnist.h>

namespace kiln::data {

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;
  int64_t rank = 0;
  int64_t world_size = 1;
  bool augment = false;      // random crop (after zero padding) and horizontal flip
  int64_t crop_padding = 4;  // pixels of zeros on each side before the random crop
  float mean = kFashionMnistMean;
  float std = kFashionMnistStd;
  Device device = kCPU;  // where get() puts x and y
};

struct Batch {
  Tensor x;                      // f32 (B, C, H, W), normalised, on the loader's device
  Tensor y;                      // i64 (B), on the loader's device
  std::vector<int64_t> indices;  // the samples' indices in the data set
};

// One sample's augmentation: its crop window starts at (dy, dx) in the padded image
// (0 <= dy, dx <= 2 * padding; padding, padding is the unshifted crop), then it is
// mirrored left-right when flip is set.
struct AugmentParams {
  int64_t dy = 0, dx = 0;
  bool flip = false;
};

// The parameters for the samples with data-set indices `indices` in epoch `epoch`.
std::vector<AugmentParams> augment_params(uint64_t seed, int64_t epoch, const std::vector<int64_t>& indices,
                                          int64_t padding);
// Applies params[i] to image i of u8 `images` (B, C, H, W); returns a new u8 tensor.
Tensor apply_augment(const Tensor& images, const std::vector<AugmentParams>& params, int64_t padding);

// The permutation of [0, n) for (seed, epoch): a Fisher-Yates shuffle driven by Philox.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

class DataLoader {
 public:
  // images: u8 (N, C, H, W) (copied to the CPU if elsewhere); labels: i64 (N).
  DataLoader(Tensor images, Tensor labels, LoaderOptions options = {});
  DataLoader(const Dataset& data, LoaderOptions options = {}) : DataLoader(data.images, data.labels, options) {}

  const LoaderOptions& options() const { return opt_; }
  int64_t dataset_size() const { return n_; }
  int64_t samples_per_rank() const { return per_rank_; }
  int64_t size() const { return num_batches_; }  // batches per epoch on this rank

  // This rank's sample indices for `epoch`, in batch order (size() * batch_size of them
  // with drop_last, samples_per_rank() without).
  std::vector<int64_t> rank_indices(int64_t epoch) const;
  // Batch `index` in [0, size()) of `epoch`: a pure function of (options, epoch, index).
  Batch get(int64_t epoch, int64_t index) const;

  // ---- a resumable cursor: (epoch, batch) is the next batch next() returns ----
  struct State {
    int64_t epoch = 0;
    int64_t batch = 0;
    bool operator==(const State&) const = default;
  };
  void set_epoch(int64_t epoch) { seek(epoch, 0); }
  State state() const { return pos_; }
  // batch may equal size(): next() then starts the following epoch.
  void seek(int64_t epoch, int64_t batch);
  bool epoch_done() const { return pos_.batch >= num_batches_; }
  // Returns the batch at the cursor and advances it, rolling over into the next epoch.
  Batch next();

 private:
  LoaderOptions opt_;
  Tensor images_, labels_;  // CPU, contiguous
  int64_t n_ = 0, sample_numel_ = 0;
  int64_t per_rank_ = 0, num_batches_ = 0;
  State pos_;
  // rank_indices is recomputed only when the epoch changes (so a DataLoader is meant for
  // one thread; give each thread its own).
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_indices_;
  const std::vector<int64_t>& indices_of(int64_t epoch) const;
};

}  // namespace kiln::data
