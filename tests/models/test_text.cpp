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

TEST_CASE("GPT-2 byte-level BPE from a small vocab.json and merges.txt", "[data][text]") {
  // GPT-2's alphabet: space is U+0120 (\xc4\xa0), newline U+010A (\xc4\x8a).
  const std::string G = "\xc4\xa0", C = "\xc4\x8a";
  const std::string vocab = scratch("vocab.json"), merges = scratch("merges.txt");
  {
    std::ofstream v(vocab);
    v << R"({"h":0,"e":1,"l":2,"o":3,")" << G << R"(":4,"w":5,"r":6,"d":7,")" << C
      << R"(":8,"he":9,"ll":10,"ld":11,"hell":12,"hello":13,")" << G << R"(w":14,"or":15,")" << G << R"(wor":16,")"
      << G << R"(world":17,"'":18,"s":19})";
    std::ofstream m(merges);
    m << "#version: 0.2\nh e\nl l\nl d\nhe ll\nhell o\n" << G << " w\no r\n" << G << "w or\n" << G << "wor ld\n";
  }
  data::GPT2Tokenizer t(vocab, merges);
  CHECK(t.vocab_size() == 20);
  // The merges by rank, worked out by hand: "hello" -> he l l o -> he ll o -> hell o -> hello;
  // " world" -> l d first (rank 2), then G w, o r, Gw or, Gwor ld.
  CHECK(t.encode("hello world\n") == std::vector<int64_t>{13, 17, 8});
  CHECK(t.decode({13, 17, 8}) == "hello world\n");
  CHECK(t.encode("he's") == std::vector<int64_t>{9, 18, 19});
  // GPT-2's pre-tokenizer: contractions, a leading space joins the next word, number or
  // symbol run; a run of spaces before a word gives its last space to the word.
  CHECK(t.pieces("Hello  world's 42, ok\n\n") ==
        std::vector<std::string>{"Hello", " ", " world", "'s", " 42", ",", " ok", "\n\n"});
  CHECK(t.pieces("a\nb") == std::vector<std::string>{"a", "\n", "b"});
  CHECK(t.pieces(" caf\xc3\xa9!") == std::vector<std::string>{" caf\xc3\xa9", "!"});
  CHECK_KILN_ERROR(t.encode("hex"), "the token 'x' of the text at byte 0 is not in");
  CHECK_KILN_ERROR(t.decode({20}), "id 20 is not in the vocabulary");
  // Through a token file's description.
  const std::string tok = scratch("bpe.tok");
  data::write_token_file(tok, t.encode("hello world\n"), t);
  data::TokenFile f(tok);
  CHECK(f.tokenizer()->decode({f[0], f[1], f[2]}) == "hello world\n");
  {
    std::ofstream m(merges);
    m << "h e\nlonely\n";
  }
  CHECK_KILN_ERROR(data::GPT2Tokenizer(vocab, merges), "line 2 is not a pair");
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
