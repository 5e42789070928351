// DataLoader: permutation, sharding, batch assembly and augmentation on the CPU. The
// random streams are separated by hashing (seed, purpose, epoch) into Philox keys, so the
// shuffle and the augmentation never share counters.
#include <kiln/models/data/loader.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include <kiln/core/error.h>
#include <kiln/core/generator.h>
#include <kiln/core/philox.h>

namespace kiln::data {
namespace {

// SplitMix64's finaliser: a bijective mix, so distinct inputs give distinct keys.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
constexpr uint64_t kShuffleStream = 0x5348554646ull;  // "SHUFF"
constexpr uint64_t kAugmentStream = 0x4155474dull;    // "AUGM"

uint64_t stream_key(uint64_t seed, uint64_t stream, int64_t epoch) {
  return mix64(mix64(mix64(seed) ^ stream) ^ static_cast<uint64_t>(epoch));
}

}  // namespace

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  KILN_CHECK(n >= 0, "epoch_permutation: negative size ", n);
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  Generator gen(stream_key(seed, kShuffleStream, epoch));
  const uint64_t base = gen.reserve(static_cast<uint64_t>(n));
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = philox_int_sample(gen.seed(), base + static_cast<uint64_t>(i), 0, i + 1);
    std::swap(p[i], p[j]);
  }
  return p;
}

std::vector<AugmentParams> augment_params(uint64_t seed, int64_t epoch, const std::vector<int64_t>& indices,
                                          int64_t padding) {
  KILN_CHECK(padding >= 0, "augment_params: padding must be >= 0, got ", padding);
  Generator gen(stream_key(seed, kAugmentStream, epoch));
  const uint32_t span = static_cast<uint32_t>(2 * padding + 1);
  std::vector<AugmentParams> out(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    PhiloxOut r = philox4x32(gen.seed(), static_cast<uint64_t>(indices[i]));
    out[i].dy = r.x[0] % span;
    out[i].dx = r.x[1] % span;
    out[i].flip = (r.x[2] >> 31) != 0;
  }
  return out;
}

Tensor apply_augment(const Tensor& images, const std::vector<AugmentParams>& params, int64_t padding) {
  KILN_CHECK(images.dtype() == DType::U8 && images.dim() == 4, "apply_augment: expected u8 images (B, C, H, W), got ",
             dtype_name(images.dtype()), " ", shape_str(images.sizes()));
  KILN_CHECK(static_cast<int64_t>(params.size()) == images.size(0), "apply_augment: ", params.size(),
             " parameter sets for ", images.size(0), " images");
  KILN_CHECK(padding >= 0, "apply_augment: padding must be >= 0, got ", padding);
  Tensor src = images.cpu().contiguous();
  const int64_t B = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  Tensor out = zeros(src.sizes(), DType::U8);
  const uint8_t* s = src.data<uint8_t>();
  uint8_t* o = out.data<uint8_t>();
  for (int64_t b = 0; b < B; ++b) {
    const AugmentParams& p = params[b];
    KILN_CHECK(p.dy >= 0 && p.dy <= 2 * padding && p.dx >= 0 && p.dx <= 2 * padding, "apply_augment: crop offset (",
               p.dy, ", ", p.dx, ") of image ", b, " outside [0, ", 2 * padding, "]");
    // Output (y, x) reads the padded image at (y + dy, x' + dx), where x' = W - 1 - x
    // when flipped: source pixel (y + dy - padding, x' + dx - padding), zero outside.
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* sp = s + (b * C + c) * H * W;
      uint8_t* op = o + (b * C + c) * H * W;
      for (int64_t y = 0; y < H; ++y) {
        const int64_t sy = y + p.dy - padding;
        if (sy < 0 || sy >= H) continue;
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = (p.flip ? W - 1 - x : x) + p.dx - padding;
          if (sx >= 0 && sx < W) op[y * W + x] = sp[sy * W + sx];
        }
      }
    }
  }
  return out.to(images.device());
}

DataLoader::DataLoader(Tensor images, Tensor labels, LoaderOptions options) : opt_(std::move(options)) {
  KILN_CHECK(images.defined() && labels.defined(), "DataLoader: images and labels must be defined");
  KILN_CHECK(images.dtype() == DType::U8 && images.dim() == 4, "DataLoader: expected u8 images (N, C, H, W), got ",
             dtype_name(images.dtype()), " ", shape_str(images.sizes()));
  KILN_CHECK(labels.dtype() == DType::I64 && labels.dim() == 1 && labels.size(0) == images.size(0),
             "DataLoader: expected i64 labels (", images.size(0), "), got ", dtype_name(labels.dtype()), " ",
             shape_str(labels.sizes()));
  KILN_CHECK(opt_.batch_size > 0, "DataLoader: batch_size must be positive, got ", opt_.batch_size);
  KILN_CHECK(opt_.world_size > 0 && opt_.rank >= 0 && opt_.rank < opt_.world_size, "DataLoader: rank ", opt_.rank,
             " is outside world_size ", opt_.world_size);
  KILN_CHECK(opt_.crop_padding >= 0, "DataLoader: crop_padding must be >= 0, got ", opt_.crop_padding);
  KILN_CHECK(opt_.std > 0.0f, "DataLoader: std must be positive, got ", opt_.std);
  images_ = images.cpu().contiguous();
  labels_ = labels.cpu().contiguous();
  n_ = images_.size(0);
  sample_numel_ = images_.size(1) * images_.size(2) * images_.size(3);
  const int64_t w = opt_.world_size;
  // ceil(a / b) written so that it cannot overflow: a + b - 1 does for a batch size (or
  // world size) near INT64_MAX, which made a huge --batch-size give 0 batches per epoch.
  // Any positive batch size is served: one larger than the shard is one batch of it all.
  auto ceil_div = [](int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); };
  per_rank_ = opt_.drop_last ? n_ / w : ceil_div(n_, w);
  num_batches_ = opt_.drop_last ? per_rank_ / opt_.batch_size : ceil_div(per_rank_, opt_.batch_size);
  KILN_CHECK(n_ == 0 || per_rank_ > 0, "DataLoader: ", n_, " samples with drop_last leave nothing for each of ", w,
             " ranks");
  KILN_CHECK(n_ == 0 || num_batches_ > 0, "DataLoader: batch_size ", opt_.batch_size,
             " with drop_last leaves no full batch of the ", per_rank_, " samples of each of ", w,
             " ranks (every epoch would be empty): use a batch size of at most ", per_rank_, ", or drop_last = false");
}

std::vector<int64_t> DataLoader::rank_indices(int64_t epoch) const { return indices_of(epoch); }

const std::vector<int64_t>& DataLoader::indices_of(int64_t epoch) const {
  KILN_CHECK(epoch >= 0, "DataLoader: epoch must be >= 0, got ", epoch);
  if (epoch == cached_epoch_) return cached_indices_;
  std::vector<int64_t> perm(static_cast<size_t>(n_));
  if (opt_.shuffle) perm = epoch_permutation(n_, opt_.seed, epoch);
  else std::iota(perm.begin(), perm.end(), int64_t{0});
  const int64_t total = per_rank_ * opt_.world_size;
  // Pad by repeating the permutation from its start, or drop its tail.
  for (int64_t i = n_; i < total; ++i) perm.push_back(perm[static_cast<size_t>((i - n_) % n_)]);
  perm.resize(static_cast<size_t>(total));
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(per_rank_));
  for (int64_t i = opt_.rank; i < total; i += opt_.world_size) mine.push_back(perm[static_cast<size_t>(i)]);
  if (opt_.drop_last) mine.resize(static_cast<size_t>(num_batches_ * opt_.batch_size));
  cached_epoch_ = epoch;
  cached_indices_ = std::move(mine);
  return cached_indices_;
}

Batch DataLoader::get(int64_t epoch, int64_t index) const {
  KILN_CHECK(index >= 0 && index < num_batches_, "DataLoader::get: batch ", index, " is outside [0, ", num_batches_,
             ") of epoch ", epoch);
  const std::vector<int64_t>& all = indices_of(epoch);
  // index < size(), so begin < samples_per_rank(); end is clamped without forming
  // begin + batch_size, which overflows for a batch size near INT64_MAX.
  const int64_t begin = index * opt_.batch_size;
  const int64_t end = begin + std::min<int64_t>(opt_.batch_size, static_cast<int64_t>(all.size()) - begin);
  Batch batch;
  batch.indices.assign(all.begin() + begin, all.begin() + end);
  const int64_t B = end - begin;

  Shape xs = images_.sizes();
  xs[0] = B;
  Tensor raw = empty(xs, DType::U8);
  Tensor y = empty({B}, DType::I64);
  const uint8_t* src = images_.data<uint8_t>();
  const int64_t* lab = labels_.data<int64_t>();
  uint8_t* dst = raw.data<uint8_t>();
  int64_t* yd = y.data<int64_t>();
  for (int64_t i = 0; i < B; ++i) {
    const int64_t k = batch.indices[static_cast<size_t>(i)];
    std::memcpy(dst + i * sample_numel_, src + k * sample_numel_, static_cast<size_t>(sample_numel_));
    yd[i] = lab[k];
  }
  if (opt_.augment) raw = apply_augment(raw, augment_params(opt_.seed, epoch, batch.indices, opt_.crop_padding),
                                        opt_.crop_padding);
  batch.x = normalize_images(raw, opt_.device, opt_.mean, opt_.std);
  batch.y = opt_.device == kCPU ? y : y.to(opt_.device);
  return batch;
}

void DataLoader::seek(int64_t epoch, int64_t batch) {
  KILN_CHECK(epoch >= 0 && batch >= 0 && batch <= num_batches_, "DataLoader::seek: (epoch ", epoch, ", batch ", batch,
             ") is outside an epoch of ", num_batches_, " batches");
  pos_ = {epoch, batch};
}

Batch DataLoader::next() {
  KILN_CHECK(num_batches_ > 0, "DataLoader::next: the loader has no batches");
  if (pos_.batch >= num_batches_) pos_ = {pos_.epoch + 1, 0};
  Batch b = get(pos_.epoch, pos_.batch);
  ++pos_.batch;
  return b;
}

}  // namespace kiln::data
