// Images in and out: an image-folder data set (PNG, JPEG, BMP, ... through Debian's
// libstb-dev), sample grids and 2-D scatter plots written as PNG.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <kiln/core/tensor.h>
#include <kiln/models/data/fashion_mnist.h>

namespace kiln::data {

// Every image file (.png .jpg .jpeg .bmp .gif .tga .ppm .pgm, any case) under `dir`,
// recursively, in sorted path order, centre-cropped to a square and resized to
// size x size with `channels` (1 grey or 3 RGB) channels: u8 (N, channels, size, size);
// a square image of that size keeps its pixels exactly.
// Labels: the index of the image's first-level sub-folder in sorted order (torchvision's
// ImageFolder), 0 for images directly in `dir`. Throws kiln::Error naming the path for
// a missing folder, a folder without images, or a file that does not decode.
Dataset load_image_folder(const std::string& dir, int64_t size, int64_t channels);

// Tiles images (N, C, H, W) (floating, values in [lo, hi], mapped to 0..255; or u8) into
// one u8 (C, rows * (H + pad) + pad, ncol * (W + pad) + pad) picture, row-major, with
// `pad` pixels of `background` between tiles (torchvision's make_grid).
Tensor image_grid(const Tensor& images, int64_t ncol = 8, int64_t pad = 2, double lo = -1.0, double hi = 1.0,
                  uint8_t background = 0);

// Writes u8 (C, H, W) with C = 1 or 3 as a PNG, atomically (a temporary file renamed
// into place). Throws kiln::Error when it cannot be written.
void write_png(const std::string& path, const Tensor& image);

// A size x size scatter plot of 2-D points (N, 2) over [-extent, extent]^2: light grey
// axes, the `centers` as red rings, the points as small blue dots. Written with write_png.
void write_scatter_png(const std::string& path, const Tensor& points, const std::vector<std::array<double, 2>>& centers,
                       double extent, int64_t size = 512);

}  // namespace kiln::data
