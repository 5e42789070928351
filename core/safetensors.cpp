// safetensors reading and writing (see safetensors.h). POSIX file I/O: pread/write loops
// with EINTR and short-transfer handling, O_EXCL temporary files, fsync and rename for
// atomic replacement. The header is parsed by the strict pull parser of json.h, walking
// exactly the structure the format allows. Each tensor's CRC32 (zlib) is computed while its
// bytes are written and patched into the header afterwards: the header's length does not
// depend on the checksums' values (always 8 hex digits), so the data is copied to the host
// and written once.
#include <kiln/core/safetensors.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <vector>

#include <kiln/core/autograd.h>
#include <kiln/core/json.h>
#include <kiln/core/log.h>

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; kiln reads and writes it as host bytes");

namespace kiln {

namespace {

constexpr const char* kMetadataKey = "__metadata__";
constexpr std::string_view kCrcPrefix = kSafetensorsCrcPrefix;

std::string errno_text(int err) { return std::system_category().message(err); }

bool is_crc_key(std::string_view key) { return key.substr(0, kCrcPrefix.size()) == kCrcPrefix; }

// zlib's crc32 takes 32-bit lengths: feed it in chunks.
uint32_t crc32_update(uint32_t crc, const void* data, uint64_t n) {
  auto c = static_cast<uLong>(crc);
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    auto chunk = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
    c = ::crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

std::string crc_hex(uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(crc));
  return std::string(buf, 8);
}

// 8 hex digits (kiln writes lowercase; either case is read), or nothing.
std::optional<uint32_t> parse_crc_hex(const std::string& s) {
  if (s.size() != 8) return std::nullopt;
  uint32_t v = 0;
  for (char ch : s) {
    int d;
    if (ch >= '0' && ch <= '9') d = ch - '0';
    else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
    else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
    else return std::nullopt;
    v = (v << 4) | static_cast<uint32_t>(d);
  }
  return v;
}

// What is at a path that is not a regular file, for messages.
const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a plain file";
}

// ---- header model ----------------------------------------------------------------

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;
  std::optional<uint32_t> crc;  // from the metadata's "kiln.crc32.<name>", when present
};

struct Header {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

uint64_t read_u64_entry(detail::JsonReader& r, const std::string& what) {
  if (r.peek_kind() != detail::JsonKind::Number)
    r.fail(what + " must be a non-negative integer, not " + detail::json_kind_name(r.peek_kind()));
  detail::JsonNumber n = r.read_number();
  std::string text(n.text);
  if (n.negative) r.fail(what + " is negative (" + text + ")");
  if (!n.integer) r.fail(what + " is not an integer (" + text + ")");
  if (n.overflow || n.value > static_cast<uint64_t>(INT64_MAX)) r.fail(what + " is too large (" + text + ")");
  return n.value;
}

// Parses one tensor's {"dtype", "shape", "data_offsets"} object.
Entry parse_entry(detail::JsonReader& r, const std::string& name) {
  Entry e;
  e.name = name;
  const std::string where = "tensor " + in_quotes(name);
  if (r.peek_kind() != detail::JsonKind::Object)
    r.fail(where + ": expected an object, not " + detail::json_kind_name(r.peek_kind()));
  r.begin_object();
  bool has_dtype = false, has_shape = false, has_offsets = false;
  std::string key;
  for (bool first = true; r.next_member(first, key); first = false) {
    if (key == "dtype") {
      if (has_dtype) r.fail(where + ": duplicate key \"dtype\"");
      has_dtype = true;
      if (r.peek_kind() != detail::JsonKind::String) r.fail(where + ": dtype must be a string");
      std::string dt = r.read_string();
      try {
        e.dtype = dtype_from_safetensors_name(dt);
      } catch (const Error& err) {
        r.fail(where + ": " + err.what());
      }
    } else if (key == "shape") {
      if (has_shape) r.fail(where + ": duplicate key \"shape\"");
      has_shape = true;
      if (r.peek_kind() != detail::JsonKind::Array) r.fail(where + ": shape must be an array");
      r.begin_array();
      for (bool f = true; r.next_element(f); f = false) {
        if (static_cast<int>(e.shape.size()) >= kMaxTensorDims)
          r.fail(where + ": shape has more than kiln's limit of " + std::to_string(kMaxTensorDims) + " dims");
        e.shape.push_back(static_cast<int64_t>(read_u64_entry(r, where + ": shape entry")));
      }
    } else if (key == "data_offsets") {
      if (has_offsets) r.fail(where + ": duplicate key \"data_offsets\"");
      has_offsets = true;
      const std::string what = where + ": data_offsets";
      if (r.peek_kind() != detail::JsonKind::Array) r.fail(what + " must be an array [begin, end]");
      r.begin_array();
      uint64_t v[2];
      int n = 0;
      for (bool f = true; r.next_element(f); f = false) {
        if (n == 2) r.fail(what + " has more than two entries (expected [begin, end])");
        v[n++] = read_u64_entry(r, what + " entry");
      }
      if (n != 2) r.fail(what + " has " + std::to_string(n) + " entries (expected [begin, end])");
      e.begin = v[0];
      e.end = v[1];
    } else {
      r.fail(where + ": unknown key " + in_quotes(key) + " (expected dtype, shape, data_offsets)");
    }
  }
  if (!has_dtype || !has_shape || !has_offsets)
    throw Error(where + " lacks " + (!has_dtype ? "\"dtype\"" : !has_shape ? "\"shape\"" : "\"data_offsets\""));
  return e;
}

// Parses and validates a header against a data section of `data_size` bytes.
Header parse_header(std::string_view json, uint64_t data_size) {
  if (json.empty() || json[0] != '{') throw Error("header does not start with '{'");
  Header h;
  detail::JsonReader r(json);
  r.begin_object();
  std::set<std::string> seen;
  bool has_metadata = false;
  std::string key;
  for (bool first = true; r.next_member(first, key); first = false) {
    if (key == kMetadataKey) {
      if (has_metadata) r.fail("duplicate key \"__metadata__\"");
      has_metadata = true;
      if (r.peek_kind() != detail::JsonKind::Object)
        r.fail(std::string("__metadata__ must be an object, not ") + detail::json_kind_name(r.peek_kind()));
      r.begin_object();
      std::string mkey;
      for (bool f = true; r.next_member(f, mkey); f = false) {
        if (r.peek_kind() != detail::JsonKind::String)
          r.fail("__metadata__ value of " + in_quotes(mkey) + " is a " + detail::json_kind_name(r.peek_kind()) +
                 ", not a string");
        std::string value = r.read_string();
        if (!h.metadata.emplace(mkey, std::move(value)).second) r.fail("duplicate __metadata__ key " + in_quotes(mkey));
      }
    } else {
      if (!seen.insert(key).second) r.fail("duplicate tensor name " + in_quotes(key));
      h.entries.push_back(parse_entry(r, key));
    }
  }
  r.finish();

  // Sizes, then offsets that tile the data section exactly.
  for (const Entry& e : h.entries) {
    const std::string where = "tensor " + in_quotes(e.name);
    uint64_t span = 1, numel = 1;
    bool empty = false;
    for (int64_t d : e.shape) {
      auto ud = static_cast<uint64_t>(d);
      if (d == 0) empty = true;
      if (__builtin_mul_overflow(span, std::max<uint64_t>(ud, 1), &span) || span > static_cast<uint64_t>(INT64_MAX))
        throw Error(where + ": shape " + shape_str(e.shape) + " has too many elements");
      numel *= std::max<uint64_t>(ud, 1);
    }
    if (empty) numel = 0;
    uint64_t nbytes;
    bool too_big = __builtin_mul_overflow(numel, dtype_size(e.dtype), &nbytes);
    if (e.begin > e.end)
      throw Error(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                  "] begin after they end");
    if (too_big || e.end - e.begin != nbytes)
      throw Error(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] hold " +
                  std::to_string(e.end - e.begin) + " bytes but shape " + shape_str(e.shape) + " of " +
                  safetensors_dtype_name(e.dtype) + " needs " + (too_big ? "more" : std::to_string(nbytes)));
  }
  std::vector<const Entry*> order;
  order.reserve(h.entries.size());
  for (const Entry& e : h.entries) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t at = 0;
  for (const Entry* e : order) {
    if (e->begin != at)
      throw Error("tensor " + in_quotes(e->name) + " begins at data byte " + std::to_string(e->begin) + " but " +
                  (at == 0 ? std::string("the data section starts at 0") :
                             "the previous tensor ends at " + std::to_string(at)) +
                  " (offsets must tile the data section)");
    at = e->end;
  }
  if (at != data_size)
    throw Error("tensors cover " + std::to_string(at) + " bytes of data but the data section holds " +
                std::to_string(data_size) + " bytes");

  // kiln's checksums move from the metadata to their tensors.
  std::map<std::string, Entry*> by_name;
  for (Entry& e : h.entries) by_name.emplace(e.name, &e);
  for (auto it = h.metadata.begin(); it != h.metadata.end();) {
    if (!is_crc_key(it->first)) {
      ++it;
      continue;
    }
    const std::string name = it->first.substr(kCrcPrefix.size());
    auto found = by_name.find(name);
    if (found == by_name.end())
      throw Error("__metadata__ key " + in_quotes(it->first) + " holds the checksum of tensor " + in_quotes(name) +
                  ", which the file does not hold");
    std::optional<uint32_t> crc = parse_crc_hex(it->second);
    if (!crc)
      throw Error("__metadata__ key " + in_quotes(it->first) + " is " + in_quotes(it->second) +
                  ", not a CRC32 of 8 hex digits");
    found->second->crc = crc;
    it = h.metadata.erase(it);
  }
  return h;
}

// ---- file I/O ----------------------------------------------------------------------

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  // Closes now, returning close()'s errno (0 on success).
  int close() {
    int fd = fd_;
    fd_ = -1;
    return fd >= 0 && ::close(fd) != 0 ? errno : 0;
  }

 private:
  int fd_;
};

// Reads exactly n bytes at `offset`; returns 0, an errno, or -1 at a premature end of file.
int pread_exact(int fd, void* buf, uint64_t n, uint64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    ssize_t got = ::pread(fd, p, chunk, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (got == 0) return -1;
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return 0;
}

int write_all(int fd, const void* buf, uint64_t n) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    ssize_t put = ::write(fd, p, chunk);
    if (put < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += put;
    n -= static_cast<uint64_t>(put);
  }
  return 0;
}

int pwrite_all(int fd, const void* buf, uint64_t n, uint64_t offset) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    ssize_t put = ::pwrite(fd, p, chunk, static_cast<off_t>(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += put;
    n -= static_cast<uint64_t>(put);
    offset += static_cast<uint64_t>(put);
  }
  return 0;
}

struct OpenedFile {
  Header header;
  uint64_t data_start = 0;
};

// Opens `path`, reads and validates its header; the data is read later through `fd`.
OpenedFile open_and_parse(const std::string& path, Fd& fd) {
  const std::string who = "load_safetensors: " + in_quotes(path);
  // Opening a FIFO for reading blocks until a writer comes, and a device may do anything:
  // look first, and open without blocking in case the path changes in between.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(who + ": cannot open: " + errno_text(errno));
  if (!S_ISREG(st.st_mode))
    throw Error(who + ": is " + file_kind(st.st_mode) + ", not a regular file");
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (raw < 0) throw Error(who + ": cannot open: " + errno_text(errno));
  fd = Fd(raw);
  if (::fstat(fd.get(), &st) != 0) throw Error(who + ": cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode))
    throw Error(who + ": is " + file_kind(st.st_mode) + ", not a regular file");
  auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    throw Error(who + ": file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  int err = pread_exact(fd.get(), len_bytes, 8, 0);
  if (err != 0) throw Error(who + ": cannot read the header length: " + (err < 0 ? "unexpected end of file" : errno_text(err)));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kSafetensorsMaxHeader)
    throw Error(who + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kSafetensorsMaxHeader) + " bytes (corrupt file?)");
  if (n > file_size - 8)
    throw Error(who + ": header length " + std::to_string(n) + " exceeds the " + std::to_string(file_size - 8) +
                " bytes that follow it (truncated or corrupt file)");
  std::string json(n, '\0');
  err = pread_exact(fd.get(), json.data(), n, 8);
  if (err != 0) throw Error(who + ": cannot read the header: " + (err < 0 ? "unexpected end of file" : errno_text(err)));
  OpenedFile f;
  f.data_start = 8 + n;
  try {
    f.header = parse_header(json, file_size - 8 - n);
  } catch (const Error& e) {
    throw Error(who + ": invalid header: " + e.what());
  }
  return f;
}

SafetensorsContents load_impl(const std::string& path, Device device, bool read_data) {
  Fd fd;
  OpenedFile f = open_and_parse(path, fd);
  SafetensorsContents out;
  out.metadata = std::move(f.header.metadata);
  if (!read_data) return out;
  const std::string who = "load_safetensors: " + in_quotes(path);
  std::vector<Entry*> order;
  for (Entry& e : f.header.entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  NoGradGuard no_grad;
  for (Entry* e : order) {
    Tensor t = empty(e->shape, TensorOptions(e->dtype, kCPU));
    uint64_t nbytes = e->end - e->begin;
    if (nbytes > 0) {
      int err = pread_exact(fd.get(), t.data_ptr(), nbytes, f.data_start + e->begin);
      if (err != 0)
        throw Error(who + ": cannot read tensor " + in_quotes(e->name) + ": " +
                    (err < 0 ? "unexpected end of file (did the file change while it was read?)" : errno_text(err)));
    }
    if (e->crc) {
      uint32_t got = crc32_update(0, t.data_ptr(), nbytes);
      if (got != *e->crc)
        throw Error(who + ": tensor " + in_quotes(e->name) + " is corrupt: CRC32 0x" + crc_hex(got) + " expected 0x" +
                    crc_hex(*e->crc) + " (the file was modified or damaged after it was written)");
    }
    if (nbytes > 0) {
      if (e->dtype == DType::Bool) {
        // Any other byte would be an invalid C++ bool.
        const auto* b = static_cast<const unsigned char*>(t.data_ptr());
        for (uint64_t i = 0; i < nbytes; ++i)
          if (b[i] > 1)
            throw Error(who + ": tensor " + in_quotes(e->name) + " is BOOL but its byte " + std::to_string(i) + " is " +
                        std::to_string(b[i]) + " (not 0 or 1)");
      }
    }
    if (device != kCPU) t = t.to(device);
    out.tensors.emplace(std::move(e->name), std::move(t));
  }
  log_debug("load_safetensors: ", path, ": ", out.tensors.size(), " tensors, ", out.metadata.size(),
            " metadata entries");
  return out;
}

// Deletes the temporary file unless the save got as far as renaming it.
struct TempFile {
  std::string path;
  Fd fd;
  bool committed = false;
  ~TempFile() {
    fd.close();
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::Bool: return "BOOL";
    case DType::U8: return "U8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
  }
  throw Error("safetensors_dtype_name: invalid dtype");
}

DType dtype_from_safetensors_name(const std::string& name) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (name == safetensors_dtype_name(static_cast<DType>(i))) return static_cast<DType>(i);
  throw Error("unsupported dtype " + in_quotes(name) + " (kiln reads F64, F32, F16, BF16, I64, I32, U8, BOOL)");
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string who = "save_safetensors: " + in_quotes(path);

  // The header first: it needs only shapes and dtypes, and checks every name. Each
  // checksum is a placeholder of 8 digits here, patched once the data has been written.
  for (const auto& [name, t] : tensors) {
    KILN_CHECK(name != kMetadataKey, who, ": \"__metadata__\" cannot be a tensor name");
    KILN_CHECK(detail::utf8_valid(name), who, ": tensor name ", in_quotes(name), " is not valid UTF-8");
    KILN_CHECK(t.defined(), who, ": tensor ", in_quotes(name), " is undefined");
  }
  std::map<std::string, std::string> all_metadata;
  for (const auto& [k, v] : metadata) {
    KILN_CHECK(!is_crc_key(k), who, ": metadata key ", in_quotes(k), " is reserved: keys starting with \"",
               kSafetensorsCrcPrefix, "\" hold kiln's per-tensor checksums; rename it");
    all_metadata.emplace(k, v);
  }
  for (const auto& [name, t] : tensors) all_metadata.emplace(std::string(kCrcPrefix) + name, "00000000");
  std::map<std::string, size_t> crc_at;  // tensor name -> offset of its checksum's digits in `json`
  std::string json = "{";
  bool first = true;
  try {
    if (!all_metadata.empty()) {
      json += "\"__metadata__\":{";
      bool f = true;
      for (const auto& [k, v] : all_metadata) {
        if (!f) json += ',';
        f = false;
        detail::json_append_string(json, k);
        json += ':';
        if (is_crc_key(k)) crc_at[k.substr(kCrcPrefix.size())] = json.size() + 1;
        detail::json_append_string(json, v);
      }
      json += '}';
      first = false;
    }
  } catch (const Error&) {
    throw Error(who + ": metadata keys and values must be valid UTF-8");
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (!first) json += ',';
    first = false;
    detail::json_append_string(json, name);
    json += ":{\"dtype\":\"";
    json += safetensors_dtype_name(t.dtype());
    json += "\",\"shape\":[";
    for (int64_t i = 0; i < t.dim(); ++i) {
      if (i) json += ',';
      json += std::to_string(t.size(i));
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');  // the data section starts 8-aligned
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(static_cast<uint64_t>(json.size()) >> (8 * i));

  // Write a temporary file beside the target, make it durable, then rename it over.
  static std::atomic<uint64_t> sequence{0};
  TempFile tmp;
  std::string tmp_path = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(sequence++);
  int raw = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (raw < 0) throw Error(who + ": cannot create " + in_quotes(tmp_path) + ": " + errno_text(errno));
  tmp.path = tmp_path;
  tmp.fd = Fd(raw);
  auto check = [&](int err, const std::string& what) {
    if (err != 0) throw Error(who + ": " + what + " " + in_quotes(tmp_path) + ": " + errno_text(err));
  };
  check(write_all(tmp.fd.get(), len_bytes, 8), "cannot write");
  check(write_all(tmp.fd.get(), json.data(), json.size()), "cannot write");
  {
    NoGradGuard no_grad;
    for (const auto& [name, t] : tensors) {
      if (t.numel() == 0) continue;  // its checksum stays 00000000, the CRC32 of no bytes
      Tensor host = t.to(kCPU).contiguous();  // one tensor on the host at a time
      const uint64_t nbytes = static_cast<uint64_t>(host.numel()) * host.element_size();
      const std::string hex = crc_hex(crc32_update(0, host.data_ptr(), nbytes));
      json.replace(crc_at.at(name), 8, hex);
      check(write_all(tmp.fd.get(), host.data_ptr(), nbytes), "cannot write");
    }
  }
  // The header again, now with the checksums (same length, so nothing else moves).
  check(pwrite_all(tmp.fd.get(), json.data(), json.size(), 8), "cannot write");
  check(::fsync(tmp.fd.get()) != 0 ? errno : 0, "cannot fsync");
  check(tmp.fd.close(), "cannot close");
  if (::rename(tmp_path.c_str(), path.c_str()) != 0)
    throw Error(who + ": cannot rename " + in_quotes(tmp_path) + " over it: " + errno_text(errno));
  tmp.committed = true;

  // Make the rename itself durable.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw Error(who + ": saved, but cannot open its folder to fsync it: " + errno_text(errno));
  Fd dir_fd(dfd);
  // Some file systems cannot fsync a folder (EINVAL); the rename is then as durable as they allow.
  if (::fsync(dir_fd.get()) != 0 && errno != EINVAL)
    throw Error(who + ": saved, but cannot fsync its folder: " + errno_text(errno));
  log_debug("save_safetensors: ", path, ": ", tensors.size(), " tensors, ", 8 + json.size() + offset, " bytes");
}

std::map<std::string, Tensor> load_safetensors(const std::string& path, Device device) {
  return load_impl(path, device, true).tensors;
}

SafetensorsContents load_safetensors_with_metadata(const std::string& path, Device device) {
  return load_impl(path, device, true);
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  return load_impl(path, kCPU, false).metadata;
}

}  // namespace kiln
