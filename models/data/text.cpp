// Tokenizers, token files and training windows (models/data/text.h).
#include <kiln/models/data/text.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace kiln::data {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'T', 'O', 'K', '1'};
constexpr size_t kHeader = 64;

std::string printable(unsigned char c) {
  std::ostringstream os;
  if (c >= 32 && c < 127) os << "'" << static_cast<char>(c) << "' ";
  os << "(byte 0x" << std::hex << static_cast<int>(c) << ")";
  return os.str();
}

uint64_t read_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void put_u64(std::string& s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) s[at + static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

// ---- tokenizers ------------------------------------------------------------------------

CharTokenizer::CharTokenizer(std::string_view alphabet) : chars_(alphabet) {
  std::sort(chars_.begin(), chars_.end(), [](char a, char b) {
    return static_cast<unsigned char>(a) < static_cast<unsigned char>(b);
  });
  chars_.erase(std::unique(chars_.begin(), chars_.end()), chars_.end());
  KILN_CHECK(!chars_.empty(), "CharTokenizer: the alphabet is empty");
  std::fill(std::begin(id_of_), std::end(id_of_), int16_t{-1});
  for (size_t i = 0; i < chars_.size(); ++i) id_of_[static_cast<unsigned char>(chars_[i])] = static_cast<int16_t>(i);
}

CharTokenizer CharTokenizer::from_corpus(std::string_view text) {
  bool seen[256] = {};
  for (char c : text) seen[static_cast<unsigned char>(c)] = true;
  std::string a;
  for (int c = 0; c < 256; ++c)
    if (seen[c]) a.push_back(static_cast<char>(c));
  return CharTokenizer(a);
}

std::vector<int64_t> CharTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    KILN_CHECK(id_of_[c] >= 0, "CharTokenizer: character ", printable(c), " at offset ", i,
               " is not in the vocabulary of ", chars_.size(), " characters");
    ids[i] = id_of_[c];
  }
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    KILN_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "CharTokenizer: id ", ids[i], " outside [0, ", vocab_size(), ")");
    s[i] = chars_[static_cast<size_t>(ids[i])];
  }
  return s;
}

std::string CharTokenizer::description() const {
  nlohmann::json j;
  j["kind"] = "char";
  std::vector<int> bytes;
  for (char c : chars_) bytes.push_back(static_cast<unsigned char>(c));
  j["bytes"] = bytes;
  return j.dump();
}

std::vector<int64_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    KILN_CHECK(ids[i] >= 0 && ids[i] < 256, "ByteTokenizer: id ", ids[i], " outside [0, 256)");
    s[i] = static_cast<char>(ids[i]);
  }
  return s;
}

std::unique_ptr<Tokenizer> tokenizer_from_description(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  KILN_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(),
             "tokenizer description is not a JSON object with a \"kind\": ", text.substr(0, 200));
  const std::string kind = j["kind"];
  if (kind == "byte") return std::make_unique<ByteTokenizer>();
  if (kind == "char") {
    KILN_CHECK(j.contains("bytes") && j["bytes"].is_array(), "char tokenizer description without \"bytes\"");
    std::string a;
    for (const auto& b : j["bytes"]) {
      KILN_CHECK(b.is_number_integer() && b.get<int>() >= 0 && b.get<int>() < 256,
                 "char tokenizer description: bad byte ", b.dump());
      a.push_back(static_cast<char>(b.get<int>()));
    }
    return std::make_unique<CharTokenizer>(a);
  }
  throw Error("tokenizer description of unknown kind '" + kind + "' (known: char, byte)");
}

// ---- token files -----------------------------------------------------------------------

void write_token_file(const std::string& path, const std::vector<int64_t>& tokens, const Tokenizer& tokenizer) {
  const int64_t V = tokenizer.vocab_size();
  const int width = V <= 65536 ? 2 : 4;
  const std::string desc = tokenizer.description();
  std::string header(kHeader, '\0');
  std::memcpy(header.data(), kMagic, 8);
  put_u64(header, 8, static_cast<uint64_t>(width));
  put_u64(header, 16, tokens.size());
  put_u64(header, 24, static_cast<uint64_t>(V));
  put_u64(header, 32, desc.size());
  std::string body(tokens.size() * static_cast<size_t>(width), '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    KILN_CHECK(tokens[i] >= 0 && tokens[i] < V, "write_token_file: token ", tokens[i], " at ", i,
               " outside the vocabulary [0, ", V, ")");
    for (int b = 0; b < width; ++b)
      body[i * static_cast<size_t>(width) + static_cast<size_t>(b)] = static_cast<char>((tokens[i] >> (8 * b)) & 0xff);
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    KILN_CHECK(f.good(), "write_token_file: cannot create ", tmp, ": ", std::strerror(errno));
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(desc.data(), static_cast<std::streamsize>(desc.size()));
    f.write(body.data(), static_cast<std::streamsize>(body.size()));
    f.flush();
    if (!f.good()) {
      std::remove(tmp.c_str());
      throw Error("write_token_file: writing " + tmp + " failed (disk full?)");
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error("write_token_file: cannot rename " + tmp + " to " + path + ": " + std::strerror(e));
  }
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, "token file ", path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("token file " + path + ": not a regular file");
  }
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ < kHeader) {
    ::close(fd);
    throw Error("token file " + path + ": " + std::to_string(map_bytes_) + " bytes, shorter than its 64-byte header");
  }
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error("token file " + path + ": cannot map it: " + std::strerror(errno));
  }
  try {
    const auto* p = static_cast<const unsigned char*>(map_);
    KILN_CHECK(std::memcmp(p, kMagic, 8) == 0, "token file ", path, ": not a kiln token file (no KILNTOK1 magic)");
    const uint64_t width = read_u64(p + 8), count = read_u64(p + 16), vocab = read_u64(p + 24), dlen = read_u64(p + 32);
    KILN_CHECK(width == 2 || width == 4, "token file ", path, ": ", width, " bytes per token (expected 2 or 4)");
    KILN_CHECK(vocab >= 1 && vocab <= (width == 2 ? 65536u : 0xffffffffu), "token file ", path,
               ": bad vocabulary size ", vocab);
    const uint64_t want = kHeader + dlen + count * width;
    KILN_CHECK(dlen < map_bytes_ && count <= map_bytes_ && want == map_bytes_, "token file ", path, ": the header says ",
               count, " tokens of ", width, " bytes and a ", dlen, "-byte description (", want,
               " bytes in all), but the file has ", map_bytes_, " bytes: truncated or corrupt");
    width_ = static_cast<int>(width);
    count_ = static_cast<int64_t>(count);
    vocab_ = static_cast<int64_t>(vocab);
    description_.assign(reinterpret_cast<const char*>(p + kHeader), dlen);
    tokens_ = p + kHeader + dlen;
    KILN_CHECK(tokenizer()->vocab_size() == vocab_, "token file ", path, ": its tokenizer has ",
               tokenizer()->vocab_size(), " symbols, its header says ", vocab_);
    for (int64_t i = 0; i < count_; ++i) {
      const int64_t t = (*this)[i];
      KILN_CHECK(t < vocab_, "token file ", path, ": token ", t, " at position ", i, " outside the vocabulary [0, ",
                 vocab_, "): corrupt");
    }
  } catch (...) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw;
  }
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_bytes_);
}

int64_t TokenFile::operator[](int64_t i) const {
  const unsigned char* p = tokens_ + i * width_;
  return width_ == 2 ? static_cast<int64_t>(p[0] | (p[1] << 8))
                     : static_cast<int64_t>(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                                            (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
}

// ---- windows ---------------------------------------------------------------------------

TextWindows::TextWindows(const TokenFile& file, int64_t begin, int64_t end) : file_(&file), begin_(begin), end_(end) {
  KILN_CHECK(0 <= begin && begin <= end && end <= file.size(), "TextWindows: span [", begin, ", ", end,
             ") outside the file's ", file.size(), " tokens");
}

std::pair<TextWindows, TextWindows> TextWindows::split(const TokenFile& file, double val_fraction) {
  KILN_CHECK(val_fraction > 0 && val_fraction < 1, "TextWindows::split: val_fraction must lie in (0, 1), got ",
             val_fraction);
  const int64_t cut = file.size() - static_cast<int64_t>(static_cast<double>(file.size()) * val_fraction);
  return {TextWindows(file, 0, cut), TextWindows(file, cut, file.size())};
}

std::pair<Tensor, Tensor> TextWindows::batch(int64_t B, int64_t T, Generator& gen) const {
  KILN_CHECK(B >= 1 && T >= 1, "TextWindows::batch: batch and length must be positive, got ", B, " and ", T);
  KILN_CHECK(end_ - begin_ >= T + 1, "TextWindows::batch: windows of ", T, " tokens (plus the target) need at least ",
             T + 1, " tokens, the span [", begin_, ", ", end_, ") has ", end_ - begin_, " (use a shorter block size)");
  const std::vector<int64_t> starts =
      randint(begin_, end_ - T, {B}, DType::I64, &gen).to_vector<int64_t>();  // start + T < end
  std::vector<int64_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      x[static_cast<size_t>(b * T + t)] = (*file_)[starts[static_cast<size_t>(b)] + t];
      y[static_cast<size_t>(b * T + t)] = (*file_)[starts[static_cast<size_t>(b)] + t + 1];
    }
  return {from_vector<int64_t>(x).reshape({B, T}), from_vector<int64_t>(y).reshape({B, T})};
}

// ---- the default corpus ----------------------------------------------------------------

std::string kjv_corpus(const std::string& cache_dir) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(cache_dir) / "kjv.txt").string();
  std::error_code ec;
  if (fs::exists(path, ec) && fs::file_size(path, ec) > 0) return path;
  fs::create_directories(cache_dir, ec);
  KILN_CHECK(!ec, "kjv_corpus: cannot create ", cache_dir, ": ", ec.message());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const std::string cmd = "bible -f 'gen1:1-rev22:21' > '" + tmp + "' 2>/dev/null";
  const int rc = std::system(cmd.c_str());
  std::error_code ec2;
  const auto size = fs::exists(tmp, ec2) ? fs::file_size(tmp, ec2) : 0;
  if (rc != 0 || size < 1000000) {
    std::remove(tmp.c_str());
    throw Error("kjv_corpus: `bible -f 'gen1:1-rev22:21'` failed (exit " + std::to_string(rc) +
                "): install Debian's bible-kjv (tools/setup.sh does)");
  }
  fs::rename(tmp, path, ec);
  KILN_CHECK(!ec, "kjv_corpus: cannot rename ", tmp, " to ", path, ": ", ec.message());
  return path;
}

}  // namespace kiln::data
