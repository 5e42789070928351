// Tensor files in HuggingFace's safetensors format, readable by PyTorch, JAX and the
// `safetensors` package: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// padded with spaces so that the data starts at a multiple of 8, then the raw row-major
// little-endian tensor bytes (offsets count from the start of the data section).
//
// kiln writes tensors in name order, packed, from any device and any strides; writes are
// atomic (a temporary file in the same folder, fsync, rename, fsync of the folder), so a
// crash or a failed save leaves the previous file as it was. The reader treats the file
// as untrusted: it validates the header completely (strict JSON, dtypes, shapes, offsets
// that tile the data section exactly) before allocating anything, and throws kiln::Error
// naming the file and the problem; it never trusts a size it has not checked against the
// file's length.
//
// dtypes: F64, F32, F16, BF16, I64, I32, U8, BOOL (bytes 0 or 1). Other safetensors
// dtypes (I8, I16, U16, F8_*, ...) are refused with an error naming them.
//
// Checksums: kiln stores the CRC32 (zlib's) of every tensor's data bytes in the metadata,
// under the reserved key "kiln.crc32.<tensor name>" = 8 lowercase hex digits, and the
// reader verifies each tensor that has one, throwing kiln::Error naming the file and the
// tensor when the bytes changed after they were written (a bit flip on disk, a damaged
// copy). Files without these keys (written by PyTorch or the `safetensors` package) load
// as before; other readers see the keys as ordinary metadata. The keys are kiln's own:
// they are not returned as metadata, and user metadata may not use the prefix.
//
// Only regular files are read: a FIFO, directory or device at the path is refused at
// once (it is never opened in a way that could block).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <kiln/core/tensor.h>

namespace kiln {

// Writes `tensors` (any devices, strides and dtypes; copied to the host one at a time)
// and string `metadata` to `path`, atomically replacing any file there, with a CRC32 per
// tensor in the metadata. Tensor names and metadata must be valid UTF-8; "__metadata__"
// is not a tensor name and metadata keys may not start with kSafetensorsCrcPrefix. The
// temporary file is "<path>.tmp.<pid>.<n>" (a save killed by SIGKILL leaves it behind).
// Throws kiln::Error naming the path (and the OS's reason) on failure, leaving no
// temporary file behind.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsContents {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Reads every tensor of a safetensors file onto `device` (contiguous, fresh storage),
// verifying the CRC32 of each tensor that has one.
std::map<std::string, Tensor> load_safetensors(const std::string& path, Device device = kCPU);
// The same, with the file's "__metadata__" (empty when it has none; kiln's checksum keys
// are left out).
SafetensorsContents load_safetensors_with_metadata(const std::string& path, Device device = kCPU);
// Only the metadata, reading and validating the header but no tensor data (so no
// checksum is verified; the checksum keys are left out).
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

// Safetensors' names of kiln's dtypes ("F32", "BF16", "BOOL", ...) and back; the latter
// throws kiln::Error for names kiln has no dtype for.
const char* safetensors_dtype_name(DType t);
DType dtype_from_safetensors_name(const std::string& name);

// The header length limit (100 MiB): a larger one is refused as corrupt.
inline constexpr uint64_t kSafetensorsMaxHeader = 100ull << 20;

// The metadata key prefix of kiln's per-tensor checksums: "kiln.crc32.<tensor name>".
inline constexpr const char* kSafetensorsCrcPrefix = "kiln.crc32.";

}  // namespace kiln
