// Text data for language models (models/data/text.h): the char and byte tokenizers, token
// files (round trip, u16 and u32, every kind of corruption named), seeded training windows
// and the train/validation split; the KJV corpus when Debian's bible-kjv is installed.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

std::string scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_text_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

TEST_CASE("char and byte tokenizers", "[data][text]") {
  const std::string text = "In the beginning God created the heaven and the earth.\n";
  data::CharTokenizer t = data::CharTokenizer::from_corpus(text);
  CHECK(t.vocab_size() == 18);  // newline, space, '.', G, I, a b c d e g h i n o r t v
  const auto ids = t.encode(text);
  CHECK(ids.size() == text.size());
  CHECK(t.decode(ids) == text);
  CHECK(ids[0] == 4);  // sorted bytes: '\n' ' ' '.' 'G' 'I'
  CHECK_KILN_ERROR(t.encode("Jesus"), "'J' (byte 0x4a) at offset 0 is not in the vocabulary");
  CHECK_KILN_ERROR(t.decode({18}), "outside [0, 18)");
  auto back = data::tokenizer_from_description(t.description());
  CHECK(back->vocab_size() == 18);
  CHECK(back->encode(text) == ids);
  data::ByteTokenizer b;
  const std::string utf8 = "caf\xc3\xa9";
  CHECK(b.decode(b.encode(utf8)) == utf8);
  CHECK(b.encode(utf8)[3] == 0xc3);
  CHECK_KILN_ERROR(data::tokenizer_from_description(R"({"kind":"bpe"})"), "unknown kind 'bpe'");
  CHECK_KILN_ERROR(data::tokenizer_from_description("not json"), "not a JSON object");
}

TEST_CASE("token files: round trip, windows, split", "[data][text]") {
  std::string text;
  for (int i = 0; i < 500; ++i) text += "And God said, Let there be light: and there was light.\n";
  data::CharTokenizer t = data::CharTokenizer::from_corpus(text);
  const std::string path = scratch("corpus.tok");
  data::write_token_file(path, t.encode(text), t);
  data::TokenFile f(path);
  CHECK(f.size() == static_cast<int64_t>(text.size()));
  CHECK(f.bytes_per_token() == 2);
  CHECK(f.vocab_size() == t.vocab_size());
  CHECK(f.tokenizer()->decode({f[0], f[1], f[2]}) == "And");
  auto [train, val] = data::TextWindows::split(f, 0.1);
  CHECK(train.end() == val.begin());
  CHECK(val.end() == f.size());
  CHECK(val.end() - val.begin() == static_cast<int64_t>(text.size()) / 10);
  Generator g1(5), g2(5);
  auto [x, y] = train.batch(4, 32, g1);
  auto [x2, y2] = train.batch(4, 32, g2);
  CHECK(x.sizes() == Shape{4, 32});
  CHECK(test::equal(x, x2));  // the same generator state, the same windows
  CHECK(test::equal(x.narrow(1, 1, 31), y.narrow(1, 0, 31)));  // y is x shifted by one
  auto [x3, y3] = train.batch(4, 32, g1);
  CHECK_FALSE(test::equal(x, x3));
  CHECK_KILN_ERROR(data::TextWindows(f, 0, 10).batch(1, 10, g1), "need at least 11 tokens");
  // A large vocabulary is stored as u32.
  data::ByteTokenizer bt;
  const std::string p2 = scratch("bytes.tok");
  data::write_token_file(p2, bt.encode("abc"), bt);
  CHECK(data::TokenFile(p2).size() == 3);
}

TEST_CASE("token files: corruption is named", "[data][text]") {
  data::CharTokenizer t("ab");
  const std::string path = scratch("bad.tok");
  data::write_token_file(path, {0, 1, 1, 0}, t);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(b.data(), static_cast<std::streamsize>(b.size()));
  };
  write(bytes.substr(0, bytes.size() - 1));
  CHECK_KILN_ERROR(data::TokenFile{path}, "truncated or corrupt");
  std::string magic = bytes;
  magic[0] = 'X';
  write(magic);
  CHECK_KILN_ERROR(data::TokenFile{path}, "not a kiln token file");
  std::string big = bytes;
  big[big.size() - 2] = 7;  // the last token becomes 7, outside [0, 2)
  write(big);
  CHECK_KILN_ERROR(data::TokenFile{path}, "outside the vocabulary");
  write("short");
  CHECK_KILN_ERROR(data::TokenFile{path}, "shorter than its 64-byte header");
  CHECK_KILN_ERROR(data::TokenFile{scratch("missing.tok")}, "cannot open");
  CHECK_KILN_ERROR(data::write_token_file(path, {0, 2}, t), "outside the vocabulary [0, 2)");
}

TEST_CASE("the KJV corpus from Debian's bible-kjv", "[data][text]") {
  if (std::system("command -v bible > /dev/null 2>&1") != 0) {
    WARN("bible-kjv is not installed: skipped (tools/setup.sh installs it)");
    return;
  }
  const std::string dir = scratch("kjv");
  const std::string path = data::kjv_corpus(dir);
  CHECK(fs::file_size(path) > 4000000);
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  CHECK(first == "Ge1:1 In the beginning God created the heaven and the earth.");
  CHECK(data::kjv_corpus(dir) == path);  // prepared once
}

}  // namespace
}  // namespace kiln
