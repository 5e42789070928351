#include <kiln/models/data/images.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>

#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>

#include <kiln/core/autograd.h>
#include <kiln/core/error.h>
#include <kiln/ops/checks.h>
#include <kiln/ops/binary.h>
#include <kiln/ops/clamp.h>

namespace kiln::data {
namespace fs = std::filesystem;

namespace {

bool is_image(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* x : {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".ppm", ".pgm"})
    if (e == x) return true;
  return false;
}

}  // namespace

Dataset load_image_folder(const std::string& dir, int64_t size, int64_t channels) {
  KILN_CHECK(size >= 1 && size <= 4096, "image folder: size must lie in [1, 4096], got ", size);
  KILN_CHECK(channels == 1 || channels == 3, "image folder: channels must be 1 or 3, got ", channels);
  std::error_code ec;
  KILN_CHECK(fs::is_directory(dir, ec), "image folder: '", dir, "' is not a directory");
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file() && is_image(it->path())) files.push_back(it->path());
  KILN_CHECK(!ec, "image folder: cannot list '", dir, "': ", ec.message());
  KILN_CHECK(!files.empty(), "image folder: no image files (.png, .jpg, .jpeg, .bmp, .gif, .tga, .ppm, .pgm) under '",
             dir, "'");
  std::sort(files.begin(), files.end());
  std::map<std::string, int64_t> classes;  // first-level sub-folder -> label
  for (auto& f : files) {
    fs::path rel = fs::relative(f, dir);
    if (std::distance(rel.begin(), rel.end()) > 1) classes.emplace(rel.begin()->string(), 0);
  }
  int64_t next = 0;
  for (auto& [name, label] : classes) label = next++;

  const int64_t N = static_cast<int64_t>(files.size()), S = size, C = channels;
  Tensor images = empty({N, C, S, S}, DType::U8);
  std::vector<int64_t> labels(N, 0);
  uint8_t* out = images.data<uint8_t>();
  std::vector<uint8_t> square, resized(static_cast<size_t>(S * S * C));
  for (int64_t i = 0; i < N; ++i) {
    int w = 0, h = 0, n = 0;
    uint8_t* px = stbi_load(files[i].c_str(), &w, &h, &n, static_cast<int>(C));
    KILN_CHECK(px != nullptr, "image folder: cannot decode '", files[i].string(), "': ", stbi_failure_reason());
    const int side = std::min(w, h), x0 = (w - side) / 2, y0 = (h - side) / 2;
    square.resize(static_cast<size_t>(side) * side * C);
    for (int y = 0; y < side; ++y)
      std::copy_n(px + ((static_cast<size_t>(y0 + y) * w + x0) * C), static_cast<size_t>(side) * C,
                  square.data() + static_cast<size_t>(y) * side * C);
    stbi_image_free(px);
    if (side == S) {  // already the size: the pixels as they are (a resampling filter would blur them)
      std::copy(square.begin(), square.end(), resized.begin());
    } else {
      const int ok = stbir_resize_uint8(square.data(), side, side, 0, resized.data(), static_cast<int>(S),
                                        static_cast<int>(S), 0, static_cast<int>(C));
      KILN_CHECK(ok, "image folder: cannot resize '", files[i].string(), "'");
    }
    for (int64_t c = 0; c < C; ++c)  // HWC -> CHW
      for (int64_t p = 0; p < S * S; ++p) out[(i * C + c) * S * S + p] = resized[static_cast<size_t>(p * C + c)];
    fs::path rel = fs::relative(files[i], dir);
    if (std::distance(rel.begin(), rel.end()) > 1) labels[i] = classes[rel.begin()->string()];
  }
  return Dataset{images, from_vector<int64_t>(labels)};
}

Tensor image_grid(const Tensor& images, int64_t ncol, int64_t pad, double lo, double hi, uint8_t background) {
  kiln::detail::check_defined("image_grid", images);
  KILN_CHECK(images.dim() == 4 && images.size(0) >= 1, "image_grid: expects images (N, C, H, W), got ",
             describe(images));
  KILN_CHECK(ncol >= 1 && pad >= 0 && hi > lo, "image_grid: bad ncol ", ncol, ", pad ", pad, " or range [", lo, ", ",
             hi, "]");
  Tensor u8;
  if (images.dtype() == DType::U8) {
    u8 = images.to(kCPU).contiguous();
  } else {
    NoGradGuard raw;
    Tensor x = images.detach().to(kCPU).to(DType::F32);
    u8 = cast(add(mul(clamp(sub(x, lo), 0.0, hi - lo), 255.0 / (hi - lo)), 0.5), DType::U8).contiguous();
  }
  const int64_t N = u8.size(0), C = u8.size(1), H = u8.size(2), W = u8.size(3);
  const int64_t cols = std::min(ncol, N), rows = (N + cols - 1) / cols;
  const int64_t GH = rows * (H + pad) + pad, GW = cols * (W + pad) + pad;
  Tensor grid = full({C, GH, GW}, static_cast<int64_t>(background), DType::U8);
  const uint8_t* src = u8.data<uint8_t>();
  uint8_t* dst = grid.data<uint8_t>();
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = n / cols, q = n % cols, top = pad + r * (H + pad), left = pad + q * (W + pad);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        std::copy_n(src + ((n * C + c) * H + y) * W, W, dst + (c * GH + top + y) * GW + left);
  }
  return grid;
}

void write_png(const std::string& path, const Tensor& image) {
  kiln::detail::check_defined("write_png", image);
  KILN_CHECK(image.dtype() == DType::U8 && image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
             "write_png: expects u8 (C, H, W) with C = 1 or 3, got ", describe(image));
  Tensor img = image.to(kCPU).permute({1, 2, 0}).contiguous();  // HWC
  const int C = static_cast<int>(image.size(0)), H = static_cast<int>(image.size(1)),
            W = static_cast<int>(image.size(2));
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int ok = stbi_write_png(tmp.c_str(), W, H, C, img.data<uint8_t>(), W * C);
  if (!ok) {
    std::error_code ec;
    fs::remove(tmp, ec);
  }
  KILN_CHECK(ok, "write_png: cannot write ", path, " (disk full or not writable?)");
  std::error_code ec;
  fs::rename(tmp, path, ec);
  KILN_CHECK(!ec, "write_png: cannot move ", tmp, " to ", path, ": ", ec.message());
}

void write_scatter_png(const std::string& path, const Tensor& points, const std::vector<std::array<double, 2>>& centers,
                       double extent, int64_t size) {
  KILN_CHECK(points.dim() == 2 && points.size(1) == 2, "write_scatter_png: expects points (N, 2), got ",
             describe(points));
  KILN_CHECK(extent > 0 && size >= 16, "write_scatter_png: bad extent ", extent, " or size ", size);
  const int64_t S = size;
  Tensor img = full({3, S, S}, int64_t{255}, DType::U8);
  uint8_t* p = img.data<uint8_t>();
  auto put = [&](int64_t x, int64_t y, uint8_t r, uint8_t g, uint8_t b) {
    if (x < 0 || y < 0 || x >= S || y >= S) return;
    p[(0 * S + y) * S + x] = r;
    p[(1 * S + y) * S + x] = g;
    p[(2 * S + y) * S + x] = b;
  };
  auto px = [&](double v) { return static_cast<int64_t>(std::lround((v + extent) / (2 * extent) * (S - 1))); };
  for (int64_t i = 0; i < S; ++i) put(px(0.0), i, 220, 220, 220), put(i, px(0.0), 220, 220, 220);
  Tensor pts = points.detach().to(kCPU).to(DType::F64).contiguous();
  const double* v = pts.data<double>();
  for (int64_t i = 0; i < pts.size(0); ++i) {
    const int64_t x = px(v[2 * i]), y = px(-v[2 * i + 1]);
    for (int64_t dy = -1; dy <= 1; ++dy)
      for (int64_t dx = -1; dx <= 1; ++dx) put(x + dx, y + dy, 40, 90, 200);
  }
  for (auto& c : centers) {  // a ring of radius 6 px
    const int64_t cx = px(c[0]), cy = px(-c[1]);
    for (int a = 0; a < 120; ++a) {
      const double t = a * 2 * 3.14159265358979 / 120;
      put(cx + std::lround(6 * std::cos(t)), cy + std::lround(6 * std::sin(t)), 220, 30, 30);
    }
  }
  write_png(path, img);
}

}  // namespace kiln::data
