// tools/cli.h: what every kiln command-line tool shares around CLI11 (header-only, for the
// programs under tools/; not installed, and nothing in kiln's library includes it).
//
//   int main(int argc, char** argv) {
//     CLI::App app{"What the tool does.", "kiln_tool"};
//     int iters = 10;
//     app.add_option("--iters", iters, "timed iterations")->check(kiln::tools::positive<int>())
//         ->capture_default_str();
//     return kiln::tools::kiln_main(app, argc, argv, [&] { return run(iters); });
//   }
//
// kiln_main parses argv and runs body, and turns every way out into one exit status and one
// message on stderr, "PROG: error: ...":
//   --help               the generated help on stdout, exit 0
//   a bad command line   CLI11's message (the option and what is wrong with its value), then
//                        "Run with --help for more information.", exit 2 (kBadUsage); body
//                        may throw CLI::ValidationError (or any CLI::ParseError) for checks
//                        across flags, which ends the same way
//   kiln::Error or any other std::exception from body: its message, exit 1 (kFailure)
//   body's return value otherwise, but 1 if stdout could not be written (a full disk under
//   `> file`): a tool's printed results are its output, and losing them is a failure
//
// The validators below say what is wrong in words (CLI11 2.1's own PositiveNumber prints
// the largest double as its bound and lets NaN through) and parse integers strictly: "5000abc",
// "1e3", "3.5" and values outside the option's type (99999999999 for an int) are errors,
// never silently cut or wrapped.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>

#include <kiln/core/device.h>
#include <kiln/core/error.h>

namespace kiln::tools {

constexpr int kFailure = 1;   // the tool ran and failed (kiln::Error, an I/O error, ...)
constexpr int kBadUsage = 2;  // the command line was wrong; nothing was run

namespace detail {

inline std::string program_name(const CLI::App& app, const char* argv0) {
  if (!app.get_name().empty()) return app.get_name();
  if (argv0 == nullptr || *argv0 == '\0') return "kiln";
  const char* slash = std::strrchr(argv0, '/');
  return slash ? slash + 1 : argv0;
}

// A whole decimal integer (optional sign), nothing before or after it.
inline bool parse_int(const std::string& s, __int128& out) {
  const char* p = s.c_str();
  const char* end = p + s.size();
  bool neg = false;
  if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
  if (p == end) return false;
  __int128 v = 0;
  for (; p < end; ++p) {
    if (*p < '0' || *p > '9') return false;
    v = v * 10 + (*p - '0');
    if (v > (static_cast<__int128>(1) << 100)) v = static_cast<__int128>(1) << 100;  // saturate: out of any range
  }
  out = neg ? -v : v;
  return true;
}

inline std::string bound_str(__int128 v) {
  if (v < 0) return "-" + bound_str(-v);
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  } while (v > 0);
  return s;
}

}  // namespace detail

// An integer in [lo, hi]; e.g. ->check(integer_range(1, 65536)).
inline CLI::Validator integer_range(int64_t lo, int64_t hi, std::string desc = "") {
  if (desc.empty()) desc = "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        __int128 v = 0;
        if (!detail::parse_int(s, v)) return "'" + s + "' is not an integer";
        if (v < lo || v > hi) {
          std::string want = hi == std::numeric_limits<int64_t>::max() ? ">= " + std::to_string(lo)
                                                                       : "in [" + std::to_string(lo) + ", " +
                                                                             std::to_string(hi) + "]";
          return s + " is out of range: expected an integer " + want;
        }
        return std::string();
      },
      desc, "INTEGER_RANGE");
}

// Integers of type T (int, int64_t, ...) that are >= 1, or >= 0.
template <class T>
CLI::Validator positive() {
  static_assert(std::is_integral_v<T>);
  return integer_range(1, static_cast<int64_t>(std::min<uint64_t>(std::numeric_limits<T>::max(),
                                                                    std::numeric_limits<int64_t>::max())),
                       ">= 1");
}
template <class T>
CLI::Validator non_negative() {
  static_assert(std::is_integral_v<T>);
  return integer_range(0, static_cast<int64_t>(std::min<uint64_t>(std::numeric_limits<T>::max(),
                                                                    std::numeric_limits<int64_t>::max())),
                       ">= 0");
}

// Any uint64_t (a seed): 0 .. 2^64-1, strictly decimal.
inline CLI::Validator any_uint64() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        __int128 v = 0;
        if (!detail::parse_int(s, v)) return "'" + s + "' is not an integer";
        if (v < 0 || v > static_cast<__int128>(std::numeric_limits<uint64_t>::max()))
          return s + " is out of range: expected an integer in [0, " +
                 detail::bound_str(std::numeric_limits<uint64_t>::max()) + "]";
        return std::string();
      },
      ">= 0", "UINT64");
}

// A finite real number > 0 (or >= 0 with allow_zero), at most `max`.
inline CLI::Validator positive_real(bool allow_zero = false,
                                    double max = std::numeric_limits<double>::max()) {
  return CLI::Validator(
      [allow_zero, max](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size()) return "'" + s + "' is not a number";
        if (!std::isfinite(v) || errno == ERANGE) return s + " is not a finite number";
        if (allow_zero ? v < 0 : v <= 0) return s + (allow_zero ? " is negative" : " is not positive");
        if (v > max) return s + " is too large (at most " + std::to_string(max) + ")";
        return std::string();
      },
      allow_zero ? ">= 0" : "> 0", "POSITIVE_REAL");
}

// A device as kiln::Device spells it: "cpu", "cuda", "cuda:N". Whether it is usable is
// the tool's business (it fails with kiln's reason, exit 1).
inline CLI::Validator device_spec() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        try {
          (void)kiln::Device(s);
        } catch (const std::exception&) {
          return "'" + s + "' is not a device: expected cpu, cuda or cuda:N";
        }
        return std::string();
      },
      "cpu|cuda|cuda:N", "DEVICE");
}

// Parses argv into app and runs body: see the top of this file.
inline int kiln_main(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  const std::string prog = detail::program_name(app, argc > 0 ? argv[0] : nullptr);
  app.failure_message([prog](const CLI::App* a, const CLI::Error& e) {
    std::string msg = prog + ": error: " + e.what() + "\n";
    if (a != nullptr && a->get_help_ptr() != nullptr)
      msg += "Run with " + a->get_help_ptr()->get_name() + " for more information.\n";
    return msg;
  });
  auto fail = [&](const char* what) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", prog.c_str(), what);
    return kFailure;
  };
  int rc = 0;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kBadUsage;  // --help: 0
  }
  try {
    rc = body();
  } catch (const CLI::ParseError& e) {
    std::fflush(stdout);
    return app.exit(e) == 0 ? 0 : kBadUsage;
  } catch (const kiln::Error& e) {
    return fail(e.what());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    const int err = errno;
    std::string what = "cannot write standard output";
    if (err != 0) what += std::string(": ") + std::strerror(err);
    std::fprintf(stderr, "%s: error: %s (the output is incomplete)\n", prog.c_str(), what.c_str());
    return rc != 0 ? rc : kFailure;
  }
  return rc;
}

}  // namespace kiln::tools
