// Fashion-MNIST (Xiao et al., 2017) from the idx files that Debian's
// `dataset-fashion-mnist` package installs: gzip-compressed idx3 (images) and idx1
// (labels) files, read with zlib and checked (magic numbers, dims, sizes, label range)
// before any byte becomes a tensor. Images stay u8 in memory (47 MB for the training
// set); normalize_images turns a batch into the f32 a model consumes.
#pragma once
#include <cstdint>
#include <string>

#include <kiln/core/device.h>
#include <kiln/core/tensor.h>

namespace kiln::data {

// Where Debian's dataset-fashion-mnist package puts the files.
inline const std::string kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr int64_t kFashionMnistRows = 28;
inline constexpr int64_t kFashionMnistCols = 28;
inline constexpr int64_t kFashionMnistClasses = 10;
// Mean and standard deviation of the training images' pixels scaled to [0, 1].
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;

struct Dataset {
  Tensor images;  // u8 (N, 1, 28, 28), CPU
  Tensor labels;  // i64 (N), CPU, values in [0, 10)
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  // The first n examples (all of them when n <= 0 or n >= size()): quick runs and tests.
  Dataset head(int64_t n) const {
    if (n <= 0 || n >= size()) return *this;
    return {images.narrow(0, 0, n).contiguous(), labels.narrow(0, 0, n).contiguous()};
  }
};

// Reads the training set (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz; 60000
// images) or the test set (t10k-*; 10000 images) from `dir`. A file named without the
// .gz suffix is used when the .gz one is absent. Throws kiln::Error naming the path when a
// file is missing, not gzip/idx, truncated, or disagrees with its partner.
Dataset load_fashion_mnist(const std::string& dir = kFashionMnistDir, bool train = true);

// Reads one idx pair (any image size; labels must lie in [0, num_classes)).
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 int64_t num_classes = kFashionMnistClasses);

// ((x / 255) - mean) / std as f32 on `device`, for u8 images of any shape.
Tensor normalize_images(const Tensor& images, Device device = kCPU, float mean = kFashionMnistMean,
                        float std = kFashionMnistStd);

}  // namespace kiln::data
